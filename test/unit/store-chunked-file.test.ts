/**
 * Sealing files into a ChunkRepository and reading them back through ChunkedFile. The repository
 * comes from createTestChunkRepository();
 * these tests use only the ChunkRepository interface, so they hold for the real one too.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { StorageError } from '../../src/core/errors.js';
import type { ChunkHash, ChunkRepository } from '../../src/store/dedup/repository.js';
import { CHUNKED_READS_IN_FLIGHT_MAX, ChunkedFile } from '../../src/store/chunked/chunked-file.js';
import { decodeManifest, encodeManifest } from '../../src/store/chunked/manifest-format.js';
import { copyManifest, releaseManifest, sealFile, CHUNKS_PER_BATCH } from '../../src/store/chunked/seal.js';
import type { HostFile } from '../../src/core/host-file.js';
import { MemoryHostFile } from '../../src/store/memory-file.js';
import { SeededRandom } from '../../src/store/seeded-random.js';
import { expectCode } from '../support/expect-error.js';
import { FaultyChunkRepository } from '../support/faulty-chunk-repository.js';
import { createTestChunkRepository } from '../support/test-chunk-repository.js';

const KiB = 1024;
const CHUNK = 64 * KiB;

function same(actual: Uint8Array, expected: Uint8Array): boolean {
  return actual.length === expected.length && Buffer.from(actual.buffer, actual.byteOffset, actual.length).equals(expected);
}

/** Seeded data with zero chunks, chunks repeated inside the file, and an odd tail. */
function layerBytes(seed: number, chunks: number, tailBytes = 1234): Uint8Array {
  const r = new SeededRandom(seed);
  const out = new Uint8Array(chunks * CHUNK + tailBytes);
  for (let i = 0; i < chunks; i++) {
    const kind = i % 7;
    if (kind === 1 || kind === 4) continue; // zero chunk
    if (kind === 5) out.copyWithin(i * CHUNK, 0, CHUNK); // the same bytes as chunk 0
    else r.fill(out.subarray(i * CHUNK, (i + 1) * CHUNK));
  }
  r.fill(out.subarray(chunks * CHUNK));
  return out;
}

/** Every distinct non-zero chunk of `bytes` by hash, with how many times it occurs. */
function chunkCounts(repository: ChunkRepository, bytes: Uint8Array, chunkSizeBytes = CHUNK): Map<ChunkHash, number> {
  const counts = new Map<ChunkHash, number>();
  for (let at = 0; at < bytes.length; at += chunkSizeBytes) {
    const chunk = bytes.subarray(at, Math.min(bytes.length, at + chunkSizeBytes));
    if (chunk.every((b) => b === 0)) continue;
    const hash = repository.hash(chunk);
    counts.set(hash, (counts.get(hash) ?? 0) + 1);
  }
  return counts;
}

async function expectCounts(repository: ChunkRepository, expected: Map<ChunkHash, number>, times = 1): Promise<void> {
  for (const [hash, count] of expected) expect(await repository.referenceCount(hash), hash).toBe(count * times);
}

async function sealed(bytes: Uint8Array, repository: ChunkRepository, chunkSizeBytes = CHUNK): Promise<ChunkedFile> {
  const manifest = await sealFile(MemoryHostFile.fromBytes(bytes), repository, { chunkSizeBytes });
  return new ChunkedFile(manifest, repository, { name: 'sealed layer' });
}

