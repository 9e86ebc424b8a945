/**
 * ChunkedPools: what the volume layer asks of the pools whose sealed layers are chunk manifests
 * (dedup pools, docs/daemon.md "Dedup pools"): attach a pool with its configuration, seal and
 * unseal a layer, measure the pool, collect its garbage and audit its reference counts. The same
 * object is the LayerStore the volume layer sees (src/store/pool-routing-layer-store.ts routes
 * each pool to its store); the volume layer never learns where packs or manifests live.
 */
import type { LayerRef } from './layer-store.js';
import type { ScrubReport } from './scrub-report.js';

/** The hashes a dedup pool may name its chunks by (BLAKE3 is the default; bench/RESULTS.md). */
export const CHUNK_HASH_ALGORITHMS = ['blake3', 'xxh128'] as const;
export type ChunkHashAlgorithm = (typeof CHUNK_HASH_ALGORITHMS)[number];

/** Where a dedup pool's cold packs go (acted on when the service has tiering: tieringAvailable()). */
export interface PoolTierConfig {
  /** `s3://BUCKET/PREFIX` or `file:///absolute/path`. */
  readonly url: string;
  /** An S3-compatible endpoint (absent: AWS's endpoint for the region). */
  readonly s3Endpoint?: string;
  readonly s3Region?: string;
  /** How long a pack goes unread before it moves to the tier. */
  readonly coolingMs?: number;
}

export interface DedupPoolConfig {
  readonly hash: ChunkHashAlgorithm;
  readonly tier?: PoolTierConfig;
  /** Seal policy: freeze a volume's active layer once it has not been written for this long (absent: never). */
  readonly sealAfterMs?: number;
  /** Seal policy: freeze a volume's active layer once it allocates more than this (absent: never). */
  readonly sealAboveBytes?: number;
}

/** What a chunked pool's chunks occupy, from its index. */
export interface ChunkedPoolUsage {
  /** Bytes of the packs the index knows (headers and dead chunks included). */
  readonly packBytes: number;
  /** Of packBytes: on this host, and in the tier (0 for a pool without one). */
  readonly localBytes: number;
  readonly remoteBytes: number;
  readonly packCount: number;
  /** Distinct chunks with a reference, and their bytes (each counted once). */
  readonly uniqueChunkCount: number;
  readonly uniqueChunkBytes: number;
  /** Bytes the references stand for: each chunk counted once per reference (sealed layers' data). */
  readonly referencedChunkBytes: number;
}

export interface ChunkedPoolGcReport {
  readonly chunksForgotten: number;
  readonly packsDeleted: number;
  readonly orphanPacksDeleted: number;
  readonly packsRewritten: number;
  readonly bytesDeleted: number;
  /** Unreferenced chunks still inside the grace period, their bytes, and when the last one leaves it (null: none). */
  readonly chunksWaiting: number;
  readonly bytesWaiting: number;
  readonly waitingUntilMs: number | null;
  /** Damaged chunks or packs left where they are, for an operator. */
  readonly damaged: readonly string[];
}

/** References the index counts that no manifest holds (leaked), and the reverse (missing). */
export interface ChunkedPoolAudit {
  readonly chunksChecked: number;
  readonly leakedReferences: number;
  readonly missingReferences: number;
  /** A manifest did not decode: its references are unknown, so nothing was dropped (scrub it). */
  readonly unreadableManifests: boolean;
  /** True when the leaked references were dropped. */
  readonly repaired: boolean;
}

/** A tiered dedup pool's tier as `pool info`, `pool df` and /metrics show it. */
export interface ChunkedPoolTierStatus {
  readonly url: string;
  /** The last failure to reach the cold tier (absent once a call succeeds again). */
  readonly error?: string;
  readonly hotBytes: number;
  readonly coldBytes: number;
  readonly promotions: number;
  readonly coldReadFailures: number;
  readonly movedCold: number;
  readonly migrationFailures: number;
  /** An S3 tier's requests, failed attempts and retries (by kind) and calls failed for good. */
  readonly s3?: { readonly requests: number; readonly errors: Readonly<Record<string, number>>; readonly retries: Readonly<Record<string, number>>; readonly failedCalls: number };
}

/** What `volume evict` did: the packs holding the volume's sealed chunks, moved cold now. */
export interface ChunkedPoolEviction {
  readonly layerCount: number;
  readonly packCount: number;
  /** Of packCount: packs that also hold chunks of other volumes' layers (they move too). */
  readonly sharedPackCount: number;
  readonly movedPacks: number;
  readonly movedBytes: number;
  /** Packs in the tier already. */
  readonly alreadyColdPacks: number;
  /** Packs that stayed local because a step failed (the message says why). */
  readonly failed: readonly { readonly pack: string; readonly error: string }[];
}

/**
 * A merge of two sealed layers prepared by ChunkedPools.prepareMerge: the merged layer's chunks are
 * referenced; install() or discard() ends it (exactly one of them, once).
 */
export interface PreparedMerge {
  /** Stored bytes of the merged layer (each chunk counted in full). */
  readonly sizeBytes: number;
  /** Replaces the upper layer's manifest with the merged one, then drops the old one's references. */
  install(): Promise<void>;
  /** Drops the merged layer's references (nothing was installed). */
  discard(): Promise<void>;
}

