/**
 * PoolRoutingLayerStore: the one LayerStore a daemon's volume layer sees, routing each pool to
 * the store that holds its layers. A local pool (the default) goes to the local store unchanged,
 * byte for byte the layout it always had; a dedup pool goes to its ChunkedLayerStore (active
 * layers are still files of the same local store; sealed ones are chunk manifests in the pool's
 * chunk repository). It is also the ChunkedPools the volume layer seals, measures and collects
 * through: the volume layer attaches each dedup pool (at start-up and when one is created) and
 * never sees a repository or a chunk store.
 *
 * A separate class rather than an option of ChunkedLayerStore: one ChunkedLayerStore is one pool's
 * repository, so routing is a map of them, and a local pool never touches chunked code.
 */
import type {
  ChunkedPoolAudit, ChunkedPoolEviction, ChunkedPoolGcReport, ChunkedPools, ChunkedPoolTierStatus, ChunkedPoolUsage, DedupPoolConfig, PreparedMerge, SealedLayerSource,
} from '../core/chunked-pools.js';
import type { ScrubReport } from '../core/scrub-report.js';
import { StorageError } from '../core/errors.js';
import type { HostFile } from '../core/host-file.js';
import type { LayerRef, LayerStore, StrayEntry } from '../core/layer-store.js';
import type { ChunkStore } from '../core/chunk-store.js';
import type { ChunkedLayerStore } from './chunked/chunked-layer-store.js';
import type { DedupChunkRepository } from './dedup/dedup-repository.js';
import { concatReferenceSources, type ReferenceSource } from './dedup/scrub.js';
import { canSealStream } from './chunked/seal-stream.js';
import { evictLayerPacks } from './evict-layers.js';
import type { PoolTier } from './pool-tier.js';

/** One dedup pool's stores, as the opener made them. */
export interface ChunkedPoolStores {
  readonly layers: ChunkedLayerStore;
  readonly repository: DedupChunkRepository;
  /** Where `layers` keeps its manifests (read by the reference audit). */
  readonly manifests: ChunkStore;
  /** Pack bytes in the cold tier; absent for a pool without a tier (everything is local). */
  remoteBytes?(): Promise<number>;
  /** The pool's tier, when it has one. */
  readonly tier?: PoolTier;
  /** Closes what the opener opened for the pool (its tier, its chunk stores): detached or stopping. */
  close?(): Promise<void>;
  /** After the pool was deleted and closed: removes the folders made for it that hold nothing (never a file). */
  removeEmptyFolders?(): Promise<void>;
}

/** Opens (creating on first use) the stores of a dedup pool. */
export type ChunkedPoolOpener = (pool: string, config: DedupPoolConfig) => Promise<ChunkedPoolStores>;

/** The chunk repository a local pool keeps for chunks that are not layers (S3 objects). */
export interface LocalPoolChunks {
  /** True when the pool has had one (its folder exists). */
  exists(pool: string): Promise<boolean>;
  /** Opens it, creating it on first use. */
  open(pool: string): Promise<DedupChunkRepository>;
  /** Closes the chunk store a pool's repository was opened over (the pool is gone, or the daemon stops). */
  close?(pool: string): Promise<void>;
}

/** Other holders of a pool's chunk references than its sealed layers (S3 objects), per pool. */
export type PoolReferenceSource = (pool: string) => ReferenceSource;

export class PoolRoutingLayerStore implements LayerStore, ChunkedPools {
  private readonly chunked = new Map<string, ChunkedPoolStores>();
  /** Attaches under way, so two callers attaching one pool share one opening. */
  private readonly opening = new Map<string, Promise<ChunkedPoolStores>>();
  /** Local pools' repositories of chunks that are not layers, opened on first use. */
  private readonly localChunks = new Map<string, Promise<DedupChunkRepository>>();
  private readonly referenceSources: PoolReferenceSource[] = [];
  private readonly auditRequests: (() => Promise<string[]>)[] = [];

  constructor(
    private readonly local: LayerStore,
    private readonly openChunkedPool: ChunkedPoolOpener,
    private readonly options: { tieringAvailable?: boolean; localPoolChunks?: LocalPoolChunks } = {},
  ) {}

  /**
   * Adds holders of pool references besides the sealed layers (the S3 object model): the
   * reference audit and scrub count them, so nothing they use is taken as leaked. Add before
   * start-up recovery audits the pools.
   */
  addReferenceSource(source: PoolReferenceSource): void {
    this.referenceSources.push(source);
  }

