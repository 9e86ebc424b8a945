/** strata pool: create, list, info, delete, quota and du, through the daemon's REST API. */
import type { Subcommand } from './command.js';
import { seg } from './remote/client.js';
import {
  checkName,
  clientOf,
  groupHelp,
  keyValues,
  locationRow,
  parse,
  parseSize,
  positionals,
  printJson,
  size,
  subcommand,
  table,
  wantsJson,
} from './remote/common.js';
import type { PoolCreateBody, PoolJson, DuEntryJson } from '../api/rest/schemas.js';
import { POOL_QOS_SUBCOMMANDS } from './qos.js';
import { DEDUP_CREATE_HELP, DEDUP_CREATE_OPTIONS, DEDUP_SUBCOMMANDS, dedupRequest, dedupRows } from './pool-dedup.js';
export type { PoolJson, DuEntryJson };

function poolDetails(p: PoolJson): string {
  return keyValues([
    ['pool', p.name],
    ...locationRow(p.location),
    ['volumes', String(p.volumeCount)],
    ['provisioned', `${size(p.provisionedBytes)}${p.quotaBytes !== null ? ` of ${size(p.quotaBytes)} quota` : ''}`],
    ['allocated', size(p.allocatedBytes)],
    ...dedupRows(p),
    ['quota', p.quotaBytes === null ? 'none' : `${size(p.quotaBytes)} (${p.quotaBytes} bytes)`],
    ['created', p.createdAt],
  ]);
}

/** rbd du's layout: one row per volume and snapshot, then a total. */
export function duTable(entries: readonly DuEntryJson[]): string {
  const rows = entries.map((e) => [e.name, size(e.provisionedBytes), size(e.allocatedBytes)]);
  const used = entries.reduce((n, e) => n + e.allocatedBytes, 0);
  const provisioned = entries.filter((e) => !e.name.includes('@')).reduce((n, e) => n + e.provisionedBytes, 0);
  rows.push(['<TOTAL>', size(provisioned), size(used)]);
  return table(['NAME', 'PROVISIONED', 'USED'], rows);
}

const create = subcommand(
  'create',
  'create a pool',
  `Usage: strata pool create NAME [--quota SIZE] [--dedup [--hash H] [--tier URL ...]]

Creates a pool: a folder of qcow2 layer files in the daemon's data folder (a local pool), or
with --dedup a dedup pool.

Options:
  --quota SIZE           the volumes' provisioned sizes may not add up to more than SIZE (e.g. 100G)
${DEDUP_CREATE_HELP}`,
  async (argv, con) => {
    const command = 'pool create';
    const args = parse(argv, command, [{ long: 'quota', value: true }, ...DEDUP_CREATE_OPTIONS]);
    const [name] = positionals(args, command, ['NAME']) as [string];
    checkName(name, 'pool', command);
    const quota = args.value('quota');
    const dedup = dedupRequest(args, command);
    const body: PoolCreateBody = {
      name,
      ...(quota !== undefined ? { quotaBytes: parseSize(quota, 'quota', command) } : {}),
      ...(dedup !== undefined ? { dedup } : {}),
    };
    const pool = await clientOf(args).json<PoolJson>('POST', '/v1/pools', `cannot create pool '${name}'`, body);
    if (wantsJson(args)) printJson(con, pool);
    else {
      const kind = pool.dedup === null ? '' : ` (dedup, ${pool.dedup.hash} chunks)`;
      con.stdout(`Pool '${pool.name}' created${kind}${pool.quotaBytes !== null ? ` (quota ${size(pool.quotaBytes)})` : ''}.\n`);
      if (pool.dedup?.tier && !pool.dedup.tierActive) con.stdout(`Tier ${pool.dedup.tier.url} recorded; this daemon does not tier: packs stay local.\n`);
      if (pool.dedup?.tierError !== undefined) {
        con.stderr(
          `strata: warning: pool '${pool.name}' was created, but its tier does not work yet: ${pool.dedup.tierError}\n` +
            `  Packs stay on this host until it does ('strata pool info ${pool.name}' shows the tier error); or delete it ('strata pool delete ${pool.name} --force') and create it again with the right --tier, --s3-endpoint or keys.\n`,
        );
      }
    }
    return 0;
  },
);

const list = subcommand(
  'list',
  'list pools',
  `Usage: strata pool list

Lists the pools with their volume count, provisioned and allocated bytes, and quota.
`,
  async (argv, con) => {
    const command = 'pool list';
    const args = parse(argv, command);
    positionals(args, command, []);
    const pools = await clientOf(args).json<PoolJson[]>('GET', '/v1/pools', 'cannot list pools');
    if (wantsJson(args)) printJson(con, pools);
    else {
      con.stdout(
        table(
          ['NAME', 'VOLUMES', 'PROVISIONED', 'ALLOCATED', 'QUOTA'],
          pools.map((p) => [p.name, String(p.volumeCount), size(p.provisionedBytes), size(p.allocatedBytes), p.quotaBytes === null ? '-' : size(p.quotaBytes)]),
        ),
      );
    }
    return 0;
  },
);

