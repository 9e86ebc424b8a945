/**
 * A large body's chunks are named a step at a time on the repository's hashing worker
 * (data-writer.ts, hashOwnedChunks), its ETag computed from the same chunk memory: the object must come out the same as one whose chunks were
 * named on the main thread (same chunk names in the same order, zero chunks in their places, a
 * short last chunk), and a step whose hashing fails fails the put and keeps nothing.
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { StorageError } from '../../src/core/errors.js';
import type { ChunkRepository, HashedChunk } from '../../src/store/dedup/repository.js';
import { beginObjectWrite, OFFLOAD_BYTES_MIN, ownedUpdatesForTests } from '../../src/objects/hash-workers.js';
import { collect, countingCatalog, createTestObjectModel, patternBytes, streamOf, totalReferences } from '../support/object-model.js';

const CHUNK_BYTES = 64 * 1024;
const OWNER = 'user-1';

/** Past OFFLOAD_BYTES_MIN, not whole chunks, with all-zero chunks at the start, mid-step and on a step boundary. */
function bodyWithZeroChunks(): Buffer {
  const body = patternBytes(OFFLOAD_BYTES_MIN + 5 * 1024 * 1024 + 1000, 11);
  for (const chunk of [0, 1, 7, 63, 64, 100]) body.fill(0, chunk * CHUNK_BYTES, (chunk + 1) * CHUNK_BYTES);
  return body;
}