describe('ChunkedFile over a sealed file', () => {
  it('reads random ranges exactly as the source (seeded), spanning and splitting chunks and past the end', async () => {
    const repository = await createTestChunkRepository();
    const bytes = layerBytes(1, 40);
    const file = await sealed(bytes, repository);
    expect(await file.sizeBytes()).toBe(bytes.length);
    const source = MemoryHostFile.fromBytes(bytes);
    await fc.assert(
      fc.asyncProperty(fc.nat(bytes.length + 2 * CHUNK), fc.nat(6 * CHUNK), async (offset, lengthBytes) => {
        const want = new Uint8Array(lengthBytes).fill(0x5a);
        const got = new Uint8Array(lengthBytes).fill(0xa5);
        expect(await file.pread(got, offset)).toBe(await source.pread(want, offset));
        expect(same(got, want)).toBe(true);
      }),
      { numRuns: 300, seed: 4242 },
    );
  });

  it('reads zero chunks without asking the repository', async () => {
    const repository = new FaultyChunkRepository(await createTestChunkRepository());
    const bytes = layerBytes(2, 14);
    const file = await sealed(bytes, repository);
    const zeroes = new Uint8Array(CHUNK).fill(1);
    await file.pread(zeroes, 1 * CHUNK); // chunk 1 is a zero chunk
    expect(zeroes.every((b) => b === 0)).toBe(true);
    expect(repository.reads).toBe(0);
    await file.pread(new Uint8Array(3 * CHUNK), 3 * CHUNK); // chunks 3 (data), 4 (zero), 5 (data)
    expect(repository.reads).toBe(2);
  });

  it('fetches the chunks of a large read concurrently, at most CHUNKED_READS_IN_FLIGHT_MAX at once', async () => {
    const repository = new FaultyChunkRepository(await createTestChunkRepository());
    const bytes = layerBytes(11, 70);
    const file = await sealed(bytes, repository);
    const got = new Uint8Array(bytes.length);
    await file.pread(got, 0);
    expect(same(got, bytes)).toBe(true);
    expect(repository.readsInFlightMax).toBe(CHUNKED_READS_IN_FLIGHT_MAX);
    expect(repository.readsInFlight).toBe(0);
  });

  it('counts its stored chunks as allocated (a shared chunk each time), and reports holes by chunk', async () => {
    const repository = await createTestChunkRepository();
    const bytes = layerBytes(3, 14, 100);
    const file = await sealed(bytes, repository);
    // 14 chunks, 4 of them zero (1, 4, 8, 11), then a 100-byte tail of data.
    expect(await file.allocatedBytes()).toBe(10 * CHUNK + 100);
    expect(await file.seekData(CHUNK)).toBe(2 * CHUNK);
    expect(await file.seekHole(2 * CHUNK + 5)).toBe(4 * CHUNK);
    expect(await file.seekHole(12 * CHUNK)).toBe(bytes.length);
    expect(await file.seekData(bytes.length)).toBeUndefined();
    expect(file.supports().copyByReference).toBe(true);
  });

  it('fails a read that meets a repository error with that error, and only that read', async () => {
    const repository = new FaultyChunkRepository(await createTestChunkRepository());
    const bytes = layerBytes(4, 20);
    const file = await sealed(bytes, repository);
    const broken = file.manifest.hashAt(9)!;
    const failure = new StorageError('CORRUPT', `chunk ${broken} does not match its hash`);
    repository.readFailures.set(broken, failure);
    const wide = new Uint8Array(20 * CHUNK);
    await expect(file.pread(wide, 0)).rejects.toBe(failure);
    await expect(file.pread(new Uint8Array(10), 9 * CHUNK + 7)).rejects.toBe(failure);
    const before = new Uint8Array(9 * CHUNK);
    await file.pread(before, 0);
    expect(same(before, bytes.subarray(0, 9 * CHUNK))).toBe(true);
    repository.readFailures.set(broken, new StorageError('NOT_FOUND', 'gone'));
    await expectCode(file.pread(new Uint8Array(1), 9 * CHUNK), 'NOT_FOUND', /gone/);
    repository.readFailures.clear();
    const after = new Uint8Array(CHUNK);
    await file.pread(after, 9 * CHUNK);
    expect(same(after, bytes.subarray(9 * CHUNK, 10 * CHUNK))).toBe(true);
  });

  it('reads a manifest that went through its encoding, and refuses reads once closed', async () => {
    const repository = await createTestChunkRepository();
    const bytes = layerBytes(5, 9);
    const manifest = await sealFile(MemoryHostFile.fromBytes(bytes), repository);
    const file = new ChunkedFile(decodeManifest(encodeManifest(manifest), 'layer'), repository, { name: 'layer' });
    const got = new Uint8Array(bytes.length);
    await file.pread(got, 0);
    expect(same(got, bytes)).toBe(true);
    await file.close();
    await expectCode(file.pread(got, 0), 'IO_ERROR', /closed/);
  });
});

