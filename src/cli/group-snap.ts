/**
 * strata group snap: create, list, info, rollback and delete group snapshots (docs/groups.md),
 * named GROUP@SNAPSHOT, through the daemon's REST API. Dispatched from `strata group snap`.
 */
import { wantsHelp } from './args.js';
import type { Subcommand } from './command.js';
import { UsageError } from './errors.js';
import type { Console } from './output.js';
import { seg } from './remote/client.js';
import { checkName, clientOf, groupHelp, keyValues, parse, positionals, printJson, subcommand, table, wantsJson } from './remote/common.js';
import type { GroupJson, GroupSnapshotJson } from '../api/rest/group-schemas.js';

interface GroupSnapRef {
  group: string;
  snapshot: string;
}

function parseGroupSnapRef(text: string, command: string): GroupSnapRef {
  const at = text.indexOf('@');
  if (at < 0) throw new UsageError(`${command}: '${text}' names no group snapshot; expected GROUP@SNAPSHOT`, `see 'strata ${command} --help'`);
  return { group: checkName(text.slice(0, at), 'group', command), snapshot: checkName(text.slice(at + 1), 'snapshot', command) };
}

const snapsPath = (group: string) => `/v1/groups/${seg(group)}/snapshots`;
const snapPath = (ref: GroupSnapRef) => `${snapsPath(ref.group)}/${seg(ref.snapshot)}`;
const label = (ref: GroupSnapRef) => `${ref.group}@${ref.snapshot}`;

function details(s: GroupSnapshotJson): string {
  return keyValues([
    ['group snapshot', `${s.group}@${s.name}`],
    ['id', s.id],
    ['state', s.state],
    ['members', s.members.length === 0 ? '-' : s.members.map((m) => `${m.pool}/${m.volume}@${m.snapshot}`).join(', ')],
    ['created', s.createdAt],
  ]);
}

/** A subcommand taking one GROUP@SNAPSHOT. */
function onSnapshot(name: string, summary: string, help: string, run: (ref: GroupSnapRef, argv: string[], con: Console, command: string) => Promise<number>): Subcommand {
  return subcommand(name, summary, help, async (argv, con) => {
    const command = `group snap ${name}`;
    const args = parse(argv, command);
    const [text] = positionals(args, command, ['GROUP@SNAPSHOT']) as [string];
    return run(parseGroupSnapRef(text, command), argv, con, command);
  });
}

const create = onSnapshot(
  'create',
  'snapshot every member of a group at one instant',
  `Usage: strata group snap create GROUP@SNAPSHOT

Pauses the exports (NBD and vhost-user) of every member at once, waits for their requests in
flight, gives each member the snapshot group.GROUP.SNAPSHOT, and resumes them: a write completed
on one member before another started is never in the second's snapshot without the first's.
After a crash either every member has the snapshot or none has.
`,
  async (ref, argv, con, command) => {
    const args = parse(argv, command);
    const snap = await clientOf(args).json<GroupSnapshotJson>('POST', snapsPath(ref.group), `cannot create group snapshot '${label(ref)}'`, { name: ref.snapshot });
    if (wantsJson(args)) printJson(con, snap);
    else con.stdout(`Group snapshot '${label(ref)}' created (${snap.members.length} members).\n`);
    return 0;
  },
);

const list = subcommand(
  'list',
  "list a group's snapshots",
  `Usage: strata group snap list GROUP

Lists the group's snapshots, oldest first: name, state, members, creation time.
`,
  async (argv, con) => {
    const command = 'group snap list';
    const args = parse(argv, command);
    const [group] = positionals(args, command, ['GROUP']) as [string];
    checkName(group, 'group', command);
    const snaps = await clientOf(args).json<GroupSnapshotJson[]>('GET', snapsPath(group), `cannot list the snapshots of group '${group}'`);
    if (wantsJson(args)) printJson(con, snaps);
    else con.stdout(table(['NAME', 'STATE', 'MEMBERS', 'CREATED'], snaps.map((s) => [s.name, s.state, String(s.members.length), s.createdAt])));
    return 0;
  },
);

const info = onSnapshot('info', 'show a group snapshot and its members\' snapshots', 'Usage: strata group snap info GROUP@SNAPSHOT\n', async (ref, argv, con, command) => {
  const args = parse(argv, command);
  const snap = await clientOf(args).json<GroupSnapshotJson>('GET', snapPath(ref), `cannot describe group snapshot '${label(ref)}'`);
  if (wantsJson(args)) printJson(con, snap);
  else con.stdout(details(snap));
  return 0;
});

const rollback = onSnapshot(
  'rollback',
  'roll every member back to a group snapshot',
  `Usage: strata group snap rollback GROUP@SNAPSHOT

Rolls every member back to its part of the group snapshot, all or none. Refused while any
member is exported: stop its exports first. Data written since the snapshot is lost.
`,
  async (ref, argv, con, command) => {
    const args = parse(argv, command);
    const group = await clientOf(args).json<GroupJson>('POST', `${snapPath(ref)}/rollback`, `cannot roll group '${ref.group}' back to '${ref.snapshot}'`);
    if (wantsJson(args)) printJson(con, group);
    else con.stdout(`Group '${ref.group}' rolled back to '${ref.snapshot}' (${group.members.length} members).\n`);
    return 0;
  },
);

const remove = onSnapshot(
  'delete',
  "delete a group snapshot and its members' snapshots",
  `Usage: strata group snap delete GROUP@SNAPSHOT

Deletes every member's snapshot group.GROUP.SNAPSHOT, then the group snapshot. A delete that was
interrupted leaves it in state 'deleting': run the delete again to finish it.
`,
  async (ref, argv, con, command) => {
    const args = parse(argv, command);
    await clientOf(args).json('DELETE', snapPath(ref), `cannot delete group snapshot '${label(ref)}'`);
    if (wantsJson(args)) printJson(con, { deleted: label(ref) });
    else con.stdout(`Group snapshot '${label(ref)}' deleted.\n`);
    return 0;
  },
);

export const GROUP_SNAP_SUBCOMMANDS: readonly Subcommand[] = [create, list, info, rollback, remove];

/** `strata group snap <subcommand> ...`: one word of the group command that dispatches again. */
export const GROUP_SNAP: Subcommand = {
  name: 'snap',
  summary: 'group snapshots: create, list, info, rollback, delete',
  help: groupHelp('group snap', 'Group snapshots: one instant of every member of a group, named GROUP@SNAPSHOT.', GROUP_SNAP_SUBCOMMANDS),
  answersHelp: true,
  async run(argv, con) {
    const [name, ...rest] = argv;
    const sub = GROUP_SNAP_SUBCOMMANDS.find((s) => s.name === name);
    if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
      con.stdout(this.help);
      return 0;
    }
    if (sub === undefined) {
      throw new UsageError(`group snap: unknown subcommand '${name}'`, `available: ${GROUP_SNAP_SUBCOMMANDS.map((s) => s.name).join(', ')}; see 'strata group snap --help'`);
    }
    if (wantsHelp(rest)) {
      con.stdout(sub.help);
      return 0;
    }
    return sub.run(rest, con);
  },
};
