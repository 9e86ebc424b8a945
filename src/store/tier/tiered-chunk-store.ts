/**
 * TieredChunkStore: a ChunkStore over two others (nbdkit-filter style), so the dedup repository
 * stores its packs through it unchanged. New objects go to the hot tier (local disk); reads take
 * the hot copy when there is one and the cold one (S3, or a second local folder: no special case)
 * otherwise. Objects not read for `coolingMs` move cold in migrateCold(); evict() moves chosen
 * ones now. Where each object is and when it was last read lives in a TierCatalog.
 *
 * The cache: a random read of a cold object promotes the whole object back to the hot tier as a
 * `both` copy (the cold copy stays, so dropping it later is a delete, never a copy), bounded in
 * bytes, least recently read dropped first. Whole objects on the hot tier, not ranges in memory,
 * because: packs are a few MiB of chunks sealed together, so a guest that reads one chunk at
 * random tends to read its neighbours next; S3 charges per request more than per byte; local disk
 * holds far more than memory and survives a restart (the records say what is cached); and the
 * chunk bytes are cached in memory above this layer already (the repository's and the chunked
 * files' caches). The read that triggers a promotion is served by a ranged cold read; the
 * promotion runs behind it. Sequential reads never promote (ReadPatternTracker).
 *
 * Sequential reads are read ahead instead (read-ahead.ts): a read whose arrival continues the
 * object's run (a second tracker, of arrivals, since the reads of one pread arrive together) starts
 * a stream, and the reads inside it are served from parts fetched in parallel ranged GETs. Those
 * reads count as sequential for promotion, whatever order they complete in. A reader waiting on a
 * part has its own time bound; a part that fails makes the reader read its range itself within
 * that bound, so a read fails with its own error and never with a read-ahead's.
 */
import type { CatalogStore } from '../../core/catalog-store.js';
import { CHUNK_LIST_PAGE_MAX, chunkStoreClosed, type ChunkListPage, type ChunkStore, type ChunkStoreCallOptions } from '../../core/chunk-store.js';
import { StorageError } from '../../core/errors.js';
import { boundedColdCall, COLD_PART_DEFAULT_BYTES, COLD_PARTS_IN_FLIGHT_DEFAULT, COLD_TIMEOUT_DEFAULT_MS, getColdRange, type ColdCallOptions } from './cold-calls.js';
import { KeyLock } from './key-lock.js';
import { migrate, type MigrationContext, type MigrationOptions, type MigrationResult } from './migration.js';
import { ColdReadAhead, type ReadAheadOptions, type ReadAheadRange } from './read-ahead.js';
import { ReadPatternTracker, type ReadPatternOptions } from './read-pattern.js';
import { TierCatalog } from './tier-catalog.js';

export interface TieredChunkStoreOptions {
  /** Where new objects go and cached ones stay: local disk. */
  readonly hot: ChunkStore;
  /** Where cooled objects go: S3, or a slower local folder. */
  readonly cold: ChunkStore;
  /** Keeps locations and read times across restarts; without it they start afresh at open. */
  readonly catalog?: CatalogStore;
  /** The table's name in the catalog (one per tiered store; default `tier-objects`). */
  readonly catalogTable?: string;
  /** An object not read for this long is cold. */
  readonly coolingMs: number;
  /** The most bytes promoted copies may take on the hot tier (default 1 GiB). */
  readonly cacheSizeBytesMax?: number;
  /** The clock reads are timed by (default Date.now; tests pass their own). */
  readonly now?: () => number;
  /** Bounds on cold calls (defaults: 30 s, parts of 8 MiB, 8 parts in flight). */
  readonly coldTimeoutMs?: number;
  readonly coldPartSizeBytes?: number;
  readonly coldPartsInFlightMax?: number;
  readonly readPattern?: ReadPatternOptions;
  /** Read-ahead of sequential cold reads (defaults: 32 MiB ahead, 64 MiB in all; bytesMax 0: off). */
  readonly readAhead?: ReadAheadOptions;
  /** Read times are written at most this often per object (default 60 s). */
  readonly readTimeGranularityMs?: number;
  /** Queued catalog records are written this often (default 10 s; 0: only by flush()). */
  readonly flushIntervalMs?: number;
  /** Objects moved cold at once (default 2) and promoted at once (default 2). */
  readonly migrationsInFlightMax?: number;
  readonly promotionsInFlightMax?: number;
}

