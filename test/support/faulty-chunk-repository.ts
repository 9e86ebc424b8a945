/**
 * A ChunkRepository wrapper for tests: delegates to any repository (the stand-in or the real one)
 * and injects failures: reads (whole or ranged) of chosen hashes fail with a chosen error, and
 * addReferences (or addHashedReferences) fails from its nth call on. It also counts reads (rangeReads: the ranged ones)
 * and the most it saw in flight at once.
 */
import { StorageError } from '../../src/core/errors.js';
import type { ChunkHash, ChunkRepository, ChunkRepositoryCallOptions, HashedChunk } from '../../src/store/dedup/repository.js';

export class FaultyChunkRepository implements ChunkRepository {
  /** Reads of these hashes fail with the error given. */
  readFailures = new Map<ChunkHash, StorageError>();
  /** addReferences fails with IO_ERROR from this call on (1-based). */
  failAddFromCall = Infinity;
  addCalls = 0;
  reads = 0;
  rangeReads = 0;
  readsInFlight = 0;
  readsInFlightMax = 0;

  constructor(private readonly inner: ChunkRepository) {}

  hash(data: Uint8Array): ChunkHash {
    return this.inner.hash(data);
  }

  async addReferences(chunks: readonly Uint8Array[], options?: ChunkRepositoryCallOptions): Promise<ChunkHash[]> {
    if (++this.addCalls >= this.failAddFromCall) throw new StorageError('IO_ERROR', 'injected: the pool is unreachable');
    return this.inner.addReferences(chunks, options);
  }

  hashChunk(data: Uint8Array): HashedChunk {
    return this.inner.hashChunk(data);
  }

  async addHashedReferences(chunks: readonly HashedChunk[], options?: ChunkRepositoryCallOptions): Promise<ChunkHash[]> {
    if (++this.addCalls >= this.failAddFromCall) throw new StorageError('IO_ERROR', 'injected: the pool is unreachable');
    return this.inner.addHashedReferences(chunks, options);
  }

  addReferencesByHash(hashes: readonly ChunkHash[], options?: ChunkRepositoryCallOptions): Promise<void> {
    return this.inner.addReferencesByHash(hashes, options);
  }

  dropReferences(hashes: readonly ChunkHash[], options?: ChunkRepositoryCallOptions): Promise<void> {
    return this.inner.dropReferences(hashes, options);
  }

  read(hash: ChunkHash, options?: ChunkRepositoryCallOptions): Promise<Uint8Array> {
    return this.counted(hash, () => this.inner.read(hash, options));
  }

  readRange(hash: ChunkHash, offsetBytes: number, lengthBytes: number, options?: ChunkRepositoryCallOptions): Promise<Uint8Array> {
    this.rangeReads++;
    return this.counted(hash, () => this.inner.readRange(hash, offsetBytes, lengthBytes, options));
  }

  private async counted(hash: ChunkHash, read: () => Promise<Uint8Array>): Promise<Uint8Array> {
    this.reads++;
    const failure = this.readFailures.get(hash);
    if (failure !== undefined) throw failure;
    this.readsInFlightMax = Math.max(this.readsInFlightMax, ++this.readsInFlight);
    try {
      return await read();
    } finally {
      this.readsInFlight--;
    }
  }

  referenceCount(hash: ChunkHash): Promise<number> {
    return this.inner.referenceCount(hash);
  }
}
