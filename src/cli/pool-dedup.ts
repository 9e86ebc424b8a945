/**
 * strata pool: what dedup pools add: the flags of `pool create` that make one (checked here for
 * their combinations; the daemon checks their values), `pool df` and `pool gc`.
 */
import { countOf } from '../core/text.js';
import { formatDurationHuman, parseDurationMs } from '../core/units.js';
import type { ParsedArgs } from './args.js';
import type { Subcommand } from './command.js';
import { UsageError } from './errors.js';
import { scrub } from './pool-scrub.js';
import { seg } from './remote/client.js';
import { checkName, clientOf, keyValues, parse, parseSize, positionals, printJson, PROGRESS_OPTIONS, size, subcommand, usageHint, wantsJson } from './remote/common.js';
import { JobFollower, whileFollowing } from './remote/job-follower.js';
import { PROCESS_HOST, ProgressBar } from './remote/progress-bar.js';
import type { OptionSpec } from './args.js';
import type { PoolCreateBody, PoolDfJson, PoolGcJson, PoolJson } from '../api/rest/schemas.js';

export const DEDUP_CREATE_OPTIONS: readonly OptionSpec[] = [
  { long: 'dedup' },
  { long: 'hash', value: true },
  { long: 'tier', value: true },
  { long: 's3-endpoint', value: true },
  { long: 's3-region', value: true },
  { long: 'cooling', value: true },
  { long: 'seal-after', value: true },
  { long: 'seal-above', value: true },
];

export const DEDUP_CREATE_HELP = `  --dedup                a dedup pool: snapshots, imports and clone parents are sealed into
                         chunks stored once per pool (read through the daemon: NBD, export)
  --hash blake3|xxh128   what names the chunks (default blake3; fixed once the pool exists)
  --tier URL             where packs not read for the cooling period go: s3://BUCKET/PREFIX
                         (credentials from the AWS default chain) or file:///path
  --s3-endpoint URL      an S3-compatible server for an s3:// tier (http://HOST:PORT)
  --s3-region REGION     the S3 region (AWS: needed unless --s3-endpoint is given)
  --cooling DURATION     how long a pack goes unread before it moves to the tier (e.g. 7d, 12h)
  --seal-after DURATION  seal policy: freeze and seal a volume's active layer once it has not
                         been written for this long (e.g. 10m; at least 1s; default: off)
  --seal-above SIZE      seal policy: freeze and seal a volume's active layer once it allocates
                         more than this (e.g. 4G; at least 1M; default: off)
S3 credentials never go on the command line: the daemon uses the AWS default chain
(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws/credentials, an instance role).
`;

/** The `dedup` part of a pool create body from the flags (undefined without --dedup). */
export function dedupRequest(args: ParsedArgs, command: string): PoolCreateBody['dedup'] {
  const hash = args.value('hash');
  const tier = args.value('tier');
  const endpoint = args.value('s3-endpoint');
  const region = args.value('s3-region');
  const cooling = args.value('cooling');
  const sealAfter = args.value('seal-after');
  const sealAbove = args.value('seal-above');
  if (!args.has('dedup')) {
    const given = [hash && '--hash', tier && '--tier', endpoint && '--s3-endpoint', region && '--s3-region', cooling && '--cooling', sealAfter && '--seal-after', sealAbove && '--seal-above'].filter(Boolean);
    if (given.length > 0) {
      throw new UsageError(`${command}: ${given.join(', ')} ${given.length === 1 ? 'applies' : 'apply'} to dedup pools only`, 'add --dedup');
    }
    return undefined;
  }
  if (hash !== undefined && hash !== 'blake3' && hash !== 'xxh128') {
    throw new UsageError(`${command}: unknown chunk hash '${hash}'`, 'use --hash blake3 (the default) or --hash xxh128');
  }
  if (tier === undefined) {
    const given = [endpoint && '--s3-endpoint', region && '--s3-region', cooling && '--cooling'].filter(Boolean);
    if (given.length > 0) throw new UsageError(`${command}: ${given.join(', ')} set up a tier`, 'add --tier s3://BUCKET/PREFIX or --tier file:///path');
  }
  let coolingMs: number | undefined;
  if (cooling !== undefined) {
    coolingMs = parseDurationMs(cooling);
    if (coolingMs === undefined) throw new UsageError(`${command}: --cooling '${cooling}' is not a duration`, 'give a number and a unit: 30m, 12h, 7d');
  }
  let sealAfterMs: number | undefined;
  if (sealAfter !== undefined) {
    sealAfterMs = parseDurationMs(sealAfter);
    if (sealAfterMs === undefined) throw new UsageError(`${command}: --seal-after '${sealAfter}' is not a duration`, 'give a number and a unit: 30s, 10m, 1h');
  }
  const sealAboveBytes = sealAbove === undefined ? undefined : parseSize(sealAbove, '--seal-above', command);
  return {
    ...(hash === undefined ? {} : { hash }),
    ...(sealAfterMs === undefined ? {} : { sealAfterMs }),
    ...(sealAboveBytes === undefined ? {} : { sealAboveBytes }),
    ...(tier === undefined
      ? {}
      : {
          tier: {
            url: tier,
            ...(endpoint === undefined ? {} : { s3Endpoint: endpoint }),
            ...(region === undefined ? {} : { s3Region: region }),
            ...(coolingMs === undefined ? {} : { coolingMs }),
          },
        }),
  };
}

