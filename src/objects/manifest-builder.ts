/**
 * Builds a chunk manifest whose size is not known in advance (a body streaming in, parts being
 * concatenated, a range of another manifest): chunks are appended in order, every one full but the
 * last. The result is the same ChunkManifest src/store/chunked encodes and reads, so an object's
 * chunks are a sealed layer's chunks.
 */
import { assert } from '../core/errors.js';
import { ChunkManifest, bitmapBytesOf } from '../store/chunked/manifest.js';
import type { ChunkHash } from '../store/dedup/repository.js';

export class AppendingManifestBuilder {
  private bitmap: Buffer = Buffer.alloc(64);
  private hashes: Buffer;
  private hashesUsed = 0;
  private chunkCount = 0;
  private sizeBytes = 0;

  constructor(
    readonly chunkSizeBytes: number,
    readonly hashBytes: number,
  ) {
    this.hashes = Buffer.alloc(hashBytes * 64);
  }

  get fileSizeBytes(): number {
    return this.sizeBytes;
  }

  /** Appends a chunk of `lengthBytes` (a full chunk unless it is the last): stored under `hash`, or zero. */
  append(hash: ChunkHash | undefined, lengthBytes: number): void {
    assert(this.sizeBytes % this.chunkSizeBytes === 0, 'only the last chunk of a manifest is short');
    assert(lengthBytes > 0 && lengthBytes <= this.chunkSizeBytes, `chunk of ${lengthBytes} bytes fits a chunk`);
    const index = this.chunkCount++;
    this.sizeBytes += lengthBytes;
    if (bitmapBytesOf(this.chunkCount) > this.bitmap.length) this.bitmap = grow(this.bitmap, this.bitmap.length);
    if (hash === undefined) return;
    assert(hash.length === this.hashBytes * 2, `chunk hash ${hash} has ${this.hashBytes} bytes`);
    if (this.hashesUsed + this.hashBytes > this.hashes.length) this.hashes = grow(this.hashes, this.hashesUsed);
    this.hashes.write(hash, this.hashesUsed, 'hex');
    this.hashesUsed += this.hashBytes;
    this.bitmap[index >>> 3] = this.bitmap[index >>> 3]! | (1 << (index & 7));
  }

  finish(): ChunkManifest {
    return new ChunkManifest({
      chunkSizeBytes: this.chunkSizeBytes,
      fileSizeBytes: this.sizeBytes,
      hashBytes: this.hashBytes,
      bitmap: Uint8Array.prototype.slice.call(this.bitmap, 0, bitmapBytesOf(this.chunkCount)),
      hashes: Uint8Array.prototype.slice.call(this.hashes, 0, this.hashesUsed),
    });
  }
}

function grow(buffer: Buffer, usedBytes: number): Buffer {
  const grown = Buffer.alloc(buffer.length * 2);
  buffer.copy(grown, 0, 0, usedBytes);
  return grown;
}

/**
 * Appends chunks [fromChunk, toChunk) of `source` to `builder` (the caller has checked that the
 * range starts on a chunk boundary of the builder, i.e. the builder holds whole chunks).
 */
export function appendChunksOf(builder: AppendingManifestBuilder, source: ChunkManifest, fromChunk: number, toChunk: number): ChunkHash[] {
  const stored: ChunkHash[] = [];
  for (let index = fromChunk; index < toChunk; index++) {
    const hash = source.hashAt(index);
    builder.append(hash, source.chunkLengthBytes(index));
    if (hash !== undefined) stored.push(hash);
  }
  return stored;
}
