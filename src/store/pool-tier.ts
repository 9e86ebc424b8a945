/**
 * The tier of one dedup pool (docs/daemon.md "Tiered dedup pools"): a TieredChunkStore whose hot
 * tier is the pool's local packs (`<chunksRoot>/<pool>/packs/`) and whose cold tier is an
 * S3ChunkStore (`s3://BUCKET/PREFIX`, credentials from the AWS default chain) or a LocalChunkStore
 * (`file:///path`), with its records in the daemon's CatalogStore (`tier-objects-<pool>`).
 * Manifests stay local and outside the tier: the hot view lists only the packs.
 *
 * An unreachable S3 server never stops the pool from opening: nothing at open needs the cold
 * tier (records a crash left in doubt wait for a later open), the bucket is checked in the
 * background and by each cooling pass, and the last failure is what `error()` reports.
 */
import type { CatalogStore } from '../core/catalog-store.js';
import { chunkStoreClosed, type ChunkListPage, type ChunkStore, type ChunkStoreCallOptions } from '../core/chunk-store.js';
import type { PoolTierConfig } from '../core/chunked-pools.js';
import { isStorageError } from '../core/errors.js';
import { PACK_KEY_PREFIX } from './dedup/pack-format.js';
import { LocalChunkStore } from './local-chunk-store.js';
import type { S3RetryEvent, S3RetryPolicy } from './s3/config.js';
import type { S3StoreCounters } from './s3/retry.js';
import { S3ChunkStore } from './s3/s3-chunk-store.js';
import { TieredChunkStore } from './tier/tiered-chunk-store.js';
import type { MigrationResult } from './tier/migration.js';

/** How long a pack goes unread before it moves cold when the pool names no cooling period. */
export const POOL_COOLING_DEFAULT_MS = 24 * 3_600_000;
/** S3's region when the pool names none (servers other than AWS ignore it). */
const S3_REGION_DEFAULT = 'us-east-1';

export interface PoolTierOptions {
  readonly pool: string;
  readonly tier: PoolTierConfig;
  /** The pool's local store (packs and manifests). */
  readonly local: ChunkStore;
  readonly catalog: CatalogStore;
  /** The S3 store's retry policy (default DEFAULT_S3_RETRY_POLICY). */
  readonly s3Retry?: Partial<S3RetryPolicy>;
  /** Each S3 retry, for the daemon's log. */
  readonly onS3Retry?: (event: S3RetryEvent) => void;
  /** The most one cold call (with the S3 store's retries) may take (default: the tiered store's, 30 s). */
  readonly coldTimeoutMs?: number;
  /**
   * The tier started failing (`error` set: the first failure after a success, for the daemon's
   * log) or answers again (`error` undefined). Called on those changes only, not per failure.
   */
  readonly onTierStateChange?: (error: string | undefined) => void;
}

export interface PoolTier {
  readonly url: string;
  readonly store: TieredChunkStore;
  /** The S3 store's request, error and retry counters (absent for a file:// tier). */
  readonly s3Counters?: S3StoreCounters;
  /** The last failure to reach the cold tier (cleared by the next success), for pool info/df. */
  error(): string | undefined;
  /** The check of the bucket made at open (true: it answered); its failure is in error(). */
  readonly firstCheck: Promise<boolean>;
  /** Moves packs not read for the cooling period cold, at most `maxObjects` of them. */
  migrateCold(options: { nowMs: number; maxObjects: number; signal?: AbortSignal }): Promise<MigrationResult>;
  close(): Promise<void>;
}

/**
 * The pool's local store seen as packs only: the tier lists, reconciles and migrates packs and
 * never the manifests beside them.
 */