/** The counters `pool df` and /metrics show. */
export interface TierStats {
  /** Reads served from the hot tier, and reads that had to go to the cold tier. */
  readonly hits: number;
  readonly misses: number;
  readonly promotions: number;
  readonly promotionFailures: number;
  /** Promoted copies dropped to keep the cache within its bound. */
  readonly evictions: number;
  readonly coldReadFailures: number;
  readonly movedCold: number;
  readonly migrationFailures: number;
  /** Bytes and objects with a hot copy, and with a verified cold copy (a cached object counts in both). */
  readonly hotBytes: number;
  readonly hotObjects: number;
  readonly coldBytes: number;
  readonly coldObjects: number;
  readonly cacheBytes: number;
  readonly cacheObjects: number;
  readonly cacheSizeBytesMax: number;
  readonly pendingCatalogWrites: number;
}

export const CACHE_SIZE_DEFAULT_BYTES = 1024 * 1024 * 1024;
const FLUSH_INTERVAL_DEFAULT_MS = 10_000;
/** Queued records that trigger a flush before the timer does. */
const PENDING_FLUSH_THRESHOLD = 500;
/** Catalog records looked past an object for the next cold one (read-ahead across packs). */
const NEXT_COLD_KEY_LOOK_MAX = 8;

type Counter = 'hits' | 'misses' | 'promotions' | 'promotionFailures' | 'evictions' | 'coldReadFailures' | 'movedCold' | 'migrationFailures';

export class TieredChunkStore implements ChunkStore {
  private readonly hot: ChunkStore;
  private readonly cold: ChunkStore;
  private readonly now: () => number;
  private readonly coldOptions: ColdCallOptions;
  private readonly lock = new KeyLock();
  /** Completed guest reads, in completion order: what promotes. */
  private readonly pattern: ReadPatternTracker;
  /** Guest reads not served by the read-ahead, in arrival order: what starts a stream (never promotes). */
  private readonly arrivals: ReadPatternTracker;
  private readonly readAhead: ColdReadAhead;
  /** Promoted objects, least recently read first, with their sizes. */
  private readonly cached = new Map<string, number>();
  private cacheBytes = 0;
  private readonly cacheSizeBytesMax: number;
  private readonly promoting = new Set<string>();
  private readonly background = new Set<Promise<void>>();
  private readonly counters: Record<Counter, number> = {
    hits: 0, misses: 0, promotions: 0, promotionFailures: 0, evictions: 0, coldReadFailures: 0, movedCold: 0, migrationFailures: 0,
  };
  private readonly flushTimer: NodeJS.Timeout | undefined;
  private closed = false;
  /** The last periodic flush's failure (the next one retries), for diagnostics. */
  lastFlushError: Error | undefined;

  private constructor(
    private readonly options: TieredChunkStoreOptions,
    private readonly catalog: TierCatalog,
  ) {
    this.hot = options.hot;
    this.cold = options.cold;
    this.now = options.now ?? Date.now;
    this.coldOptions = {
      timeoutMs: options.coldTimeoutMs ?? COLD_TIMEOUT_DEFAULT_MS,
      partSizeBytes: options.coldPartSizeBytes ?? COLD_PART_DEFAULT_BYTES,
      partsInFlightMax: options.coldPartsInFlightMax ?? COLD_PARTS_IN_FLIGHT_DEFAULT,
    };
    this.pattern = new ReadPatternTracker(options.readPattern);
    this.arrivals = new ReadPatternTracker(options.readPattern);
    this.readAhead = new ColdReadAhead(
      {
        partSizeBytes: this.coldOptions.partSizeBytes,
        coldSizeBytes: (key) => catalog.coldSizeBytes(key),
        nextColdKey: (key) => catalog.nextColdKey(key, NEXT_COLD_KEY_LOOK_MAX),
        // No caller waits on a part by itself: the bound is the tier's, the abort the closing one.
        fetchPart: (key, offsetBytes, lengthBytes, signal, into) =>
          this.coldCall(`read ahead ${key} [${offsetBytes}, +${lengthBytes})`, signal, (o) => this.cold.getRange(key, offsetBytes, lengthBytes, { ...o, into })),
      },
      options.readAhead,
    );
    this.cacheSizeBytesMax = options.cacheSizeBytesMax ?? CACHE_SIZE_DEFAULT_BYTES;
    for (const record of catalog.residents().filter((r) => r.place === 'both').sort((a, b) => a.lastReadMs - b.lastReadMs)) {
      this.cached.set(record.key, record.sizeBytes);
      this.cacheBytes += record.sizeBytes;
    }
    const interval = options.flushIntervalMs ?? FLUSH_INTERVAL_DEFAULT_MS;
    if (interval > 0) {
      this.flushTimer = setInterval(() => this.flushInBackground(), interval);
      this.flushTimer.unref();
    }
  }

