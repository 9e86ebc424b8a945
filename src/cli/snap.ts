/**
 * strata snap: create, list, info, rename, rollback, delete, protect, unprotect, limit, clone and
 * children, through the daemon's REST API. Snapshots are named [POOL/]VOLUME@SNAPSHOT.
 */
import type { Subcommand } from './command.js';
import { UsageError } from './errors.js';
import {
  checkName,
  clientOf,
  groupHelp,
  keyValues,
  locationRow,
  parse,
  parseSnapRef,
  parseVolumeRef,
  positionals,
  printJson,
  size,
  snapPath,
  subcommand,
  table,
  usageHint,
  volumePath,
  wantsJson,
  type SnapRef,
} from './remote/common.js';
import type { VolumeJson } from './volume.js';
import type { SnapshotJson } from '../api/rest/schemas.js';
export type { SnapshotJson };

const label = (ref: SnapRef) => `${ref.pool}/${ref.volume}@${ref.snapshot}`;

function snapshotDetails(s: SnapshotJson): string {
  return keyValues([
    ['snapshot', `${s.pool}/${s.volume}@${s.name}`],
    ['id', s.id],
    ['size', `${size(s.sizeBytes)} (${s.sizeBytes} bytes)`],
    ['protected', s.protected ? 'yes' : 'no'],
    ['clones', s.children.length === 0 ? '-' : s.children.join(', ')],
    ...locationRow(s.location),
    ['created', s.createdAt],
  ]);
}

/** A subcommand taking one POOL/VOL@SNAP and sending one request. */
function simple(
  name: string,
  summary: string,
  help: string,
  method: string,
  pathSuffix: string,
  body: unknown,
  verb: string,
  done: (ref: SnapRef, result: unknown) => string,
): Subcommand {
  return subcommand(name, summary, help, async (argv, con) => {
    const command = `snap ${name}`;
    const args = parse(argv, command);
    const [text] = positionals(args, command, ['SNAPSHOT']) as [string];
    const ref = parseSnapRef(text, command);
    const result = await clientOf(args).json<unknown>(method, `${snapPath(ref)}${pathSuffix}`, `cannot ${verb} snapshot '${label(ref)}'`, body);
    if (wantsJson(args)) printJson(con, result ?? { [name === 'delete' ? 'deleted' : name]: label(ref) });
    else con.stdout(done(ref, result));
    return 0;
  });
}

const create = subcommand(
  'create',
  'take a snapshot of a volume',
  `Usage: strata snap create [POOL/]VOLUME@SNAPSHOT

Takes a snapshot (O(1): the active layer is frozen and a new empty one goes on top).
`,
  async (argv, con) => {
    const command = 'snap create';
    const args = parse(argv, command);
    const [text] = positionals(args, command, ['SNAPSHOT']) as [string];
    const ref = parseSnapRef(text, command);
    const snap = await clientOf(args).json<SnapshotJson>('POST', `${volumePath(ref)}/snapshots`, `cannot create snapshot '${label(ref)}'`, { name: ref.snapshot });
    if (wantsJson(args)) printJson(con, snap);
    else con.stdout(`Snapshot '${label(ref)}' created.\n`);
    return 0;
  },
);

const list = subcommand(
  'list',
  'list the snapshots of a volume',
  `Usage: strata snap list [POOL/]VOLUME
`,
  async (argv, con) => {
    const command = 'snap list';
    const args = parse(argv, command);
    const [text] = positionals(args, command, ['VOLUME']) as [string];
    const ref = parseVolumeRef(text, command);
    const snaps = await clientOf(args).json<SnapshotJson[]>('GET', `${volumePath(ref)}/snapshots`, `cannot list the snapshots of '${ref.pool}/${ref.volume}'`);
    if (wantsJson(args)) printJson(con, snaps);
    else {
      con.stdout(
        table(
          ['NAME', 'SIZE', 'PROTECTED', 'CLONES', 'CREATED'],
          snaps.map((s) => [s.name, size(s.sizeBytes), s.protected ? 'yes' : 'no', String(s.children.length), s.createdAt]),
        ),
      );
    }
    return 0;
  },
);

const info = subcommand(
  'info',
  "show a snapshot's details",
  `Usage: strata snap info [POOL/]VOLUME@SNAPSHOT
`,
  async (argv, con) => {
    const command = 'snap info';
    const args = parse(argv, command);
    const [text] = positionals(args, command, ['SNAPSHOT']) as [string];
    const ref = parseSnapRef(text, command);
    const snap = await clientOf(args).json<SnapshotJson>('GET', snapPath(ref), `cannot show snapshot '${label(ref)}'`);
    if (wantsJson(args)) printJson(con, snap);
    else con.stdout(snapshotDetails(snap));
    return 0;
  },
);

const rename = subcommand(
  'rename',
  'rename a snapshot',
  `Usage: strata snap rename [POOL/]VOLUME@SNAPSHOT NEWNAME
`,
  async (argv, con) => {
    const command = 'snap rename';
    const args = parse(argv, command);
    const [text, newText] = positionals(args, command, ['SNAPSHOT', 'NEWNAME']) as [string, string];
    const ref = parseSnapRef(text, command);
    let newName = newText;
    if (newText.includes('@')) {
      const dest = parseSnapRef(newText, command);
      if (dest.pool !== ref.pool || dest.volume !== ref.volume) throw new UsageError(`${command}: a snapshot stays with its volume`, 'give the new name alone');
      newName = dest.snapshot;
    }
    checkName(newName, 'snapshot', command);
    const snap = await clientOf(args).json<SnapshotJson>('PATCH', snapPath(ref), `cannot rename snapshot '${label(ref)}'`, { name: newName });
    if (wantsJson(args)) printJson(con, snap);
    else con.stdout(`Snapshot '${label(ref)}' renamed to '${snap.name}'.\n`);
    return 0;
  },
);

