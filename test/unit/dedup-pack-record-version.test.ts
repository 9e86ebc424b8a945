/**
 * A pack's format version in its index record: a repository opened afresh over the same catalog
 * and store (a daemon restart) reads every chunk with no pack-header read, where each cold pack's
 * header was a GET before its chunks; a record written before versions were kept (none in it)
 * still reads, through the header. Real DedupChunkRepository, catalog and packs; the store is a
 * memory store that counts header reads.
 */
import { describe, expect, it } from 'vitest';
import type { ChunkStoreCallOptions } from '../../src/core/chunk-store.js';
import { TxnBuilder } from '../../src/meta/table.js';
import { MemoryCatalogStore } from '../../src/meta/memory-catalog.js';
import { BLAKE3_HASHER } from '../../src/store/dedup/chunk-hasher.js';
import { openChunkIndex } from '../../src/store/dedup/chunk-index.js';
import { DedupChunkRepository } from '../../src/store/dedup/dedup-repository.js';
import { PACK_HEADER_BYTES, PACK_VERSION } from '../../src/store/dedup/pack-format.js';
import { MemoryChunkStore } from '../../src/store/memory-chunk-store.js';
import { SeededRandom } from '../../src/store/seeded-random.js';

class HeaderCountingStore extends MemoryChunkStore {
  headerReads = 0;
  override async getRange(key: string, offsetBytes: number, lengthBytes: number, options?: ChunkStoreCallOptions): Promise<Uint8Array | undefined> {
    if (offsetBytes === 0 && lengthBytes === PACK_HEADER_BYTES) this.headerReads += 1;
    return super.getRange(key, offsetBytes, lengthBytes, options);
  }
}

async function poolWithPacks(): Promise<{ store: HeaderCountingStore; catalog: MemoryCatalogStore; chunks: Uint8Array[]; hashes: string[] }> {
  const store = new HeaderCountingStore();
  const catalog = new MemoryCatalogStore();
  const writer = await DedupChunkRepository.open({ chunkStore: store, catalog, packTargetBytes: 256 * 1024, readCacheBytes: 0 });
  const random = new SeededRandom(31);
  const chunks = Array.from({ length: 24 }, () => random.fill(new Uint8Array(64 * 1024)));
  const hashes = await writer.addReferences(chunks);
  return { store, catalog, chunks, hashes };
}

/** Reads every chunk through a repository opened afresh (nothing in memory): as after a restart. */
async function readAllAfresh(pool: Awaited<ReturnType<typeof poolWithPacks>>): Promise<void> {
  const reader = await DedupChunkRepository.open({ chunkStore: pool.store, catalog: pool.catalog, readCacheBytes: 0 });
  for (const [i, hash] of pool.hashes.entries()) {
    expect(Buffer.from(await reader.read(hash)).equals(Buffer.from(pool.chunks[i]!))).toBe(true);
    const target = new Uint8Array(pool.chunks[i]!.length);
    await reader.readInto(hash, target);
    expect(Buffer.from(target).equals(Buffer.from(pool.chunks[i]!))).toBe(true);
  }
}

describe('pack records hold the pack format version', () => {
  it('a repository opened afresh reads every chunk with no pack-header read', async () => {
    const pool = await poolWithPacks();
    const index = await openChunkIndex(pool.catalog, undefined, BLAKE3_HASHER.algorithm);
    const { records } = await index.packs.page();
    expect(records.length).toBeGreaterThan(2);
    for (const { record } of records) expect(record.version).toBe(PACK_VERSION);
    pool.store.headerReads = 0;
    await readAllAfresh(pool);
    expect(pool.store.headerReads).toBe(0);
  });

  it('a record with no version (written before versions were kept) reads through the pack header, once per pack', async () => {
    const pool = await poolWithPacks();
    const index = await openChunkIndex(pool.catalog, undefined, BLAKE3_HASHER.algorithm);
    const { records } = await index.packs.page();
    const txn = new TxnBuilder();
    for (const current of records) {
      const { version: _dropped, ...old } = current.record;
      index.packs.put(txn, old, current);
    }
    await txn.commit(pool.catalog);
    expect((await index.packs.page()).records.every(({ record }) => record.version === undefined)).toBe(true);
    pool.store.headerReads = 0;
    await readAllAfresh(pool);
    expect(pool.store.headerReads).toBe(records.length);
  });
});