  /** Opens the tiers: loads the catalog and reconciles it with the hot tier (see TierCatalog). */
  static async open(options: TieredChunkStoreOptions): Promise<TieredChunkStore> {
    if (!Number.isSafeInteger(options.coolingMs) || options.coolingMs < 0) {
      throw new StorageError('INVALID_ARGUMENT', `cooling period ${options.coolingMs} ms is not a whole number of milliseconds`);
    }
    const timeoutMs = options.coldTimeoutMs ?? COLD_TIMEOUT_DEFAULT_MS;
    const catalog = await TierCatalog.open({
      ...(options.catalog === undefined ? {} : { catalog: options.catalog }),
      ...(options.catalogTable === undefined ? {} : { tableName: options.catalogTable }),
      ...(options.readTimeGranularityMs === undefined ? {} : { readTimeGranularityMs: options.readTimeGranularityMs }),
      hot: options.hot,
      nowMs: (options.now ?? Date.now)(),
      coldHas: async (key) =>
        (await boundedColdCall(`probe ${key}`, timeoutMs, undefined, (o) => options.cold.getRange(key, 0, 0, o))) !== undefined,
    });
    return new TieredChunkStore(options, catalog);
  }

  async get(key: string, options?: ChunkStoreCallOptions): Promise<Uint8Array | undefined> {
    this.checkOpen(`get ${key}`);
    const hot = await this.hot.get(key, options);
    const counts = !isMaintenanceRead(options);
    if (hot !== undefined) {
      this.hotRead(key, counts);
      return hot;
    }
    const data = await this.coldRead(`get ${key}`, options, (o) => this.cold.get(key, o));
    // The caller owns `data` and may change it before the promotion writes: promote a copy.
    if (data !== undefined && counts && this.pattern.note(key, 0, data.length) === 'promote') this.promote(key, data.slice());
    return data;
  }

  async getRange(key: string, offsetBytes: number, lengthBytes: number, options?: ChunkStoreCallOptions): Promise<Uint8Array | undefined> {
    this.checkOpen(`get ${key}`);
    const counts = !isMaintenanceRead(options);
    // An object with no hot copy (no resident record) may be in a stream: no hot lookup per chunk.
    if (counts && lengthBytes > 0 && this.catalog.get(key) === undefined) {
      let ahead = this.readAhead.serve(key, offsetBytes, lengthBytes);
      // Only a read that starts a stream waits for it here (the object's size from the catalog).
      if (ahead === undefined && this.startsStream(key, offsetBytes, lengthBytes)) ahead = await this.readAhead.start(key, offsetBytes, lengthBytes);
      if (ahead !== undefined) return this.readThroughAhead(key, offsetBytes, lengthBytes, options, ahead);
    }
    const hot = await this.hot.getRange(key, offsetBytes, lengthBytes, options);
    if (hot !== undefined) {
      this.hotRead(key, counts);
      return hot;
    }
    // One bound for the whole read (its parts are bounded each as well).
    const data = await this.coldRead(`get ${key} [${offsetBytes}, +${lengthBytes})`, options, (o) =>
      getColdRange(this.cold, key, offsetBytes, lengthBytes, this.coldOptions, o.signal),
    );
    if (data !== undefined && counts && this.pattern.note(key, offsetBytes, lengthBytes) === 'promote') this.promote(key);
    return data;
  }

