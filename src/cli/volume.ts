/**
 * strata volume: create, list, info, resize, rename, delete, copy, import, export, du, flatten,
 * diff, export-diff and import-diff, through the daemon's REST API (export-nbd, unexport-nbd,
 * attach, detach and exports are in exports.ts).
 */
import { existsSync } from 'node:fs';
import { countOf } from '../core/text.js';
import type { ParsedArgs } from './args.js';
import type { Subcommand } from './command.js';
import { CliError, UsageError } from './errors.js';
import { StdoutClosedError, type Console } from './output.js';
import { EXPORT_SUBCOMMANDS } from './exports.js';
import { EVICT_SUBCOMMANDS } from './volume-evict.js';
import { VOLUME_INFO, parentText } from './volume-info.js';
import { resize } from './volume-resize.js';
import { SEAL_SUBCOMMANDS } from './volume-seal.js';
import { duTable, type DuEntryJson } from './pool.js';
import { ApiClient, query, seg } from './remote/client.js';
import {
  PROGRESS_OPTIONS,
  checkName,
  clientOf,
  groupHelp,
  parse,
  parseSize,
  parseVolumeOrSnapRef,
  parseVolumeRef,
  positionals,
  printJson,
  size,
  subcommand,
  table,
  usageHint,
  volumePath,
  waitForJob,
  wantsJson,
  type JobJson,
  type VolumeRef,
  VOLUME_SIZE_LIMIT,
} from './remote/common.js';
import { ProgressBar } from './remote/progress-bar.js';
import { EXIT } from './remote/exits.js';
import { bytePieces, importFormat, openSource, writeSparseFile, writeStdout } from './remote/streams.js';
import { readSparseStream } from '../volume/sparse-stream.js';
import { parseDuration } from './trash.js';
import { VOLUME_QOS_SUBCOMMANDS, newVolumeQos } from './qos.js';
import { QOS_LIMIT_OPTIONS } from './qos-flags.js';
import type { VolumeJson, DiffExtentJson as ExtentJson, TrashEntryJson } from '../api/rest/schemas.js';
export type { VolumeJson };

const label = (ref: VolumeRef) => `${ref.pool}/${ref.volume}`;
const WAIT_OPTIONS = [...PROGRESS_OPTIONS, { long: 'no-wait' }];

/** Prints a started job (--no-wait) or follows it to its end. */
async function runJob(con: Console, args: ParsedArgs, client: ApiClient, job: JobJson, barLabel: string, what: string, done: (job: JobJson) => Promise<void>): Promise<number> {
  if (args.has('no-wait')) {
    if (wantsJson(args)) printJson(con, job);
    else con.stdout(`Job ${job.id} started (${job.kind} ${job.target}); follow it with 'strata job watch ${job.id}'.\n`);
    return 0;
  }
  const bar = new ProgressBar(con, ProgressBar.enabled(args), barLabel, job.totalBytes || undefined);
  const final = await waitForJob(client, job, bar, what);
  await done(final);
  return 0;
}

const create = subcommand(
  'create',
  'create a thin volume',
  `Usage: strata volume create [POOL/]VOLUME SIZE [--qos-policy NAME] [QoS limits]

Creates a thin-provisioned volume of SIZE (k, M, G, T, P suffixes; binary). The pool defaults
to 'default'. --qos-policy attaches a QoS policy; the limits of 'strata volume qos set'
(--read-iops N, --write-bps SIZE, ...) set its own (docs/qos.md).
`,
  async (argv, con) => {
    const command = 'volume create';
    const args = parse(argv, command, [...QOS_LIMIT_OPTIONS, { long: 'qos-policy', value: true }]);
    const [name, sizeText] = positionals(args, command, ['VOLUME', 'SIZE']) as [string, string];
    const ref = parseVolumeRef(name, command);
    const sizeBytes = parseSize(sizeText, 'size', command, VOLUME_SIZE_LIMIT);
    if (sizeBytes === 0) throw new UsageError(`${command}: the size must be more than 0`, usageHint(command));
    const vol = await clientOf(args).json<VolumeJson>('POST', `/v1/pools/${seg(ref.pool)}/volumes`, `cannot create volume '${label(ref)}'`, {
      name: ref.volume,
      sizeBytes,
      ...newVolumeQos(args, command),
    });
    if (wantsJson(args)) printJson(con, vol);
    else con.stdout(`Volume '${vol.pool}/${vol.name}' created (${size(vol.provisionedBytes)}).\n`);
    return 0;
  },
);

