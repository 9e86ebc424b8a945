/**
 * Buckets: create (S3's naming rules; BucketAlreadyExists / BucketAlreadyOwnedByYou), head, list
 * by owner, versioning, canned ACL and owner. A bucket's objects are keyed by its random id, not
 * its name. Deleting one is bucket-removal.ts's.
 */
import { isStorageError } from '../core/errors.js';
import { TxnBuilder, type Versioned } from '../meta/table.js';
import { retryOnConflict, type ObjectContext } from './context.js';
import { ObjectError } from './errors.js';
import { checkBucketName } from './names.js';
import type { BucketRecord, CannedAcl, VersioningState } from './records.js';
import { KEY_END } from './tables.js';

export interface CreateBucketRequest {
  readonly name: string;
  readonly owner: string;
  readonly pool: string;
  readonly acl?: CannedAcl;
}

/** Buckets listed per page at most (S3's ListBuckets max-buckets is 10,000; pages stay catalog pages). */
export const BUCKET_PAGE_MAX = 1000;

export async function createBucket(context: ObjectContext, request: CreateBucketRequest): Promise<BucketRecord> {
  checkBucketName(request.name);
  await context.repositoryOf(request.pool); // NOT_FOUND for a pool that does not exist
  const record: BucketRecord = {
    name: request.name,
    id: context.newId(),
    owner: request.owner,
    pool: request.pool,
    createdAtMs: context.nowMs(),
    versioning: 'unversioned',
    acl: request.acl ?? 'private',
  };
  const existing = await context.tables.buckets.get(request.name);
  if (existing === undefined) {
    const txn = new TxnBuilder();
    context.tables.buckets.put(txn, record);
    try {
      await commitBucketChange(context, txn);
      return record;
    } catch (err) {
      if (!isStorageError(err, 'BUSY') && !isStorageError(err, 'ALREADY_EXISTS')) throw err;
    }
  }
  const winner = existing ?? (await context.tables.buckets.get(request.name));
  if (winner !== undefined && winner.record.owner === request.owner) {
    throw new ObjectError('BucketAlreadyOwnedByYou', `you already own bucket ${request.name}`);
  }
  throw new ObjectError('BucketAlreadyExists', `bucket name ${request.name} is taken: pick another`);
}

/**
 * Commits a change to a bucket record (returns its revision); the cached records are forgotten
 * whether it lands or not (this daemon's next request sees the change without waiting for the
 * catalog's watch event).
 */
export async function commitBucketChange(context: ObjectContext, txn: TxnBuilder): Promise<number> {
  try {
    return await txn.commit(context.catalog);
  } finally {
    context.buckets.forget();
  }
}

export async function headBucket(context: ObjectContext, name: string): Promise<BucketRecord> {
  return (await context.bucket(name)).record;
}

export async function listBuckets(
  context: ObjectContext,
  owner: string,
  options: { after?: string; limit?: number } = {},
): Promise<{ buckets: BucketRecord[]; nextAfter?: string }> {
  const limit = Math.min(options.limit ?? BUCKET_PAGE_MAX, BUCKET_PAGE_MAX);
  const prefix = `${owner}${KEY_END}`;
  const page = await context.tables.buckets.indexPage('owner', prefix, {
    limit,
    ...(options.after === undefined ? {} : { after: `${prefix}${options.after}` }),
  });
  const records = page.records.map((entry) => entry.record);
  const last = records.at(-1);
  // A bucket being deleted answers NoSuchBucket to every request: it is not listed either.
  const buckets = records.filter((record) => record.deleting !== true);
  return page.nextAfter === undefined || last === undefined ? { buckets } : { buckets, nextAfter: last.name };
}

async function updateBucket(
  context: ObjectContext,
  name: string,
  change: (record: BucketRecord) => BucketRecord,
  extend?: (txn: TxnBuilder) => Promise<void>,
): Promise<BucketRecord> {
  return retryOnConflict(context, async () => {
    const bucket: Versioned<BucketRecord> = await context.bucket(name, { fresh: true });
    const next = change(bucket.record);
    const txn = new TxnBuilder();
    context.tables.buckets.put(txn, next, bucket);
    await extend?.(txn);
    await commitBucketChange(context, txn);
    return next;
  });
}

/** Enables or suspends versioning (a bucket never returns to unversioned, as in S3). */
export async function setBucketVersioning(context: ObjectContext, name: string, state: Exclude<VersioningState, 'unversioned'>): Promise<BucketRecord> {
  return updateBucket(context, name, (record) => ({ ...record, versioning: state }));
}

export async function setBucketAcl(context: ObjectContext, name: string, acl: CannedAcl): Promise<BucketRecord> {
  return updateBucket(context, name, (record) => ({ ...record, acl }));
}

/**
 * Gives the bucket to `owner` (`strata bucket chown`). `holdOwner` adds to the same transaction
 * what makes sure the user exists when it commits (UserStore.holdUserInto: NOT_FOUND when there is
 * none; a user delete racing it fails instead of leaving the bucket to nobody). Nothing else names
 * the owner: access and the canned ACL's grants are worked out from this record on every request
 * (src/api/s3/access.ts), so they follow at once. Versions and uploads keep the user who wrote
 * them (listings show it as their owner; it grants nothing).
 */
export async function setBucketOwner(context: ObjectContext, name: string, owner: string, holdOwner: (txn: TxnBuilder) => Promise<void>): Promise<BucketRecord> {
  return updateBucket(context, name, (record) => ({ ...record, owner }), holdOwner);
}