class PacksOnlyView implements ChunkStore {
  private closed = false;
  constructor(private readonly local: ChunkStore) {}
  /** The view only: the pool's local store has other users (its manifests) and closes with the pool. */
  async close(): Promise<void> {
    this.closed = true;
  }
  private checkOpen(what: string): void {
    if (this.closed) throw chunkStoreClosed('of packs', what);
  }
  async get(key: string, options?: ChunkStoreCallOptions): Promise<Uint8Array | undefined> {
    this.checkOpen(`get ${key}`);
    return this.local.get(key, options);
  }
  async getRange(key: string, offsetBytes: number, lengthBytes: number, options?: ChunkStoreCallOptions): Promise<Uint8Array | undefined> {
    this.checkOpen(`get ${key}`);
    return this.local.getRange(key, offsetBytes, lengthBytes, options);
  }
  async put(key: string, data: Uint8Array, options?: ChunkStoreCallOptions): Promise<void> {
    this.checkOpen(`put ${key}`);
    return this.local.put(key, data, options);
  }
  async putIfAbsent(key: string, data: Uint8Array, options?: ChunkStoreCallOptions): Promise<boolean> {
    this.checkOpen(`put ${key}`);
    return this.local.putIfAbsent(key, data, options);
  }
  async delete(key: string, options?: ChunkStoreCallOptions): Promise<void> {
    this.checkOpen(`delete ${key}`);
    return this.local.delete(key, options);
  }
  async list(prefix: string, options?: ChunkStoreCallOptions & { after?: string; limit?: number }): Promise<ChunkListPage> {
    this.checkOpen(`list ${prefix}`);
    if (prefix.startsWith(PACK_KEY_PREFIX)) return this.local.list(prefix, options);
    if (PACK_KEY_PREFIX.startsWith(prefix)) return this.local.list(PACK_KEY_PREFIX, options);
    return { keys: [] };
  }
}

/**
 * The cold store with every call's outcome reported: a failure (not a cancellation) is the tier's
 * error until a later call succeeds, so pool info/df say why cold reads fail.
 */
