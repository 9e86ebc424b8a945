/**
 * DedupChunkRepository.readChunks (chunk-runs.ts): chunks back to back in a pack come back with one
 * ranged read, from remembered locations or, after a reopen, from one index getMany; version 1
 * packs read beside version 2 ones; locations GC made stale and copies that fail a block check fall
 * back to the checked single-chunk read (right bytes or CORRUPT, never wrong ones). Real
 * repository over memory stores; the chunk store is wrapped only to count its ranged reads.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { ChunkStore } from '../../src/core/chunk-store.js';
import { MemoryCatalogStore } from '../../src/meta/memory-catalog.js';
import { BLAKE3_HASHER, XXH128_HASHER } from '../../src/store/dedup/chunk-hasher.js';
import { DedupChunkRepository } from '../../src/store/dedup/dedup-repository.js';
import { packKey } from '../../src/store/dedup/pack-format.js';
import { MemoryChunkStore } from '../../src/store/memory-chunk-store.js';
import { isBlake3Available } from '../../src/sys/blake3.js';
import { expectSameBytes } from '../support/bytes.js';
import { chunkLocation } from '../support/dedup.js';
import { expectCode } from '../support/expect-error.js';

const KIB = 1024;
const GRACE_MS = 60_000;
const hasher = isBlake3Available() ? BLAKE3_HASHER : XXH128_HASHER;
const chunk = (sizeBytes = 64 * KIB) => new Uint8Array(randomBytes(sizeBytes));
const concat = (parts: readonly Uint8Array[]) => Buffer.concat(parts);

/** A memory store that counts ranged reads longer than a pack header (the chunk reads). */
function countingStore(): { store: ChunkStore & MemoryChunkStore; chunkReads: () => number } {
  const store = new MemoryChunkStore();
  let reads = 0;
  const getRange = store.getRange.bind(store);
  store.getRange = (key, offsetBytes, lengthBytes, options) => {
    if (lengthBytes > 64) reads++;
    return getRange(key, offsetBytes, lengthBytes, options);
  };
  return { store, chunkReads: () => reads };
}

describe('DedupChunkRepository.readChunks', () => {
  it('a run of chunks written together is one ranged read, from hints and after a reopen (index getMany)', async () => {
    const { store, chunkReads } = countingStore();
    const catalog = new MemoryCatalogStore();
    const repo = await DedupChunkRepository.open({ chunkStore: store, catalog, hasher });
    const chunks = [...Array.from({ length: 15 }, () => chunk()), chunk(1000)];
    const names = await repo.addReferences(chunks);
    const before = chunkReads();
    expectSameBytes(await repo.readChunks(names), concat(chunks));
    expect(chunkReads() - before).toBe(1);
    const reopened = await DedupChunkRepository.open({ chunkStore: store, catalog, hasher });
    const again = chunkReads();
    expectSameBytes(await reopened.readChunks(names.slice(3, 12)), concat(chunks.slice(3, 12)));
    expect(chunkReads() - again).toBe(1);
  });

  it('version 1 packs beside version 2 packs; after GC moved the chunks (stale hints) the run still reads right', async () => {
    let nowMs = 1_000_000_000;
    const stores = { chunkStore: new MemoryChunkStore(), catalog: new MemoryCatalogStore() };
    const { catalog } = stores;
    const oldChunks = [chunk(), chunk(), chunk(1000)];
    // Written by an older Strata (pack version 1), read by today's.
    const oldNames = await (await DedupChunkRepository.open({ ...stores, hasher, packVersion: 1, nowMs: () => nowMs })).addReferences(oldChunks);
    const repo = await DedupChunkRepository.open({ ...stores, hasher, packTargetBytes: 256 * KIB, readCacheBytes: 0, nowMs: () => nowMs });
    const newChunks = [chunk(), chunk(5000), chunk()];
    const newNames = await repo.addReferences(newChunks);
    expectSameBytes(await repo.readChunks([...oldNames, ...newNames]), concat([...oldChunks, ...newChunks]));
    expectSameBytes(await repo.readChunks([newNames[2]!, oldNames[1]!, newNames[0]!]), concat([newChunks[2]!, oldChunks[1]!, newChunks[0]!]));

    await repo.dropReferences(newNames);
    nowMs += 2 * GRACE_MS;
    const before = await chunkLocation(catalog, oldNames[0]!);
    await repo.gc({ graceMs: GRACE_MS, nowMs, liveShareMin: 1 });
    expect((await chunkLocation(catalog, oldNames[0]!)).pack).not.toBe(before.pack);
    expectSameBytes(await repo.readChunks(oldNames), concat(oldChunks));
  });

  it('a chunk whose block checksum is damaged (bytes intact) reads right through the hash check; damaged bytes are CORRUPT naming the chunk', async () => {
    const chunkStore = new MemoryChunkStore();
    const catalog = new MemoryCatalogStore();
    const repo = await DedupChunkRepository.open({ chunkStore, catalog, hasher, readCacheBytes: 0 });
    const chunks = [chunk(), chunk(), chunk()];
    const names = await repo.addReferences(chunks);
    const damage = async (hash: string, withinBytes: number) => {
      const at = await chunkLocation(catalog, hash);
      const pack = (await chunkStore.get(packKey(at.pack)))!;
      pack[at.offsetBytes + withinBytes]! ^= 0x01;
      await chunkStore.put(packKey(at.pack), pack);
    };
    await damage(names[1]!, 3 * 4100 + 4096 + 1); // block 3's checksum
    expectSameBytes(await repo.readChunks(names), concat(chunks));
    await damage(names[2]!, 5 * 4100 + 7); // a byte of block 5
    await expectCode(repo.readChunks(names), 'CORRUPT', new RegExp(names[2]!));
    expectSameBytes(await repo.readChunks(names.slice(0, 2)), concat(chunks.slice(0, 2)));
  });

  it('a run across two packs reads into the array offered (options.into): right bytes, a view of it; damage there is still CORRUPT', async () => {
    const { store, chunkReads } = countingStore();
    const catalog = new MemoryCatalogStore();
    const repo = await DedupChunkRepository.open({ chunkStore: store, catalog, hasher, readCacheBytes: 0 });
    const first = [chunk(), chunk(), chunk()];
    const second = [chunk(), chunk(5000)];
    const names = [...(await repo.addReferences(first)), ...(await repo.addReferences(second))];
    expect((await chunkLocation(catalog, names[0]!)).pack).not.toBe((await chunkLocation(catalog, names[3]!)).pack);
    const into = new Uint8Array(1024 * KIB);
    const before = chunkReads();
    const got = await repo.readChunks(names, { into });
    expect(chunkReads() - before).toBe(2);
    expect(got.buffer).toBe(into.buffer);
    expectSameBytes(got, concat([...first, ...second]));
    // Too small an array: the run has a buffer of its own, the same bytes.
    const small = new Uint8Array(10);
    const own = await repo.readChunks(names, { into: small });
    expect(own.buffer).not.toBe(small.buffer);
    expectSameBytes(own, concat([...first, ...second]));
    // A damaged byte in the second pack's span: CORRUPT naming the chunk, never other bytes.
    const at = await chunkLocation(catalog, names[4]!);
    const pack = (await store.get(packKey(at.pack)))!;
    pack[at.offsetBytes + 10]! ^= 0x01;
    await store.put(packKey(at.pack), pack);
    await expectCode(repo.readChunks(names, { into }), 'CORRUPT', new RegExp(names[4]!));
    expectSameBytes(await repo.readChunks(names.slice(0, 4), { into }), concat([...first, second[0]!]));
  });
});
