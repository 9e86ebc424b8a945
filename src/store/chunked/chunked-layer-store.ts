/**
 * ChunkedLayerStore: a pool's layers where sealed ones are chunk manifests. It wraps another
 * LayerStore (a LocalLayerStore: active layers stay plain local qcow2 files, written in place) and
 * adds seal(ref), which turns a closed layer into a manifest of chunks in the pool's
 * ChunkRepository, stores the encoded manifest in a ChunkStore (key `layer-manifests/<pool>/<file>`)
 * and removes the local file. Opening a sealed layer gives a read-only ChunkedFile.
 *
 * Crash safety: seal stores the manifest before it removes the local file, so a crash between
 * leaves both, with the same bytes; the manifest wins (open, allocatedBytes) and remove deletes
 * both. remove deletes the manifest before it drops its chunk references, so a crash between
 * leaks references (reclaimed by a scrub's reference audit: referenceHolders()) and never leaves a manifest naming dropped
 * chunks.
 */
import type { ChunkStore } from '../../core/chunk-store.js';
import type { PreparedMerge, SealedLayerSource } from '../../core/chunked-pools.js';
import { StorageError } from '../../core/errors.js';
import type { HostFile } from '../../core/host-file.js';
import type { LayerRef, LayerStore, StrayEntry } from '../../core/layer-store.js';
import type { ChunkRepository } from '../dedup/repository.js';
import { checkComponent } from '../local-layer-store.js';
import { ChunkCache, CHUNK_CACHE_DEFAULT_BYTES } from './chunk-cache.js';
import { ChunkedFile } from './chunked-file.js';
import type { ChunkManifest } from './manifest.js';
import { decodeManifest, encodeManifest } from './manifest-format.js';
import { LAYER_MANIFEST_PREFIX, sealedLayerReferences } from './manifest-references.js';
import { mergeSealedLayers } from './merge.js';
import { releaseManifest, sealFile, type SealOptions } from './seal.js';
import { sealQcow2Stream, type SealStreamOptions } from './seal-stream.js';
import type { ReferenceSource } from '../dedup/scrub.js';

export { LAYER_MANIFEST_PREFIX } from './manifest-references.js';

export interface ChunkedLayerStoreOptions {
  /** Where active (and not yet sealed) layers live: a LocalLayerStore in a daemon. */
  local: LayerStore;
  /** The pool's chunks. */
  repository: ChunkRepository;
  /** Where encoded manifests are kept, durably. */
  manifests: ChunkStore;
  /** Memory for recently read chunks, shared by every sealed layer opened here (CHUNK_CACHE_DEFAULT_BYTES). */
  cacheBytes?: number;
}

export class ChunkedLayerStore implements LayerStore {
  private readonly local: LayerStore;
  private readonly repository: ChunkRepository;
  private readonly manifests: ChunkStore;
  private readonly cache: ChunkCache;

  constructor(options: ChunkedLayerStoreOptions) {
    this.local = options.local;
    this.repository = options.repository;
    this.manifests = options.manifests;
    this.cache = new ChunkCache(options.cacheBytes ?? CHUNK_CACHE_DEFAULT_BYTES);
  }

  prepare(): Promise<void> {
    return this.local.prepare();
  }

  createPool(pool: string): Promise<void> {
    return this.local.createPool(pool);
  }

  async removePool(pool: string): Promise<void> {
    const sealed = await this.manifests.list(this.poolPrefix(pool), { limit: 1 });
    if (sealed.keys.length > 0) throw new StorageError('BUSY', `pool ${pool} still holds sealed layers`);
    await this.local.removePool(pool);
  }

  async create(ref: LayerRef, options?: { ownerOnly?: boolean }): Promise<HostFile> {
    if ((await this.manifests.get(this.key(ref))) !== undefined) {
      throw new StorageError('ALREADY_EXISTS', `cannot create ${this.name(ref)}: a sealed layer of that name exists`);
    }
    return this.local.create(ref, options);
  }

  /** A sealed layer opens read-only (READ_ONLY when asked for writing); any other goes to the local store. */
  async open(ref: LayerRef, options: { readOnly: boolean }): Promise<HostFile> {
    const manifest = await this.readManifest(ref);
    if (manifest === undefined) return this.local.open(ref, options);
    if (!options.readOnly) {
      throw new StorageError('READ_ONLY', `${this.name(ref)} is sealed (immutable): open it read-only, or write to an overlay on it`);
    }
    return new ChunkedFile(manifest, this.repository, { name: this.name(ref), cache: this.cache });
  }

