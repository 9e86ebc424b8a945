/**
 * The names a repository gives chunks as tokens (ChunkRepository.hashChunk, hashOwnedChunks):
 * addHashedReferences trusts the hash of a token issued here and of nothing else, so a chunk is
 * never stored under a name this layer's code did not compute from its bytes.
 *
 * BLAKE3 pools hash a call of enough chunks on a worker thread of this layer
 * (chunk-hash-workers.ts says when): the chunks' memory moves there and back, never copied, so each
 * token still holds the very bytes its hash names. Anything else (xxh128, three times cheaper;
 * few chunks; memory that cannot be moved) is hashed on the caller's thread.
 */
import { BLAKE3_HASHER, type ChunkHasher } from './chunk-hasher.js';
import { hashChunksOnWorker } from './chunk-hash-workers.js';
import type { ChunkHash, HashedChunk } from './repository.js';

export class ChunkTokens {
  /** The tokens given out: the only ones `issued` vouches for. */
  private readonly given = new WeakSet<HashedChunk>();

  constructor(private readonly hasher: ChunkHasher) {}

  hashChunk(data: Uint8Array): HashedChunk {
    return this.issue(this.hasher.hash(data), data);
  }

  async hashOwnedChunks(chunks: readonly Uint8Array[]): Promise<HashedChunk[]> {
    const named = this.hasher === BLAKE3_HASHER ? await hashChunksOnWorker(chunks) : undefined;
    if (named === undefined) return chunks.map((chunk) => this.hashChunk(chunk));
    return named.chunks.map((data, i) => this.issue(named.hashes[i]!, data));
  }

  /** True for a token this object gave out (not one that merely looks like it). */
  issued(chunk: HashedChunk): boolean {
    return this.given.has(chunk);
  }

  /** Only for a hash computed here or on this layer's worker from `data` itself. */
  private issue(hash: ChunkHash, data: Uint8Array): HashedChunk {
    const token: HashedChunk = Object.freeze({ hash, data });
    this.given.add(token);
    return token;
  }
}
