/**
 * The names a repository gives chunks as tokens (ChunkRepository.hashChunk, hashOwnedChunks):
 * addHashedReferences trusts the hash of a token issued here and of nothing else, so a chunk is
 * never stored under a name this layer's code did not compute from its bytes.
 *
 * BLAKE3 pools hash a call of enough chunks on a worker thread of this layer
 * (chunk-hash-workers.ts says when): the chunks' memory moves there and back, never copied, so each
 * token still holds the very bytes its hash names. Anything else (xxh128, three times cheaper;
 * few chunks; memory that cannot be moved) is hashed on the caller's thread. The worker also
 * computes the CRC-32s of the chunk's 4 KiB blocks that a version 2 pack stores after each block
 * (kept beside the token here, used when the chunk is written: a wrong one would make reads of
 * that block CORRUPT, never return other bytes).
 */
import { BLAKE3_HASHER, type ChunkHasher } from './chunk-hasher.js';
import { hashChunksOnWorker } from './chunk-hash-workers.js';
import { PACK_BLOCK_BYTES } from './pack-blocks.js';
import type { ChunkHash, HashedChunk } from './repository.js';

export class ChunkTokens {
  /** The tokens given out: the only ones `issued` vouches for. */
  private readonly given = new WeakSet<HashedChunk>();
  /** The block CRCs of tokens named on a worker (computed there from the token's bytes, with its name). */
  private readonly checksums = new WeakMap<HashedChunk, Uint32Array>();

  constructor(private readonly hasher: ChunkHasher) {}

  hashChunk(data: Uint8Array): HashedChunk {
    return this.issue(this.hasher.hash(data), data);
  }

  async hashOwnedChunks(chunks: readonly Uint8Array[]): Promise<HashedChunk[]> {
    const named = this.hasher === BLAKE3_HASHER ? await hashChunksOnWorker(chunks) : undefined;
    if (named === undefined) return chunks.map((chunk) => this.hashChunk(chunk));
    let from = 0;
    return named.chunks.map((data, i) => {
      const token = this.issue(named.hashes[i]!, data);
      const to = from + Math.ceil(data.length / PACK_BLOCK_BYTES);
      this.checksums.set(token, named.blockChecksums.subarray(from, to));
      from = to;
      return token;
    });
  }

  /** The token's blocks' CRCs when the worker that named it computed them (the pack then need not), else undefined. */
  blockChecksumsOf(chunk: HashedChunk): Uint32Array | undefined {
    return this.checksums.get(chunk);
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
