/**
 * A STAND-IN ChunkRepository, in memory, for the chunked layer store's tests until the real
 * DedupChunkRepository (src/store/dedup, written in parallel) lands. It keeps the interface's
 * promises that those tests rely on (content hash names, reference counts, byte-checked sharing,
 * abort changes nothing, read checks the hash) and nothing else: no packs, no durability, no
 * grace period. Every test gets its repository from createTestChunkRepository(), so switching the
 * tests to the real repository is a change to that one function.
 */
import { createHash } from 'node:crypto';
import { StorageError } from '../../src/core/errors.js';
import type { ChunkHash, ChunkRepository, ChunkRepositoryCallOptions } from '../../src/store/dedup/repository.js';

interface StoredChunk {
  bytes: Uint8Array;
  references: number;
}

export class MemoryChunkRepository implements ChunkRepository {
  private readonly chunks = new Map<ChunkHash, StoredChunk>();

  hash(data: Uint8Array): ChunkHash {
    return createHash('sha256').update(data).digest('hex');
  }

  async addReferences(chunks: readonly Uint8Array[], options?: ChunkRepositoryCallOptions): Promise<ChunkHash[]> {
    checkSignal(options);
    const hashes = chunks.map((chunk) => this.hash(chunk));
    hashes.forEach((hash, i) => {
      const existing = this.chunks.get(hash);
      if (existing !== undefined && !Buffer.from(existing.bytes).equals(chunks[i]!)) {
        throw new StorageError('CORRUPT', `chunk ${hash}: different bytes under one hash`);
      }
    });
    hashes.forEach((hash, i) => {
      const existing = this.chunks.get(hash);
      if (existing !== undefined) existing.references++;
      else this.chunks.set(hash, { bytes: chunks[i]!.slice(), references: 1 });
    });
    return hashes;
  }

  async addReferencesByHash(hashes: readonly ChunkHash[], options?: ChunkRepositoryCallOptions): Promise<void> {
    checkSignal(options);
    const missing = hashes.find((hash) => (this.chunks.get(hash)?.references ?? 0) === 0);
    if (missing !== undefined) throw new StorageError('NOT_FOUND', `chunk ${missing} is not stored`);
    for (const hash of hashes) this.chunks.get(hash)!.references++;
  }

  async dropReferences(hashes: readonly ChunkHash[], options?: ChunkRepositoryCallOptions): Promise<void> {
    checkSignal(options);
    for (const hash of hashes) {
      const chunk = this.chunks.get(hash);
      if (chunk === undefined || chunk.references === 0) throw new StorageError('NOT_FOUND', `chunk ${hash} has no reference to drop`);
    }
    for (const hash of hashes) this.chunks.get(hash)!.references--;
  }

  async read(hash: ChunkHash, options?: ChunkRepositoryCallOptions): Promise<Uint8Array> {
    checkSignal(options);
    const chunk = this.chunks.get(hash);
    if (chunk === undefined || chunk.references === 0) throw new StorageError('NOT_FOUND', `chunk ${hash} is not stored`);
    if (this.hash(chunk.bytes) !== hash) throw new StorageError('CORRUPT', `chunk ${hash} does not match its hash`);
    return chunk.bytes.slice();
  }

  async referenceCount(hash: ChunkHash): Promise<number> {
    return this.chunks.get(hash)?.references ?? 0;
  }
}

function checkSignal(options: ChunkRepositoryCallOptions | undefined): void {
  if (options?.signal?.aborted) throw new StorageError('CANCELLED', 'the call was aborted');
}

/** The one place the chunked-store tests get a repository from (the real one replaces this). */
export async function createTestChunkRepository(): Promise<ChunkRepository> {
  return new MemoryChunkRepository();
}
