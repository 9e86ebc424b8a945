/**
 * strata trash: list, restore and purge the volumes `strata volume delete` moved to their pool's
 * trash (RBD's `rbd trash`), through the daemon's REST API; and the DURATION of
 * `volume delete --expires-in`.
 */
import { countOf } from '../core/text.js';
import type { Subcommand } from './command.js';
import { UsageError } from './errors.js';
import { seg } from './remote/client.js';
import { checkName, clientOf, groupHelp, parse, positionals, printJson, size, subcommand, table, wantsJson } from './remote/common.js';
import type { TrashEntryJson, VolumeJson } from '../api/rest/schemas.js';

const SECOND_MS = 1000;
const DURATION_UNITS_MS: Readonly<Record<string, number>> = { ms: 1, s: SECOND_MS, m: 60 * SECOND_MS, h: 3600 * SECOND_MS, d: 24 * 3600 * SECOND_MS, w: 7 * 24 * 3600 * SECOND_MS };

/** "90s", "30m", "12h", "7d", "2w", "500ms" (a bare number is seconds) as milliseconds. */
export function parseDuration(text: string, what: string, command: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)?$/.exec(text.trim());
  const unitMs = match === null ? undefined : DURATION_UNITS_MS[match[2] ?? 's'];
  if (match === null || unitMs === undefined) {
    throw new UsageError(`${command}: invalid ${what} '${text}'`, 'give a number with a unit: ms, s, m, h, d or w (e.g. 30m, 12h, 7d)');
  }
  return Number(match[1]) * unitMs;
}

const trashPath = (pool: string) => `/v1/pools/${seg(pool)}/trash`;
const checkId = (id: string, command: string) => {
  if (!/^[A-Za-z0-9]{1,128}$/.test(id)) throw new UsageError(`${command}: invalid trash id '${id}'`, "use an id that 'strata trash list' shows");
  return id;
};

function trashTable(entries: readonly TrashEntryJson[]): string {
  return table(
    ['ID', 'POOL', 'NAME', 'SIZE', 'SNAPSHOTS', 'DELETED', 'EXPIRES'],
    entries.map((e) => [e.id, e.pool, e.name, size(e.sizeBytes), String(e.snapshotCount), e.deletedAt, e.expiresAt]),
  );
}

const list = subcommand(
  'list',
  "list the volumes in a pool's trash (or every pool's)",
  `Usage: strata trash list [POOL]

Lists the volumes deleted to the trash: id, pool, the name they had, size, snapshots, when they
were deleted and when the daemon purges them.
`,
  async (argv, con) => {
    const command = 'trash list';
    const args = parse(argv, command);
    const [pool] = positionals(args, command, ['POOL'], 1) as [string | undefined];
    if (pool !== undefined) checkName(pool, 'pool', command);
    const route = pool === undefined ? '/v1/trash' : trashPath(pool);
    const entries = await clientOf(args).json<TrashEntryJson[]>('GET', route, pool === undefined ? 'cannot list the trash' : `cannot list the trash of pool '${pool}'`);
    if (wantsJson(args)) printJson(con, entries);
    else con.stdout(trashTable(entries));
    return 0;
  },
);

const restore = subcommand(
  'restore',
  'bring a volume back from the trash',
  `Usage: strata trash restore POOL ID [--name NEW]

Restores the volume with id ID (see 'strata trash list') under the name it had, or under NEW.
It gets its data and snapshots back as they were when it was deleted.

Options:
  --name NEW   the name to restore it under (needed when its old name is in use again)
`,
  async (argv, con) => {
    const command = 'trash restore';
    const args = parse(argv, command, [{ long: 'name', value: true }]);
    const [pool, idText] = positionals(args, command, ['POOL', 'ID']) as [string, string];
    checkName(pool, 'pool', command);
    const id = checkId(idText, command);
    const name = args.value('name');
    if (name !== undefined) checkName(name, 'volume', command);
    const vol = await clientOf(args).json<VolumeJson>('POST', `${trashPath(pool)}/${seg(id)}/restore`, `cannot restore ${id} from the trash of pool '${pool}'`, name === undefined ? {} : { name });
    if (wantsJson(args)) printJson(con, vol);
    else con.stdout(`Volume '${vol.pool}/${vol.name}' restored from the trash.\n`);
    return 0;
  },
);

const purge = subcommand(
  'purge',
  'delete volumes in the trash now',
  `Usage: strata trash purge POOL [ID] [--expired]

Deletes the volume with id ID from the pool's trash now, or with no ID every volume in it
(--expired: only those whose time is up). A volume whose snapshots still have clones is refused
(the clones are named): flatten or delete them first. Nothing is purged when one is refused.

Options:
  --expired   only the volumes that have expired (what the daemon purges on its own)
`,
  async (argv, con) => {
    const command = 'trash purge';
    const args = parse(argv, command, [{ long: 'expired' }]);
    const [pool, idText] = positionals(args, command, ['POOL', 'ID'], 1) as [string, string | undefined];
    checkName(pool, 'pool', command);
    const client = clientOf(args);
    if (idText !== undefined) {
      if (args.has('expired')) throw new UsageError(`${command}: --expired goes without an ID`, 'give an ID or --expired, not both');
      const id = checkId(idText, command);
      await client.json('DELETE', `${trashPath(pool)}/${seg(id)}`, `cannot purge ${id} from the trash of pool '${pool}'`);
      if (wantsJson(args)) printJson(con, { purged: id });
      else con.stdout(`Volume ${id} purged from the trash of pool '${pool}'.\n`);
      return 0;
    }
    const purged = await client.json<TrashEntryJson[]>('POST', `${trashPath(pool)}/purge`, `cannot purge the trash of pool '${pool}'`, { expired: args.has('expired') });
    if (wantsJson(args)) printJson(con, purged);
    else con.stdout(`Purged ${countOf(purged.length, 'volume')} from the trash of pool '${pool}'.\n${purged.length > 0 ? trashTable(purged) : ''}`);
    return 0;
  },
);

export const TRASH_SUBCOMMANDS: readonly Subcommand[] = [list, restore, purge];

export function trashHelp(): string {
  return groupHelp(
    'trash',
    "The trash: 'strata volume delete' moves a volume there; the daemon purges it when it expires.",
    TRASH_SUBCOMMANDS,
  );
}
