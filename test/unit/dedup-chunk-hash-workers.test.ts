/**
 * hashOwnedChunks: a BLAKE3 repository names a step of chunks on a worker thread of the dedup
 * layer, their memory moved there and back; the tokens name the bytes they hold and are the
 * repository's own (addHashedReferences takes them, nothing else); a dead worker fails its call
 * and the next call gets a new worker.
 */
import { describe, expect, it } from 'vitest';
import { StorageError } from '../../src/core/errors.js';
import { MemoryCatalogStore } from '../../src/meta/memory-catalog.js';
import { chunkHashWorkersForTests, HASH_ON_WORKER_CHUNKS_MIN } from '../../src/store/dedup/chunk-hash-workers.js';
import { XXH128_HASHER } from '../../src/store/dedup/chunk-hasher.js';
import { DedupChunkRepository } from '../../src/store/dedup/dedup-repository.js';
import { MemoryChunkStore } from '../../src/store/memory-chunk-store.js';
import { isXxhashAvailable } from '../../src/sys/xxhash.js';
import { patternBytes } from '../support/object-model.js';

const CHUNK_BYTES = 64 * 1024;

async function repository(hasher?: typeof XXH128_HASHER): Promise<DedupChunkRepository> {
  return DedupChunkRepository.open({ chunkStore: new MemoryChunkStore(), catalog: new MemoryCatalogStore(), ...(hasher === undefined ? {} : { hasher }) });
}

/** `count` chunks, each in memory of its own (as the S3 writer's chunk buffers are); the last one short. */
function ownedChunks(count: number, seed: number): Uint8Array[] {
  return Array.from({ length: count }, (_, i) => {
    const memory = new Uint8Array(CHUNK_BYTES);
    memory.set(patternBytes(CHUNK_BYTES, seed * 1000 + i));
    return i === count - 1 ? memory.subarray(0, 1000) : memory;
  });
}

describe('hashOwnedChunks', () => {
  it('names a step of chunks on a worker: same names as hash(), same bytes, caller views detached, tokens accepted', async () => {
    const repo = await repository();
    const chunks = ownedChunks(64, 1);
    const copies = chunks.map((chunk) => Uint8Array.from(chunk));
    const tokens = await repo.hashOwnedChunks(chunks);
    // The memory went to the worker: the caller's views are empty now.
    expect(chunks.every((chunk) => chunk.length === 0)).toBe(true);
    expect(tokens.map((token, i) => Buffer.from(token.data).equals(copies[i]!))).toEqual(copies.map(() => true));
    expect(tokens.map((token) => token.hash)).toEqual(copies.map((copy) => repo.hash(copy)));
    expect(await repo.addHashedReferences(tokens)).toEqual(copies.map((copy) => repo.hash(copy)));
    expect(Buffer.from(await repo.read(tokens[63]!.hash)).equals(copies[63]!)).toBe(true);
    // The packs hold the worker's block CRCs: a read of part of a chunk checks only its blocks' CRCs.
    for (const [i, token] of tokens.entries()) {
      const from = Math.min(3 * 4096 + 10, copies[i]!.length - 100);
      expect(Buffer.from(await repo.readRange(token.hash, from, 100)).equals(copies[i]!.subarray(from, from + 100))).toBe(true);
    }
    // A copy of a token (same fields, not issued) is still refused.
    await expect(repo.addHashedReferences([{ hash: tokens[0]!.hash, data: copies[1]! }])).rejects.toThrow(/not hashed by this repository/);
  });

  it('hashes on the caller thread what it must not or need not move: few chunks, shared memory, two chunks in one memory, xxh128', async () => {
    const repo = await repository();
    const few = ownedChunks(HASH_ON_WORKER_CHUNKS_MIN - 1, 2);
    const shared = new Uint8Array(new SharedArrayBuffer(CHUNK_BYTES * HASH_ON_WORKER_CHUNKS_MIN));
    shared.set(patternBytes(shared.length, 3));
    const inShared = Array.from({ length: HASH_ON_WORKER_CHUNKS_MIN }, (_, i) => shared.subarray(i * CHUNK_BYTES, (i + 1) * CHUNK_BYTES));
    const together = patternBytes(CHUNK_BYTES * HASH_ON_WORKER_CHUNKS_MIN, 4);
    const inOne = Array.from({ length: HASH_ON_WORKER_CHUNKS_MIN }, (_, i) => new Uint8Array(together.buffer, together.byteOffset + i * CHUNK_BYTES, CHUNK_BYTES));
    for (const chunks of [few, inShared, inOne]) {
      const tokens = await repo.hashOwnedChunks(chunks);
      tokens.forEach((token, i) => {
        expect(token.data).toBe(chunks[i]); // not moved
        expect(token.hash).toBe(repo.hash(chunks[i]!));
      });
      await repo.addHashedReferences(tokens);
    }
    if (isXxhashAvailable()) {
      const xxh = await repository(XXH128_HASHER);
      const chunks = ownedChunks(64, 5);
      const tokens = await xxh.hashOwnedChunks(chunks);
      tokens.forEach((token, i) => expect(token.data).toBe(chunks[i]));
      expect(tokens.map((token) => token.hash)).toEqual(chunks.map((chunk) => xxh.hash(chunk)));
    }
  });

  it('a worker that dies fails the call it held with IO_ERROR, and the next call is hashed by a new worker', async () => {
    const repo = await repository();
    await repo.hashOwnedChunks(ownedChunks(64, 8)); // the pool's workers are up
    // Stopped as the call goes out: whichever worker takes it dies holding it.
    const dying = chunkHashWorkersForTests().map((worker) => worker.terminate());
    const pending = repo.hashOwnedChunks(ownedChunks(64, 6));
    await Promise.all(dying);
    const failure = await pending.then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(failure).toBeInstanceOf(StorageError);
    expect((failure as StorageError).code).toBe('IO_ERROR');
    expect((failure as StorageError).message).toMatch(/chunk hashing thread stopped.*send it again/);
    const chunks = ownedChunks(64, 7);
    const names = chunks.map((chunk) => repo.hash(chunk));
    const tokens = await repo.hashOwnedChunks(chunks);
    expect(tokens.map((token) => token.hash)).toEqual(names);
    expect(chunks[0]!.length).toBe(0); // on a worker again
  });
});
