/**
 * Bucket records as last read. Every S3 request reads its bucket, and buckets change rarely: in a
 * profile of 1 MiB PUTs one at a time that read (a LevelDB get and its decoding) was ~0.15 ms of
 * the event loop's ~6 ms per request, on the one thread whose CPU bounds a busy machine's
 * throughput.
 *
 * Why a record read here can be trusted: this daemon forgets every record when it changes a bucket
 * (forget(), called by the writers in buckets.ts) and when a transaction loses a race
 * (retryOnConflict), and a catalog watch forgets them when another daemon of a cluster changes
 * one. Between such a change elsewhere and its watch event a record may be stale; every change
 * that depends on the bucket compares its modRevision in its own transaction (versions.ts,
 * multipart.ts), so a stale record fails that commit with BUSY and the retry reads afresh.
 * A read that began before a change and ends after it is not kept (the generation count).
 */
import type { CatalogStore, CatalogWatch } from '../core/catalog-store.js';
import type { Table, Versioned } from '../meta/table.js';
import type { BucketRecord } from './records.js';

/** Records kept at most (all are dropped when full: a daemon serves far fewer buckets than this). */
export const CACHED_BUCKETS_MAX = 4096;

export class BucketCache {
  private readonly records = new Map<string, Versioned<BucketRecord>>();
  /** Counts forgets: a read that saw it change while it ran keeps nothing. */
  private generation = 0;
  private watch: CatalogWatch | undefined;
  /** Reads served from the cache (tests see that it is used). */
  hits = 0;

  constructor(
    private readonly catalog: CatalogStore,
    private readonly table: Table<BucketRecord>,
  ) {}

  /** The bucket's record: the cached one, or read now (`fresh`: always read now). Undefined: no such bucket. */
  async get(name: string, options: { fresh?: boolean } = {}): Promise<Versioned<BucketRecord> | undefined> {
    if (options.fresh !== true) {
      const cached = this.records.get(name);
      if (cached !== undefined) {
        this.hits++;
        return cached;
      }
    }
    // Watching from before the first read: a change committed after it is always seen.
    this.watch ??= this.catalog.watch(this.table.recordKey(''), () => this.forget());
    const generation = this.generation;
    const found = await this.table.get(name);
    if (found !== undefined && generation === this.generation) {
      if (this.records.size >= CACHED_BUCKETS_MAX) this.records.clear();
      // Shared by every request that reads it: frozen so that none can change it for the others.
      this.records.set(name, Object.freeze({ record: Object.freeze({ ...found.record }), modRevision: found.modRevision }));
    }
    return found;
  }

  /** Drops every record: the next read of each goes to the catalog. */
  forget(): void {
    this.generation++;
    this.records.clear();
  }

  /** Stops watching the catalog (the model is closing). */
  close(): void {
    this.watch?.cancel();
    this.watch = undefined;
    this.forget();
  }
}