  /** Adds a source of pools start-up recovery must audit (ChunkedPools.poolsToAudit); before recovery. */
  addPoolsToAudit(source: () => Promise<string[]>): void {
    this.auditRequests.push(source);
  }

  async poolsToAudit(): Promise<string[]> {
    const pools = new Set<string>();
    for (const source of this.auditRequests) for (const pool of await source()) pools.add(pool);
    // A local pool is audited only when it keeps S3 objects' chunks (else it has no counts).
    const audited: string[] = [];
    for (const pool of pools) if (this.chunked.has(pool) || (await this.localPoolChunks(pool, false)) !== undefined) audited.push(pool);
    return audited;
  }

  /**
   * The chunk repository other users of a pool share (S3 objects): a dedup pool's own (chunks
   * shared with the sealed layers), or the one a local pool keeps apart from its qcow2 files.
   */
  async chunkRepository(pool: string): Promise<DedupChunkRepository> {
    const stores = this.chunked.get(pool);
    if (stores !== undefined) return stores.repository;
    const repository = await this.localPoolChunks(pool, true);
    if (repository === undefined) throw new StorageError('UNSUPPORTED', `pool '${pool}' is a local pool and this store keeps no chunks for it`);
    return repository;
  }

  async hasChunks(pool: string): Promise<boolean> {
    return this.chunked.has(pool) || (await this.localPoolChunks(pool, false)) !== undefined;
  }

  private async localPoolChunks(pool: string, create: boolean): Promise<DedupChunkRepository | undefined> {
    const chunks = this.options.localPoolChunks;
    if (chunks === undefined || this.chunked.has(pool)) return undefined;
    let opening = this.localChunks.get(pool);
    if (opening === undefined) {
      if (!create && !(await chunks.exists(pool))) return undefined;
      opening = this.localChunks.get(pool) ?? chunks.open(pool);
      this.localChunks.set(pool, opening);
      // A failed opening is not kept: the next call tries again.
      opening.catch(() => this.localChunks.delete(pool));
    }
    return opening;
  }

  /** The repository holding a pool's chunks: a dedup pool's, or a local pool's (if it has one). */
  private async repositoryOfPool(pool: string): Promise<{ repository: DedupChunkRepository; layers?: ChunkedLayerStore; stores?: ChunkedPoolStores }> {
    const stores = this.chunked.get(pool);
    if (stores !== undefined) return { repository: stores.repository, layers: stores.layers, stores };
    const repository = await this.localPoolChunks(pool, false);
    if (repository === undefined) throw new StorageError('INVALID_ARGUMENT', `pool '${pool}' is not a dedup pool and holds no S3 objects' chunks (create one with --dedup)`);
    return { repository };
  }

  /** Every holder of a pool's references: its sealed layers, then the other sources. */
  private referencesOf(pool: string, layers: ChunkedLayerStore | undefined): ReferenceSource {
    const sources = this.referenceSources.map((source) => source(pool));
    return concatReferenceSources(...(layers === undefined ? [] : [layers.referenceHolders([pool])]), ...sources);
  }

  tieringAvailable(): boolean {
    return this.options.tieringAvailable === true;
  }

  // ChunkedPools

  async attachPool(pool: string, config: DedupPoolConfig): Promise<void> {
    if (this.chunked.has(pool)) return;
    let opening = this.opening.get(pool);
    if (opening === undefined) {
      opening = this.openChunkedPool(pool, config);
      this.opening.set(pool, opening);
    }
    try {
      this.chunked.set(pool, await opening);
    } finally {
      this.opening.delete(pool);
    }
  }

  async detachPool(pool: string): Promise<void> {
    const stores = this.chunked.get(pool);
    this.chunked.delete(pool);
    const hadLocalChunks = this.localChunks.delete(pool);
    await (stores?.close !== undefined ? stores.close() : stores?.tier?.close());
    await stores?.removeEmptyFolders?.();
    if (hadLocalChunks) await this.options.localPoolChunks?.close?.(pool);
  }

  /** The pools with a tier, for the cooling timer. */
  tieredPools(): { pool: string; tier: PoolTier }[] {
    return [...this.chunked].flatMap(([pool, stores]) => (stores.tier === undefined ? [] : [{ pool, tier: stores.tier }]));
  }

  /** Closes every pool's tier (writes its queued records) and chunk stores (their open packs); at shutdown. */
  async close(): Promise<void> {
    const pools = [...this.chunked.values()];
    this.chunked.clear();
    await Promise.all(pools.map((stores) => (stores.close !== undefined ? stores.close() : stores.tier?.close())));
    const local = [...this.localChunks.keys()];
    this.localChunks.clear();
    await Promise.all(local.map((pool) => this.options.localPoolChunks?.close?.(pool)));
  }

