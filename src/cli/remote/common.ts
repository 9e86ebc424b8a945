/**
 * What the daemon commands share: the global options (--url, --token, --data-dir, --json),
 * POOL/VOL@SNAP names, sizes, tables, the progress bar and waiting for jobs.
 */
import { GiB, KiB, MiB, PiB, SECTOR_SIZE_BYTES, TiB, formatSizeHuman, readSizeBytes } from '../../core/units.js';
import { MAX_VOLUME_BYTES } from '../../volume/names.js';
import { parseArgs, type OptionSpec, type ParsedArgs } from '../args.js';
import type { Subcommand } from '../command.js';
import { CliError, UsageError } from '../errors.js';
import type { Console } from '../output.js';
import { ApiClient, apiError, seg } from './client.js';
import { EXIT } from './exits.js';
import type { ProgressBar } from './progress-bar.js';
import type { JobJson } from '../../api/rest/schemas.js';
export type { JobJson };

export const DEFAULT_POOL = 'default';
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export const GLOBAL_OPTIONS: readonly OptionSpec[] = [
  { long: 'url', value: true },
  { long: 'token', value: true },
  { long: 'data-dir', value: true },
  { long: 'json' },
];

export const GLOBAL_HELP = `Global options:
  --url URL         the daemon (default $STRATA_URL, else http://127.0.0.1:7460)
  --token TOKEN     the API token (default $STRATA_TOKEN, else the token file in the data folder)
  --data-dir DIR    the daemon's data folder, for its token file (default $STRATA_DATA_DIR, else ./strata-data)
  --json            print JSON instead of tables
`;

export const EXIT_HELP = `Exit status: 0 ok, 1 error, 2 usage error, 3 not found, 4 conflict or busy,
6 unavailable (a pool's S3 tier did not answer; try again later).
`;

export const PROGRESS_OPTIONS: readonly OptionSpec[] = [
  { short: 'p', long: 'progress' },
  { long: 'no-progress' },
];

/** Parses argv with the command's options plus the global ones ("-5G" is a positional: no option is a digit). */
export function parse(argv: readonly string[], command: string, specs: readonly OptionSpec[] = []): ParsedArgs {
  return parseArgs(argv, [...GLOBAL_OPTIONS, ...specs], command, { negativeNumbers: true });
}

export function clientOf(args: ParsedArgs): ApiClient {
  return new ApiClient({ url: args.value('url'), token: args.value('token'), dataDir: args.value('data-dir') });
}

export function wantsJson(args: ParsedArgs): boolean {
  return args.has('json');
}

export function printJson(con: Console, value: unknown): void {
  con.stdout(`${JSON.stringify(value, null, 2)}\n`);
}

/** Positional arguments: exactly `names` (the last `optional` of them may be missing). */
export function positionals(args: ParsedArgs, command: string, names: readonly string[], optional = 0): string[] {
  const got = args.positionals.length;
  const required = names.length - optional;
  if (got < required) throw new UsageError(`${command}: missing ${names.slice(got, required).join(' and ')}`, `see 'strata ${command} --help'`);
  if (got > names.length) {
    throw new UsageError(`${command}: unexpected argument ${args.positionals.slice(names.length).map((p) => `'${p}'`).join(' ')}`, `see 'strata ${command} --help'`);
  }
  return args.positionals;
}

export function checkName(name: string, what: string, command: string): string {
  if (!NAME_RE.test(name)) {
    throw new UsageError(
      `${command}: '${name}' is not a valid ${what} name`,
      'names are 1 to 128 letters, digits, . _ or -, starting with a letter or digit',
    );
  }
  return name;
}

export interface VolumeRef {
  pool: string;
  volume: string;
}
export interface SnapRef extends VolumeRef {
  snapshot: string;
}

/** "POOL/VOL" or "VOL" (pool "default"). */
export function parseVolumeRef(text: string, command: string): VolumeRef {
  if (text.includes('@')) throw new UsageError(`${command}: '${text}' names a snapshot; expected POOL/VOLUME`, `see 'strata ${command} --help'`);
  const parts = text.split('/');
  if (parts.length > 2) throw new UsageError(`${command}: '${text}' is not POOL/VOLUME`, `see 'strata ${command} --help'`);
  const [a, b] = parts as [string, string | undefined];
  const pool = b === undefined ? DEFAULT_POOL : a;
  const volume = b === undefined ? a : b;
  return { pool: checkName(pool, 'pool', command), volume: checkName(volume, 'volume', command) };
}

