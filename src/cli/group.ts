/**
 * strata group: consistency groups (docs/groups.md): create, list, info, delete, add and remove
 * members (POOL/VOLUME, in any pools), and `group snap ...` (group-snap.ts), through the daemon's
 * REST API.
 */
import type { Subcommand } from './command.js';
import { seg } from './remote/client.js';
import { checkName, clientOf, groupHelp, keyValues, parse, parseVolumeRef, positionals, printJson, subcommand, table, wantsJson } from './remote/common.js';
import { GROUP_SNAP } from './group-snap.js';
import type { GroupJson } from '../api/rest/group-schemas.js';

const groupPath = (name: string) => `/v1/groups/${seg(name)}`;

function details(g: GroupJson): string {
  return keyValues([
    ['group', g.name],
    ['id', g.id],
    ['members', g.members.length === 0 ? '-' : g.members.map((m) => `${m.pool}/${m.volume}`).join(', ')],
    ['group snapshots', String(g.snapshotCount)],
    ['created', g.createdAt],
  ]);
}

/** A subcommand taking one GROUP. */
function onGroup(name: string, summary: string, help: string, method: string, pathOf: (group: string) => string, verb: string, done: (group: string, result: GroupJson | undefined) => string): Subcommand {
  return subcommand(name, summary, help, async (argv, con) => {
    const command = `group ${name}`;
    const args = parse(argv, command);
    const [group] = positionals(args, command, ['GROUP']) as [string];
    checkName(group, 'group', command);
    const result = await clientOf(args).json<GroupJson | undefined>(method, pathOf(group), `cannot ${verb} group '${group}'`);
    if (wantsJson(args)) printJson(con, result ?? { [name === 'delete' ? 'deleted' : name]: group });
    else con.stdout(done(group, result));
    return 0;
  });
}

const create = subcommand(
  'create',
  'create a consistency group',
  `Usage: strata group create GROUP

Creates an empty group; add volumes (of any pools) with 'strata group add'.
`,
  async (argv, con) => {
    const command = 'group create';
    const args = parse(argv, command);
    const [name] = positionals(args, command, ['GROUP']) as [string];
    checkName(name, 'group', command);
    const group = await clientOf(args).json<GroupJson>('POST', '/v1/groups', `cannot create group '${name}'`, { name });
    if (wantsJson(args)) printJson(con, group);
    else con.stdout(`Group '${name}' created.\n`);
    return 0;
  },
);

const list = subcommand('list', 'list the groups', 'Usage: strata group list\n\nLists the groups: name, members, group snapshots.\n', async (argv, con) => {
  const command = 'group list';
  const args = parse(argv, command);
  positionals(args, command, []);
  const groups = await clientOf(args).json<GroupJson[]>('GET', '/v1/groups', 'cannot list the groups');
  if (wantsJson(args)) printJson(con, groups);
  else con.stdout(table(['NAME', 'MEMBERS', 'SNAPSHOTS', 'CREATED'], groups.map((g) => [g.name, String(g.members.length), String(g.snapshotCount), g.createdAt])));
  return 0;
});

const info = onGroup('info', 'show a group and its members', 'Usage: strata group info GROUP\n', 'GET', groupPath, 'describe', (_g, result) => details(result!));

const remove = onGroup(
  'delete',
  'delete a group (its volumes stay)',
  `Usage: strata group delete GROUP

Deletes the group; its volumes stay, out of any group. Refused while it has group snapshots:
delete them first with 'strata group snap delete GROUP@SNAPSHOT'.
`,
  'DELETE',
  groupPath,
  'delete',
  (group) => `Group '${group}' deleted.\n`,
);

/** add / remove: GROUP POOL/VOLUME. */
function membership(name: 'add' | 'remove', summary: string, help: string): Subcommand {
  return subcommand(name, summary, help, async (argv, con) => {
    const command = `group ${name}`;
    const args = parse(argv, command);
    const [group, volText] = positionals(args, command, ['GROUP', 'POOL/VOLUME']) as [string, string];
    checkName(group, 'group', command);
    const ref = parseVolumeRef(volText, command);
    const client = clientOf(args);
    const result =
      name === 'add'
        ? await client.json<GroupJson>('POST', `${groupPath(group)}/members`, `cannot add '${ref.pool}/${ref.volume}' to group '${group}'`, { pool: ref.pool, volume: ref.volume })
        : await client.json<GroupJson>('DELETE', `${groupPath(group)}/members/${seg(ref.pool)}/${seg(ref.volume)}`, `cannot remove '${ref.pool}/${ref.volume}' from group '${group}'`);
    if (wantsJson(args)) printJson(con, result);
    else con.stdout(`Volume '${ref.pool}/${ref.volume}' ${name === 'add' ? 'added to' : 'removed from'} group '${group}' (${result.members.length} members).\n`);
    return 0;
  });
}

const add = membership(
  'add',
  'add a volume to a group',
  `Usage: strata group add GROUP [POOL/]VOLUME

Adds the volume (of any pool) to the group. A volume is in one group at most; a member cannot be
deleted or moved to the trash until 'strata group remove' takes it out.
`,
);

const removeMember = membership(
  'remove',
  'take a volume out of a group',
  `Usage: strata group remove GROUP [POOL/]VOLUME

Takes the volume out of the group. Its snapshots from the group's snapshots (group.GROUP.NAME)
become its own snapshots; the group snapshots no longer hold it.
`,
);

export const GROUP_SUBCOMMANDS: readonly Subcommand[] = [create, list, info, remove, add, removeMember, GROUP_SNAP];

export function groupCommandHelp(): string {
  return groupHelp('group', 'Consistency groups: volumes (in any pools) snapshotted at one instant.', GROUP_SUBCOMMANDS);
}