  async put(key: string, data: Uint8Array, options?: ChunkStoreCallOptions): Promise<void> {
    this.checkOpen(`put ${key}`);
    await this.lock.with(key, async () => {
      await this.catalog.beforeHotWrite(key);
      this.uncache(key);
      this.readAhead.forget(key);
      await this.hot.put(key, data, options);
      await this.catalog.noteHotWrite(key, data.length, this.now());
    });
    this.flushIfMany();
  }

  /**
   * Asks the hot tier, then the cold one (the catalog may be stale after a crash; the stores
   * are not): a putIfAbsent of a new key costs one cold lookup. The dedup repository writes packs
   * with put (their ids are unique), so this is not on its path.
   */
  async putIfAbsent(key: string, data: Uint8Array, options?: ChunkStoreCallOptions): Promise<boolean> {
    this.checkOpen(`put ${key}`);
    const stored = await this.lock.with(key, async () => {
      if ((await this.hot.getRange(key, 0, 0, options)) !== undefined) return false;
      if ((await this.coldCall(`probe ${key}`, options?.signal, (o) => this.cold.getRange(key, 0, 0, o))) !== undefined) return false;
      if (!(await this.hot.putIfAbsent(key, data, options))) return false;
      await this.catalog.noteHotWrite(key, data.length, this.now());
      return true;
    });
    this.flushIfMany();
    return stored;
  }

  /**
   * Removes both copies, hot first: if the cold delete then fails, the object reads as what the
   * cold tier holds (the delete did not happen yet) and a retry finishes it.
   */
  async delete(key: string, options?: ChunkStoreCallOptions): Promise<void> {
    this.checkOpen(`delete ${key}`);
    await this.lock.with(key, async () => {
      await this.hot.delete(key, options);
      this.uncache(key);
      this.pattern.forget(key);
      this.arrivals.forget(key);
      this.readAhead.forget(key);
      try {
        await this.coldCall(`delete ${key}`, options?.signal, (o) => this.cold.delete(key, o));
      } catch (err) {
        if (this.catalog.get(key)?.place === 'both') this.catalog.noteHotDropped(key);
        else await this.catalog.noteDeleted(key);
        throw err;
      }
      await this.catalog.noteDeleted(key);
    });
  }

  /**
   * A page of the keys of both tiers, each once, in key order. Each tier gives its first `limit`
   * keys after `after`; when a tier has more, the page stops at its last key, since the other
   * tier's later keys might come after keys of that tier not fetched yet.
   */
  async list(prefix: string, options?: ChunkStoreCallOptions & { after?: string; limit?: number }): Promise<ChunkListPage> {
    this.checkOpen(`list ${prefix}`);
    const limit = Math.min(options?.limit ?? CHUNK_LIST_PAGE_MAX, CHUNK_LIST_PAGE_MAX);
    const [hot, cold] = await Promise.all([
      this.hot.list(prefix, options),
      this.coldCall(`list ${prefix}`, options?.signal, (o) => this.cold.list(prefix, { ...options, ...o })),
    ]);
    let keys = [...new Set([...hot.keys, ...cold.keys])].sort();
    let cut = false;
    for (const page of [hot, cold]) {
      const last = page.keys.at(-1);
      if (page.nextAfter === undefined || last === undefined) continue;
      keys = keys.filter((key) => key <= last);
      cut = true;
    }
    if (keys.length > limit) {
      keys = keys.slice(0, limit);
      cut = true;
    }
    return cut && keys.length > 0 ? { keys, nextAfter: keys.at(-1) as string } : { keys };
  }

  /**
   * Moves every object not read since `nowMs - coolingMs` to the cold tier (cached copies that
   * cooled are just dropped). Failures leave objects hot and are reported in the result and
   * through `onProgress`; the next pass retries them. `maxObjects` bounds one pass (the coolest
   * first); the rest wait for the next.
   */
  async migrateCold(options: MigrationOptions & { nowMs: number; maxObjects?: number }): Promise<MigrationResult> {
    const coolBeforeMs = options.nowMs - this.options.coolingMs;
    const cooled = (key: string) => {
      const record = this.catalog.get(key);
      return record !== undefined && record.lastReadMs <= coolBeforeMs;
    };
    const keys = this.catalog.residents().filter((r) => cooled(r.key)).sort((a, b) => a.lastReadMs - b.lastReadMs).map((r) => r.key);
    return this.runMigration(keys.slice(0, options.maxObjects ?? keys.length), options, cooled);
  }

