import { onTestFinished } from 'vitest';
import type { CatalogStore } from '../../src/core/catalog-store.js';
import { LevelCatalogStore } from '../../src/meta/level-catalog.js';
import { MemoryCatalogStore } from '../../src/meta/memory-catalog.js';
import { BLAKE3_HASHER, XXH128_HASHER, type ChunkHasher } from '../../src/store/dedup/chunk-hasher.js';
import { DedupChunkRepository } from '../../src/store/dedup/dedup-repository.js';
import { MemoryChunkStore } from '../../src/store/memory-chunk-store.js';
import { isBlake3Available } from '../../src/sys/blake3.js';
import { damageChunk, storedCopies } from '../support/dedup.js';
import { tempDir } from '../support/tmp.js';
import { chunkRepositoryConformance, type ChunkRepositoryUnderTest } from './chunk-repository.js';

function underTest(chunkStore: MemoryChunkStore, catalog: CatalogStore, hasher: ChunkHasher, repository: DedupChunkRepository): ChunkRepositoryUnderTest {
  return {
    repository,
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