const list = subcommand(
  'list',
  'list the volumes of a pool',
  `Usage: strata volume list [POOL]

Lists the volumes of POOL (default: 'default'), or of every pool with --all.

Options:
  -a, --all   every pool
`,
  async (argv, con) => {
    const command = 'volume list';
    const args = parse(argv, command, [{ short: 'a', long: 'all' }]);
    const [poolArg] = positionals(args, command, ['POOL'], 1);
    if (poolArg !== undefined && args.has('all')) throw new UsageError(`${command}: give a POOL or --all, not both`, usageHint(command));
    const client = clientOf(args);
    let pools: string[];
    if (args.has('all')) pools = (await client.json<Array<{ name: string }>>('GET', '/v1/pools', 'cannot list pools')).map((p) => p.name);
    else pools = [checkName(poolArg ?? 'default', 'pool', command)];
    const volumes: VolumeJson[] = [];
    for (const pool of pools) volumes.push(...(await client.json<VolumeJson[]>('GET', `/v1/pools/${seg(pool)}/volumes`, `cannot list the volumes of pool '${pool}'`)));
    if (wantsJson(args)) printJson(con, volumes);
    else {
      con.stdout(
        table(
          ['POOL', 'NAME', 'SIZE', 'ALLOCATED', 'SNAPSHOTS', 'DEPTH', 'PARENT'],
          volumes.map((v) => [v.pool, v.name, size(v.provisionedBytes), size(v.allocatedBytes), String(v.snapshotCount), String(v.chainDepth), parentText(v)]),
        ),
      );
    }
    return 0;
  },
);

const rename = subcommand(
  'rename',
  'rename a volume',
  `Usage: strata volume rename [POOL/]VOLUME NEWNAME

Renames a volume within its pool (only the catalog changes; the layer files stay).
`,
  async (argv, con) => {
    const command = 'volume rename';
    const args = parse(argv, command);
    const [name, newText] = positionals(args, command, ['VOLUME', 'NEWNAME']) as [string, string];
    const ref = parseVolumeRef(name, command);
    let newName = newText;
    if (newText.includes('/')) {
      const dest = parseVolumeRef(newText, command);
      if (dest.pool !== ref.pool) throw new UsageError(`${command}: a volume cannot be renamed into another pool`, "use 'strata volume copy' to copy it there");
      newName = dest.volume;
    }
    checkName(newName, 'volume', command);
    const vol = await clientOf(args).json<VolumeJson>('PATCH', volumePath(ref), `cannot rename volume '${label(ref)}'`, { name: newName });
    if (wantsJson(args)) printJson(con, vol);
    else con.stdout(`Volume '${label(ref)}' renamed to '${vol.pool}/${vol.name}'.\n`);
    return 0;
  },
);

const del = subcommand(
  'delete',
  "delete a volume to its pool's trash, or at once with --now",
  `Usage: strata volume delete [POOL/]VOLUME [--expires-in DURATION]
       strata volume delete [POOL/]VOLUME --now [--force]

Moves a volume to its pool's trash: its name is free at once; its data and snapshots stay (clones
of them keep reading) until it expires and the daemon purges it. 'strata trash restore' brings
it back, 'strata trash purge' deletes it sooner. An exported or attached volume is refused.

With --now it is deleted at once: one with snapshots needs --force (which deletes them too); one
whose snapshots have clones cannot be deleted until the clones are flattened or deleted.

Options:
  --expires-in DURATION   how long it stays in the trash (e.g. 30m, 12h, 7d; default 7d)
  --now                   delete it at once, not to the trash
  -f, --force             with --now: delete the volume's snapshots as well
`,
  async (argv, con) => {
    const command = 'volume delete';
    const args = parse(argv, command, [{ short: 'f', long: 'force' }, { long: 'now' }, { long: 'expires-in', value: true }]);
    const [name] = positionals(args, command, ['VOLUME']) as [string];
    const ref = parseVolumeRef(name, command);
    const expiresIn = args.value('expires-in');
    if (!args.has('now')) {
      if (args.has('force')) throw new UsageError(`${command}: --force goes with --now`, 'a volume in the trash keeps its snapshots; add --now to delete them with it at once');
      const body = expiresIn === undefined ? {} : { expiresInSeconds: parseDuration(expiresIn, 'duration', command) / 1000 };
      const entry = await clientOf(args).json<TrashEntryJson>('POST', `${volumePath(ref)}/trash`, `cannot delete volume '${label(ref)}'`, body);
      if (wantsJson(args)) printJson(con, entry);
      else con.stdout(`Volume '${label(ref)}' moved to the trash as ${entry.id} (purged after ${entry.expiresAt}).\n`);
      return 0;
    }
    if (expiresIn !== undefined) throw new UsageError(`${command}: --expires-in goes without --now`, 'choose one');
    await clientOf(args).json('DELETE', `${volumePath(ref)}${query({ force: args.has('force') ? true : undefined })}`, `cannot delete volume '${label(ref)}'`);
    if (wantsJson(args)) printJson(con, { deleted: label(ref) });
    else con.stdout(`Volume '${label(ref)}' deleted.\n`);
    return 0;
  },
);

