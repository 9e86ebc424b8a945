/**
 * strata bucket: the S3 buckets as an operator sees them (every owner), through the daemon's REST
 * API (/v1/buckets): list, info, and du, whose sums the daemon gives a bounded page at a time and
 * this command adds up (with a progress line on a terminal, for large buckets).
 */
import { formatSizeHuman } from '../core/units.js';
import type { BucketJson, BucketPageJson, BucketUsageJson } from '../api/rest/bucket-schemas.js';
import type { Subcommand } from './command.js';
import { UsageError } from './errors.js';
import { seg } from './remote/client.js';
import { clientOf, groupHelp, keyValues, parse, positionals, printJson, PROGRESS_OPTIONS, subcommand, table, wantsJson } from './remote/common.js';
import { ProgressBar } from './remote/progress-bar.js';

/** S3's bucket names: 3 to 63 lower-case letters, digits, dots and hyphens. */
const BUCKET_NAME_RE = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

function checkBucket(name: string, command: string): string {
  if (!BUCKET_NAME_RE.test(name)) throw new UsageError(`${command}: '${name}' is not a bucket name`, "bucket names are 3 to 63 lower-case letters, digits, dots and hyphens; see 'strata bucket list'");
  return name;
}

function objectCountText(b: BucketJson): string {
  return b.objectCountCapped ? `more than ${b.objectCount}` : String(b.objectCount);
}

const list = subcommand(
  'list',
  'list S3 buckets (every owner)',
  `Usage: strata bucket list

Lists every bucket with its owner, pool, versioning and object count (counted up to 10,000:
'more than 10000' beyond; 'strata bucket du' counts all).
`,
  async (argv, con) => {
    const command = 'bucket list';
    const args = parse(argv, command);
    positionals(args, command, []);
    const client = clientOf(args);
    const buckets: BucketJson[] = [];
    let after: string | undefined;
    do {
      const page: BucketPageJson = await client.json<BucketPageJson>('GET', `/v1/buckets${after === undefined ? '' : `?after=${encodeURIComponent(after)}`}`, 'cannot list buckets');
      buckets.push(...page.buckets);
      after = page.next;
    } while (after !== undefined);
    if (wantsJson(args)) printJson(con, buckets);
    else con.stdout(table(['NAME', 'OWNER', 'POOL', 'VERSIONING', 'OBJECTS', 'CREATED'], buckets.map((b) => [b.name, b.owner, b.pool, b.versioning, objectCountText(b), b.createdAt])));
    return 0;
  },
);

const info = subcommand(
  'info',
  'show an S3 bucket',
  `Usage: strata bucket info BUCKET
`,
  async (argv, con) => {
    const command = 'bucket info';
    const args = parse(argv, command);
    const [name] = positionals(args, command, ['BUCKET']) as [string];
    checkBucket(name, command);
    const b = await clientOf(args).json<BucketJson>('GET', `/v1/buckets/${seg(name)}`, `cannot show bucket '${name}'`);
    if (wantsJson(args)) printJson(con, b);
    else con.stdout(keyValues([['bucket', b.name], ['owner', b.owner], ['pool', b.pool], ['versioning', b.versioning], ['acl', b.acl], ['objects', objectCountText(b)], ['created', b.createdAt]]));
    return 0;
  },
);

type UsageSums = Omit<BucketUsageJson, 'next'>;

function addUp(total: UsageSums | undefined, page: BucketUsageJson): UsageSums {
  const { next: _next, ...sums } = page;
  if (total === undefined) return sums;
  return {
    bucket: total.bucket,
    pool: total.pool,
    objectCount: total.objectCount + sums.objectCount,
    objectBytes: total.objectBytes + sums.objectBytes,
    versionCount: total.versionCount + sums.versionCount,
    versionBytes: total.versionBytes + sums.versionBytes,
    deleteMarkerCount: total.deleteMarkerCount + sums.deleteMarkerCount,
    uploadCount: total.uploadCount + sums.uploadCount,
    partCount: total.partCount + sums.partCount,
    partBytes: total.partBytes + sums.partBytes,
    recordsRead: total.recordsRead + sums.recordsRead,
  };
}

const du = subcommand(
  'du',
  "an S3 bucket's usage: objects, versions, uploads in progress",
  `Usage: strata bucket du BUCKET [--page-records N] [-p|--no-progress]

Adds up the bucket's current objects and their bytes, every stored version (what its pool keeps
for it before dedup), delete markers, and multipart uploads in progress with their parts. The
daemon answers a bounded page of records at a time (--page-records, default 10000, at most
50000); a progress line follows a large bucket on a terminal. The bucket's chunks are shared
with everything else in its pool: 'strata pool df POOL' shows what the pool physically holds.

Options:
  --page-records N  catalog records the daemon reads per request (1 to 50000; default 10000)
  -p, --progress    show the progress line even when stderr is not a terminal
  --no-progress     never show it
`,
  async (argv, con) => {
    const command = 'bucket du';
    const args = parse(argv, command, [{ long: 'page-records', value: true }, ...PROGRESS_OPTIONS]);
    const [name] = positionals(args, command, ['BUCKET']) as [string];
    checkBucket(name, command);
    const pageText = args.value('page-records');
    const pageRecords = pageText === undefined ? undefined : Number(pageText);
    if (pageRecords !== undefined && (!Number.isSafeInteger(pageRecords) || pageRecords < 1 || pageRecords > 50_000)) {
      throw new UsageError(`${command}: --page-records '${pageText}' is not a whole number from 1 to 50000`, `see 'strata ${command} --help'`);
    }
    const client = clientOf(args);
    const bar = new ProgressBar(con, ProgressBar.enabled(args), `counting ${name}`, undefined);
    let total: UsageSums | undefined;
    let after: string | undefined;
    try {
      do {
        const query = new URLSearchParams();
        if (after !== undefined) query.set('after', after);
        if (pageRecords !== undefined) query.set('limit', String(pageRecords));
        const suffix = query.size === 0 ? '' : `?${query.toString()}`;
        const page: BucketUsageJson = await client.json<BucketUsageJson>('GET', `/v1/buckets/${seg(name)}/du${suffix}`, `cannot measure bucket '${name}'`);
        total = addUp(total, page);
        bar.update(total.versionBytes + total.objectBytes + total.partBytes);
        after = page.next;
      } while (after !== undefined);
    } catch (err) {
      bar.abort();
      throw err;
    }
    bar.finish();
    const t = total as UsageSums;
    if (wantsJson(args)) {
      printJson(con, t);
      return 0;
    }
    con.stdout(
      keyValues([
        ['bucket', t.bucket],
        ['pool', t.pool],
        ['objects', `${t.objectCount} (${formatSizeHuman(t.objectBytes)})`],
        ['versions', `${t.versionCount} (${formatSizeHuman(t.versionBytes)}), ${t.deleteMarkerCount} delete markers`],
        ['uploads in progress', `${t.uploadCount}, ${t.partCount} parts (${formatSizeHuman(t.partBytes)})`],
      ]),
    );
    return 0;
  },
);

export const BUCKET_SUBCOMMANDS: readonly Subcommand[] = [list, info, du];

export function bucketHelp(): string {
  return groupHelp('bucket', 'S3 buckets as an operator sees them (create and fill them with an S3 client).', BUCKET_SUBCOMMANDS);
}