/** The rows `pool info` adds for a dedup pool. */
export function dedupRows(p: PoolJson): Array<readonly [string, string]> {
  if (p.dedup === null) return [['kind', 'local (plain qcow2 chains)']];
  const tier = p.dedup.tier;
  const rows: Array<readonly [string, string]> = [
    ['kind', 'dedup (sealed layers are chunk manifests)'],
    ['chunk hash', p.dedup.hash],
    ['seal policy', sealPolicyText(p.dedup.sealAfterMs, p.dedup.sealAboveBytes)],
  ];
  if (tier === null) return [...rows, ['tier', 'none']];
  return [
    ...rows,
    ['tier', `${tier.url}${p.dedup.tierActive ? '' : ' (recorded; this daemon does not tier: packs stay local)'}`],
    ...(p.dedup.tierError === undefined ? [] : [['tier error', p.dedup.tierError] as [string, string]]),
    ...(tier.s3Endpoint === null ? [] : [['s3 endpoint', tier.s3Endpoint] as const]),
    ...(tier.s3Region === null ? [] : [['s3 region', tier.s3Region] as const]),
    ...(tier.coolingMs === null ? [] : [['cooling', formatDurationHuman(tier.coolingMs)] as const]),
  ];
}

function sealPolicyText(afterMs: number | undefined, aboveBytes: number | undefined): string {
  const parts = [
    ...(afterMs === undefined ? [] : [`after ${formatDurationHuman(afterMs)} without writes`]),
    ...(aboveBytes === undefined ? [] : [`above ${size(aboveBytes)}`]),
  ];
  return parts.length === 0 ? 'off (snapshots, imports and clone parents only)' : parts.join(', ');
}

const df = subcommand(
  'df',
  "a pool's logical and physical bytes",
  `Usage: strata pool df NAME

Shows what the pool's data is worth and what it takes: logical bytes (the volumes' provisioned
sizes and the data of their layers), physical bytes (layer files plus packs), on this host and
in the tier, the unique chunk bytes and the dedup ratio (for a local pool: what applies).
`,
  async (argv, con) => {
    const command = 'pool df';
    const args = parse(argv, command);
    const [name] = positionals(args, command, ['NAME']) as [string];
    checkName(name, 'pool', command);
    const d = await clientOf(args).json<PoolDfJson>('GET', `/v1/pools/${seg(name)}/df`, `cannot show the usage of pool '${name}'`);
    if (wantsJson(args)) printJson(con, d);
    else con.stdout(dfDetails(d));
    return 0;
  },
);