/**
 * A new layer's data as an import delivers it, for ChunkedPools.writeSealed: pieces ascending,
 * not overlapping, inside sizeBytes; bytes no piece covers read as zeroes. The layer has no backing.
 */
export interface SealedLayerSource {
  readonly sizeBytes: number;
  readonly pieces: AsyncIterable<{ readonly offset: number; readonly bytes: Uint8Array }>;
}

export interface ChunkedPools {
  /** Makes `pool` a chunked pool from now on (idempotent): at start-up and when it is created. */
  attachPool(pool: string, config: DedupPoolConfig): Promise<void>;
  /** Forgets a pool that was deleted (its namespace is gone). */
  detachPool(pool: string): Promise<void>;
  isChunkedPool(pool: string): boolean;
  /**
   * Pools whose reference counts another holder (the S3 object model) may have left above what it
   * holds when its process died (a release cut off between noting its progress and dropping):
   * start-up recovery audits them with the pools its own intents touched. Local pools among them
   * are audited too when they keep S3 objects' chunks.
   */
  poolsToAudit?(): Promise<string[]>;
  /**
   * True for a dedup pool, and for a local pool that keeps chunks apart from its qcow2 files
   * (its S3 objects'): usage, gc, audit and scrub then work on those chunks.
   */
  hasChunks(pool: string): Promise<boolean>;
  /** True when a pool's tier setting is acted on (packs move there); false: recorded only. */
  tieringAvailable(): boolean;
  /** True when the layer is a chunk manifest. */
  isSealed(ref: LayerRef): Promise<boolean>;
  /**
   * Seals a closed, immutable layer: its chunks into the pool's repository, its manifest stored,
   * its local file removed. A layer sealed already only loses a local copy a crash left behind.
   * A failed or aborted seal keeps the local file and leaves no reference.
   */
  seal(ref: LayerRef, options?: { signal?: AbortSignal; onProgress?: (doneBytes: number, totalBytes: number) => void }): Promise<void>;
  /**
   * Creates a new layer sealed from the start (an import): its data chunked, hashed and stored as
   * it arrives, laid out as the qcow2 layer a seal of the same data would give (no local file is
   * written). False, with nothing read, when the layer is too large to lay out in memory (write a
   * local layer and seal it). A failed or aborted write leaves no layer and no reference; a killed
   * one leaves references the pool's audit drops (record an intent naming the pool).
   */
  writeSealed(ref: LayerRef, source: SealedLayerSource, options?: { signal?: AbortSignal }): Promise<boolean>;
  /** Makes a sealed layer a local (writable) file again and drops its manifest and references. */
  unseal(ref: LayerRef, options?: { signal?: AbortSignal }): Promise<void>;
  /**
   * Compaction by reference: prepares sealed layer `upper` (whose backing is sealed layer `lower`)
   * to become the merge of the two, in place, its header naming `backingFile` (lower's backing).
   * UNSUPPORTED when the pair cannot be merged by reference (sizes differ, compressed clusters).
   */
  prepareMerge(upper: LayerRef, lower: LayerRef, options: { backingFile: string | undefined; signal?: AbortSignal }): Promise<PreparedMerge>;
  usage(pool: string): Promise<ChunkedPoolUsage>;
  gc(pool: string, options: { graceMs: number; signal?: AbortSignal; onProgress?: (done: number) => void }): Promise<ChunkedPoolGcReport>;
  /**
   * Compares the index's reference counts with the pool's manifests; with repair, drops the
   * references no manifest holds (a seal killed part-way leaves some). Nothing may seal, unseal
   * or remove layers of the pool meanwhile (start-up recovery runs it).
   */
  audit(pool: string, options: { repair: boolean }): Promise<ChunkedPoolAudit>;
  /**
   * Checks the pool's index, packs, chunk hashes and reference counts against its sealed layers
   * and, with repair, fixes what it can (docs/dedup.md). Runs beside seals and removes; refused
   * (BUSY) while a GC of the pool runs. onProgress: the pack bytes read so far.
   */
  scrub(pool: string, options: { repair: boolean; signal?: AbortSignal; onProgress?: (doneBytes: number) => void }): Promise<ScrubReport>;
  /** The pool's tier (undefined for a pool without one). */
  tierStatus?(pool: string): ChunkedPoolTierStatus | undefined;
  /**
   * Waits, at most `timeoutMs`, for the check of the tier's bucket made when the pool was opened
   * (its failure then shows in tierStatus().error); at once for a pool without a tier.
   */
  awaitTierCheck?(pool: string, timeoutMs: number): Promise<void>;
  /**
   * Moves the packs holding the chunks of `layers` (sealed layers of one volume; others are
   * skipped) to the pool's tier now; INVALID_ARGUMENT naming the fix for a pool without a tier.
   */
  evictLayers?(
    pool: string,
    layers: readonly LayerRef[],
    options: { signal?: AbortSignal; onProgress?: (done: number, total: number) => void },
  ): Promise<ChunkedPoolEviction>;
}