/** The repository, recording the names of what each addHashedReferences call adds and counting hashOwnedChunks calls. */
function watched(repository: ChunkRepository, seen: { added: string[]; ownedCalls: number; failCall: number }): ChunkRepository {
  return new Proxy(repository, {
    get(target, name, receiver) {
      if (name === 'hashOwnedChunks') {
        return async (chunks: readonly Uint8Array[]) => {
          seen.ownedCalls++;
          if (seen.ownedCalls === seen.failCall) throw new StorageError('IO_ERROR', 'hashing thread stopped (injected)');
          return target.hashOwnedChunks!(chunks);
        };
      }
      if (name === 'addHashedReferences') {
        return (chunks: readonly HashedChunk[], options: unknown) => {
          seen.added.push(...chunks.map((chunk) => chunk.hash));
          return target.addHashedReferences(chunks, options as never);
        };
      }
      const value: unknown = Reflect.get(target, name, receiver);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

describe('chunks named off the main thread', () => {
  it('a 1 MiB body beside another object write: named and digested off the main thread, still one commit', async () => {
    const seen = { added: [] as string[], ownedCalls: 0, failCall: 0 };
    const counted = countingCatalog();
    const { model } = await createTestObjectModel({ catalog: counted.catalog, wrapRepository: (repository) => watched(repository, seen) });
    await model.createBucket({ name: 'bucket', owner: OWNER, pool: 'pool-a' });
    // Not whole chunks, a zero chunk mid-body.
    const body = patternBytes(1024 * 1024 + 1000, 5);
    body.fill(0, 2 * CHUNK_BYTES, 3 * CHUNK_BYTES);
    const md5 = createHash('md5').update(body).digest('hex');
    const put = (key: string) => model.putObject({ bucket: 'bucket', key, owner: OWNER, body: streamOf(body, 100_000), claims: { sizeBytes: body.length } });

    // Alone: named here, as it comes.
    await put('alone');
    expect(seen.ownedCalls).toBe(0);
    const namedHere = seen.added;
    seen.added = [];
    // Another write in progress: the chunks go to the repository's worker, the digests from the same memory.
    const endOther = beginObjectWrite();
    const ownedBefore = ownedUpdatesForTests();
    const txnsBefore = counted.txns();
    const beside = await put('beside');
    endOther();
    expect(seen.ownedCalls).toBe(1);
    expect(ownedUpdatesForTests() - ownedBefore).toBe(1);
    expect(counted.txns() - txnsBefore).toBe(1); // its references went in with the version: one step, held
    expect(beside.etag).toBe(md5);
    expect(seen.added).toEqual(namedHere); // the same 16 data chunks (17 with the short one, less the zero one), in order
    for (const key of ['alone', 'beside']) {
      const got = await model.getObject({ bucket: 'bucket', key });
      if (got.outcome !== 'ok') throw new Error(`no ${key}`);
      expect(createHash('md5').update(await collect(got.body())).digest('hex')).toBe(md5);
    }
  });

  it('a declared large body stores the same chunks, in the same order, as one named on the main thread, and reads back exact', async () => {
    const seen = { added: [] as string[], ownedCalls: 0, failCall: 0 };
    const { model, catalog } = await createTestObjectModel({ wrapRepository: (repository) => watched(repository, seen) });
    await model.createBucket({ name: 'bucket', owner: OWNER, pool: 'pool-a' });
    const body = bodyWithZeroChunks();
    const md5 = createHash('md5').update(body).digest('hex');

    // Undeclared length: named on the main thread (hashChunk).
    await model.putObject({ bucket: 'bucket', key: 'main-thread', owner: OWNER, body: streamOf(body, 100_000) });
    expect(seen.ownedCalls).toBe(0);
    const mainThreadNames = seen.added.filter((hash) => hash.length === 64);
    seen.added = [];
    // Declared: named a step at a time by the repository's worker, its MD5 from the same chunks (moved to the digests' worker first).
    const ownedBefore = ownedUpdatesForTests();
    const put = await model.putObject({ bucket: 'bucket', key: 'worker', owner: OWNER, body: streamOf(body, 100_000), claims: { sizeBytes: body.length } });
    expect(seen.ownedCalls).toBe(3); // 139 data chunks: steps of 64, 64 and 11
    expect(ownedUpdatesForTests() - ownedBefore).toBe(3);
    expect(put.etag).toBe(md5);
    // The markers (one per step) differ by put; the data chunks' names and their order do not.
    const markerCount = 3;
    expect(seen.added.length).toBe(mainThreadNames.length);
    const dataNames = (names: string[]) => names.filter((_, i) => (i + 1) % 65 !== 0 && i !== names.length - 1);
    expect(dataNames(seen.added)).toEqual(dataNames(mainThreadNames));
    expect(seen.added.length - dataNames(seen.added).length).toBe(markerCount);

    for (const key of ['main-thread', 'worker']) {
      const got = await model.getObject({ bucket: 'bucket', key });
      if (got.outcome !== 'ok') throw new Error(`no ${key}`);
      expect(createHash('md5').update(await collect(got.body())).digest('hex')).toBe(md5);
    }
    // Every data chunk is shared by the two objects: 145 chunks, 6 of them zero, two references each (the markers are gone).
    expect(await totalReferences(catalog, 'pool-a')).toBe(2 * (145 - 6));
  });

  it('a step whose hashing fails fails the put, and nothing of it stays referenced', async () => {
    const seen = { added: [] as string[], ownedCalls: 0, failCall: 0 };
    const { model, catalog } = await createTestObjectModel({ wrapRepository: (repository) => watched(repository, seen) });
    await model.createBucket({ name: 'bucket', owner: OWNER, pool: 'pool-a' });
    const body = bodyWithZeroChunks();
    // The first step is named and added; the second's hashing fails (a dead worker), the third's is fine.
    seen.failCall = 2;
    await expect(model.putObject({ bucket: 'bucket', key: 'k', owner: OWNER, body: streamOf(body, 100_000), claims: { sizeBytes: body.length } })).rejects.toThrow(/injected/);
    expect(seen.added.length).toBeGreaterThan(0); // the first step was stored before the failure
    expect(await totalReferences(catalog, 'pool-a')).toBe(0);
    await expect(model.getObject({ bucket: 'bucket', key: 'k' })).rejects.toThrow(/does not exist/);
  });
});