/** "POOL/VOL@SNAP" or "VOL@SNAP". */
export function parseSnapRef(text: string, command: string): SnapRef {
  const at = text.indexOf('@');
  if (at < 0) throw new UsageError(`${command}: '${text}' names no snapshot; expected POOL/VOLUME@SNAPSHOT`, `see 'strata ${command} --help'`);
  const vol = parseVolumeRef(text.slice(0, at), command);
  return { ...vol, snapshot: checkName(text.slice(at + 1), 'snapshot', command) };
}

/** "POOL/VOL" or "POOL/VOL@SNAP". */
export function parseVolumeOrSnapRef(text: string, command: string): VolumeRef & { snapshot: string | undefined } {
  if (text.includes('@')) return parseSnapRef(text, command);
  return { ...parseVolumeRef(text, command), snapshot: undefined };
}

export function volumePath(ref: VolumeRef): string {
  return `/v1/pools/${seg(ref.pool)}/volumes/${seg(ref.volume)}`;
}

export function snapPath(ref: SnapRef): string {
  return `${volumePath(ref)}/snapshots/${seg(ref.snapshot)}`;
}

const SIZE_SYNTAX_HINT = 'use bytes or a k, M, G, T, P suffix (binary), e.g. 10G';

/** The largest size a command takes, and what it is called in messages. */
export interface SizeLimit {
  maxBytes: number;
  /** "the largest volume" */
  name: string;
  /** Sizes must be whole multiples of this (a volume's 512-byte sectors), and why, for the message. */
  multiple?: { bytes: number; why: string };
}

/** Volume sizes: what the daemon creates (volume/names.ts checkVolumeSize), refused here before anything is sent. */
export const VOLUME_SIZE_LIMIT: SizeLimit = {
  maxBytes: MAX_VOLUME_BYTES,
  name: 'the largest volume',
  multiple: { bytes: SECTOR_SIZE_BYTES, why: `a volume is made of ${SECTOR_SIZE_BYTES}-byte sectors` },
};
/** Sizes without a limit of their own (quotas): what a JSON number holds exactly. */
const COUNTABLE_LIMIT: SizeLimit = { maxBytes: Number.MAX_SAFE_INTEGER, name: 'the largest size Strata counts' };

const SIZE_UNITS: ReadonlyArray<readonly [bytes: number, suffix: string]> = [[PiB, 'P'], [TiB, 'T'], [GiB, 'G'], [MiB, 'M'], [KiB, 'k'], [1, '']];

/** A positive whole size as typed with the largest suffix that keeps it whole: 1024 is "1k", 1536 "1536". */
function wholeSizeText(bytes: number): string {
  const [unitBytes, suffix] = SIZE_UNITS.find(([unit]) => bytes >= unit && bytes % unit === 0) ?? [1, ''];
  return `${bytes / unitBytes}${suffix}`;
}

/**
 * A whole size near `bytes` for the fix of a fraction that is not whole bytes: counted in the units
 * below the one typed (1.3G is 1331.2M: "1331M"), else rounded to the nearest allowed multiple.
 */
function wholeSizeNear(bytes: number, typedUnitBytes: number, multipleBytes: number): string {
  for (const [unit, suffix] of SIZE_UNITS) {
    if (unit >= typedUnitBytes) continue;
    const count = Math.round(bytes / unit);
    if (count > 0 && (count * unit) % multipleBytes === 0) return `${count}${suffix}`;
  }
  return wholeSizeText(Math.max(multipleBytes, Math.round(bytes / multipleBytes) * multipleBytes));
}

/**
 * A size argument in bytes: refused when negative, not a size, not whole bytes, past the limit or
 * not the multiple it requires (usage errors: nothing is sent to the daemon).
 */
export function parseSize(text: string, what: string, command: string, limit: SizeLimit = COUNTABLE_LIMIT): number {
  const negative = text.trimStart().startsWith('-');
  const reading = readSizeBytes(negative ? text.trimStart().slice(1) : text);
  if ('refused' in reading && reading.refused === 'not-a-size') throw new UsageError(`${command}: ${what} '${text}' is not a size`, SIZE_SYNTAX_HINT);
  if (negative) throw new UsageError(`${command}: ${what} '${text}' is negative; it must be positive`, 'give a size like 10G');
  const multipleBytes = limit.multiple?.bytes ?? 1;
  if ('refused' in reading && reading.refused === 'not-whole') {
    const near = wholeSizeNear(Number(reading.exactBytes), reading.unitBytes, multipleBytes);
    throw new UsageError(`${command}: ${what} '${text}' is ${reading.exactBytes} bytes, not a whole number`, `give a whole number of bytes or a unit that makes one, e.g. ${near}`);
  }
  if ('refused' in reading || reading.bytes > limit.maxBytes) {
    throw new UsageError(`${command}: ${what} '${text}' is too large`, `${limit.name} is ${formatSizeHuman(limit.maxBytes)}`);
  }
  if (limit.multiple !== undefined && reading.bytes % multipleBytes !== 0) {
    const below = reading.bytes - (reading.bytes % multipleBytes);
    const examples = [below, below + multipleBytes].filter((b) => b > 0).map(wholeSizeText);
    throw new UsageError(`${command}: ${what} '${text}' is not a multiple of ${multipleBytes} bytes`, `${limit.multiple.why}: give e.g. ${examples.join(' or ')}`);
  }
  return reading.bytes;
}

