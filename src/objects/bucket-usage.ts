/**
 * What an operator asks about buckets (`strata bucket list|info|du`): every bucket whatever its
 * owner, one bucket's record with its object count, and its usage. Every answer is a bounded
 * read: the list a catalog page at a time; object counts stop at a cap (a bucket of millions is
 * "more than"); usage a page of records per call, resumed from an opaque token, so a caller
 * shows progress and no request walks a large bucket at once.
 */
import { StorageError } from '../core/errors.js';
import type { ObjectContext } from './context.js';
import type { BucketRecord } from './records.js';

/** Buckets per page of the admin list. */
export const BUCKET_ADMIN_PAGE_MAX = 1000;
/** Records a usage page reads at most, and by default. */
export const USAGE_PAGE_RECORDS_MAX = 50_000;
export const USAGE_PAGE_RECORDS_DEFAULT = 10_000;
/** Objects counted for a listing or info before the count says "at least". */
export const OBJECT_COUNT_CAP = 10_000;

export interface BucketCount {
  /** Current objects (keys whose newest version is an object), up to OBJECT_COUNT_CAP. */
  readonly objectCount: number;
  /** True when the bucket holds more than objectCount. */
  readonly objectCountCapped: boolean;
}

/** One page of a bucket's usage; the sums of every page are the bucket's. */
export interface BucketUsagePage {
  readonly bucket: BucketRecord;
  /** Current objects and their bytes (what a listing shows). */
  readonly objectCount: number;
  readonly objectBytes: number;
  /** Every stored version, current or not, and their bytes (what the pool holds for the bucket). */
  readonly versionCount: number;
  readonly versionBytes: number;
  readonly deleteMarkerCount: number;
  /** Multipart uploads in progress, their parts and the parts' bytes. */
  readonly uploadCount: number;
  readonly partCount: number;
  readonly partBytes: number;
  /** Catalog records read for this page (progress). */
  readonly recordsRead: number;
  /** Pass back as `after` for the next page; absent on the last one. */
  readonly next?: string;
}

type Phase = 'objects' | 'versions' | 'uploads';
const PHASES: readonly Phase[] = ['objects', 'versions', 'uploads'];

interface Position {
  readonly phase: Phase;
  readonly after?: string;
}

function encodePosition(position: Position): string {
  return Buffer.from(JSON.stringify(position)).toString('base64url');
}

function decodePosition(token: string): Position {
  try {
    const parsed: unknown = JSON.parse(Buffer.from(token, 'base64url').toString('utf8'));
    if (typeof parsed === 'object' && parsed !== null) {
      const { phase, after } = parsed as { phase?: unknown; after?: unknown };
      if (typeof phase === 'string' && (PHASES as readonly string[]).includes(phase) && (after === undefined || typeof after === 'string')) {
        return after === undefined ? { phase: phase as Phase } : { phase: phase as Phase, after };
      }
    }
  } catch {
    // reported below
  }
  throw new StorageError('INVALID_ARGUMENT', `'${token}' is not a usage position: pass the 'next' of the previous page, or nothing to start`);
}

/** Every bucket (any owner), a page at a time in name order. */
export async function listAllBuckets(context: ObjectContext, options: { after?: string; limit?: number } = {}): Promise<{ buckets: BucketRecord[]; nextAfter?: string }> {
  const limit = Math.max(1, Math.min(options.limit ?? BUCKET_ADMIN_PAGE_MAX, BUCKET_ADMIN_PAGE_MAX));
  const page = await context.tables.buckets.page({ limit, ...(options.after === undefined ? {} : { after: options.after }) });
  const buckets = page.records.map((entry) => entry.record);
  return page.nextAfter === undefined ? { buckets } : { buckets, nextAfter: page.nextAfter };
}

/** The bucket's current objects, counted up to OBJECT_COUNT_CAP. */
export async function countObjects(context: ObjectContext, bucket: BucketRecord): Promise<BucketCount> {
  const page = await context.tables.current.prefixPage(`${bucket.id}/`, { limit: OBJECT_COUNT_CAP + 1 });
  const count = page.records.length;
  return count > OBJECT_COUNT_CAP ? { objectCount: OBJECT_COUNT_CAP, objectCountCapped: true } : { objectCount: count, objectCountCapped: false };
}

/** One page of `name`'s usage from `after` (absent: the start), reading at most `limit` records. */
export async function bucketUsagePage(context: ObjectContext, name: string, options: { after?: string; limit?: number } = {}): Promise<BucketUsagePage> {
  const limit = options.limit ?? USAGE_PAGE_RECORDS_DEFAULT;
  if (!Number.isSafeInteger(limit) || limit < 1 || limit > USAGE_PAGE_RECORDS_MAX) {
    throw new StorageError('INVALID_ARGUMENT', `a usage page of ${limit} records: give 1 to ${USAGE_PAGE_RECORDS_MAX}`);
  }
  // An operator's question: a bucket being deleted is measured too (what its purge has left).
  const bucket = (await context.bucket(name, { deleting: 'include' })).record;
  const { next, ...page } = await usagePageAt(context, bucket, options.after === undefined ? { phase: 'objects' } : decodePosition(options.after), limit);
  return { ...page, ...(next === undefined ? {} : { next: encodePosition(next) }) };
}