  async remove(ref: LayerRef): Promise<boolean> {
    const manifest = await this.readManifest(ref);
    if (manifest !== undefined) {
      await this.manifests.delete(this.key(ref));
      await releaseManifest(manifest, this.repository);
    }
    const removedLocal = await this.local.remove(ref);
    return manifest !== undefined || removedLocal;
  }

  listPools(): Promise<string[]> {
    return this.local.listPools();
  }

  /** The local store's: manifests live in the ChunkStore under keys, never in the root. */
  listStrays(): Promise<StrayEntry[]> {
    return this.local.listStrays();
  }

  async list(pool: string): Promise<string[]> {
    const names = new Set(await this.local.list(pool));
    const prefix = this.poolPrefix(pool);
    let after: string | undefined;
    do {
      const page = await this.manifests.list(prefix, { after });
      for (const key of page.keys) names.add(key.slice(prefix.length));
      after = page.nextAfter;
    } while (after !== undefined);
    return [...names].sort();
  }

  /** A sealed layer's stored chunks, each counted in full even when shared (see ChunkedFile). */
  async allocatedBytes(ref: LayerRef): Promise<number> {
    const manifest = await this.readManifest(ref);
    return manifest === undefined ? this.local.allocatedBytes(ref) : manifest.storedBytes();
  }

  syncPool(pool: string): Promise<void> {
    // Manifests are durable when put resolves; the local store's creations and removals are not.
    return this.local.syncPool(pool);
  }

  backingName(child: LayerRef, backing: LayerRef): string {
    return this.local.backingName(child, backing);
  }

  /** The local path the layer has while it is active (a sealed layer's bytes are not there). */
  location(ref: LayerRef): string | undefined {
    return this.local.location(ref);
  }

  poolLocation(pool: string): string | undefined {
    return this.local.poolLocation(pool);
  }

  /**
   * The sealed layers of `pools` (all pools when absent) as holders of chunk references: what a
   * scrub of this store's repository audits its counts against (DedupChunkRepository.scrub).
   */
  referenceHolders(pools?: readonly string[]): ReferenceSource {
    for (const pool of pools ?? []) checkComponent('pool name', pool);
    return sealedLayerReferences(this.manifests, pools);
  }

  /** True when the layer is a chunk manifest. */
  async isSealed(ref: LayerRef): Promise<boolean> {
    return (await this.manifests.get(this.key(ref))) !== undefined;
  }

  /**
   * Seals a closed local layer (nothing may write it meanwhile): its chunks go into the
   * repository, its manifest into the manifest store, and the local file is removed. NOT_FOUND
   * when there is no local layer; ALREADY_EXISTS when it is sealed already. A failed or aborted
   * seal keeps the local file and leaves no reference behind.
   */
  async seal(ref: LayerRef, options: SealOptions = {}): Promise<ChunkManifest> {
    if (await this.isSealed(ref)) throw new StorageError('ALREADY_EXISTS', `${this.name(ref)} is sealed already`);
    const source = await this.local.open(ref, { readOnly: true });
    let manifest: ChunkManifest;
    try {
      manifest = await sealFile(source, this.repository, options);
    } finally {
      await source.close();
    }
    await this.storeNewManifest(ref, manifest, options.signal);
    await this.local.remove(ref);
    await this.local.syncPool(ref.pool);
    return manifest;
  }

  /**
   * Creates a layer sealed from the start (an import into a dedup pool): the source's data goes
   * into the repository as it arrives and the qcow2 layer holding it is laid out as chunks
   * (seal-stream.ts); the manifest is stored last, so until then the layer does not exist.
   * ALREADY_EXISTS when a sealed layer of that name exists. A failed or aborted write leaves no
   * reference behind.
   */
  async writeSealed(ref: LayerRef, source: SealedLayerSource, options: SealStreamOptions = {}): Promise<ChunkManifest> {
    if (await this.isSealed(ref)) throw new StorageError('ALREADY_EXISTS', `${this.name(ref)} is sealed already`);
    const manifest = await sealQcow2Stream(source, this.repository, options);
    await this.storeNewManifest(ref, manifest, options.signal);
    return manifest;
  }

  /** Stores a freshly referenced manifest under ref's name; if it cannot, drops its references. */
  private async storeNewManifest(ref: LayerRef, manifest: ChunkManifest, signal: AbortSignal | undefined): Promise<void> {
    let stored = false;
    try {
      stored = await this.manifests.putIfAbsent(this.key(ref), encodeManifest(manifest), { signal });
    } finally {
      if (!stored) await releaseManifest(manifest, this.repository);
    }
    if (!stored) throw new StorageError('ALREADY_EXISTS', `${this.name(ref)} was sealed by another caller meanwhile`);
  }

