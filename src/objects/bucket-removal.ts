/**
 * Deleting a bucket: S3's DeleteBucket and `strata bucket delete` (an empty bucket), and
 * `strata bucket delete --purge` (everything in it first: every version and delete marker, every
 * multipart upload in progress).
 *
 * Why the record is marked `deleting` before anything is checked or purged: a writer (a PUT, a
 * copy, a completed upload, a delete marker, a new upload) compares the bucket record's revision
 * in the transaction that makes its record visible, but a delete cannot compare "nothing under
 * this bucket's id" in its own transaction (a catalog compare names one key). Without the mark, a
 * PUT that committed after the delete found the bucket empty (or after a purge went past its key)
 * would be left under a bucket that no longer exists, its chunks referenced for ever. Marking
 * changes the record's revision: a writer that read the bucket before fails its commit, and its
 * retry, like every request after the mark, finds the bucket being deleted (NoSuchBucket) and
 * gives back the chunks it wrote. So a PUT racing a delete either committed before the mark, and
 * is then purged with the rest (without purge: it makes the delete refuse, and the mark is taken
 * back), or it commits nothing; no PUT commits after the purge began. A part upload compares its
 * upload record instead: one that committed before the purge aborted its upload is released with
 * it, one after fails as above.
 *
 * The purge deletes through the releases S3's deletes use (releases.ts): a version's record goes
 * in the transaction that records the release of its manifest, an upload's in the one that
 * records the release of its parts, and the references are dropped right after; the pool's counts,
 * GC and scrub see the space as free exactly as after DeleteObject and AbortMultipartUpload.
 */
import { StorageError } from '../core/errors.js';
import { TxnBuilder, type Versioned } from '../meta/table.js';
import { commitBucketChange } from './buckets.js';
import { countContents, OBJECT_COUNT_CAP, partSums, storedUsage, type BucketContents, type StoredUsage } from './bucket-usage.js';
import { retryOnConflict, type ObjectContext } from './context.js';
import { ObjectError } from './errors.js';
import type { BucketRecord } from './records.js';
import { releaseManifestInto, releaseUploadPartsInto, runReleases } from './releases.js';
import { currentId } from './tables.js';
import { compareBucket } from './versions.js';

/** Versions, or uploads, a purge removes per catalog transaction. */
export const PURGE_RECORDS_PER_TXN = 100;

/** How far a purge is, in bytes given back (every version's and part's). */
export interface BucketPurgeProgress {
  setTotal(bytes: number): void;
  addDone(bytes: number): void;
}

export interface BucketRemovalOptions {
  /** Delete what the bucket holds first; without it a bucket that holds anything is refused. */
  readonly purge?: boolean;
  readonly progress?: BucketPurgeProgress;
  /** Stops a purge between two transactions (CANCELLED; the bucket stays marked, a later purge finishes it). */
  readonly signal?: AbortSignal;
}

/** The bucket deleted and what its purge removed (zeros when it was empty). */
export type BucketRemoval = StoredUsage & { readonly bucket: BucketRecord };

/** What differs between S3's DeleteBucket and an operator's delete. */
interface RemovalRules {
  /** An operator may delete (or finish deleting) a bucket a delete left marked; S3 never sees one. */
  readonly seesDeleting: boolean;
  notEmpty(context: ObjectContext, bucket: BucketRecord): Promise<Error>;
  /** Another delete of this daemon is working on the bucket. */
  alreadyDeleting(name: string): Error;
}

const S3_RULES: RemovalRules = {
  seesDeleting: false,
  async notEmpty(context, bucket) {
    const first = await firstContent(context, bucket);
    if (first?.kind === 'upload') return new ObjectError('BucketNotEmpty', `bucket ${bucket.name} has multipart uploads in progress (${first.key} among them): abort them first`);
    return new ObjectError('BucketNotEmpty', `bucket ${bucket.name} still holds objects or versions (${first?.key ?? 'some'} among them): delete them first`);
  },
  // The other delete finishes it: to this client the bucket is already going.
  alreadyDeleting: (name) => new ObjectError('NoSuchBucket', `bucket ${name} is being deleted`),
};

const OPERATOR_RULES: RemovalRules = {
  seesDeleting: true,
  async notEmpty(context, bucket) {
    const held = contentsText(await countContents(context, bucket));
    const text = bucket.deleting === true ? 'an earlier delete of it stopped half way: pass {} to finish it' : 'pass {} to delete all of it with the bucket';
    return new StorageError('BUSY', `bucket '${bucket.name}' is not empty: it holds ${held}`, { fix: { option: 'purge', text } });
  },
  alreadyDeleting: (name) => new StorageError('BUSY', `bucket '${name}' is being deleted by another request`, { fix: { operation: 'listJobs', text: '{} shows a purge that runs' } }),
};

function counted(n: number, one: string, many: string): string {
  return `${n >= OBJECT_COUNT_CAP ? `more than ${OBJECT_COUNT_CAP}` : n} ${n === 1 ? one : many}`;
}