  /** Moves the given objects cold now, read or not (`strata volume evict`); unknown or cold keys are skipped. */
  async evict(keys: readonly string[], options: MigrationOptions = {}): Promise<MigrationResult> {
    return this.runMigration(keys.filter((key) => this.catalog.get(key) !== undefined), options, () => true);
  }

  stats(): TierStats {
    return {
      ...this.counters,
      hotBytes: this.catalog.hotBytes,
      hotObjects: this.catalog.hotObjects,
      coldBytes: this.catalog.coldBytes,
      coldObjects: this.catalog.coldObjects,
      cacheBytes: this.cacheBytes,
      cacheObjects: this.cached.size,
      cacheSizeBytesMax: this.cacheSizeBytesMax,
      pendingCatalogWrites: this.catalog.pendingWrites,
    };
  }

  /** The read-ahead's bytes held (fetched or on their way), failed parts, and objects fetched before their reader came. */
  readAheadStats(): { bytes: number; failedParts: number; prefetchedObjects: number; reusedBuffers: number } {
    const r = this.readAhead;
    return { bytes: r.bytes, failedParts: r.failedParts, prefetchedObjects: r.prefetchedObjects, reusedBuffers: r.reusedBuffers };
  }

  /** Writes the queued catalog records now. */
  flush(): Promise<void> {
    return this.catalog.flush();
  }

  /** Waits for promotions and evictions in the background to settle (tests, shutdown). */
  async settled(): Promise<void> {
    while (this.background.size > 0) await Promise.all([...this.background]);
  }

  /**
   * Stops the timer, lets background work finish and writes the queued records; later calls fail.
   * The hot and cold stores are the caller's: they stay open.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.flushTimer !== undefined) clearInterval(this.flushTimer);
    this.readAhead.close();
    await this.settled();
    await this.catalog.flush();
  }

  private checkOpen(what: string): void {
    if (this.closed) throw chunkStoreClosed('tiered', what);
  }

  private async runMigration(keys: readonly string[], options: MigrationOptions, stillWanted: (key: string) => boolean): Promise<MigrationResult> {
    const context: MigrationContext = {
      hot: this.hot,
      cold: this.cold,
      catalog: this.catalog,
      lock: this.lock,
      inFlightMax: this.options.migrationsInFlightMax ?? 2,
      coldCall: (what, signal, call) => this.coldCall(what, signal, call),
      droppedHot: (key) => this.uncache(key),
      stillWanted,
    };
    const result = await migrate(context, keys, options);
    this.counters.movedCold += result.movedObjects;
    this.counters.migrationFailures += result.failed.length;
    return result;
  }

  /**
   * Whether a guest read of a cold-only object starts a stream: its arrival continues the object's
   * run, or a stream awaits the object. Otherwise the read goes on its own.
   */
  private startsStream(key: string, offsetBytes: number, lengthBytes: number): boolean {
    return this.arrivals.note(key, offsetBytes, lengthBytes) === 'sequential' || this.readAhead.awaits(key, offsetBytes);
  }

  /**
   * A guest read served by the read-ahead, under the reader's own bound: a part that failed (or
   * a stream the object left meanwhile) makes it read the range itself, hot then cold, in what
   * is left of that bound. Counted as sequential for promotion.
   */
  private async readThroughAhead(
    key: string,
    offsetBytes: number,
    lengthBytes: number,
    options: ChunkStoreCallOptions | undefined,
    ahead: ReadAheadRange,
  ): Promise<Uint8Array | undefined> {
    // The part is shared by every read inside it, and a getRange result is the caller's to change
    // (a caller that changed a view would change what the next reader gets): a copy, unless the
    // caller borrows the result (reads it and lets it go).
    const own = (served: Uint8Array): Uint8Array => (options?.borrowResult === true ? served : served.slice());
    if (ahead.ready !== undefined && options?.signal?.aborted !== true) {
      // In memory already: nothing to wait for, so no bound to set.
      this.counters.misses++;
      this.pattern.noteStreamed(key, offsetBytes, lengthBytes);
      return own(ahead.ready);
    }
    const data = await this.coldRead(`get ${key} [${offsetBytes}, +${lengthBytes})`, options, async (o) => {
      const served = await ahead.data;
      if (served !== undefined) return own(served);
      return (await this.hot.getRange(key, offsetBytes, lengthBytes, o)) ?? getColdRange(this.cold, key, offsetBytes, lengthBytes, this.coldOptions, o.signal);
    });
    if (data !== undefined) this.pattern.noteStreamed(key, offsetBytes, lengthBytes);
    return data;
  }

