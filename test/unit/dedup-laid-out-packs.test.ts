/**
 * Packs laid out by the chunk-hashing worker (chunk-tokens.ts, pack-format.ts finishInPlace): a
 * step of worker-named chunks is written as the pack the main thread would have built, byte for
 * byte, whether the pack is finished in the worker's memory (all of the step's chunks, new) or
 * assembled from the stored forms (a pack target smaller than the step, chunks already stored);
 * a stored form is used once; and the laid-out memory goes back for reuse only when nothing reads it.
 */
import { describe, expect, it } from 'vitest';
import { MemoryCatalogStore } from '../../src/meta/memory-catalog.js';
import { BLAKE3_HASHER } from '../../src/store/dedup/chunk-hasher.js';
import { DedupChunkRepository } from '../../src/store/dedup/dedup-repository.js';
import { takePackBuffer } from '../../src/store/dedup/pack-buffers.js';
import { PACK_HEADER_BYTES, PackBuilder, decodePack, packLayOutBytes, type LaidOutPack } from '../../src/store/dedup/pack-format.js';
import { storedChunkBytes, writeChunkBlocks } from '../../src/store/dedup/pack-blocks.js';
import { packsFinishedInPlaceForTests } from '../../src/store/dedup/pack-writer.js';
import { MemoryChunkStore } from '../../src/store/memory-chunk-store.js';
import { patternBytes } from '../support/object-model.js';

const CHUNK_BYTES = 64 * 1024;

/** `count` chunks in memory of their own (as the S3 writer's chunk buffers are), the last one short. */
function ownedChunks(count: number, seed: number): Uint8Array[] {
  return Array.from({ length: count }, (_, i) => {
    const memory = new Uint8Array(CHUNK_BYTES);
    memory.set(patternBytes(CHUNK_BYTES, seed * 1000 + i));
    return i === count - 1 ? memory.subarray(0, 5000) : memory;
  });
}

/** The pack PackBuilder.finish makes of these chunks (what the main thread built before the worker laid packs out). */
function referencePack(chunks: readonly Uint8Array[]): Buffer {
  const builder = new PackBuilder(BLAKE3_HASHER.algorithm, BLAKE3_HASHER.digestBytes);
  for (const chunk of chunks) builder.add(BLAKE3_HASHER.hash(chunk), chunk);
  return Buffer.from(builder.finish());
}

async function packsIn(store: MemoryChunkStore): Promise<Buffer[]> {
  const { keys } = await store.list('packs/');
  return Promise.all(keys.map(async (key) => Buffer.from((await store.get(key))!)));
}

describe('packs laid out by the hashing worker', () => {
  it('a step of new chunks is the same pack byte for byte, and every chunk and part of one reads back', async () => {
    const store = new MemoryChunkStore();
    const repo = await DedupChunkRepository.open({ chunkStore: store, catalog: new MemoryCatalogStore() });
    const chunks = ownedChunks(64, 1);
    const copies = chunks.map((chunk) => Uint8Array.from(chunk));
    const inPlaceBefore = packsFinishedInPlaceForTests();
    await repo.addHashedReferences(await repo.hashOwnedChunks(chunks));
    expect(packsFinishedInPlaceForTests()).toBe(inPlaceBefore + 1);
    const packs = await packsIn(store);
    expect(packs.length).toBe(1);
    expect(packs[0]!.equals(referencePack(copies))).toBe(true);
    for (const [i, copy] of copies.entries()) {
      expect(Buffer.from(await repo.read(BLAKE3_HASHER.hash(copy))).equals(copy)).toBe(true);
      expect(Buffer.from(await repo.readRange(BLAKE3_HASHER.hash(copy), 4000, 300)).equals(copy.subarray(4000, 4300))).toBe(true);
      expect(await repo.referenceCount(BLAKE3_HASHER.hash(copies[i]!))).toBe(1);
    }
  });

  it('a step split over packs, or with chunks already stored, is written from the stored forms: the same packs as built on this thread', async () => {
    const store = new MemoryChunkStore();
    const repo = await DedupChunkRepository.open({ chunkStore: store, catalog: new MemoryCatalogStore(), packTargetBytes: 1024 * 1024 });
    const first = ownedChunks(40, 2).map((chunk) => Uint8Array.from(chunk));
    await repo.addReferences(first.slice(0, 10)); // already stored when the step comes: left out of its packs
    const step = ownedChunks(40, 2);
    const inPlaceBefore = packsFinishedInPlaceForTests();
    await repo.addHashedReferences(await repo.hashOwnedChunks(step));
    expect(packsFinishedInPlaceForTests()).toBe(inPlaceBefore);
    const packs = await packsIn(store);
    // 10 chunks first; then the other 30 at 16 a pack (1 MiB and 1/64 of slack).
    const expected = [referencePack(first.slice(0, 10)), referencePack(first.slice(10, 26)), referencePack(first.slice(26))];
    expect(packs.map((pack) => pack.toString('hex')).sort()).toEqual(expected.map((pack) => pack.toString('hex')).sort());
    for (const [i, copy] of first.entries()) {
      expect(Buffer.from(await repo.read(BLAKE3_HASHER.hash(copy))).equals(copy)).toBe(true);
      expect(await repo.referenceCount(BLAKE3_HASHER.hash(copy))).toBe(i < 10 ? 2 : 1);
    }
  });

  it('a token is added again without its stored form (taken once), and the reused memory does not change packs written before', async () => {
    const store = new MemoryChunkStore();
    const repo = await DedupChunkRepository.open({ chunkStore: store, catalog: new MemoryCatalogStore() });
    const tokens = await repo.hashOwnedChunks(ownedChunks(64, 3));
    await repo.addHashedReferences(tokens);
    const before = await packsIn(store);
    // The laid-out memory went back to the pack buffers: the next steps reuse it.
    for (let seed = 4; seed < 8; seed++) await repo.addHashedReferences(await repo.hashOwnedChunks(ownedChunks(64, seed)));
    await repo.addHashedReferences(tokens);
    const after = await packsIn(store);
    expect(after.length).toBe(5);
    expect(before.every((pack) => after.some((other) => other.equals(pack)))).toBe(true);
    for (const token of tokens) expect(await repo.referenceCount(token.hash)).toBe(2);
    for (const pack of after) expect(decodePack('p', pack).entries.length).toBe(64);
  });
});