function contentsText(c: BucketContents): string {
  return [
    `${counted(c.objectCount, 'object', 'objects')} (${counted(c.versionCount, 'stored version', 'stored versions')})`,
    counted(c.deleteMarkerCount, 'delete marker', 'delete markers'),
    `${counted(c.uploadCount, 'multipart upload', 'multipart uploads')} in progress`,
  ].join(', ');
}

/** S3 DeleteBucket: an empty bucket only (BucketNotEmpty), never one being deleted (NoSuchBucket). */
export async function deleteBucket(context: ObjectContext, name: string): Promise<void> {
  await removeBucket(context, name, {}, S3_RULES);
}

/**
 * An operator's delete (`strata bucket delete`), whoever owns the bucket: BUSY naming what it
 * holds unless `purge`; a bucket an interrupted delete left marked is finished.
 */
export function removeBucketAsOperator(context: ObjectContext, name: string, options: BucketRemovalOptions = {}): Promise<BucketRemoval> {
  return removeBucket(context, name, options, OPERATOR_RULES);
}

async function removeBucket(context: ObjectContext, name: string, options: BucketRemovalOptions, rules: RemovalRules): Promise<BucketRemoval> {
  let bucket = await context.bucket(name, { fresh: true, ...(rules.seesDeleting ? { deleting: 'include' as const } : {}) });
  // One delete per bucket in this daemon: a second one could take back the first one's mark.
  if (context.bucketRemovals.has(name)) throw rules.alreadyDeleting(name);
  context.bucketRemovals.add(name);
  try {
    const asRead = bucket.record;
    const markedHere = asRead.deleting !== true;
    const purge = options.purge === true;
    // A bucket that holds something is refused before it is marked: it keeps serving meanwhile.
    if (!purge && (await firstContent(context, bucket.record)) !== undefined) throw await rules.notEmpty(context, bucket.record);
    // A purge says so in the mark (also on a mark an earlier delete left): a restart resumes it.
    if (markedHere || (purge && asRead.purging !== true)) bucket = await markDeleting(context, bucket, purge);
    const removed = purge ? await purgeContents(context, bucket, options) : { versionCount: 0, versionBytes: 0, deleteMarkerCount: 0, uploadCount: 0, partCount: 0, partBytes: 0 };
    if ((await firstContent(context, bucket.record)) !== undefined) {
      if (purge) throw new StorageError('BUSY', `bucket '${name}' gained records while it was purged: run the delete again`);
      // A write committed between the first look and the mark: the bucket serves again, as it was.
      if (markedHere) await unmark(context, bucket);
      throw await rules.notEmpty(context, asRead);
    }
    const txn = new TxnBuilder();
    context.tables.buckets.delete(txn, bucket);
    await commitBucketChange(context, txn);
    const { deleting: _deleting, purging: _purging, ...record } = bucket.record;
    return { bucket: record, ...removed };
  } finally {
    context.bucketRemovals.delete(name);
  }
}

/** The first version (or delete marker) or upload in progress of the bucket, if it holds any. */
async function firstContent(context: ObjectContext, bucket: BucketRecord): Promise<{ kind: 'version' | 'upload'; key: string } | undefined> {
  const versions = await context.tables.versions.prefixPage(`${bucket.id}/`, { limit: 1 });
  const version = versions.records[0];
  if (version !== undefined) return { kind: 'version', key: version.record.key };
  const uploads = await context.tables.uploads.indexPage('key', `${bucket.id}/`, { limit: 1 });
  const upload = uploads.records[0];
  return upload === undefined ? undefined : { kind: 'upload', key: upload.record.key };
}

/** Marks the bucket (see the top of this file); returns the marked record, which the delete's last transaction compares. */
async function markDeleting(context: ObjectContext, read: Versioned<BucketRecord>, purge: boolean): Promise<Versioned<BucketRecord>> {
  let known: Versioned<BucketRecord> | undefined = read;
  return retryOnConflict(context, async () => {
    // A retry reads the record again: its versioning or ACL changed meanwhile.
    const current = known ?? (await context.bucket(read.record.name, { fresh: true, deleting: 'include' }));
    known = undefined;
    if (current.record.id !== read.record.id) throw new ObjectError('NoSuchBucket', `bucket ${read.record.name} was deleted meanwhile`);
    const marked: BucketRecord = { ...current.record, deleting: true, ...(purge ? { purging: true as const } : {}) };
    const txn = new TxnBuilder();
    context.tables.buckets.put(txn, marked, current);
    return { record: marked, modRevision: await commitBucketChange(context, txn) };
  });
}

/** Takes the mark back (the bucket was not empty after all). */
async function unmark(context: ObjectContext, marked: Versioned<BucketRecord>): Promise<void> {
  const { deleting: _deleting, purging: _purging, ...record } = marked.record;
  const txn = new TxnBuilder();
  context.tables.buckets.put(txn, record, marked);
  await commitBucketChange(context, txn);
}

function throwIfCancelled(signal: AbortSignal | undefined, name: string): void {
  if (signal?.aborted === true) throw new StorageError('CANCELLED', `the purge of bucket '${name}' was cancelled: it stays being deleted until a purge finishes it`);
}

