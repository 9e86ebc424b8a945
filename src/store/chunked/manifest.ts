/**
 * ChunkManifest: what a sealed layer is once it has been cut into chunks: its chunk size, its file
 * size and, per chunk, the content hash that names it in the pool's ChunkRepository, or "zero"
 * (an all-zero chunk, never stored). Immutable once built; encoded by manifest-format.ts.
 *
 * In memory it is what it is on disk: a bitmap of the non-zero chunks and their hashes, binary,
 * packed in chunk order (a sparse layer costs only its data chunks), plus a rank directory (the
 * number of non-zero chunks before each 64-chunk group) so entry i's hash is found in O(1).
 */
import { assert, StorageError } from '../../core/errors.js';
import type { ChunkHash } from '../dedup/repository.js';

/** Chunks per rank-directory group: one 64-bit word of the bitmap. */
const RANK_GROUP_ENTRIES = 64;
const RANK_GROUP_BYTES = RANK_GROUP_ENTRIES / 8;

/** Bits set in each byte value, for counting the non-zero chunks in part of a bitmap word. */
const POPCOUNT = new Uint8Array(256).map((_, value) => {
  let bits = 0;
  for (let v = value; v !== 0; v >>= 1) bits += v & 1;
  return bits;
});

/** The number of chunks a file of fileSizeBytes has at chunkSizeBytes (the last may be short). */
export function chunkCountOf(fileSizeBytes: number, chunkSizeBytes: number): number {
  return Math.ceil(fileSizeBytes / chunkSizeBytes);
}

/** Bytes of the presence bitmap for entryCount chunks. */
export function bitmapBytesOf(entryCount: number): number {
  return Math.ceil(entryCount / 8);
}

/** Set bits in bitmap[from, to) (byte offsets). */
export function countSetBits(bitmap: Uint8Array, from = 0, to = bitmap.length): number {
  let bits = 0;
  for (let i = from; i < to; i++) bits += POPCOUNT[bitmap[i]!]!;
  return bits;
}

export interface ChunkManifestParts {
  chunkSizeBytes: number;
  fileSizeBytes: number;
  /** Bytes of one binary hash (the repository's hash length). */
  hashBytes: number;
  /** Bit i (byte i >> 3, bit i & 7) set: chunk i is stored and has a hash. */
  bitmap: Uint8Array;
  /** The non-zero chunks' hashes, binary, hashBytes each, in chunk order. */
  hashes: Uint8Array;
}

export class ChunkManifest {
  readonly chunkSizeBytes: number;
  readonly fileSizeBytes: number;
  readonly hashBytes: number;
  /** Chunks in the file, zero ones included. */
  readonly entryCount: number;
  /** Chunks that are stored (not all-zero). */
  readonly storedCount: number;
  /** Shared with the encoder; never written after construction. */
  readonly bitmap: Uint8Array;
  readonly hashes: Buffer;
  private readonly rankBefore: Uint32Array;

  /** The parts must be consistent (the decoder and the builder check them first): asserts. */
  constructor(parts: ChunkManifestParts) {
    this.chunkSizeBytes = parts.chunkSizeBytes;
    this.fileSizeBytes = parts.fileSizeBytes;
    this.hashBytes = parts.hashBytes;
    this.entryCount = chunkCountOf(parts.fileSizeBytes, parts.chunkSizeBytes);
    this.bitmap = parts.bitmap;
    this.hashes = Buffer.from(parts.hashes.buffer, parts.hashes.byteOffset, parts.hashes.length);
    assert(this.bitmap.length === bitmapBytesOf(this.entryCount), 'manifest bitmap length matches its entry count');
    const groups = Math.ceil(this.entryCount / RANK_GROUP_ENTRIES);
    this.rankBefore = new Uint32Array(groups + 1);
    let stored = 0;
    for (let group = 0; group < groups; group++) {
      this.rankBefore[group] = stored;
      const from = group * RANK_GROUP_BYTES;
      stored += countSetBits(this.bitmap, from, Math.min(from + RANK_GROUP_BYTES, this.bitmap.length));
    }
    this.rankBefore[groups] = stored;
    this.storedCount = stored;
    assert(this.hashes.length === stored * this.hashBytes, 'manifest has one hash per stored chunk');
  }

  /** True when chunk `index` is all zeroes (not stored anywhere). */
  isZero(index: number): boolean {
    return (this.bitmap[index >>> 3]! & (1 << (index & 7))) === 0;
  }

