/** Looking into a DedupChunkRepository's storage from tests: copies per chunk, bit rot, the index. */
import type { CatalogStore } from '../../src/core/catalog-store.js';
import type { ChunkStore } from '../../src/core/chunk-store.js';
import { PACK_KEY_PREFIX, decodePack, packKey } from '../../src/store/dedup/pack-format.js';

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
