/**
 * The bucket GET and HEAD resolve keys in: the record as last read (bucket-cache.ts), with no
 * catalog get of the bucket before the get of the key (one of four catalog round trips of a small
 * GET).
 *
 * Why a cached record is safe for a read even before a change elsewhere is reported: what a read
 * uses of it, the bucket's id (its keys are stored under it) and pool, never changes while the
 * bucket lives; a bucket is deleted only once it holds no versions (a purge deletes them first, after
 * marking the bucket: bucket-removal.ts), and one created again under the name gets a new id. So a
 * key found under a cached id is a key of a live bucket (or of one being deleted right now, which
 * reads as before the delete, as a read racing DeleteObject does); a key NOT found may be under a stale id,
 * and the read is then resolved again from a fresh record (NoSuchBucket, or the key in the new
 * bucket). Writes compare the bucket's revision in their transaction instead.
 */
import type { ObjectContext } from './context.js';
import { isObjectError } from './errors.js';
import type { BucketRecord, ObjectVersionRecord } from './records.js';
import { resolveVersionIn } from './versions.js';

/** resolveVersion for a read (GET, HEAD): the cached bucket record, see above. */
export async function resolveVersionForRead(context: ObjectContext, bucketName: string, key: string, versionId?: string): Promise<{ bucket: BucketRecord; version: ObjectVersionRecord }> {
  const cached = (await context.bucket(bucketName)).record;
  try {
    return await resolveVersionIn(context, cached, key, versionId);
  } catch (err) {
    if (!isObjectError(err)) throw err;
    // Not found under the cached id: perhaps the bucket is gone, or was made again; ask afresh.
    const fresh = (await context.bucket(bucketName, { fresh: true })).record;
    if (fresh.id === cached.id) throw err;
    return resolveVersionIn(context, fresh, key, versionId);
  }
}