  /** Chunk `index`'s hash, or undefined for a zero chunk. */
  hashAt(index: number): ChunkHash | undefined {
    assert(Number.isInteger(index) && index >= 0 && index < this.entryCount, `chunk index ${index} is in the manifest`);
    if (this.isZero(index)) return undefined;
    const start = this.rankOf(index) * this.hashBytes;
    return this.hashes.toString('hex', start, start + this.hashBytes);
  }

  /** Bytes of chunk `index` that lie inside the file (the last chunk may be short). */
  chunkLengthBytes(index: number): number {
    return Math.min(this.chunkSizeBytes, this.fileSizeBytes - index * this.chunkSizeBytes);
  }

  /** The stored chunks' hashes in chunk order (a chunk used twice appears twice). */
  *storedHashes(): IterableIterator<ChunkHash> {
    for (let start = 0; start < this.hashes.length; start += this.hashBytes) {
      yield this.hashes.toString('hex', start, start + this.hashBytes);
    }
  }

  /** Bytes the stored chunks cover inside the file. */
  storedBytes(): number {
    const last = this.entryCount - 1;
    if (last < 0 || this.isZero(last)) return this.storedCount * this.chunkSizeBytes;
    return (this.storedCount - 1) * this.chunkSizeBytes + this.chunkLengthBytes(last);
  }

  /** Stored chunks before `index`. */
  private rankOf(index: number): number {
    const group = Math.floor(index / RANK_GROUP_ENTRIES);
    const from = group * RANK_GROUP_BYTES;
    const byte = index >>> 3;
    const below = (this.bitmap[byte]! & ((1 << (index & 7)) - 1)) >>> 0;
    return this.rankBefore[group]! + countSetBits(this.bitmap, from, byte) + POPCOUNT[below]!;
  }
}

/**
 * Builds a manifest chunk by chunk, in chunk order (the sealer applies batch results in order), so
 * hashes are appended densely and nothing is held per zero chunk.
 */
export class ChunkManifestBuilder {
  readonly chunkSizeBytes: number;
  readonly fileSizeBytes: number;
  readonly hashBytes: number;
  readonly entryCount: number;
  private readonly bitmap: Uint8Array;
  private hashes: Buffer;
  private hashesUsed = 0;
  /** Every chunk below this index has been given its entry. */
  private nextIndex = 0;

  constructor(chunkSizeBytes: number, fileSizeBytes: number, hashBytes: number) {
    this.chunkSizeBytes = chunkSizeBytes;
    this.fileSizeBytes = fileSizeBytes;
    this.hashBytes = hashBytes;
    this.entryCount = chunkCountOf(fileSizeBytes, chunkSizeBytes);
    this.bitmap = new Uint8Array(bitmapBytesOf(this.entryCount));
    this.hashes = Buffer.alloc(hashBytes * Math.min(this.entryCount, 1024));
  }

  /** Records chunk `index` as stored under `hash`; chunks skipped since the last call are zero. */
  setStored(index: number, hash: ChunkHash): void {
    assert(index >= this.nextIndex && index < this.entryCount, `chunk ${index} is added in order`);
    if (hash.length !== this.hashBytes * 2 || !/^[0-9a-f]*$/.test(hash)) {
      throw new StorageError(
        'CORRUPT',
        `chunk hash "${hash.slice(0, 80)}" is not ${this.hashBytes * 2} lower-case hex digits: the repository named a chunk unlike the others`,
      );
    }
    if (this.hashesUsed + this.hashBytes > this.hashes.length) {
      const grown = Buffer.alloc(Math.min(this.hashes.length * 2, this.entryCount * this.hashBytes));
      this.hashes.copy(grown, 0, 0, this.hashesUsed);
      this.hashes = grown;
    }
    this.hashes.write(hash, this.hashesUsed, 'hex');
    this.hashesUsed += this.hashBytes;
    this.bitmap[index >>> 3] = this.bitmap[index >>> 3]! | (1 << (index & 7));
    this.nextIndex = index + 1;
  }

  /** The manifest: every chunk not given a hash is zero. */
  finish(): ChunkManifest {
    return new ChunkManifest({
      chunkSizeBytes: this.chunkSizeBytes,
      fileSizeBytes: this.fileSizeBytes,
      hashBytes: this.hashBytes,
      bitmap: this.bitmap,
      hashes: this.hashes.subarray(0, this.hashesUsed),
    });
  }
}
