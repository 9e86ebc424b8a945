import { onTestFinished } from 'vitest';
import type { CatalogStore } from '../../src/core/catalog-store.js';
import type { ChunkStore } from '../../src/core/chunk-store.js';
import { LevelCatalogStore } from '../../src/meta/level-catalog.js';
import { MemoryCatalogStore } from '../../src/meta/memory-catalog.js';
import { BLAKE3_HASHER, XXH128_HASHER, type ChunkHasher } from '../../src/store/dedup/chunk-hasher.js';
import { DedupChunkRepository } from '../../src/store/dedup/dedup-repository.js';
import { LocalChunkStore } from '../../src/store/local-chunk-store.js';
import { MemoryChunkStore } from '../../src/store/memory-chunk-store.js';
import { TieredChunkStore } from '../../src/store/tier/tiered-chunk-store.js';
import { isBlake3Available } from '../../src/sys/blake3.js';
import { damageChunk, storedCopies } from '../support/dedup.js';
import { tempDir } from '../support/tmp.js';
import { chunkRepositoryConformance, type ChunkRepositoryUnderTest } from './chunk-repository.js';

function underTest(chunkStore: ChunkStore, catalog: CatalogStore, hasher: ChunkHasher, repository: DedupChunkRepository): ChunkRepositoryUnderTest {
  return {
    repository,
    // A store that answers at once (memory; a local folder keeping packs open, the page cache warm).
    readsNow: chunkStore.getRangeNow !== undefined,
    storedCopies: (hash) => storedCopies(chunkStore, hash),
    damage: (hash) => damageChunk(chunkStore, catalog, hash),
  };
}

// BLAKE3 is the default; it needs @napi-rs/blake-hash (bench/RESULTS.md, "Chunk hash (issue 12)").
const hashers = isBlake3Available() ? [BLAKE3_HASHER, XXH128_HASHER] : [XXH128_HASHER];

for (const hasher of hashers) {
  chunkRepositoryConformance(`dedup (${hasher.algorithm}) over memory stores`, async () => {
    const chunkStore = new MemoryChunkStore();
    const catalog = new MemoryCatalogStore();
    // Small packs, so the suite's chunks spread over several of them.
    const repository = await DedupChunkRepository.open({ chunkStore, catalog, hasher, packTargetBytes: 256 * 1024 });
    return underTest(chunkStore, catalog, hasher, repository);
  });

  chunkRepositoryConformance(`dedup (${hasher.algorithm}) over LevelDB`, async () => {
    const location = `${tempDir()}/catalog`;
    const chunkStore = new MemoryChunkStore();
    let catalog = await LevelCatalogStore.open(location);
    onTestFinished(() => catalog.close());
    const repository = await DedupChunkRepository.open({ chunkStore, catalog, hasher });
    return {
      ...underTest(chunkStore, catalog, hasher, repository),
      reopen: async () => {
        await catalog.close();
        catalog = await LevelCatalogStore.open(location);
        return DedupChunkRepository.open({ chunkStore, catalog, hasher });
      },
    };
  });
}

// Packs in a local folder kept open: readRangeNow reads them with preadv2 (RWF_NOWAIT) when the
// page cache holds the bytes, which it does right after they were written.
chunkRepositoryConformance(`dedup (${hashers[0]!.algorithm}) over a local folder keeping packs open`, async () => {
  const chunkStore = new LocalChunkStore(tempDir(), { openFilesMax: 8 });
  onTestFinished(() => chunkStore.close());
  const catalog = new MemoryCatalogStore();
  const repository = await DedupChunkRepository.open({ chunkStore, catalog, hasher: hashers[0]!, packTargetBytes: 256 * 1024 });
  return underTest(chunkStore, catalog, hashers[0]!, repository);
});

/** A tier that moves every object cold as soon as it is stored: every read of a pack is a cold read. */
function coldAtOnce(tier: TieredChunkStore): ChunkStore {
  return {
    get: (key, options) => tier.get(key, options),
    getRange: (key, offsetBytes, lengthBytes, options) => tier.getRange(key, offsetBytes, lengthBytes, options),
    put: async (key, data, options) => {
      await tier.put(key, data, options);
      const result = await tier.evict([key]);
      if (result.failed.length > 0) throw new Error(`assertion failed: evicting ${key} failed`);
    },
    putIfAbsent: (key, data, options) => tier.putIfAbsent(key, data, options),
    delete: (key, options) => tier.delete(key, options),
    list: (prefix, options) => tier.list(prefix, options),
    close: () => tier.close(),
  };
}

for (const allCold of [false, true]) {
  chunkRepositoryConformance(`dedup (${hashers[0]!.algorithm}) over a tiered store${allCold ? ', every pack cold at once' : ''}`, async () => {
    const tier = await TieredChunkStore.open({ hot: new MemoryChunkStore(), cold: new MemoryChunkStore(), catalog: new MemoryCatalogStore(), coolingMs: 60_000, flushIntervalMs: 0 });
    const chunkStore = allCold ? coldAtOnce(tier) : tier;
    const catalog = new MemoryCatalogStore();
    const repository = await DedupChunkRepository.open({ chunkStore, catalog, hasher: hashers[0]!, packTargetBytes: 256 * 1024 });
    return underTest(chunkStore, catalog, hashers[0]!, repository);
  });
}