const copy = subcommand(
  'copy',
  'copy a volume into a new independent volume (a job)',
  `Usage: strata volume copy [POOL/]VOLUME [POOL/]NEWVOLUME [--no-wait] [-p]

Copies the volume's current contents into a new volume that shares nothing with it. Runs as a
job: the command follows it with a progress bar unless --no-wait.

Options:
  --no-wait          print the job and return at once
  -p, --progress     show the progress bar even when stderr is not a terminal
  --no-progress      never show it
`,
  async (argv, con) => {
    const command = 'volume copy';
    const args = parse(argv, command, WAIT_OPTIONS);
    const [src, dst] = positionals(args, command, ['VOLUME', 'NEWVOLUME']) as [string, string];
    const from = parseVolumeRef(src, command);
    const to = parseVolumeRef(dst, command);
    const client = clientOf(args);
    const what = `cannot copy volume '${label(from)}' to '${label(to)}'`;
    const job = await client.json<JobJson>('POST', `${volumePath(from)}/copy`, what, { pool: to.pool, name: to.volume });
    return runJob(con, args, client, job, 'copying', what, async (final) => {
      if (wantsJson(args)) printJson(con, await client.json<VolumeJson>('GET', volumePath(to), what));
      else con.stdout(`Volume '${label(from)}' copied to '${label(to)}' (${size(final.doneBytes)} copied).\n`);
    });
  },
);

const flatten = subcommand(
  'flatten',
  'copy up a clone\'s parent data so it stands alone (a job)',
  `Usage: strata volume flatten [POOL/]VOLUME [--no-wait] [-p]

Copies every cluster the clone still reads from its parent snapshot into the clone, then drops
the dependency (the snapshot can be unprotected and deleted afterwards). Runs as a job; a
cancelled flatten leaves a valid, partly copied-up clone.

Options:
  --no-wait          print the job and return at once
  -p, --progress     show the progress bar even when stderr is not a terminal
  --no-progress      never show it
`,
  async (argv, con) => {
    const command = 'volume flatten';
    const args = parse(argv, command, WAIT_OPTIONS);
    const [name] = positionals(args, command, ['VOLUME']) as [string];
    const ref = parseVolumeRef(name, command);
    const client = clientOf(args);
    const what = `cannot flatten volume '${label(ref)}'`;
    const job = await client.json<JobJson>('POST', `${volumePath(ref)}/flatten`, what);
    return runJob(con, args, client, job, 'flattening', what, async () => {
      if (wantsJson(args)) printJson(con, await client.json<VolumeJson>('GET', volumePath(ref), what));
      else con.stdout(`Volume '${label(ref)}' flattened.\n`);
    });
  },
);

