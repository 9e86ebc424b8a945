/** ChunkCache: bounded by bytes, least recently used out first, one load per chunk at a time, failures forgotten. */
import { describe, expect, it } from 'vitest';
import { StorageError } from '../../src/core/errors.js';
import { ChunkCache } from '../../src/store/chunked/chunk-cache.js';
import { ChunkedFile } from '../../src/store/chunked/chunked-file.js';
import { sealFile } from '../../src/store/chunked/seal.js';
import { MemoryHostFile } from '../../src/store/memory-file.js';
import { SeededRandom } from '../../src/store/seeded-random.js';
import { expectCode } from '../support/expect-error.js';
import { FaultyChunkRepository } from '../support/faulty-chunk-repository.js';
import { createTestChunkRepository } from '../support/test-chunk-repository.js';

const KiB = 1024;

/** A loader that counts its calls and returns `lengthBytes` bytes named after the hash. */
function loader(lengthBytes: number): { load: (hash: string) => () => Promise<Uint8Array>; calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    load: (hash) => async () => {
      calls.push(hash);
      return new Uint8Array(lengthBytes).fill(hash.charCodeAt(0));
    },
  };
}

describe('ChunkCache', () => {
  it('keeps at most its capacity, dropping the least recently used first', async () => {
    const cache = new ChunkCache(3 * 4 * KiB);
    const { load, calls } = loader(4 * KiB);
    for (const hash of ['a', 'b', 'c']) await cache.get(hash, load(hash));
    await cache.get('a', load('a')); // a is now the most recent
    await cache.get('d', load('d')); // evicts b
    expect(cache.sizeBytes()).toBe(3 * 4 * KiB);
    await cache.get('a', load('a'));
    await cache.get('c', load('c'));
    await cache.get('b', load('b'));
    expect(calls).toEqual(['a', 'b', 'c', 'd', 'b']);
  });

  it('shares one load among concurrent readers of a chunk, and forgets a failed load', async () => {
    const cache = new ChunkCache(1024 * KiB);
    let calls = 0;
    let fail = true;
    const load = async (): Promise<Uint8Array> => {
      calls++;
      await Promise.resolve();
      if (fail) throw new StorageError('IO_ERROR', 'injected: outage');
      return new Uint8Array(10);
    };
    const failures = await Promise.allSettled([cache.get('x', load), cache.get('x', load)]);
    expect(failures.map((r) => r.status)).toEqual(['rejected', 'rejected']);
    expect(calls).toBe(1);
    fail = false;
    const [one, two] = await Promise.all([cache.get('x', load), cache.get('x', load)]);
    expect(one).toBe(two);
    expect(calls).toBe(2);
    await cache.get('x', load);
    expect(calls).toBe(2);
  });

  it('does not keep a chunk larger than itself; refuses a size that is not a byte count', async () => {
    const cache = new ChunkCache(100);
    const { load, calls } = loader(101);
    await cache.get('a', load('a'));
    await cache.get('a', load('a'));
    expect(calls).toEqual(['a', 'a']);
    expect(cache.sizeBytes()).toBe(0);
    expect(() => new ChunkCache(-1)).toThrow(/not a byte count/);
  });

  it('keeps whole chunks a ChunkedFile read whole for its small reads; a small read of an uncached chunk reads just its part; errors are still reported', async () => {
    const repository = new FaultyChunkRepository(await createTestChunkRepository());
    const bytes = new SeededRandom(3).fill(new Uint8Array(4 * 64 * KiB));
    const manifest = await sealFile(MemoryHostFile.fromBytes(bytes), repository);
    const cache = new ChunkCache();
    const file = new ChunkedFile(manifest, repository, { name: 'cached', cache });
    repository.readFailures.set(manifest.hashAt(0)!, new StorageError('NOT_FOUND', 'injected: chunk gone'));
    await expectCode(file.pread(new Uint8Array(4 * KiB), 0), 'NOT_FOUND', /chunk gone/);
    await expectCode(file.pread(new Uint8Array(64 * KiB), 0), 'NOT_FOUND', /chunk gone/);
    repository.readFailures.clear();
    // Small reads of chunks not cached: a ranged read each, nothing cached.
    const small = new Uint8Array(4 * KiB);
    await file.pread(small, 64 * KiB + 8 * KiB);
    expect(Buffer.from(small).equals(bytes.subarray(72 * KiB, 76 * KiB))).toBe(true);
    expect([repository.reads, repository.rangeReads, cache.sizeBytes()]).toEqual([3, 2, 0]);
    // Whole-chunk reads fill the cache; the small reads after them never reach the repository.
    const got = new Uint8Array(bytes.length);
    await file.pread(got, 0);
    for (let at = 0; at < bytes.length; at += 4 * KiB) await file.pread(got.subarray(at, at + 4 * KiB), at);
    expect(Buffer.from(got).equals(bytes)).toBe(true);
    expect([repository.reads, repository.rangeReads, cache.sizeBytes()]).toEqual([3 + 4, 2, 4 * 64 * KiB]);
  });
});
