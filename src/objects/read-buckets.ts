/**
 * The bucket records GET and HEAD resolve keys in, remembered per ObjectContext: without it every
 * read costs a catalog get of the bucket before the get of the key (one of four catalog round
 * trips of a small GET).
 *
 * Why a remembered record is safe for a read: what a read uses of it, the bucket's id (its keys
 * are stored under it) and pool, never changes while the bucket lives; versioning and the ACL
 * are not read here (anonymous access checks its own fresh record). A bucket is deleted only
 * when it holds no versions, and one created again under the name gets a new id. So a key found
 * under a remembered id is a key of a live bucket (or one being deleted right now, which reads
 * as before the delete); a key NOT found may be a stale id, and the read is then resolved again
 * from a fresh record (NoSuchBucket, or the key in the new bucket). Writes never use this: they
 * compare the bucket's revision in their transaction.
 */
import type { ObjectContext } from './context.js';
import { isObjectError } from './errors.js';
import type { BucketRecord, ObjectVersionRecord } from './records.js';
import { resolveVersion, resolveVersionIn } from './versions.js';

/** Buckets remembered per context (more are read again; a bucket record is a few hundred bytes). */
export const READ_BUCKETS_MAX = 1024;

const remembered = new WeakMap<ObjectContext, Map<string, BucketRecord>>();

function bucketsOf(context: ObjectContext): Map<string, BucketRecord> {
  let buckets = remembered.get(context);
  if (buckets === undefined) {
    buckets = new Map();
    remembered.set(context, buckets);
  }
  return buckets;
}

/** resolveVersion for a read (GET, HEAD): the bucket from memory when it is there, see above. */
export async function resolveVersionForRead(context: ObjectContext, bucketName: string, key: string, versionId?: string): Promise<{ bucket: BucketRecord; version: ObjectVersionRecord }> {
  const buckets = bucketsOf(context);
  const known = buckets.get(bucketName);
  if (known !== undefined) {
    try {
      return await resolveVersionIn(context, known, key, versionId);
    } catch (err) {
      // Not found under a remembered id: perhaps the bucket is gone (or was made again); ask afresh.
      if (!isObjectError(err)) throw err;
      buckets.delete(bucketName);
    }
  }
  const resolved = await resolveVersion(context, bucketName, key, versionId);
  if (buckets.size >= READ_BUCKETS_MAX) buckets.clear();
  buckets.set(bucketName, resolved.bucket);
  return resolved;
}
