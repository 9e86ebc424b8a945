/**
 * strata bucket: the S3 buckets as an operator sees them (every owner), through the daemon's REST
 * API (/v1/buckets): list (marking buckets whose owner is no user any more), info, du (whose sums
 * the daemon gives a bounded page at a time and this command adds up, with a progress line on a
 * terminal for large buckets), chown, and delete (--purge: everything in it first, as a job whose
 * progress the bar follows).
 */
import { formatSizeHuman } from '../core/units.js';
import type { BucketDeletedJson, BucketJson, BucketPageJson, BucketUsageJson } from '../api/rest/bucket-schemas.js';
import type { Subcommand } from './command.js';
import { UsageError } from './errors.js';
import { seg } from './remote/client.js';
import { checkName, clientOf, groupHelp, keyValues, parse, positionals, printJson, PROGRESS_OPTIONS, subcommand, table, wantsJson } from './remote/common.js';
import { JobFollower, whileFollowing } from './remote/job-follower.js';
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

/** The owner as the table shows it: marked when no user of that name exists (an orphaned bucket). */
function ownerText(b: BucketJson): string {
  return b.ownerMissing ? `${b.owner} (no such user)` : b.owner;
}

function nameText(b: BucketJson): string {
  return b.deleting ? `${b.name} (being deleted)` : b.name;
}

const list = subcommand(
  'list',
  'list S3 buckets (every owner)',
  `Usage: strata bucket list

Lists every bucket with its owner, pool, versioning and object count (counted up to 10,000:
'more than 10000' beyond; 'strata bucket du' counts all). An owner that is no user any more is
marked '(no such user)' (--json: ownerMissing): give the bucket to a user with 'strata bucket
chown' or delete it with 'strata bucket delete --purge'. A bucket whose delete did not finish is
marked '(being deleted)' (--json: deleting): 'strata bucket delete NAME --purge' finishes it.
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
    if (wantsJson(args)) {
      printJson(con, buckets);
      return 0;
    }
    con.stdout(table(['NAME', 'OWNER', 'POOL', 'VERSIONING', 'OBJECTS', 'CREATED'], buckets.map((b) => [nameText(b), ownerText(b), b.pool, b.versioning, objectCountText(b), b.createdAt])));
    const orphans = buckets.filter((b) => b.ownerMissing).length;
    if (orphans > 0) {
      con.stderr(`${orphans === 1 ? '1 bucket belongs' : `${orphans} buckets belong`} to no user: give each to a user ('strata bucket chown NAME USER') or delete it ('strata bucket delete NAME --purge').\n`);
    }
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
    else con.stdout(keyValues([['bucket', nameText(b)], ['owner', ownerText(b)], ['pool', b.pool], ['versioning', b.versioning], ['acl', b.acl], ['objects', objectCountText(b)], ['created', b.createdAt]]));
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

const del = subcommand(
  'delete',
  "delete an S3 bucket (any owner's), with --purge everything in it",
  `Usage: strata bucket delete BUCKET [--purge] [-p|--no-progress]

Deletes the bucket whoever owns it. An empty bucket (no object versions, no delete markers, no
multipart uploads in progress) goes at once; one that holds anything is refused (status 4, naming
what it holds) unless --purge is given. With --purge every version and delete marker is deleted
and every multipart upload aborted, then the bucket, as a job ('strata job list' shows it, kind
bucket-purge); the progress bar follows it on a terminal. From the moment the delete begins, S3
requests get NoSuchBucket: nothing can be written into the bucket while it is emptied. The chunks
are given back as S3 deletes give them back: the pool's GC reclaims the space nothing else uses
once the grace period has passed ('strata pool gc POOL'). Ctrl-C stops the bar, not the job
('strata job cancel ID'); a purge cut short (cancelled, the daemon stopped) leaves the bucket being
deleted ('strata bucket list' marks it): the daemon's next start resumes the purge as a job, or
run this command with --purge again to finish it now.

Options:
  --purge          delete what the bucket holds first
  -p, --progress   show the progress bar even when stderr is not a terminal
  --no-progress    never show it

Exit status: 0 deleted, 3 no such bucket, 4 not empty (without --purge) or being deleted by
another request, else as other commands.
`,
  async (argv, con) => {
    const command = 'bucket delete';
    const args = parse(argv, command, [{ long: 'purge' }, ...PROGRESS_OPTIONS]);
    const [name] = positionals(args, command, ['BUCKET']) as [string];
    checkBucket(name, command);
    const client = clientOf(args);
    const purge = args.has('purge');
    const what = `cannot delete bucket '${name}'`;
    const enabled = purge && ProgressBar.enabled(args);
    const bar = new ProgressBar(con, enabled, `purging ${name}`, undefined);
    const r = await whileFollowing(client, bar, enabled, new JobFollower('bucket-purge', name), () =>
      client.json<BucketDeletedJson>('DELETE', `/v1/buckets/${seg(name)}${purge ? '?purge=true' : ''}`, what),
    );
    bar.update(r.versionBytes + r.partBytes, r.versionBytes + r.partBytes);
    bar.finish();
    if (wantsJson(args)) {
      printJson(con, r);
      return 0;
    }
    const purged = purge
      ? ` Purged ${r.versionCount} versions (${formatSizeHuman(r.versionBytes)}), ${r.deleteMarkerCount} delete markers and ${r.uploadCount} multipart uploads (${r.partCount} parts, ${formatSizeHuman(r.partBytes)}) (job ${r.jobId}).`
      : '';
    con.stdout(`Bucket '${r.bucket}' of ${r.owner} deleted.${purged}\n`);
    return 0;
  },
);

const chown = subcommand(
  'chown',
  'give an S3 bucket to another user',
  `Usage: strata bucket chown BUCKET USER

Gives the bucket to USER, an existing user ('strata user list'). From the next request on, USER's
keys may do anything in it and the old owner's get AccessDenied, as any other user's do; its
canned ACL (private or public-read) stays, and its grants name USER (GetBucketAcl and
GetObjectAcl answer USER's FULL_CONTROL). Its objects keep naming the user who wrote them as their
owner in listings (that grants nothing). The way to keep a departed user's buckets: chown them,
then 'strata user delete' the user.
`,
  async (argv, con) => {
    const command = 'bucket chown';
    const args = parse(argv, command);
    const [name, user] = positionals(args, command, ['BUCKET', 'USER']) as [string, string];
    checkBucket(name, command);
    checkName(user, 'user', command);
    const b = await clientOf(args).json<BucketJson>('PATCH', `/v1/buckets/${seg(name)}`, `cannot give bucket '${name}' to '${user}'`, { owner: user });
    if (wantsJson(args)) printJson(con, b);
    else con.stdout(`Bucket '${b.name}' now belongs to ${b.owner}.\n`);
    return 0;
  },
);

export const BUCKET_SUBCOMMANDS: readonly Subcommand[] = [list, info, du, chown, del];

export function bucketHelp(): string {
  return groupHelp('bucket', "S3 buckets as an operator sees them, every owner's (create and fill them with an S3 client).", BUCKET_SUBCOMMANDS);
}