  /** A read served by the hot tier; `counts`: a guest read, which refreshes the object's read time and its place in the cache. */
  private hotRead(key: string, counts: boolean): void {
    this.counters.hits++;
    if (!counts) return;
    this.catalog.noteRead(key, this.now());
    const size = this.cached.get(key);
    if (size !== undefined) {
      this.cached.delete(key);
      this.cached.set(key, size);
    }
    this.flushIfMany();
  }

  private async coldRead<T>(what: string, options: ChunkStoreCallOptions | undefined, call: (o: ChunkStoreCallOptions) => Promise<T>): Promise<T> {
    this.counters.misses++;
    try {
      return await this.coldCall(what, options?.signal, call);
    } catch (err) {
      this.counters.coldReadFailures++;
      throw err;
    }
  }

  private coldCall<T>(what: string, signal: AbortSignal | undefined, call: (options: ChunkStoreCallOptions) => Promise<T>): Promise<T> {
    return boundedColdCall(what, this.coldOptions.timeoutMs, signal, call);
  }

  /** Starts promoting a cold object (whole) in the background, unless it is already on its way. */
  private promote(key: string, data?: Uint8Array): void {
    const promotionsMax = this.options.promotionsInFlightMax ?? 2;
    if (this.promoting.has(key) || this.promoting.size >= promotionsMax || this.cacheSizeBytesMax === 0) return;
    this.promoting.add(key);
    this.track(
      this.lock
        .with(key, async () => {
          if (this.catalog.get(key) !== undefined) return; // written or promoted meanwhile
          const whole = data ?? (await this.coldCall(`get ${key}`, undefined, (o) => this.cold.get(key, o)));
          if (whole === undefined || whole.length > this.cacheSizeBytesMax / 4) return;
          await this.hot.put(key, whole);
          await this.catalog.notePromoted(key, whole.length, this.now());
          this.cached.set(key, whole.length);
          this.cacheBytes += whole.length;
          this.counters.promotions++;
        })
        .then(
          () => this.evictOverBound(),
          () => void this.counters.promotionFailures++,
        )
        .finally(() => this.promoting.delete(key)),
    );
  }

  /** Drops the least recently read promoted copies until the cache fits its bound. */
  private async evictOverBound(): Promise<void> {
    while (this.cacheBytes > this.cacheSizeBytesMax) {
      const oldest = this.cached.keys().next().value;
      if (oldest === undefined) return;
      await this.lock.with(oldest, async () => {
        if (!this.cached.has(oldest)) return;
        if (this.catalog.get(oldest)?.place === 'both') {
          await this.hot.delete(oldest);
          this.catalog.noteHotDropped(oldest);
          this.counters.evictions++;
        }
        this.uncache(oldest);
      });
    }
  }

  private uncache(key: string): void {
    const size = this.cached.get(key);
    if (size === undefined) return;
    this.cached.delete(key);
    this.cacheBytes -= size;
  }

  private track(work: Promise<void>): void {
    const tracked = work.catch(() => undefined);
    this.background.add(tracked);
    void tracked.finally(() => this.background.delete(tracked));
  }

  private flushIfMany(): void {
    if (this.catalog.pendingWrites >= PENDING_FLUSH_THRESHOLD) this.flushInBackground();
  }

  private flushInBackground(): void {
    this.track(
      this.catalog.flush().then(
        () => void (this.lastFlushError = undefined),
        (err: unknown) => void (this.lastFlushError = err as Error),
      ),
    );
  }
}

/** A scrub's or GC's read: it neither refreshes read times nor promotes (ChunkReadPurpose). */
function isMaintenanceRead(options: ChunkStoreCallOptions | undefined): boolean {
  return options?.readPurpose === 'maintenance';
}