/** What a bucket keeps in its pool: every version and delete marker, every upload in progress and its parts. */
export type StoredUsage = Omit<BucketUsagePage, 'bucket' | 'objectCount' | 'objectBytes' | 'recordsRead' | 'next'>;

/** The bucket's StoredUsage, read a page at a time (a purge's total, before it starts). */
export async function storedUsage(context: ObjectContext, bucket: BucketRecord): Promise<StoredUsage> {
  const sums = { versionCount: 0, versionBytes: 0, deleteMarkerCount: 0, uploadCount: 0, partCount: 0, partBytes: 0 };
  let position: Position | undefined = { phase: 'versions' };
  while (position !== undefined) {
    const page = await usagePageAt(context, bucket, position, USAGE_PAGE_RECORDS_MAX);
    for (const k of Object.keys(sums) as (keyof typeof sums)[]) sums[k] += page[k];
    position = page.next;
  }
  return sums;
}

async function usagePageAt(context: ObjectContext, bucket: BucketRecord, position: Position, limit: number): Promise<Omit<BucketUsagePage, 'next'> & { next?: Position }> {
  const sums = { objectCount: 0, objectBytes: 0, versionCount: 0, versionBytes: 0, deleteMarkerCount: 0, uploadCount: 0, partCount: 0, partBytes: 0, recordsRead: 0 };
  const from = position.after === undefined ? {} : { after: position.after };
  let nextAfter: string | undefined;
  if (position.phase === 'objects') {
    const page = await context.tables.current.prefixPage(`${bucket.id}/`, { limit, ...from });
    for (const { record } of page.records) {
      sums.objectCount++;
      sums.objectBytes += record.data?.sizeBytes ?? 0;
    }
    sums.recordsRead = page.records.length;
    nextAfter = page.nextAfter;
  } else if (position.phase === 'versions') {
    const page = await context.tables.versions.prefixPage(`${bucket.id}/`, { limit, ...from });
    for (const { record } of page.records) {
      if (record.data === undefined) {
        sums.deleteMarkerCount++;
      } else {
        sums.versionCount++;
        sums.versionBytes += record.data.sizeBytes;
      }
    }
    sums.recordsRead = page.records.length;
    nextAfter = page.nextAfter;
  } else {
    // An upload's parts (at most 10,000) are read with it: a page may pass `limit` by one upload's parts.
    const page = await context.tables.uploads.indexPage('key', `${bucket.id}/`, { limit, ...from });
    for (const { record } of page.records) {
      const parts = await partSums(context, record.uploadId);
      sums.uploadCount++;
      sums.partCount += parts.partCount;
      sums.partBytes += parts.partBytes;
      sums.recordsRead += 1 + parts.partCount;
    }
    nextAfter = page.nextAfter;
  }
  const nextPhase = PHASES[PHASES.indexOf(position.phase) + 1];
  const next: Position | undefined = nextAfter !== undefined ? { phase: position.phase, after: nextAfter } : nextPhase === undefined ? undefined : { phase: nextPhase };
  return { bucket, ...sums, ...(next === undefined ? {} : { next }) };
}

/** The parts of an upload and their bytes, read a page at a time. */
export async function partSums(context: ObjectContext, uploadId: string): Promise<{ partCount: number; partBytes: number }> {
  const sums = { partCount: 0, partBytes: 0 };
  let after: string | undefined;
  do {
    const parts = await context.tables.parts.prefixPage(`${uploadId}/`, after === undefined ? {} : { after });
    for (const part of parts.records) {
      sums.partCount++;
      sums.partBytes += part.record.sizeBytes;
    }
    after = parts.nextAfter;
  } while (after !== undefined);
  return sums;
}

/** What a bucket holds, each count stopped at OBJECT_COUNT_CAP (what a refused delete names). */
export interface BucketContents {
  /** Current objects (what a listing shows). */
  readonly objectCount: number;
  /** Every stored version with data, current or not. */
  readonly versionCount: number;
  readonly deleteMarkerCount: number;
  readonly uploadCount: number;
  /** True when the versions or uploads passed the cap: there are more than counted. */
  readonly capped: boolean;
}

/** The bucket's contents, counted with three bounded reads. */
export async function countContents(context: ObjectContext, bucket: BucketRecord): Promise<BucketContents> {
  const limit = OBJECT_COUNT_CAP + 1;
  const [objects, versions, uploads] = await Promise.all([
    countObjects(context, bucket),
    context.tables.versions.prefixPage(`${bucket.id}/`, { limit }),
    // Index entries only: the upload records themselves are not needed to count them.
    context.catalog.list(context.tables.uploads.indexKey('key', `${bucket.id}/`), { limit }),
  ]);
  const stored = versions.records.slice(0, OBJECT_COUNT_CAP);
  const markers = stored.filter((v) => v.record.isDeleteMarker).length;
  return {
    objectCount: objects.objectCount,
    versionCount: stored.length - markers,
    deleteMarkerCount: markers,
    uploadCount: Math.min(uploads.entries.length, OBJECT_COUNT_CAP),
    capped: objects.objectCountCapped || versions.records.length > OBJECT_COUNT_CAP || uploads.entries.length > OBJECT_COUNT_CAP,
  };
}
