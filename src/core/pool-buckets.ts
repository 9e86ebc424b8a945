/**
 * PoolBuckets: what the volume layer asks of the S3 object model about a pool. A bucket names
 * the pool its objects' chunks go to, so a pool must not be deleted while a bucket names it.
 * The object model sits above src/volume (docs/architecture.md), so the volume service cannot
 * read buckets itself: the daemon hands it this narrow view (src/daemon/object-store.ts).
 */

/** The buckets that name a pool: how many, and the names of the first ones (for a message). */
export interface BucketsOfPool {
  readonly count: number;
  /** At most the limit asked for, in name order. */
  readonly names: readonly string[];
}

export interface PoolBuckets {
  /** The buckets whose pool is `pool`, naming at most `limit` of them. */
  bucketsOf(pool: string, limit: number): Promise<BucketsOfPool>;
  /**
   * `pool` was deleted: anything opened for its buckets is dropped, so a CreateBucket naming it
   * afterwards finds it missing instead of reusing what was opened before.
   */
  poolDeleted(pool: string): void;
}
