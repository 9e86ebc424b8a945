/**
 * A dedup pool with real sealed layers, for the scrub tests: qcow2 files made by qemu-img and
 * written by qemu-io in a LocalLayerStore, sealed by a ChunkedLayerStore into the real
 * DedupChunkRepository, with its packs, index and manifests either in memory or on disk
 * (LocalChunkStore + LevelCatalogStore). The raw bytes of each layer file are kept before sealing,
 * so a test can read every sealed layer back through its ChunkedFile and compare byte for byte.
 */
import fs from 'node:fs';
import path from 'node:path';
import { expect } from 'vitest';
import type { CatalogStore } from '../../src/core/catalog-store.js';
import type { ChunkStore } from '../../src/core/chunk-store.js';
import type { LayerRef } from '../../src/core/layer-store.js';
import { LevelCatalogStore } from '../../src/meta/level-catalog.js';
import { MemoryCatalogStore } from '../../src/meta/memory-catalog.js';
import { ChunkedLayerStore } from '../../src/store/chunked/chunked-layer-store.js';
import type { ChunkManifest } from '../../src/store/chunked/manifest.js';
import { BLAKE3_HASHER, XXH128_HASHER, type ChunkHasher } from '../../src/store/dedup/chunk-hasher.js';
import { DedupChunkRepository } from '../../src/store/dedup/dedup-repository.js';
import type { ScrubOptions } from '../../src/store/dedup/scrub.js';
import type { ScrubReport } from '../../src/store/dedup/scrub-report.js';
import { LocalChunkStore } from '../../src/store/local-chunk-store.js';
import { LocalLayerStore } from '../../src/store/local-layer-store.js';
import { MemoryChunkStore } from '../../src/store/memory-chunk-store.js';
import { isBlake3Available } from '../../src/sys/blake3.js';
import { expectSameBytes } from './bytes.js';
import { tempDir } from './tmp.js';
import { expectSuccess, qemuImg, qemuIo } from './tools.js';

export const KiB = 1024;
export const CLUSTER_BYTES = 64 * KiB;
export const LAYER_SIZE = '4M';
export const POOL = 'p';
export const GRACE_MS = 60_000;
export const LEAK_CONFIRM_MS = 10 * 60_000;

/**
 * The layers: qemu-io pattern writes (each 64 KiB cluster of one pattern is the same chunk), so
 * 0x11 is shared by a and b, 0x22 by a and c, 0x33 is a's alone, 0x44 b's, 0x55 c's.
 */
export const LAYER_WRITES: Readonly<Record<string, readonly string[]>> = {
  'a.qcow2': ['write -P 0x11 0 256k', 'write -P 0x22 1M 192k', 'write -P 0x33 2M 64k'],
  'b.qcow2': ['write -P 0x11 0 256k', 'write -P 0x44 3M 128k'],
  'c.qcow2': ['write -P 0x22 0 192k', 'write -P 0x55 512k 64k'],
};

export type StoreKind = 'memory' | 'disk';

/** The pool's hash: BLAKE3 where its addon loads. */
export const POOL_HASHER: ChunkHasher = isBlake3Available() ? BLAKE3_HASHER : XXH128_HASHER;

export class ScrubPool {
  /** Each sealed layer's bytes as they were in its local file. */
  readonly originals = new Map<string, Buffer>();
  readonly manifestsByLayer = new Map<string, ChunkManifest>();

  private constructor(
    /** The repository's clock (ms since the epoch); tests move it. */
    readonly clock: { nowMs: number },
    readonly dir: string,
    readonly chunkStore: ChunkStore,
    readonly catalog: CatalogStore,
    readonly manifests: ChunkStore,
    readonly local: LocalLayerStore,
    readonly repo: DedupChunkRepository,
    readonly store: ChunkedLayerStore,
  ) {}