const rollback = simple(
  'rollback',
  'roll a volume back to a snapshot',
  `Usage: strata snap rollback [POOL/]VOLUME@SNAPSHOT

Discards the volume's changes since the snapshot (later snapshots stay).
`,
  'POST',
  '/rollback',
  undefined,
  'roll back to',
  (ref) => `Volume '${ref.pool}/${ref.volume}' rolled back to snapshot '${ref.snapshot}'.\n`,
);

const del = simple(
  'delete',
  'delete a snapshot (its data merges into its children)',
  `Usage: strata snap delete [POOL/]VOLUME@SNAPSHOT

Deletes a snapshot; what later snapshots, the volume and clones read does not change. A
protected snapshot cannot be deleted (exit status 4).
`,
  'DELETE',
  '',
  undefined,
  'delete',
  (ref) => `Snapshot '${label(ref)}' deleted.\n`,
);

const protect = simple(
  'protect',
  'protect a snapshot (needed to clone it; it cannot be deleted)',
  `Usage: strata snap protect [POOL/]VOLUME@SNAPSHOT
`,
  'PATCH',
  '',
  { protected: true },
  'protect',
  (ref) => `Snapshot '${label(ref)}' protected.\n`,
);

const unprotect = simple(
  'unprotect',
  'unprotect a snapshot (refused while it has clones)',
  `Usage: strata snap unprotect [POOL/]VOLUME@SNAPSHOT
`,
  'PATCH',
  '',
  { protected: false },
  'unprotect',
  (ref) => `Snapshot '${label(ref)}' unprotected.\n`,
);

const limit = subcommand(
  'limit',
  "set or clear a volume's snapshot limit",
  `Usage: strata snap limit [POOL/]VOLUME N|none

At most N snapshots of the volume may exist ('none' clears the limit).
`,
  async (argv, con) => {
    const command = 'snap limit';
    const args = parse(argv, command);
    const [text, n] = positionals(args, command, ['VOLUME', 'LIMIT']) as [string, string];
    const ref = parseVolumeRef(text, command);
    let snapshotLimit: number | null;
    if (n === 'none') snapshotLimit = null;
    else if (/^\d+$/.test(n) && Number.isSafeInteger(Number(n))) snapshotLimit = Number(n);
    else throw new UsageError(`${command}: the limit must be a number or 'none', not '${n}'`, usageHint(command));
    const vol = await clientOf(args).json<VolumeJson>('PATCH', volumePath(ref), `cannot set the snapshot limit of '${ref.pool}/${ref.volume}'`, { snapshotLimit });
    if (wantsJson(args)) printJson(con, vol);
    else con.stdout(vol.snapshotLimit === null ? `Volume '${ref.pool}/${ref.volume}' has no snapshot limit now.\n` : `Volume '${ref.pool}/${ref.volume}' snapshot limit set to ${vol.snapshotLimit}.\n`);
    return 0;
  },
);

const clone = subcommand(
  'clone',
  'clone a protected snapshot into a new volume',
  `Usage: strata snap clone [POOL/]VOLUME@SNAPSHOT [POOL/]NEWVOLUME

Creates NEWVOLUME as a copy-on-write clone of the snapshot, which must be protected. The
clone depends on the snapshot until 'strata volume flatten' copies its data up.
`,
  async (argv, con) => {
    const command = 'snap clone';
    const args = parse(argv, command);
    const [text, dest] = positionals(args, command, ['SNAPSHOT', 'NEWVOLUME']) as [string, string];
    const ref = parseSnapRef(text, command);
    const to = parseVolumeRef(dest, command);
    const vol = await clientOf(args).json<VolumeJson>('POST', `${snapPath(ref)}/clones`, `cannot clone snapshot '${label(ref)}'`, { pool: to.pool, name: to.volume });
    if (wantsJson(args)) printJson(con, vol);
    else con.stdout(`Snapshot '${label(ref)}' cloned to volume '${vol.pool}/${vol.name}'.\n`);
    return 0;
  },
);

const children = subcommand(
  'children',
  'list the clones of a snapshot',
  `Usage: strata snap children [POOL/]VOLUME@SNAPSHOT
`,
  async (argv, con) => {
    const command = 'snap children';
    const args = parse(argv, command);
    const [text] = positionals(args, command, ['SNAPSHOT']) as [string];
    const ref = parseSnapRef(text, command);
    const clones = await clientOf(args).json<VolumeJson[]>('GET', `${snapPath(ref)}/children`, `cannot list the clones of '${label(ref)}'`);
    if (wantsJson(args)) printJson(con, clones);
    else con.stdout(clones.map((c) => `${c.pool}/${c.name}\n`).join(''));
    return 0;
  },
);

export const SNAP_SUBCOMMANDS: readonly Subcommand[] = [create, list, info, rename, rollback, del, protect, unprotect, limit, clone, children];

export function snapHelp(): string {
  return groupHelp('snap', 'Snapshots of volumes, named [POOL/]VOLUME@SNAPSHOT; protected snapshots can be cloned.', SNAP_SUBCOMMANDS);
}
