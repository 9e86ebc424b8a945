/**
 * What every module of the object model shares: the tables, where large manifests go, the pools'
 * chunk repositories, the clock and the id and version-slot generators.
 */
import type { CatalogStore } from '../core/catalog-store.js';
import type { ChunkStore } from '../core/chunk-store.js';
import type { ChunkRepository } from '../store/dedup/repository.js';
import { isStorageError } from '../core/errors.js';
import { BucketCache } from './bucket-cache.js';
import { isObjectError, ObjectError } from './errors.js';
import type { BucketRecord } from './records.js';
import { ObjectTables } from './tables.js';
import type { Versioned } from '../meta/table.js';
import { randomHex } from '../sys/random-hex.js';

/** Objects are cut into chunks of this size from offset 0 (qcow2's default cluster, as sealed layers). */
export const OBJECT_CHUNK_SIZE_BYTES = 64 * 1024;

export interface ObjectModelOptions {
  readonly catalog: CatalogStore;
  /** Where manifests too large for a catalog value are kept (`object-manifests/<id>`). */
  readonly manifestStore: ChunkStore;
  /** The ChunkRepository of a pool; NOT_FOUND (a StorageError) for a pool that does not exist. */
  readonly repositoryOf: (pool: string) => Promise<ChunkRepository>;
  /** Milliseconds since the epoch; Date.now by default. */
  readonly nowMs?: () => number;
  /**
   * Told of a failure in the work that follows a committed change (giving references back,
   * dropping a put's markers): the change stands, the work stays recorded and `recover()` ends it.
   */
  readonly onDeferredError?: (err: unknown) => void;
  /**
   * Runs that clean-up after the request is answered instead of before (the daemon: a small PUT
   * then waits for one commit, not for its markers to be dropped and its journal deleted too).
   * Safe because the clean-up is recorded before the commit and `recover()` ends what a crash
   * cut off; call `ObjectModel.idle()` before closing the stores. Off by default (tests read
   * reference counts right after a call).
   */
  readonly cleanupInBackground?: boolean;
}

/** Largest value of the inverted clock behind version slots (microseconds, 2^52: year 2112). */
const SLOT_CLOCK_MAX = 2 ** 52;
const SLOT_HEX_DIGITS = 13;

export class ObjectContext {
  readonly tables: ObjectTables;
  readonly catalog: CatalogStore;
  readonly manifestStore: ChunkStore;
  readonly repositoryOf: (pool: string) => Promise<ChunkRepository>;
  readonly nowMs: () => number;
  readonly onDeferredError: (err: unknown) => void;
  readonly cleanupInBackground: boolean;
  /** Clean-ups running in the background (cleanupInBackground). */
  readonly pendingCleanups = new Set<Promise<void>>();
  /** Bucket records as last read (bucket-cache.ts says why that is safe). */
  readonly buckets: BucketCache;
  /** Names of the buckets a delete of this daemon is working on (bucket-removal.ts: one at a time per bucket). */
  readonly bucketRemovals = new Set<string>();
  private lastSlotMicros = 0;

  constructor(options: ObjectModelOptions) {
    this.catalog = options.catalog;
    this.tables = new ObjectTables(options.catalog);
    this.buckets = new BucketCache(options.catalog, this.tables.buckets);
    this.manifestStore = options.manifestStore;
    this.repositoryOf = options.repositoryOf;
    this.nowMs = options.nowMs ?? Date.now;
    this.onDeferredError = options.onDeferredError ?? (() => undefined);
    this.cleanupInBackground = options.cleanupInBackground ?? false;
  }

  /** Resolves once every clean-up started so far (and any they started) has finished. */
  async idle(): Promise<void> {
    while (this.pendingCleanups.size > 0) await Promise.all([...this.pendingCleanups]);
  }

  /** A fresh opaque id (upload ids, put ids, bucket ids): 128 random bits, hex. */
  newId(): string {
    return randomHex(16);
  }

  /**
   * A new version slot: sorts before every slot made earlier (newest version first in key order),
   * strictly, even within a microsecond, with random bits so two daemons never make the same one.
   */
  newSlot(): string {
    this.lastSlotMicros = Math.max(this.lastSlotMicros + 1, this.nowMs() * 1000);
    const inverted = SLOT_CLOCK_MAX - this.lastSlotMicros;
    return inverted.toString(16).padStart(SLOT_HEX_DIGITS, '0') + randomHex(4);
  }

  /**
   * The bucket's record, NoSuchBucket if there is none: as last read unless `fresh` (a writer of
   * the bucket record itself reads it fresh, so that its compare is against the stored one). A
   * bucket being deleted is NoSuchBucket too (every S3 request, so none can add to what the delete
   * empties), unless `deleting: 'include'` (the operator's views and the delete itself).
   */
  async bucket(name: string, options: { fresh?: boolean; deleting?: 'include' } = {}): Promise<Versioned<BucketRecord>> {
    const found = await this.buckets.get(name, options);
    if (found === undefined) throw new ObjectError('NoSuchBucket', `bucket ${name} does not exist`);
    if (found.record.deleting === true && options.deleting !== 'include') throw new ObjectError('NoSuchBucket', `bucket ${name} is being deleted`);
    return found;
  }
}

/** Attempts an operation makes when other writers keep changing the records it read (BUSY). */
export const CONFLICT_ATTEMPTS_MAX = 16;

/**
 * Runs `attempt` again (it re-reads what it compares) while its transaction loses a race. The
 * bucket records read so far are forgotten before each retry: the race may have been with a
 * change to the bucket, which this daemon's watch has not reported yet.
 */
export async function retryOnConflict<T>(context: ObjectContext, attempt: () => Promise<T>): Promise<T> {
  for (let tries = 1; ; tries++) {
    try {
      return await attempt();
    } catch (err) {
      if (!isStorageError(err, 'BUSY') || isObjectError(err) || tries >= CONFLICT_ATTEMPTS_MAX) throw err;
      context.buckets.forget();
    }
  }
}

/**
 * Runs the clean-up that follows a committed change, before the request is answered or (with
 * cleanupInBackground) after. Its failure must not fail the request (the change is done and
 * acknowledged next); what it left is recorded and recover() finishes it.
 */
export async function finishAfterCommit(context: ObjectContext, work: () => Promise<void>): Promise<void> {
  const running = work().catch((err: unknown) => context.onDeferredError(err));
  if (!context.cleanupInBackground) return running;
  context.pendingCleanups.add(running);
  void running.finally(() => context.pendingCleanups.delete(running));
}