const importCmd = subcommand(
  'import',
  'create a volume from a raw or qcow2 image (file or stdin)',
  `Usage: strata volume import FILE|- [POOL/]VOLUME [--format raw|qcow2] [--size SIZE] [-p]

Creates VOLUME from an image file, or from stdin with '-'. Zero blocks are not stored.

Options:
  --format raw|qcow2   the input's format (default: detected; VMDK, VDI, VHD, compressed and
                       tar files are refused: --format raw takes their bytes as they are)
  --size SIZE          the volume's size (raw input; default: the input's length)
  -p, --progress       show the progress bar even when stderr is not a terminal
  --no-progress        never show it
`,
  async (argv, con) => {
    const command = 'volume import';
    const args = parse(argv, command, [...PROGRESS_OPTIONS, { long: 'format', value: true }, { long: 'size', value: true }]);
    const [file, name] = positionals(args, command, ['FILE', 'VOLUME']) as [string, string];
    const ref = parseVolumeRef(name, command);
    const format = args.value('format');
    if (format !== undefined && format !== 'raw' && format !== 'qcow2') throw new UsageError(`${command}: --format must be raw or qcow2, not '${format}'`, usageHint(command));
    const sizeText = args.value('size');
    const sizeBytes = sizeText === undefined ? undefined : parseSize(sizeText, 'size', command, VOLUME_SIZE_LIMIT);
    const client = clientOf(args);
    const bar = new ProgressBar(con, ProgressBar.enabled(args), 'importing', undefined);
    let readBytes = 0;
    const source = await openSource(file, (n) => ((readBytes += n), bar.add(n)), { sparse: true });
    bar.setTotal(source.sizeBytes);
    const what = `cannot import ${source.describe} into volume '${label(ref)}'`;
    const effective = importFormat(source, format, what, file, label(ref));
    const vol = await upload(client, `${volumePath(ref)}/content${query({ format: effective, sizeBytes, transfer: source.transfer })}`, source, bar, what);
    if (wantsJson(args)) printJson(con, vol);
    else con.stdout(`Imported ${source.describe} (${effective}) into volume '${vol.pool}/${vol.name}' (${size(vol.provisionedBytes)}, ${size(vol.allocatedBytes)} allocated).\n`);
    // A raw input that is not whole sectors is rounded up, as qemu-img does: said, since an export
    // of the volume gives back more bytes than went in.
    const inputBytes = source.sizeBytes ?? readBytes;
    if (effective === 'raw' && sizeBytes === undefined && vol.provisionedBytes !== inputBytes) {
      con.stderr(`strata: note: the input's ${inputBytes} bytes are not whole 512-byte sectors: volume '${vol.pool}/${vol.name}' is ${vol.provisionedBytes} bytes, the last ${vol.provisionedBytes - inputBytes} read as zeros\n`);
    }
    return 0;
  },
);

/** Downloads GET path into FILE or stdout, with the progress bar; returns the bytes written. */
/** PUTs a byte stream (import, import-diff) with a progress bar; returns the volume it produced. */
async function upload(
  client: ApiClient,
  path: string,
  source: Awaited<ReturnType<typeof openSource>>,
  bar: ProgressBar,
  what: string,
): Promise<VolumeJson> {
  try {
    const res = await client.request('PUT', path, { body: source.stream, contentType: 'application/octet-stream' });
    if (res.status >= 400) throw await client.failure(res, what);
    const vol = JSON.parse(await ApiClient.text(res)) as VolumeJson;
    bar.finish();
    return vol;
  } catch (err) {
    bar.abort();
    source.stream.destroy();
    throw err;
  }
}

async function download(con: Console, args: ParsedArgs, client: ApiClient, path: string, dest: string, what: string, barLabel: string): Promise<number> {
  if (dest === '-' && process.stdout.isTTY && !args.has('force')) {
    throw new CliError('refusing to write image data to a terminal', { hint: "redirect stdout, or name a file instead of '-'", exitCode: EXIT.USAGE });
  }
  if (dest !== '-' && !args.has('force')) {
    if (existsSync(dest)) throw new CliError(`${what}: '${dest}' already exists`, { hint: 'choose another file, or pass --force to overwrite it', exitCode: EXIT.CONFLICT });
  }
  const res = await client.request('GET', path);
  if (res.status >= 400) throw await client.failure(res, what);
  const header = res.headers['x-strata-size-bytes'];
  const rawLength = res.headers['x-strata-format'] === 'raw' && typeof header === 'string' ? Number(header) : undefined;
  const bar = new ProgressBar(con, ProgressBar.enabled(args), barLabel, rawLength);
  let written: number;
  try {
    // A sparse stream names the runs of zeroes instead of sending them (sparse-stream.ts).
    const pieces = res.headers['x-strata-transfer'] === 'sparse' ? (await readSparseStream(res.body)).pieces : bytePieces(res.body);
    written =
      dest === '-'
        ? await writeStdout(pieces, (n) => bar.add(n))
        : await writeSparseFile(dest, pieces, args.has('force'), (n) => bar.add(n));
  } catch (err) {
    bar.abort();
    if (err instanceof CliError) throw err;
    res.body.destroy();
    // Unlike a listing cut short by `| head`, an image cut short is a failed export: a pipeline
    // (`set -o pipefail`) must not take it for a whole one.
    if (err instanceof StdoutClosedError) {
      throw new CliError(`${what}: stdout was closed before the export ended`, { hint: 'the command reading the output stopped early; the image it got is incomplete', exitCode: EXIT.ERROR });
    }
    throw new CliError(`${what}: the transfer failed: ${(err as Error).message}`, { hint: "see the daemon's log; run the command again", exitCode: EXIT.ERROR });
  }
  if (rawLength !== undefined && written !== rawLength) {
    bar.abort();
    throw new CliError(`${what}: the daemon sent ${written} of ${rawLength} bytes`, { hint: "the transfer was cut short; see the daemon's log", exitCode: EXIT.ERROR });
  }
  bar.finish();
  return written;
}