function dfDetails(d: PoolDfJson): string {
  const rows: Array<readonly [string, string]> = [
    ['pool', `${d.pool} (${d.kind})`],
    ['volumes', String(d.volumeCount)],
    ['logical provisioned', size(d.logicalProvisionedBytes)],
    ['logical allocated', size(d.logicalAllocatedBytes)],
    ['physical', `${size(d.physicalBytes)} (${d.physicalBytes} bytes)`],
    ['  layer files', size(d.layerFileBytes)],
  ];
  if (d.kind === 'local') return keyValues(rows);
  return keyValues([
    ...rows,
    ['  packs', `${size(d.packBytes)} (local ${size(d.packLocalBytes)}, tier ${size(d.packRemoteBytes)})`],
    ['local', size(d.localBytes)],
    ['in the tier', size(d.remoteBytes)],
    ...(d.tierError === undefined ? [] : [['tier error', d.tierError] as const]),
    ['unique chunks', `${d.uniqueChunkCount} (${size(d.uniqueChunkBytes)})`],
    ['referenced chunks', size(d.referencedChunkBytes)],
    ['dedup ratio', d.dedupRatio === null ? '-' : `${d.dedupRatio.toFixed(2)}x`],
  ]);
}

const gc = subcommand(
  'gc',
  "collect a dedup pool's garbage",
  `Usage: strata pool gc NAME [--grace DURATION] [-p|--no-progress]

Runs garbage collection of a dedup pool as a job (see 'strata job list'): chunks no layer has
referenced for longer than the grace period are forgotten, packs with nothing live are deleted,
packs mostly dead are rewritten. Prints what it freed.

Options:
  --grace DURATION   how long an unreferenced chunk stays (default 1h; e.g. 0, 30s, 10m)
  -p, --progress     show the progress (index records and packs looked at) even when stderr is
                     not a terminal
  --no-progress      never show it
`,
  async (argv, con) => {
    const command = 'pool gc';
    const args = parse(argv, command, [{ long: 'grace', value: true }, ...PROGRESS_OPTIONS]);
    const [name] = positionals(args, command, ['NAME']) as [string];
    checkName(name, 'pool', command);
    const grace = args.value('grace');
    const graceMs = grace === undefined ? undefined : parseDurationMs(grace);
    if (grace !== undefined && graceMs === undefined) {
      throw new UsageError(`${command}: --grace '${grace}' is not a duration`, `give 0 or a number and a unit: 30s, 10m, 1h (${usageHint(command)})`);
    }
    const body = graceMs === undefined ? {} : { graceMs };
    const client = clientOf(args);
    // A gc job has no total: its progress counts the index records and packs looked at.
    const bar = new ProgressBar(con, ProgressBar.enabled(args), 'collecting', undefined, PROCESS_HOST, (n) => `${n} records and packs looked at`);
    const r = await whileFollowing(client, bar, ProgressBar.enabled(args), new JobFollower('gc', name), () =>
      client.json<PoolGcJson>('POST', `/v1/pools/${seg(name)}/gc`, `cannot collect the garbage of pool '${name}'`, body),
    );
    bar.abort();
    if (wantsJson(args)) printJson(con, r);
    else {
      con.stdout(
        `Pool '${r.pool}': freed ${size(r.bytesDeleted)} (${r.bytesDeleted} bytes): ${r.chunksForgotten} chunks forgotten, ` +
          `${r.packsDeleted + r.orphanPacksDeleted} packs deleted, ${r.packsRewritten} rewritten (job ${r.jobId}, grace ${formatDurationHuman(r.graceMs)}).\n`,
      );
      if (r.chunksWaiting > 0) {
        const until = r.waitingUntilMs === null ? '' : ` (the last at ${new Date(r.waitingUntilMs).toISOString()})`;
        con.stdout(
          `${countOf(r.chunksWaiting, 'unreferenced chunk')} (${size(r.bytesWaiting)}) wait out the grace period: a gc after it frees them${until}, ` +
            `or 'strata pool gc ${r.pool} --grace 0' now.\n`,
        );
      }
      for (const damaged of r.damaged) con.stdout(`damaged, left alone: ${damaged}\n`);
    }
    return 0;
  },
);

export const DEDUP_SUBCOMMANDS: readonly Subcommand[] = [df, gc, scrub];