  static async create(kind: StoreKind): Promise<ScrubPool> {
    const dir = tempDir();
    const clock = { nowMs: 1_000_000_000 };
    const chunkStore = kind === 'memory' ? new MemoryChunkStore() : new LocalChunkStore(path.join(dir, 'packs'));
    const catalog = kind === 'memory' ? new MemoryCatalogStore() : await LevelCatalogStore.open(path.join(dir, 'catalog'));
    const manifests = kind === 'memory' ? new MemoryChunkStore() : new LocalChunkStore(path.join(dir, 'manifests'));
    const repo = await DedupChunkRepository.open({
      chunkStore,
      catalog,
      hasher: POOL_HASHER,
      // Small packs, so the layers' chunks spread over several.
      packTargetBytes: 200 * KiB,
      readCacheBytes: 0,
      nowMs: () => clock.nowMs,
    });
    const local = new LocalLayerStore(path.join(dir, 'layers'));
    const store = new ChunkedLayerStore({ local, repository: repo, manifests, cacheBytes: 0 });
    await store.prepare();
    await store.createPool(POOL);
    return new ScrubPool(clock, dir, chunkStore, catalog, manifests, local, repo, store);
  }

  /** Makes and seals every layer of LAYER_WRITES. */
  async sealAll(): Promise<void> {
    for (const [fileName, writes] of Object.entries(LAYER_WRITES)) await this.makeAndSeal(fileName, writes);
  }

  /** qemu-img create, qemu-io writes, then seal. */
  async makeAndSeal(fileName: string, writes: readonly string[]): Promise<ChunkManifest> {
    const ref = this.ref(fileName);
    const file = this.local.location(ref)!;
    expectSuccess(qemuImg(['create', '-q', '-f', 'qcow2', file, LAYER_SIZE]), 'qemu-img create');
    expectSuccess(qemuIo(['-f', 'qcow2', ...writes.flatMap((w) => ['-c', w]), file]), 'qemu-io');
    this.originals.set(fileName, fs.readFileSync(file));
    const manifest = await this.store.seal(ref);
    this.manifestsByLayer.set(fileName, manifest);
    return manifest;
  }

  ref(fileName: string): LayerRef {
    return { pool: POOL, fileName };
  }

  /** The hash of a 64 KiB cluster filled with `pattern`. */
  patternHash(pattern: number): string {
    return this.repo.hash(Buffer.alloc(CLUSTER_BYTES, pattern));
  }

  scrub(options: Partial<ScrubOptions> = {}): Promise<ScrubReport> {
    return this.repo.scrub({ references: this.store.referenceHolders(), nowMs: this.clock.nowMs, leakConfirmMs: LEAK_CONFIRM_MS, ...options });
  }

  /** Reads every sealed layer still kept back through its ChunkedFile and compares it with its original bytes. */
  async expectLayersReadBack(): Promise<void> {
    for (const fileName of await this.store.list(POOL)) {
      const file = await this.store.open(this.ref(fileName), { readOnly: true });
      try {
        const original = this.originals.get(fileName)!;
        const bytes = new Uint8Array(original.length);
        expect(await file.pread(bytes, 0)).toBe(original.length);
        expectSameBytes(bytes, original, fileName);
      } finally {
        await file.close();
      }
    }
  }

  /** Each chunk's references as the kept manifests hold them. */
  heldReferences(): Map<string, number> {
    const held = new Map<string, number>();
    for (const manifest of this.manifestsByLayer.values()) for (const hash of manifest.storedHashes()) held.set(hash, (held.get(hash) ?? 0) + 1);
    return held;
  }

  /** Every index entry's count, by hash. */
  async indexedCounts(): Promise<Map<string, number>> {
    const counts = new Map<string, number>();
    for (let after: string | undefined, first = true; first || after !== undefined; first = false) {
      const page = await this.catalog.list('chunk/', after === undefined ? {} : { after });
      for (const entry of page.entries) counts.set(entry.key.slice('chunk/'.length), (entry.value as { refs: number }).refs);
      after = page.nextAfter;
    }
    return counts;
  }

  async close(): Promise<void> {
    await this.catalog.close();
  }
}
