/** Looking into a DedupChunkRepository's storage from tests: copies per chunk, bit rot, the index. */
import type { CatalogStore } from '../../src/core/catalog-store.js';
import type { ChunkStore } from '../../src/core/chunk-store.js';
import { BLOCK_CHECKSUM_BYTES, PACK_BLOCK_BYTES } from '../../src/store/dedup/pack-blocks.js';
import { PACK_KEY_PREFIX, decodePack, packKey } from '../../src/store/dedup/pack-format.js';
import type { ChunkRepository } from '../../src/store/dedup/repository.js';
import { MemoryCatalogStore } from '../../src/meta/memory-catalog.js';
import { DedupChunkRepository } from '../../src/store/dedup/dedup-repository.js';
import { MemoryChunkStore } from '../../src/store/memory-chunk-store.js';
import { SeededRandom } from '../../src/store/seeded-random.js';
import { TieredChunkStore } from '../../src/store/tier/tiered-chunk-store.js';
import { TEST_COOLING_MS } from './tier.js';

/** Every pack key in the store. */
export async function packKeys(store: ChunkStore): Promise<string[]> {
  const keys: string[] = [];
  let after: string | undefined;
  do {
    const page = await store.list(PACK_KEY_PREFIX, after === undefined ? {} : { after });
    keys.push(...page.keys);
    after = page.nextAfter;
  } while (after !== undefined);
  return keys;
}

/** How many copies of the chunk the packs hold (whether or not the index points at them). */
export async function storedCopies(store: ChunkStore, hash: string): Promise<number> {
  let copies = 0;
  for (const key of await packKeys(store)) {
    const bytes = (await store.get(key))!;
    copies += decodePack(key, bytes).entries.filter((entry) => entry.hash === hash).length;
  }
  return copies;
}

/** Where the index says the chunk lies (default pool). */
export async function chunkLocation(catalog: CatalogStore, hash: string): Promise<{ pack: string; offsetBytes: number; lengthBytes: number }> {
  const entry = await catalog.get(`chunk/${hash}`);
  if (entry === undefined) throw new Error(`chunk ${hash} is not indexed`);
  return entry.value as { pack: string; offsetBytes: number; lengthBytes: number };
}

/** Flips one bit in the middle of the chunk's stored bytes, as bit rot would. */
export async function damageChunk(store: ChunkStore, catalog: CatalogStore, hash: string): Promise<void> {
  const { pack, offsetBytes, lengthBytes } = await chunkLocation(catalog, hash);
  const bytes = (await store.get(packKey(pack)))!;
  bytes[offsetBytes + Math.floor(lengthBytes / 2)]! ^= 0x10;
  await store.put(packKey(pack), bytes);
}

/**
 * Flips a bit of the stored copy of `hash`'s 4 KiB block `block` (a version 2 pack) at
 * `withinBlock` (PACK_BLOCK_BYTES and on: the block's checksum), in `store` directly.
 */
export async function flipStoredBlockBit(store: ChunkStore, catalog: CatalogStore, hash: string, block: number, withinBlock: number): Promise<void> {
  const { pack, offsetBytes } = await chunkLocation(catalog, hash);
  const bytes = (await store.get(packKey(pack)))!;
  bytes[offsetBytes + block * (PACK_BLOCK_BYTES + BLOCK_CHECKSUM_BYTES) + withinBlock]! ^= 0x04;
  await store.put(packKey(pack), bytes);
}

/**
 * Reads the chunks (each `chunkBytes` long) in order with readInto, as a sealed layer's preads
 * do: `inFlight` chunks into one request buffer at once. Each chunk's bytes, or its error.
 */
export async function streamChunksInto(repository: ChunkRepository, hashes: readonly string[], chunkBytes: number, inFlight: number): Promise<(Uint8Array | unknown)[]> {
  const outcomes: (Uint8Array | unknown)[] = [];
  for (let first = 0; first < hashes.length; first += inFlight) {
    const request = new Uint8Array(inFlight * chunkBytes);
    const reads = hashes.slice(first, first + inFlight).map(async (hash, n) => {
      const target = request.subarray(n * chunkBytes, (n + 1) * chunkBytes);
      await repository.readInto!(hash, target);
      return target;
    });
    for (const settled of await Promise.allSettled(reads)) outcomes.push(settled.status === 'fulfilled' ? settled.value : settled.reason);
  }
  return outcomes;
}

/**
 * A DedupChunkRepository (no read cache: every read goes to the tier; packs of 1 MiB) over a
 * TieredChunkStore whose cold tier is `cold`, holding `chunkCount` seeded chunks of `chunkBytes`,
 * every pack evicted.
 */
export async function evictedRepository(cold: ChunkStore, options: { chunkCount: number; chunkBytes: number; partBytes: number; aheadBytes: number; seed: number }) {
  const tier = await TieredChunkStore.open({
    hot: new MemoryChunkStore(),
    cold,
    catalog: new MemoryCatalogStore(),
    coolingMs: TEST_COOLING_MS,
    flushIntervalMs: 0,
    now: () => TEST_COOLING_MS,
    coldPartSizeBytes: options.partBytes,
    readAhead: { aheadBytes: options.aheadBytes },
  });
  const catalog = new MemoryCatalogStore();
  const repository = await DedupChunkRepository.open({ chunkStore: tier, catalog, packTargetBytes: 1024 * 1024, readCacheBytes: 0 });
  const random = new SeededRandom(options.seed);
  const chunks = Array.from({ length: options.chunkCount }, () => random.fill(new Uint8Array(options.chunkBytes)));
  const hashes = await repository.addReferences(chunks);
  const keys = await packKeys(tier);
  const moved = (await tier.evict(keys)).movedObjects;
  if (moved !== keys.length || keys.length < 2) throw new Error(`assertion failed: ${moved} of ${keys.length} packs evicted`);
  return { tier, catalog, repository, chunks, hashes };
}