const info = subcommand(
  'info',
  "show a pool's details",
  `Usage: strata pool info NAME
`,
  async (argv, con) => {
    const command = 'pool info';
    const args = parse(argv, command);
    const [name] = positionals(args, command, ['NAME']) as [string];
    checkName(name, 'pool', command);
    const pool = await clientOf(args).json<PoolJson>('GET', `/v1/pools/${seg(name)}`, `cannot show pool '${name}'`);
    if (wantsJson(args)) printJson(con, pool);
    else con.stdout(poolDetails(pool));
    return 0;
  },
);

const del = subcommand(
  'delete',
  'delete an empty pool',
  `Usage: strata pool delete NAME [--force]

Deletes a pool that has no volumes, nothing in its trash and no S3 buckets (exit status 4 while
it has some: delete the volumes, purge its trash with 'strata trash purge NAME', and delete the
buckets 'strata bucket list' shows in the pool with S3 DeleteBucket or 'strata bucket delete
BUCKET --purge'). A dedup pool's packs are deleted with it, those in its tier too: when the tier
does not answer, the pool is kept (exit status 6 when it may answer later) and the delete can be
run again.

Options:
  -f, --force   delete the pool even when its tier's packs cannot be deleted; they stay in the
                bucket or folder named in the output, for you to delete
`,
  async (argv, con) => {
    const command = 'pool delete';
    const args = parse(argv, command, [{ short: 'f', long: 'force' }]);
    const [name] = positionals(args, command, ['NAME']) as [string];
    checkName(name, 'pool', command);
    const force = args.has('force');
    const report = await clientOf(args).json<{ pool: string; packsLeftIn?: string; packsLeftReason?: string } | undefined>(
      'DELETE',
      `/v1/pools/${seg(name)}${force ? '?force=true' : ''}`,
      `cannot delete pool '${name}'`,
    );
    const left = report?.packsLeftIn;
    if (wantsJson(args)) printJson(con, { deleted: name, ...(left === undefined ? {} : { packsLeftIn: left, packsLeftReason: report?.packsLeftReason }) });
    else if (left === undefined) con.stdout(`Pool '${name}' deleted.\n`);
    else con.stdout(`Pool '${name}' deleted; its packs in ${left} could not be deleted and were left there: delete them yourself (${report?.packsLeftReason ?? ''}).\n`);
    return 0;
  },
);

const quota = subcommand(
  'quota',
  "set or clear a pool's quota",
  `Usage: strata pool quota NAME SIZE|none

Sets the pool's quota (the most its volumes' provisioned sizes may add up to), or clears it
with 'none'.
`,
  async (argv, con) => {
    const command = 'pool quota';
    const args = parse(argv, command);
    const [name, sizeText] = positionals(args, command, ['NAME', 'SIZE']) as [string, string];
    checkName(name, 'pool', command);
    const quotaBytes = sizeText === 'none' ? null : parseSize(sizeText, 'quota', command);
    const pool = await clientOf(args).json<PoolJson>('PATCH', `/v1/pools/${seg(name)}`, `cannot set the quota of pool '${name}'`, { quotaBytes });
    if (wantsJson(args)) printJson(con, pool);
    else {
      con.stdout(pool.quotaBytes === null ? `Pool '${name}' has no quota now.\n` : `Pool '${name}' quota set to ${size(pool.quotaBytes)}.\n`);
      // A quota below what is provisioned takes nothing away: say what it does do.
      if (pool.quotaBytes !== null && pool.provisionedBytes > pool.quotaBytes) {
        con.stdout(`Its volumes already provision ${size(pool.provisionedBytes)}, above the quota: they keep their sizes, but no volume may be created, grown or cloned in it until they are under the quota again.\n`);
      }
    }
    return 0;
  },
);

const du = subcommand(
  'du',
  'disk usage of every volume and snapshot of a pool',
  `Usage: strata pool du NAME

Shows, for each volume and snapshot of the pool, its provisioned size and the host bytes of
its own layer (like 'rbd du'), then the totals.
`,
  async (argv, con) => {
    const command = 'pool du';
    const args = parse(argv, command);
    const [name] = positionals(args, command, ['NAME']) as [string];
    checkName(name, 'pool', command);
    const entries = await clientOf(args).json<DuEntryJson[]>('GET', `/v1/pools/${seg(name)}/du`, `cannot show the usage of pool '${name}'`);
    if (wantsJson(args)) printJson(con, entries);
    else con.stdout(duTable(entries));
    return 0;
  },
);

export const POOL_SUBCOMMANDS: readonly Subcommand[] = [create, list, info, del, quota, du, ...DEDUP_SUBCOMMANDS, ...POOL_QOS_SUBCOMMANDS];

export function poolHelp(): string {
  return groupHelp('pool', 'Pools: folders of qcow2 layer files with an optional quota; dedup pools store sealed data once.', POOL_SUBCOMMANDS);
}