describe('sealing', () => {
  it('stores no zero chunk, shares equal chunks within and across layers, and release gives every reference back', async () => {
    const repository = await createTestChunkRepository();
    const a = layerBytes(6, 30);
    // b: a's first 20 chunks with different data after them.
    const b = a.slice();
    new SeededRandom(77).fill(b.subarray(20 * CHUNK));
    const fileA = await sealed(a, repository);
    expect(await repository.referenceCount(repository.hash(new Uint8Array(CHUNK)))).toBe(0);
    const countsA = chunkCounts(repository, a);
    await expectCounts(repository, countsA);
    const fileB = await sealed(b, repository);
    const countsB = chunkCounts(repository, b);
    const both = new Map(countsA);
    for (const [hash, n] of countsB) both.set(hash, (both.get(hash) ?? 0) + n);
    await expectCounts(repository, both);
    const shared = [...countsA.keys()].filter((hash) => countsB.has(hash));
    expect(shared.length).toBeGreaterThan(10);
    expect(fileA.manifest.storedCount).toBe([...countsA.values()].reduce((x, y) => x + y, 0));
    await releaseManifest(fileA.manifest, repository);
    await expectCounts(repository, countsB);
    await releaseManifest(fileB.manifest, repository);
    for (const hash of both.keys()) expect(await repository.referenceCount(hash)).toBe(0);
  });

  it('copyManifest adds a reference to every stored chunk, and the copy reads the same', async () => {
    const repository = await createTestChunkRepository();
    const bytes = layerBytes(7, 12);
    const file = await sealed(bytes, repository);
    const copy = await copyManifest(file.manifest, repository);
    await expectCounts(repository, chunkCounts(repository, bytes), 2);
    await releaseManifest(file.manifest, repository);
    const got = new Uint8Array(bytes.length);
    await new ChunkedFile(copy, repository, { name: 'copy' }).pread(got, 0);
    expect(same(got, bytes)).toBe(true);
    await expectCounts(repository, chunkCounts(repository, bytes), 1);
  });

  it('skips what a sparse source reports as holes without reading it, and seals any chunk size', async () => {
    const repository = await createTestChunkRepository();
    const source = new MemoryHostFile();
    const data = new SeededRandom(8).fill(new Uint8Array(3000));
    await source.pwrite(data, 5 * 1024 * 1024 * 1024); // 5 GiB in: everything before it is a hole
    const reads: number[] = [];
    const counting = new Proxy(source, {
      get(target, key, receiver) {
        if (key === 'pread') return (buf: Uint8Array, at: number) => (reads.push(at), target.pread(buf, at));
        return Reflect.get(target, key, receiver) as unknown;
      },
    });
    const manifest = await sealFile(counting as HostFile, repository, { chunkSizeBytes: 4 * KiB });
    expect(reads).toEqual([5 * 1024 * 1024 * 1024]);
    expect(manifest.storedCount).toBe(1);
    const got = new Uint8Array(3000);
    await new ChunkedFile(manifest, repository, { name: 'sparse' }).pread(got, 5 * 1024 * 1024 * 1024);
    expect(same(got, data)).toBe(true);
  });

  it('an aborted seal leaves every reference count at zero and says CANCELLED', async () => {
    const repository = await createTestChunkRepository();
    const bytes = layerBytes(9, 8 * CHUNKS_PER_BATCH);
    const controller = new AbortController();
    let progressCalls = 0;
    await expectCode(
      sealFile(MemoryHostFile.fromBytes(bytes), repository, {
        signal: controller.signal,
        onProgress: () => {
          if (++progressCalls === 2) controller.abort();
        },
      }),
      'CANCELLED',
    );
    expect(progressCalls).toBe(2);
    for (const hash of chunkCounts(repository, bytes).keys()) expect(await repository.referenceCount(hash)).toBe(0);
  });

  it('a seal whose repository fails part-way drops what it added and rejects with the failure', async () => {
    const repository = new FaultyChunkRepository(await createTestChunkRepository());
    repository.failAddFromCall = 4;
    const bytes = layerBytes(10, 8 * CHUNKS_PER_BATCH);
    await expectCode(sealFile(MemoryHostFile.fromBytes(bytes), repository), 'IO_ERROR', /unreachable/);
    expect(repository.addCalls).toBeGreaterThanOrEqual(4);
    for (const hash of chunkCounts(repository, bytes).keys()) expect(await repository.referenceCount(hash)).toBe(0);
  });

  it('refuses a chunk size that is not a power of two in range', async () => {
    const repository = await createTestChunkRepository();
    await expectCode(sealFile(new MemoryHostFile(), repository, { chunkSizeBytes: 3000 }), 'INVALID_ARGUMENT', /power of two/);
  });
});
