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
 * that block CORRUPT, never return other bytes), and, in a pack buffer handed to it, writes the
 * call's chunks as a version 2 pack stores them (LaidOutPack): a pack of exactly those chunks is
 * then finished in that buffer with no copy on the caller's thread (a large PUT's 4 MiB steps).
 *
 * A laid-out pack's buffer goes back to pack-buffers.ts only once every one of its chunks' stored
 * forms was taken (takeStoredChunk: once per token) and the caller that took them is done with
 * them (giveBackLaidOut); a laid-out pack whose tokens were not all taken is left to the GC.
 */
import { BLAKE3_HASHER, type ChunkHasher } from './chunk-hasher.js';
import { hashChunksOnWorker } from './chunk-hash-workers.js';
import { PACK_BLOCK_BYTES, storedChunkBytes } from './pack-blocks.js';
import { giveBackPackBuffer, takePackBuffer } from './pack-buffers.js';
import { PACK_HEADER_BYTES, packLayOutBytes, type LaidOutPack, type StoredChunk } from './pack-format.js';
import type { ChunkHash, HashedChunk } from './repository.js';

export class ChunkTokens {
  /** The tokens given out: the only ones `issued` vouches for. */
  private readonly given = new WeakSet<HashedChunk>();
  /** The block CRCs of tokens named on a worker (computed there from the token's bytes, with its name). */
  private readonly checksums = new WeakMap<HashedChunk, Uint32Array>();
  /** Stored forms not taken yet, of tokens whose worker laid them out. */
  private readonly storedForms = new WeakMap<HashedChunk, StoredChunk>();
  /** Per laid-out pack, how many of its stored forms have not been taken yet. */
  private readonly untaken = new WeakMap<LaidOutPack, number>();

  /** `layOutPacks`: the repository writes version 2 packs, which the worker may lay its chunks out for. */
  constructor(
    private readonly hasher: ChunkHasher,
    private readonly layOutPacks = true,
  ) {}

  hashChunk(data: Uint8Array): HashedChunk {
    return this.issue(this.hasher.hash(data), data);
  }

  async hashOwnedChunks(chunks: readonly Uint8Array[]): Promise<HashedChunk[]> {
    const offThread = this.hasher === BLAKE3_HASHER;
    const memory = offThread && this.layOutPacks ? takePackBuffer(packLayOutBytes(chunks.map((chunk) => chunk.length), this.hasher.digestBytes)) : undefined;
    const wholeMemory = memory === undefined ? undefined : new Uint8Array(memory.buffer);
    const pending = offThread ? hashChunksOnWorker(chunks, wholeMemory === undefined ? undefined : { memory: wholeMemory, headBytes: PACK_HEADER_BYTES }) : undefined;
    if (pending === undefined) {
      if (memory !== undefined) giveBackPackBuffer(memory); // not moved: still this thread's
      return chunks.map((chunk) => this.hashChunk(chunk));
    }
    const named = await pending;
    const laidOut = named.laidOut === undefined ? undefined : this.laidOutPack(named.laidOut, named.chunks);
    let from = 0;
    let storedAt = PACK_HEADER_BYTES;
    return named.chunks.map((data, i) => {
      const token = this.issue(named.hashes[i]!, data);
      const to = from + Math.ceil(data.length / PACK_BLOCK_BYTES);
      this.checksums.set(token, named.blockChecksums.subarray(from, to));
      from = to;
      if (laidOut !== undefined) {
        const storedBytes = storedChunkBytes(2, data.length);
        this.storedForms.set(token, { bytes: laidOut.memory.subarray(storedAt, storedAt + storedBytes), laidOut });
        storedAt += storedBytes;
      }
      return token;
    });
  }

  /** The token's blocks' CRCs when the worker that named it computed them (the pack then need not), else undefined. */
  blockChecksumsOf(chunk: HashedChunk): Uint32Array | undefined {
    return this.checksums.get(chunk);
  }

  /**
   * The token's stored form when its worker laid it out, once (a later call for the same token
   * answers undefined): the caller writes it before it calls giveBackLaidOut for its pack.
   */
  takeStoredChunk(chunk: HashedChunk): StoredChunk | undefined {
    const stored = this.storedForms.get(chunk);
    if (stored === undefined) return undefined;
    this.storedForms.delete(chunk);
    this.untaken.set(stored.laidOut, this.untaken.get(stored.laidOut)! - 1);
    return stored;
  }

  /**
   * The caller of takeStoredChunk is done with the stored forms it took of `laidOut` (written and
   * the puts settled, or not needed): its buffer is reused once all of them were taken.
   */
  giveBackLaidOut(laidOut: LaidOutPack): void {
    if (this.untaken.get(laidOut) !== 0) return;
    this.untaken.delete(laidOut); // given back once
    giveBackPackBuffer(laidOut.memory);
  }

  /** True for a token this object gave out (not one that merely looks like it). */
  issued(chunk: HashedChunk): boolean {
    return this.given.has(chunk);
  }

  private laidOutPack(memory: Uint8Array, chunks: readonly Uint8Array[]): LaidOutPack {
    const chunksEndBytes = chunks.reduce((end, chunk) => end + storedChunkBytes(2, chunk.length), PACK_HEADER_BYTES);
    const laidOut: LaidOutPack = { memory, chunksEndBytes };
    this.untaken.set(laidOut, chunks.length);
    return laidOut;
  }

  /** Only for a hash computed here or on this layer's worker from `data` itself. */
  private issue(hash: ChunkHash, data: Uint8Array): HashedChunk {
    const token: HashedChunk = Object.freeze({ hash, data });
    this.given.add(token);
    return token;
  }
}