  /**
   * After a seal that stored the manifest but was stopped before the local file went: removes that
   * local copy. True when the layer is sealed (whether or not a copy was left).
   */
  async dropLocalCopy(ref: LayerRef): Promise<boolean> {
    if (!(await this.isSealed(ref))) return false;
    if (await this.local.remove(ref)) await this.local.syncPool(ref.pool);
    return true;
  }

  /**
   * Turns a sealed layer back into a local file (the reverse of seal: a change must write into it):
   * the bytes are copied out of the chunks, the local file made durable, and only then the manifest
   * deleted and its references dropped. A crash part-way leaves the manifest (which wins) and at
   * most a partial local copy, which the next unseal replaces; a crash after the manifest went
   * leaks references until a reference audit. A layer that is not sealed is left as it is.
   */
  async unseal(ref: LayerRef, options: { signal?: AbortSignal } = {}): Promise<void> {
    const manifest = await this.readManifest(ref);
    if (manifest === undefined) return;
    await this.local.remove(ref);
    const source = new ChunkedFile(manifest, this.repository, { name: this.name(ref), cache: this.cache });
    const target = await this.local.create(ref);
    try {
      await target.truncate(manifest.fileSizeBytes);
      const buffer = new Uint8Array(manifest.chunkSizeBytes);
      for (let index = 0; index < manifest.entryCount; index++) {
        if (manifest.isZero(index)) continue;
        if (options.signal?.aborted) throw new StorageError('CANCELLED', `unsealing ${this.name(ref)} was cancelled; it stays sealed`);
        const view = buffer.subarray(0, manifest.chunkLengthBytes(index));
        await source.pread(view, index * manifest.chunkSizeBytes);
        await target.pwrite(view, index * manifest.chunkSizeBytes);
      }
      await target.flush();
    } finally {
      await target.close();
      await source.close();
    }
    await this.local.syncPool(ref.pool);
    await this.manifests.delete(this.key(ref));
    await releaseManifest(manifest, this.repository);
  }

  /**
   * Prepares sealed layer `upper` to become, in place, the merge of upper over sealed layer
   * `lower` (merge.ts: by reference; its header names `backingFile`): the merged manifest's chunks
   * are referenced now; install() stores it under upper's name (one atomic put) and then drops
   * the old manifest's references; discard() drops the merged one's. Upper reads the same before
   * and after only through a chain without lower: the caller repoints the chain as it installs.
   */
  async prepareMerge(upper: LayerRef, lower: LayerRef, options: { backingFile: string | undefined; signal?: AbortSignal }): Promise<PreparedMerge> {
    const upperManifest = await this.requireManifest(upper);
    const lowerManifest = await this.requireManifest(lower);
    const merged = await mergeSealedLayers(
      { name: this.name(upper), manifest: upperManifest },
      { name: this.name(lower), manifest: lowerManifest },
      this.repository,
      this.cache,
      options,
    );
    let settled = false;
    const settle = (): void => {
      if (settled) throw new Error('assertion failed: a prepared merge is installed or discarded once');
      settled = true;
    };
    return {
      sizeBytes: merged.storedBytes(),
      install: async () => {
        settle();
        await this.manifests.put(this.key(upper), encodeManifest(merged));
        await releaseManifest(upperManifest, this.repository);
      },
      discard: async () => {
        settle();
        await releaseManifest(merged, this.repository);
      },
    };
  }

  private async requireManifest(ref: LayerRef): Promise<ChunkManifest> {
    const manifest = await this.readManifest(ref);
    if (manifest === undefined) throw new StorageError('INVALID_ARGUMENT', `${this.name(ref)} is not sealed: only sealed layers are merged`);
    return manifest;
  }

  private async readManifest(ref: LayerRef): Promise<ChunkManifest | undefined> {
    const bytes = await this.manifests.get(this.key(ref));
    return bytes === undefined ? undefined : decodeManifest(bytes, this.name(ref));
  }

  private key(ref: LayerRef): string {
    checkComponent('layer file name', ref.fileName);
    return `${this.poolPrefix(ref.pool)}${ref.fileName}`;
  }

  private poolPrefix(pool: string): string {
    checkComponent('pool name', pool);
    return `${LAYER_MANIFEST_PREFIX}${pool}/`;
  }

  private name(ref: LayerRef): string {
    return `${ref.pool}/${ref.fileName}`;
  }
}