  async awaitTierCheck(pool: string, timeoutMs: number): Promise<void> {
    const tier = this.chunked.get(pool)?.tier;
    if (tier === undefined) return;
    let timer: NodeJS.Timeout | undefined;
    const bound = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, timeoutMs);
    });
    try {
      await Promise.race([tier.firstCheck.then(() => undefined), bound]);
    } finally {
      clearTimeout(timer);
    }
  }

  tierStatus(pool: string): ChunkedPoolTierStatus | undefined {
    const tier = this.chunked.get(pool)?.tier;
    if (tier === undefined) return undefined;
    const stats = tier.store.stats();
    const error = tier.error();
    const s3 = tier.s3Counters;
    return {
      url: tier.url,
      ...(error === undefined ? {} : { error }),
      hotBytes: stats.hotBytes,
      coldBytes: stats.coldBytes,
      promotions: stats.promotions,
      coldReadFailures: stats.coldReadFailures,
      movedCold: stats.movedCold,
      migrationFailures: stats.migrationFailures,
      ...(s3 === undefined ? {} : { s3: { requests: s3.requests, errors: { ...s3.errors }, retries: { ...s3.retries }, failedCalls: s3.failedCalls } }),
    };
  }

  evictLayers(
    pool: string,
    layers: readonly LayerRef[],
    options: { signal?: AbortSignal; onProgress?: (done: number, total: number) => void } = {},
  ): Promise<ChunkedPoolEviction> {
    const stores = this.requireChunked(pool);
    if (stores.tier === undefined) {
      throw new StorageError('INVALID_ARGUMENT', `pool '${pool}' has no tier to evict to: create a dedup pool with --tier s3://BUCKET/PREFIX (or file:///path) and move the volume there`);
    }
    return evictLayerPacks({ pool, layers, manifests: stores.manifests, repository: stores.repository, tier: stores.tier.store }, options);
  }

  isChunkedPool(pool: string): boolean {
    return this.chunked.has(pool);
  }

  async isSealed(ref: LayerRef): Promise<boolean> {
    const stores = this.chunked.get(ref.pool);
    return stores !== undefined && (await stores.layers.isSealed(ref));
  }

  async seal(ref: LayerRef, options: { signal?: AbortSignal; onProgress?: (doneBytes: number, totalBytes: number) => void } = {}): Promise<void> {
    const { layers } = this.requireChunked(ref.pool);
    if (await layers.dropLocalCopy(ref)) return;
    await layers.seal(ref, {
      ...(options.signal === undefined ? {} : { signal: options.signal }),
      ...(options.onProgress === undefined ? {} : { onProgress: (p) => options.onProgress!(p.doneBytes, p.totalBytes) }),
    });
  }

  async writeSealed(ref: LayerRef, source: SealedLayerSource, options: { signal?: AbortSignal } = {}): Promise<boolean> {
    const { layers } = this.requireChunked(ref.pool);
    if (!canSealStream(source.sizeBytes)) return false;
    await layers.writeSealed(ref, source, options);
    return true;
  }

  unseal(ref: LayerRef, options: { signal?: AbortSignal } = {}): Promise<void> {
    return this.requireChunked(ref.pool).layers.unseal(ref, options);
  }

  prepareMerge(upper: LayerRef, lower: LayerRef, options: { backingFile: string | undefined; signal?: AbortSignal }): Promise<PreparedMerge> {
    if (upper.pool !== lower.pool) throw new Error('assertion failed: merged layers share a pool');
    return this.requireChunked(upper.pool).layers.prepareMerge(upper, lower, options);
  }

  async usage(pool: string): Promise<ChunkedPoolUsage> {
    const { repository, stores } = await this.repositoryOfPool(pool);
    const usage = await repository.usage();
    const remoteBytes = Math.min(usage.packBytes, (await stores?.remoteBytes?.()) ?? 0);
    return { ...usage, localBytes: usage.packBytes - remoteBytes, remoteBytes };
  }

  async gc(pool: string, options: { graceMs: number; signal?: AbortSignal; onProgress?: (done: number) => void }): Promise<ChunkedPoolGcReport> {
    const { repository } = await this.repositoryOfPool(pool);
    let done = 0;
    const report = await repository.gc({
      graceMs: options.graceMs,
      nowMs: Date.now(),
      ...(options.signal === undefined ? {} : { signal: options.signal }),
      onProgress: () => options.onProgress?.(++done),
    });
    return {
      chunksForgotten: report.chunksForgotten,
      packsDeleted: report.packsDeleted,
      orphanPacksDeleted: report.orphanPacksDeleted,
      packsRewritten: report.packsRewritten,
      bytesDeleted: report.bytesDeleted,
      chunksWaiting: report.chunksWaiting,
      bytesWaiting: report.bytesWaiting,
      waitingUntilMs: report.waitingUntilMs,
      damaged: report.damaged,
    };
  }

  async audit(pool: string, options: { repair: boolean }): Promise<ChunkedPoolAudit> {
    const { layers, repository } = await this.repositoryOfPool(pool);
    const held = new Map<string, number>();
    let unreadable = false;
    for await (const holder of this.referencesOf(pool, layers)()) {
      if ('unreadable' in holder) {
        unreadable = true; // its references are unknown: nothing may be dropped on this reading
        continue;
      }
      for (const hash of holder.hashes) held.set(hash, (held.get(hash) ?? 0) + 1);
    }
    const leaked: string[] = [];
    let chunksChecked = 0;
    let missingReferences = 0;
    for await (const { hash, refs } of repository.referenceCounts()) {
      chunksChecked++;
      const expected = held.get(hash) ?? 0;
      held.delete(hash);
      for (let i = expected; i < refs; i++) leaked.push(hash);
      if (refs < expected) missingReferences += expected - refs;
    }
    for (const count of held.values()) missingReferences += count; // named by a manifest, not indexed
    const repair = options.repair && !unreadable && leaked.length > 0;
    if (repair) await repository.dropReferences(leaked);
    return { chunksChecked, leakedReferences: leaked.length, missingReferences, unreadableManifests: unreadable, repaired: repair };
  }

  async scrub(pool: string, options: { repair: boolean; signal?: AbortSignal; onProgress?: (doneBytes: number) => void }): Promise<ScrubReport> {
    const { layers, repository } = await this.repositoryOfPool(pool);
    return repository.scrub({
      references: this.referencesOf(pool, layers),
      repair: options.repair,
      nowMs: Date.now(),
      ...(options.signal === undefined ? {} : { signal: options.signal }),
      onProgress: (p) => {
        if (p.doneBytes !== undefined) options.onProgress?.(p.doneBytes);
      },
    });
  }

  // LayerStore

  prepare(): Promise<void> {
    return this.local.prepare();
  }

  createPool(pool: string): Promise<void> {
    return this.storeOf(pool).createPool(pool);
  }

  removePool(pool: string): Promise<void> {
    return this.storeOf(pool).removePool(pool);
  }

  create(ref: LayerRef, options?: { ownerOnly?: boolean }): Promise<HostFile> {
    return this.storeOf(ref.pool).create(ref, options);
  }

  open(ref: LayerRef, options: { readOnly: boolean }): Promise<HostFile> {
    return this.storeOf(ref.pool).open(ref, options);
  }

  remove(ref: LayerRef): Promise<boolean> {
    return this.storeOf(ref.pool).remove(ref);
  }

  /** Every pool has its namespace in the local store (a chunked pool's active layers live there). */
  listPools(): Promise<string[]> {
    return this.local.listPools();
  }

  listStrays(): Promise<StrayEntry[]> {
    return this.local.listStrays();
  }

  list(pool: string): Promise<string[]> {
    return this.storeOf(pool).list(pool);
  }

  allocatedBytes(ref: LayerRef): Promise<number> {
    return this.storeOf(ref.pool).allocatedBytes(ref);
  }

  syncPool(pool: string): Promise<void> {
    return this.storeOf(pool).syncPool(pool);
  }

  backingName(child: LayerRef, backing: LayerRef): string {
    return this.local.backingName(child, backing);
  }

  location(ref: LayerRef): string | undefined {
    return this.storeOf(ref.pool).location(ref);
  }

  poolLocation(pool: string): string | undefined {
    return this.storeOf(pool).poolLocation(pool);
  }

  private storeOf(pool: string): LayerStore {
    return this.chunked.get(pool)?.layers ?? this.local;
  }

  private requireChunked(pool: string): ChunkedPoolStores {
    const stores = this.chunked.get(pool);
    if (stores === undefined) throw new StorageError('INVALID_ARGUMENT', `pool '${pool}' is not a dedup pool (create one with --dedup)`);
    return stores;
  }
}