class OutcomeReportingStore implements ChunkStore {
  constructor(
    private readonly cold: ChunkStore,
    private readonly report: (err: unknown) => void,
  ) {}
  /** Closes the cold store (the pool's tier made it for this store alone). */
  close(): Promise<void> {
    return this.cold.close();
  }
  get(key: string, options?: ChunkStoreCallOptions): Promise<Uint8Array | undefined> {
    return this.watch(this.cold.get(key, options), options);
  }
  getRange(key: string, offsetBytes: number, lengthBytes: number, options?: ChunkStoreCallOptions): Promise<Uint8Array | undefined> {
    return this.watch(this.cold.getRange(key, offsetBytes, lengthBytes, options), options);
  }
  put(key: string, data: Uint8Array, options?: ChunkStoreCallOptions): Promise<void> {
    return this.watch(this.cold.put(key, data, options), options);
  }
  putIfAbsent(key: string, data: Uint8Array, options?: ChunkStoreCallOptions): Promise<boolean> {
    return this.watch(this.cold.putIfAbsent(key, data, options), options);
  }
  delete(key: string, options?: ChunkStoreCallOptions): Promise<void> {
    return this.watch(this.cold.delete(key, options), options);
  }
  list(prefix: string, options?: ChunkStoreCallOptions & { after?: string; limit?: number }): Promise<ChunkListPage> {
    return this.watch(this.cold.list(prefix, options), options);
  }
  private async watch<T>(call: Promise<T>, options: ChunkStoreCallOptions | undefined): Promise<T> {
    // A call the tier's own time bound cuts (boundedColdCall aborts with its UNAVAILABLE as the
    // reason) is the tier failing: a server that takes requests and never answers must show in
    // pool info/df like one that refuses them. Reported at the abort, before the bound's error
    // reaches the caller; the call itself then ends CANCELLED, which is not reported again (a
    // caller's own cancellation is no failure of the tier).
    const signal = options?.signal;
    const onAbort = () => {
      if (isStorageError(signal?.reason) && !isStorageError(signal.reason, 'CANCELLED')) this.report(signal.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const result = await call;
      this.report(undefined);
      return result;
    } catch (err) {
      if (!isStorageError(err, 'CANCELLED')) this.report(err);
      throw err;
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The folder of a `file:///path` tier; undefined for any other (an S3 tier). */
export function fileTierFolder(tierUrl: string): string | undefined {
  const url = new URL(tierUrl);
  return url.protocol === 'file:' ? decodeURIComponent(url.pathname) : undefined;
}

async function openColdStore(options: PoolTierOptions): Promise<{ cold: ChunkStore; s3?: S3ChunkStore }> {
  const url = new URL(options.tier.url);
  const folder = fileTierFolder(options.tier.url);
  if (folder !== undefined) {
    const cold = new LocalChunkStore(folder);
    await cold.removeInterruptedPuts();
    return { cold };
  }
  const keyPrefix = decodeURIComponent(url.pathname).replace(/^\/+/, '').replace(/\/+$/, '');
  const s3 = new S3ChunkStore({
    ...(options.tier.s3Endpoint === undefined ? {} : { endpoint: options.tier.s3Endpoint, forcePathStyle: true }),
    region: options.tier.s3Region ?? S3_REGION_DEFAULT,
    bucket: url.hostname,
    ...(keyPrefix === '' ? {} : { prefix: `${keyPrefix}/` }),
    ...(options.onS3Retry === undefined ? {} : { logger: options.onS3Retry }),
    ...(options.s3Retry === undefined ? {} : { retry: options.s3Retry }),
  });
  return { cold: s3, s3 };
}

/** Opens the pool's tier; the cold tier is not called here (see the file comment). */
export async function openPoolTier(options: PoolTierOptions): Promise<PoolTier> {
  const { cold, s3 } = await openColdStore(options);
  let lastError: string | undefined;
  const setError = (error: string | undefined) => {
    const changed = (error === undefined) !== (lastError === undefined);
    lastError = error;
    if (changed) options.onTierStateChange?.(error);
  };
  const note = (err: unknown) => setError(`tier ${options.tier.url}: ${describe(err)}`);
  const store = await TieredChunkStore.open({
    hot: new PacksOnlyView(options.local),
    cold: new OutcomeReportingStore(cold, (err) => (err === undefined ? setError(undefined) : note(err))),
    catalog: options.catalog,
    catalogTable: `tier-objects-${options.pool}`,
    coolingMs: options.tier.coolingMs ?? POOL_COOLING_DEFAULT_MS,
    ...(options.coldTimeoutMs === undefined ? {} : { coldTimeoutMs: options.coldTimeoutMs }),
  });
  // Cuts a bucket check still retrying when the pool closes (a deleted pool, a stopping daemon).
  const closing = new AbortController();
  const check = async (signal?: AbortSignal): Promise<boolean> => {
    try {
      if (s3 !== undefined) await s3.checkBucket({ signal: signal === undefined ? closing.signal : AbortSignal.any([signal, closing.signal]) });
      setError(undefined);
      return true;
    } catch (err) {
      if (closing.signal.aborted) return false; // the pool is closing: not the tier's failure
      note(err);
      return false;
    }
  };
  const firstCheck = check();
  return {
    url: options.tier.url,
    store,
    ...(s3 === undefined ? {} : { s3Counters: s3.counters }),
    error: () => lastError,
    firstCheck,
    migrateCold: async ({ nowMs, maxObjects, signal }) => {
      if (!(await check(signal))) return { movedObjects: 0, movedBytes: 0, failed: [] };
      const result = await store.migrateCold({ nowMs, maxObjects, ...(signal === undefined ? {} : { signal }) });
      const failure = result.failed[0];
      if (failure !== undefined) note(failure.error);
      return result;
    },
    close: async () => {
      closing.abort(new Error('the pool tier is closing'));
      await firstCheck;
      await store.close();
      await cold.close();
    },
  };
}
