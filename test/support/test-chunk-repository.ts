/**
 * The repository the chunked-store tests run against: the real DedupChunkRepository (BLAKE3,
 * packs in a MemoryChunkStore, its index in a MemoryCatalogStore), small packs so that a test's
 * chunks spread over several of them.
 */
import { MemoryCatalogStore } from '../../src/meta/memory-catalog.js';
import { DedupChunkRepository } from '../../src/store/dedup/dedup-repository.js';
import type { ChunkRepository } from '../../src/store/dedup/repository.js';
import { MemoryChunkStore } from '../../src/store/memory-chunk-store.js';

export async function createTestChunkRepository(): Promise<ChunkRepository> {
  return DedupChunkRepository.open({
    chunkStore: new MemoryChunkStore(),
    catalog: new MemoryCatalogStore(),
    packTargetBytes: 1024 * 1024,
  });
}