const exportCmd = subcommand(
  'export',
  "write a volume's or snapshot's contents to a file or stdout",
  `Usage: strata volume export [POOL/]VOLUME[@SNAPSHOT] FILE|- [--format raw|qcow2] [-p]

Writes the volume's (or the snapshot's) contents to FILE, or to stdout with '-': raw bytes
(a sparse file) or a standalone qcow2 image.

Options:
  --format raw|qcow2   output format (default raw)
  -f, --force          overwrite FILE if it exists
  -p, --progress       show the progress bar even when stderr is not a terminal
  --no-progress        never show it
`,
  async (argv, con) => {
    const command = 'volume export';
    const args = parse(argv, command, [...PROGRESS_OPTIONS, { long: 'format', value: true }, { short: 'f', long: 'force' }]);
    const [name, dest] = positionals(args, command, ['VOLUME', 'FILE']) as [string, string];
    const ref = parseVolumeOrSnapRef(name, command);
    const format = args.value('format') ?? 'raw';
    if (format !== 'raw' && format !== 'qcow2') throw new UsageError(`${command}: --format must be raw or qcow2, not '${format}'`, usageHint(command));
    const client = clientOf(args);
    const what = `cannot export '${name}'`;
    const path = `${volumePath(ref)}/content${query({ format, snapshot: ref.snapshot, transfer: 'sparse' })}`;
    const written = await download(con, args, client, path, dest, what, 'exporting');
    if (dest !== '-') {
      if (wantsJson(args)) printJson(con, { source: name, file: dest, format, bytes: written });
      else con.stdout(`Exported '${name}' to '${dest}' (${format}, ${size(written)}).\n`);
    }
    return 0;
  },
);

const du = subcommand(
  'du',
  'disk usage of a volume and its snapshots',
  `Usage: strata volume du [POOL/]VOLUME

Shows the provisioned size and the host bytes of each of the volume's layers (its snapshots and
the live volume), then the totals.
`,
  async (argv, con) => {
    const command = 'volume du';
    const args = parse(argv, command);
    const [name] = positionals(args, command, ['VOLUME']) as [string];
    const ref = parseVolumeRef(name, command);
    const entries = await clientOf(args).json<DuEntryJson[]>('GET', `/v1/pools/${seg(ref.pool)}/du${query({ volume: ref.volume })}`, `cannot show the usage of volume '${label(ref)}'`);
    if (wantsJson(args)) printJson(con, entries);
    else con.stdout(duTable(entries));
    return 0;
  },
);

const RANGE_OPTIONS = [
  { long: 'from', value: true },
  { long: 'to', value: true },
];

function rangeOf(args: ParsedArgs, command: string): { from: string | undefined; to: string | undefined } {
  const from = args.value('from');
  const to = args.value('to');
  if (from !== undefined) checkName(from, 'snapshot', command);
  if (to !== undefined) checkName(to, 'snapshot', command);
  return { from, to };
}

const diff = subcommand(
  'diff',
  'list the extents changed between two snapshots',
  `Usage: strata volume diff [POOL/]VOLUME [--from SNAP] [--to SNAP]

Lists the ranges that differ between snapshot --from (default: the beginning, an empty volume)
and snapshot --to (default: the live volume), each as data or zero (like 'rbd diff').

Options:
  --from SNAP   the older snapshot
  --to SNAP     the newer snapshot
`,
  async (argv, con) => {
    const command = 'volume diff';
    const args = parse(argv, command, RANGE_OPTIONS);
    const [name] = positionals(args, command, ['VOLUME']) as [string];
    const ref = parseVolumeRef(name, command);
    const { from, to } = rangeOf(args, command);
    const extents = await clientOf(args).json<ExtentJson[]>('GET', `${volumePath(ref)}/diff${query({ from, to })}`, `cannot diff volume '${label(ref)}'`);
    if (wantsJson(args)) printJson(con, extents);
    else con.stdout(table(['OFFSET', 'LENGTH', 'TYPE'], extents.map((e) => [String(e.offset), String(e.length), e.kind])));
    return 0;
  },
);