/** Removes every version, delete marker and upload of a marked bucket, a bounded transaction at a time. */
async function purgeContents(context: ObjectContext, bucket: Versioned<BucketRecord>, options: BucketRemovalOptions): Promise<StoredUsage> {
  const record = bucket.record;
  const total = await storedUsage(context, record);
  options.progress?.setTotal(total.versionBytes + total.partBytes);
  const removed = { versionCount: 0, versionBytes: 0, deleteMarkerCount: 0, uploadCount: 0, partCount: 0, partBytes: 0 };
  for (;;) {
    throwIfCancelled(options.signal, record.name);
    const page = await context.tables.versions.prefixPage(`${record.id}/`, { limit: PURGE_RECORDS_PER_TXN });
    if (page.records.length === 0) break;
    const txn = new TxnBuilder();
    compareBucket(context, txn, bucket);
    const releases: string[] = [];
    const currents = new Set<string>();
    let bytes = 0;
    for (const version of page.records) {
      context.tables.versions.delete(txn, version);
      currents.add(currentId(record.id, version.record.key));
      const data = version.record.data;
      if (data === undefined) {
        removed.deleteMarkerCount++;
        continue;
      }
      removed.versionCount++;
      bytes += data.sizeBytes;
      releases.push(releaseManifestInto(context, txn, record.pool, data.manifest));
    }
    // A key's current record is a copy of its newest version: it goes with the first page that holds the key.
    for (const id of currents) txn.ops.push({ type: 'delete', key: context.tables.current.recordKey(id) });
    await txn.commit(context.catalog);
    // Not in the background: the purge is done when its references are (a failure leaves the release recorded; recovery ends it).
    await runReleases(context, releases);
    removed.versionBytes += bytes;
    options.progress?.addDone(bytes);
  }
  for (;;) {
    throwIfCancelled(options.signal, record.name);
    const page = await context.tables.uploads.indexPage('key', `${record.id}/`, { limit: PURGE_RECORDS_PER_TXN });
    if (page.records.length === 0) break;
    // Counted before the abort (the parts go with it); a part that commits between the two is released but not counted.
    const parts = await Promise.all(page.records.map((upload) => partSums(context, upload.record.uploadId)));
    const txn = new TxnBuilder();
    compareBucket(context, txn, bucket);
    const releases = page.records.map((upload) => {
      context.tables.uploads.delete(txn, upload);
      return releaseUploadPartsInto(context, txn, record.pool, upload.record.uploadId);
    });
    await txn.commit(context.catalog);
    await runReleases(context, releases);
    const bytes = parts.reduce((sum, p) => sum + p.partBytes, 0);
    removed.uploadCount += page.records.length;
    removed.partCount += parts.reduce((sum, p) => sum + p.partCount, 0);
    removed.partBytes += bytes;
    options.progress?.addDone(bytes);
  }
  return removed;
}

/**
 * What to do at start-up with a bucket a stopped daemon left marked `deleting` (SIGTERM cancels a
 * running purge between two transactions; SIGKILL or a crash stops any delete anywhere):
 * - 'purge': the mark says a purge (`strata bucket delete --purge`) made it: the operator asked for
 *   everything in it to go, and part of it may already have. The caller resumes the purge as a job.
 * - 'finished': no purge, and the bucket is empty: S3's DeleteBucket or `strata bucket delete`
 *   found it empty and marked it, so nothing could land in it since; its delete is finished here
 *   (what the interrupted delete would have done; its client saw an error or no answer, and a
 *   retry now gets NoSuchBucket, as after any successful DeleteBucket).
 * - 'unmarked': no purge, and the bucket holds something: a write committed between the delete's
 *   look and its mark, and the delete would have taken the mark back (BucketNotEmpty). It is taken
 *   back here: the bucket serves again, as it was. Nothing that was not asked for is deleted.
 */
export type InterruptedRemoval = 'purge' | 'finished' | 'unmarked';

/** The names of the buckets a delete left marked, a catalog page at a time. */
export async function markedBuckets(context: ObjectContext): Promise<string[]> {
  const names: string[] = [];
  let after: string | undefined;
  do {
    const page = await context.tables.buckets.page({ limit: 1000, ...(after === undefined ? {} : { after }) });
    for (const entry of page.records) if (entry.record.deleting === true) names.push(entry.record.name);
    after = page.nextAfter;
  } while (after !== undefined);
  return names;
}

/** Settles one bucket markedBuckets named (see InterruptedRemoval); a purge is left to the caller. */
export async function settleInterruptedRemoval(context: ObjectContext, name: string): Promise<InterruptedRemoval> {
  const bucket = await context.bucket(name, { fresh: true, deleting: 'include' });
  if (bucket.record.deleting !== true) throw new StorageError('BUSY', `bucket '${name}' is no longer being deleted`);
  if (bucket.record.purging === true) return 'purge';
  if ((await firstContent(context, bucket.record)) !== undefined) {
    if (context.bucketRemovals.has(name)) throw OPERATOR_RULES.alreadyDeleting(name);
    await unmark(context, bucket);
    return 'unmarked';
  }
  await removeBucket(context, name, {}, OPERATOR_RULES);
  return 'finished';
}
