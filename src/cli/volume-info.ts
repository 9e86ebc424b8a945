/**
 * strata volume info: a volume's details, and who uses it now: its NBD exports and vhost-user
 * attachment with their clients (what `rbd status` tells a Ceph operator before a delete or a
 * detach).
 */
import type { Subcommand } from './command.js';
import type { ExportJson } from './exports.js';
import { clientOf, keyValues, locationRow, parse, parseVolumeRef, positionals, printJson, size, subcommand, volumePath, wantsJson } from './remote/common.js';
import type { VolumeJson } from '../api/rest/schemas.js';

export const parentText = (v: VolumeJson): string => (v.parent === null ? '-' : `${v.parent.pool}/${v.parent.volume}@${v.parent.snapshot}`);

/** One export as `volume info` lists it: kind, id, clients (and the snapshot it serves, if any). */
function exportSummary(e: ExportJson): string {
  const clients = `${e.clients} client${e.clients === 1 ? '' : 's'}`;
  const since = e.connectedSince === null ? '' : ` since ${e.connectedSince}`;
  const waiting = e.waitingForSpace > 0 ? `, ${e.waitingForSpace} request${e.waitingForSpace === 1 ? '' : 's'} waiting for space (the pool is full)` : '';
  return `${e.type} ${e.id}${e.snapshot === null ? '' : ` (@${e.snapshot})`}: ${clients}${since}${waiting}`;
}

export function volumeDetails(v: VolumeJson, exports: readonly ExportJson[]): string {
  return keyValues([
    ['volume', `${v.pool}/${v.name}`],
    ['id', v.id],
    ['size', `${size(v.provisionedBytes)} (${v.provisionedBytes} bytes)`],
    ['allocated', size(v.allocatedBytes)],
    ['snapshots', `${v.snapshotCount}${v.snapshotLimit !== null ? ` (limit ${v.snapshotLimit})` : ''}`],
    ['parent', parentText(v)],
    ['chain depth', String(v.chainDepth)],
    ...locationRow(v.location),
    ['exports', exports.length === 0 ? 'none' : exports.map(exportSummary).join('; ')],
    ['created', v.createdAt],
  ]);
}

export const VOLUME_INFO: Subcommand = subcommand(
  'info',
  "show a volume's details and who uses it",
  `Usage: strata volume info [POOL/]VOLUME

Shows the volume's provisioned and allocated size, snapshots, parent (for clones), chain depth,
its location: the active layer's file on this host, for a local pool ('qemu-img info
--backing-chain FILE' shows the whole chain), and its exports: each NBD export (of the volume
or of one of its snapshots) and vhost-user attachment with its id and how many clients use it
now (a vhost-user attachment has 1 while QEMU is connected, with the time it connected, and
the guest's requests waiting for space when the pool is full).
With --json the volume's fields come with "exports", as 'strata volume exports --json' lists them.
`,
  async (argv, con) => {
    const command = 'volume info';
    const args = parse(argv, command);
    const [name] = positionals(args, command, ['VOLUME']) as [string];
    const ref = parseVolumeRef(name, command);
    const what = `cannot show volume '${ref.pool}/${ref.volume}'`;
    const client = clientOf(args);
    const vol = await client.json<VolumeJson>('GET', volumePath(ref), what);
    const all = await client.json<ExportJson[]>('GET', '/v1/exports', what);
    const exports = all.filter((e) => e.pool === ref.pool && e.volume === ref.volume);
    if (wantsJson(args)) printJson(con, { ...vol, exports });
    else con.stdout(volumeDetails(vol, exports));
    return 0;
  },
);