const exportDiff = subcommand(
  'export-diff',
  'write the changes between two snapshots as a diff stream',
  `Usage: strata volume export-diff [POOL/]VOLUME [--from SNAP] [--to SNAP] FILE|-

Writes the changed extents (with their data) between --from (default: the beginning) and --to
(default: the live volume) to FILE or stdout, in Strata's diff stream format. 'strata volume
import-diff' applies it to a volume that has snapshot --from.

Options:
  --from SNAP      the older snapshot
  --to SNAP        the newer snapshot
  -f, --force      overwrite FILE if it exists
  -p, --progress   show the progress bar even when stderr is not a terminal
  --no-progress    never show it
`,
  async (argv, con) => {
    const command = 'volume export-diff';
    const args = parse(argv, command, [...RANGE_OPTIONS, ...PROGRESS_OPTIONS, { short: 'f', long: 'force' }]);
    const [name, dest] = positionals(args, command, ['VOLUME', 'FILE']) as [string, string];
    const ref = parseVolumeRef(name, command);
    const { from, to } = rangeOf(args, command);
    const client = clientOf(args);
    const what = `cannot export the diff of volume '${label(ref)}'`;
    const written = await download(con, args, client, `${volumePath(ref)}/diff-stream${query({ from, to })}`, dest, what, 'exporting diff');
    if (dest !== '-') {
      if (wantsJson(args)) printJson(con, { volume: label(ref), from: from ?? null, to: to ?? null, file: dest, bytes: written });
      else con.stdout(`Exported the diff of '${label(ref)}' (${from ?? 'start'} to ${to ?? 'now'}) to '${dest}' (${size(written)}).\n`);
    }
    return 0;
  },
);

const importDiff = subcommand(
  'import-diff',
  'apply a diff stream to a volume and take its snapshot',
  `Usage: strata volume import-diff FILE|- [POOL/]VOLUME [-p]

Applies a diff stream (from 'strata volume export-diff') to VOLUME, which must have the
stream's from-snapshot, then takes its to-snapshot.

Options:
  -p, --progress   show the progress bar even when stderr is not a terminal
  --no-progress    never show it
`,
  async (argv, con) => {
    const command = 'volume import-diff';
    const args = parse(argv, command, PROGRESS_OPTIONS);
    const [file, name] = positionals(args, command, ['FILE', 'VOLUME']) as [string, string];
    const ref = parseVolumeRef(name, command);
    const client = clientOf(args);
    const bar = new ProgressBar(con, ProgressBar.enabled(args), 'importing diff', undefined);
    const source = await openSource(file, (n) => bar.add(n));
    bar.setTotal(source.sizeBytes);
    const what = `cannot import the diff ${source.describe} into volume '${label(ref)}'`;
    const vol = await upload(client, `${volumePath(ref)}/diff-stream`, source, bar, what);
    if (wantsJson(args)) printJson(con, vol);
    else con.stdout(`Applied the diff ${source.describe} to volume '${vol.pool}/${vol.name}' (${countOf(vol.snapshotCount, 'snapshot')} now).\n`);
    return 0;
  },
);

export const VOLUME_SUBCOMMANDS: readonly Subcommand[] = [
  create,
  list,
  VOLUME_INFO,
  resize,
  rename,
  del,
  copy,
  importCmd,
  exportCmd,
  du,
  flatten,
  diff,
  exportDiff,
  importDiff,
  ...EXPORT_SUBCOMMANDS,
  ...EVICT_SUBCOMMANDS,
  ...SEAL_SUBCOMMANDS,
  ...VOLUME_QOS_SUBCOMMANDS,
];

export function volumeHelp(): string {
  return groupHelp(
    'volume',
    "Volumes: thin qcow2 volumes in a pool, named [POOL/]VOLUME (the pool defaults to 'default').",
    VOLUME_SUBCOMMANDS,
  );
}