describe('PackBuilder.finishInPlace', () => {
  /** Chunks laid out the way the worker lays them (blocks and CRCs from the header's end on). */
  function laidOut(chunks: readonly Uint8Array[]): { laid: LaidOutPack; stored: Uint8Array[] } {
    const memory = new Uint8Array(takePackBuffer(packLayOutBytes(chunks.map((chunk) => chunk.length), BLAKE3_HASHER.digestBytes)).length);
    const target = Buffer.from(memory.buffer);
    const stored: Uint8Array[] = [];
    let at = PACK_HEADER_BYTES;
    for (const chunk of chunks) {
      writeChunkBlocks(target, at, BLAKE3_HASHER.hash(chunk), chunk);
      stored.push(memory.subarray(at, at + storedChunkBytes(2, chunk.length)));
      at += storedChunkBytes(2, chunk.length);
    }
    return { laid: { memory, chunksEndBytes: at }, stored };
  }

  it('finishes in the laid-out memory only for all of its chunks in order, in version 2; finish() makes the same bytes otherwise', () => {
    const chunks = ownedChunks(5, 9);
    const { laid, stored } = laidOut(chunks);
    const build = (which: number[], version = 2) => {
      const builder = new PackBuilder(BLAKE3_HASHER.algorithm, BLAKE3_HASHER.digestBytes, version);
      for (const i of which) builder.add(BLAKE3_HASHER.hash(chunks[i]!), chunks[i]!, undefined, { bytes: stored[i]!, laidOut: laid });
      return builder;
    };
    const inPlace = build([0, 1, 2, 3, 4]).finishInPlace();
    expect(inPlace?.buffer).toBe(laid.memory.buffer);
    expect(Buffer.from(inPlace!).equals(referencePack(chunks))).toBe(true);
    expect(Buffer.from(build([0, 1, 2, 3, 4]).finish()).equals(referencePack(chunks))).toBe(true);
    // Not all of them (the index would go over the next chunk), out of order, or version 1: no.
    expect(build([0, 1, 2, 3]).finishInPlace()).toBeUndefined();
    expect(build([1, 2, 3, 4]).finishInPlace()).toBeUndefined();
    expect(build([0, 2, 1, 3, 4]).finishInPlace()).toBeUndefined();
    expect(build([0, 1, 2, 3, 4], 1).finishInPlace()).toBeUndefined();
    expect(Buffer.from(build([0, 1, 2, 3]).finish()).equals(referencePack(chunks.slice(0, 4)))).toBe(true);
    expect(Buffer.from(build([0, 2, 1, 3, 4]).finish()).equals(referencePack([0, 2, 1, 3, 4].map((i) => chunks[i]!)))).toBe(true);
  });
});
