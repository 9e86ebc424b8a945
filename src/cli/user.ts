/**
 * strata user: the S3 endpoint's users and their access keys, through the daemon's REST API
 * (/v1/users). `strata user key create` prints a key's secret: the only time it is shown.
 */
import type { Subcommand } from './command.js';
import { UsageError } from './errors.js';
import type { Console } from './output.js';
import { seg } from './remote/client.js';
import { checkName, clientOf, groupHelp, keyValues, parse, positionals, printJson, subcommand, table, wantsJson } from './remote/common.js';
import type { AccessKeyCreatedJson, AccessKeyJson, UserDetailJson, UserJson } from '../api/rest/user-schemas.js';

const ACCESS_KEY_RE = /^[A-Z0-9]{1,128}$/;

function checkKeyId(id: string, command: string): string {
  if (!ACCESS_KEY_RE.test(id)) throw new UsageError(`${command}: '${id}' is not an access key id`, "access key ids are upper-case letters and digits; see 'strata user key list USER'");
  return id;
}

function keyTable(keys: readonly AccessKeyJson[]): string {
  return table(['ACCESS KEY', 'STATUS', 'CREATED'], keys.map((k) => [k.id, k.status, k.createdAt]));
}

const create = subcommand(
  'create',
  'create an S3 user',
  `Usage: strata user create NAME

Creates a user of the S3 endpoint. Give it an access key with 'strata user key create NAME'.
`,
  async (argv, con) => {
    const command = 'user create';
    const args = parse(argv, command);
    const [name] = positionals(args, command, ['NAME']) as [string];
    checkName(name, 'user', command);
    const user = await clientOf(args).json<UserJson>('POST', '/v1/users', `cannot create user '${name}'`, { name });
    if (wantsJson(args)) printJson(con, user);
    else con.stdout(`User '${user.name}' created.\n`);
    return 0;
  },
);

const list = subcommand(
  'list',
  'list S3 users',
  `Usage: strata user list
`,
  async (argv, con) => {
    const command = 'user list';
    const args = parse(argv, command);
    positionals(args, command, []);
    const users = await clientOf(args).json<UserJson[]>('GET', '/v1/users', 'cannot list users');
    if (wantsJson(args)) printJson(con, users);
    else con.stdout(table(['NAME', 'CREATED'], users.map((u) => [u.name, u.createdAt])));
    return 0;
  },
);

const info = subcommand(
  'info',
  'show an S3 user and its access keys',
  `Usage: strata user info NAME

Shows the user and its access keys (never their secrets).
`,
  async (argv, con) => {
    const command = 'user info';
    const args = parse(argv, command);
    const [name] = positionals(args, command, ['NAME']) as [string];
    checkName(name, 'user', command);
    const user = await clientOf(args).json<UserDetailJson>('GET', `/v1/users/${seg(name)}`, `cannot show user '${name}'`);
    if (wantsJson(args)) printJson(con, user);
    else con.stdout(keyValues([['user', user.name], ['created', user.createdAt], ['access keys', user.keys.length === 0 ? 'none' : user.keys.map((k) => `${k.id} (${k.status})`).join(', ')]]));
    return 0;
  },
);

const del = subcommand(
  'delete',
  'delete an S3 user and its access keys',
  `Usage: strata user delete NAME

Deletes the user and its access keys: requests signed with them are refused from then on.
Refused (status 4, naming them) while the user owns buckets, since a user made later under the
same name would own them: give each to another user ('strata bucket chown BUCKET USER') or delete
it with what it holds ('strata bucket delete BUCKET --purge') first.
`,
  async (argv, con) => {
    const command = 'user delete';
    const args = parse(argv, command);
    const [name] = positionals(args, command, ['NAME']) as [string];
    checkName(name, 'user', command);
    await clientOf(args).json('DELETE', `/v1/users/${seg(name)}`, `cannot delete user '${name}'`);
    if (wantsJson(args)) printJson(con, { deleted: name });
    else con.stdout(`User '${name}' deleted.\n`);
    return 0;
  },
);

const keyCreate = subcommand(
  'create',
  'create an access key for a user',
  `Usage: strata user key create USER

Creates an access key and prints its id and secret. The secret is shown this once: store it
now (the daemon keeps it encrypted and never shows it again).
`,
  async (argv, con) => {
    const command = 'user key create';
    const args = parse(argv, command);
    const [user] = positionals(args, command, ['USER']) as [string];
    checkName(user, 'user', command);
    const key = await clientOf(args).json<AccessKeyCreatedJson>('POST', `/v1/users/${seg(user)}/keys`, `cannot create an access key for user '${user}'`);
    if (wantsJson(args)) printJson(con, key);
    else con.stdout(`${keyValues([['user', key.owner], ['access key', key.id], ['secret key', key.secret]])}The secret key is shown only now: store it.\n`);
    return 0;
  },
);

const keyList = subcommand(
  'list',
  "list a user's access keys",
  `Usage: strata user key list USER
`,
  async (argv, con) => {
    const command = 'user key list';
    const args = parse(argv, command);
    const [user] = positionals(args, command, ['USER']) as [string];
    checkName(user, 'user', command);
    const keys = await clientOf(args).json<AccessKeyJson[]>('GET', `/v1/users/${seg(user)}/keys`, `cannot list the access keys of user '${user}'`);
    if (wantsJson(args)) printJson(con, keys);
    else con.stdout(keyTable(keys));
    return 0;
  },
);

const keyDelete = subcommand(
  'delete',
  'delete an access key',
  `Usage: strata user key delete USER ACCESS_KEY
`,
  async (argv, con) => {
    const command = 'user key delete';
    const args = parse(argv, command);
    const [user, id] = positionals(args, command, ['USER', 'ACCESS_KEY']) as [string, string];
    checkName(user, 'user', command);
    checkKeyId(id, command);
    await clientOf(args).json('DELETE', `/v1/users/${seg(user)}/keys/${seg(id)}`, `cannot delete access key '${id}'`);
    if (wantsJson(args)) printJson(con, { deleted: id });
    else con.stdout(`Access key '${id}' deleted.\n`);
    return 0;
  },
);

const KEY_SUBCOMMANDS: readonly Subcommand[] = [keyCreate, keyList, keyDelete];

function keyHelp(): string {
  return groupHelp('user key', "A user's access keys (what S3 clients sign requests with).", KEY_SUBCOMMANDS);
}

const key: Subcommand = {
  name: 'key',
  summary: 'create, list and delete access keys',
  help: keyHelp(),
  run: async (argv: string[], con: Console) => {
    const [subName, ...rest] = argv;
    if (subName === undefined) throw new UsageError('user key: missing subcommand', "see 'strata user key --help'");
    const sub = KEY_SUBCOMMANDS.find((s) => s.name === subName);
    if (sub === undefined) throw new UsageError(`user key: unknown subcommand '${subName}'`, `available: ${KEY_SUBCOMMANDS.map((s) => s.name).join(', ')}; see 'strata user key --help'`);
    if (rest.includes('--help') || rest.includes('-h')) {
      con.stdout(sub.help);
      return 0;
    }
    return sub.run(rest, con);
  },
};

export const USER_SUBCOMMANDS: readonly Subcommand[] = [create, list, info, del, key];

export function userHelp(): string {
  return groupHelp('user', 'Users of the S3 endpoint and their access keys.', USER_SUBCOMMANDS);
}