export function size(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined) return '-';
  return formatSizeHuman(bytes);
}

/** A table with a header row, columns padded to their widest cell. */
export function table(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] as number))).join('  ').trimEnd();
  return `${[line(headers), ...rows.map(line)].join('\n')}\n`;
}

/** "key  value" lines, keys padded. */
export function keyValues(pairs: ReadonlyArray<readonly [string, string]>): string {
  const width = Math.max(...pairs.map(([k]) => k.length));
  return `${pairs.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join('\n')}\n`;
}

/** The `location` row of a pool, volume or snapshot, for keyValues: none when the store has no local files. */
export function locationRow(location: string | null): Array<readonly [string, string]> {
  return location === null ? [] : [['location', location]];
}

export function usageHint(command: string): string {
  return `see 'strata ${command} --help'`;
}

const TERMINAL = new Set(['succeeded', 'failed', 'cancelled']);

/**
 * Follows a job through the daemon's watch stream (falling back to polling if the stream ends
 * early) until it ends; the progress bar follows doneBytes/totalBytes. Resolves with the last
 * state; a failed or cancelled job throws with its error code's exit status.
 */
export async function waitForJob(client: ApiClient, job: JobJson, bar: ProgressBar, what: string): Promise<JobJson> {
  let current = job;
  bar.update(current.doneBytes, current.totalBytes || undefined);
  for (let attempt = 0; attempt < 1000 && !TERMINAL.has(current.state); attempt++) {
    const res = await client.request('GET', `/v1/jobs/${seg(job.id)}?watch=true`);
    if (res.status >= 400) {
      bar.abort();
      throw await client.failure(res, what);
    }
    let buffered = '';
    try {
      for await (const chunk of res.body) {
        buffered += (chunk as Buffer).toString('utf8');
        let nl: number;
        while ((nl = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, nl).trim();
          buffered = buffered.slice(nl + 1);
          if (line === '') continue;
          current = JSON.parse(line) as JobJson;
          bar.update(current.doneBytes, current.totalBytes || undefined);
        }
      }
    } catch (err) {
      bar.abort();
      throw new CliError(`${what}: lost the connection to the daemon while watching job ${job.id}: ${(err as Error).message}`, {
        hint: `the job may still run: 'strata job info ${job.id}'`,
        exitCode: EXIT.ERROR,
      });
    }
    if (!TERMINAL.has(current.state)) await new Promise((r) => setTimeout(r, 200));
  }
  if (current.state === 'succeeded') {
    bar.finish();
    return current;
  }
  bar.abort();
  if (current.state === 'cancelled') {
    throw apiError('CANCELLED', `${what}: job ${current.id} was cancelled${current.error ? `: ${current.error.message}` : ''}`);
  }
  const err = current.error ?? { code: 'INTERNAL', message: 'the job failed without saying why' };
  throw apiError(err.code, `${what}: job ${current.id} failed: ${err.message}`);
}

/** A subcommand of a daemon command group. */
export function subcommand(name: string, summary: string, help: string, run: Subcommand['run']): Subcommand {
  return { name, summary, help: `${help}\n${GLOBAL_HELP}\n${EXIT_HELP}`, run };
}

/** The help listing of a group. */
export function groupHelp(group: string, description: string, subs: readonly Subcommand[]): string {
  const width = Math.max(...subs.map((c) => c.name.length));
  return `${[
    `Usage: strata ${group} <subcommand> [options] ...`,
    '',
    description,
    '',
    'Subcommands:',
    ...subs.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    `Run 'strata ${group} <subcommand> --help' for a subcommand's options.`,
    '',
    GLOBAL_HELP,
    EXIT_HELP,
  ].join('\n')}`;
}
