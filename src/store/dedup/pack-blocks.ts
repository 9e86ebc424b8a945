/**
 * Block checksums of pack format version 2 (pack-format.ts): a chunk is stored as its 4 KiB blocks,
 * each followed by a CRC-32 of that block, so a read of a few KiB of a chunk reads and checks only
 * the blocks it covers, in one contiguous range, instead of the whole chunk and its hash.
 *
 *   chunk in a v2 pack   block 0 (4096 bytes) | crc u32 | block 1 | crc u32 | ... | last block (1..4096) | crc u32
 *
 * A block's CRC is seeded with the chunk's hash and the block's index (see blockSeed), so a block
 * read from the wrong place (another chunk, another block of the same chunk) fails its check like
 * bit rot does: a partial read returns the bytes asked for or CORRUPT, never other bytes.
 *
 * CRC-32 (node:zlib) rather than xxh3: ~1.3 us per 4 KiB block here against ~0.6 us for XXH3-64
 * through koffi (bench in docs/dedup.md), but built into Node, so a BLAKE3 pool does not start
 * needing libxxhash; either is small beside the 4 KiB pread it checks. It guards against bit rot
 * (any burst of up to 32 bits, and other damage with probability 1 - 2^-32); the chunk's hash
 * still covers every whole-chunk read, and scrub checks both.
 */
import { assert, StorageError } from '../../core/errors.js';
import { crc32 } from '../../sys/crc.js';

/** The unit a v2 chunk is checked in. */
export const PACK_BLOCK_BYTES = 4096;
/** The CRC-32 after each block. */
export const BLOCK_CHECKSUM_BYTES = 4;
const STORED_BLOCK_BYTES = PACK_BLOCK_BYTES + BLOCK_CHECKSUM_BYTES;
/** Spreads block indexes over the seed space (the 32-bit golden ratio: consecutive indexes differ in many bits). */
const BLOCK_INDEX_MULTIPLIER = 0x9e3779b1;

/** The bytes a chunk of `lengthBytes` takes in a pack of `version`. */
export function storedChunkBytes(version: number, lengthBytes: number): number {
  if (version === 1) return lengthBytes;
  return lengthBytes + Math.ceil(lengthBytes / PACK_BLOCK_BYTES) * BLOCK_CHECKSUM_BYTES;
}

/** What every block seed of chunk `hash` starts from (computed once per chunk, not per block). */
export function chunkHashSeed(hash: string): number {
  return crc32(hash);
}

/** The CRC seed of chunk `hash`'s block `blockIndex` (`hashSeed`: chunkHashSeed(hash)). */
function blockSeed(hashSeed: number, blockIndex: number): number {
  return (hashSeed ^ Math.imul(blockIndex + 1, BLOCK_INDEX_MULTIPLIER)) >>> 0;
}

/**
 * Writes `data` as v2 blocks with their checksums into `target` at `offsetBytes`; `checksums`:
 * those CRCs computed already (one per block; chunk-hash-worker.ts computes them as this does).
 */
export function writeChunkBlocks(target: Buffer, offsetBytes: number, hash: string, data: Uint8Array, checksums?: Uint32Array): void {
  assert(checksums === undefined || checksums.length === Math.ceil(data.length / PACK_BLOCK_BYTES), 'one checksum per block');
  const hashSeed = checksums === undefined ? chunkHashSeed(hash) : 0;
  let at = offsetBytes;
  for (let block = 0, from = 0; from < data.length; block++, from += PACK_BLOCK_BYTES) {
    const bytes = data.subarray(from, Math.min(data.length, from + PACK_BLOCK_BYTES));
    target.set(bytes, at);
    at += bytes.length;
    target.writeUInt32LE(checksums === undefined ? crc32(bytes, blockSeed(hashSeed, block)) : checksums[block]!, at);
    at += BLOCK_CHECKSUM_BYTES;
  }
}

/** Which stored bytes of a chunk hold its bytes [offsetBytes, offsetBytes + lengthBytes). */
export interface BlockSpan {
  readonly firstBlock: number;
  /** From the chunk's first stored byte. */
  readonly storedOffsetBytes: number;
  readonly storedLengthBytes: number;
}

/** The blocks covering a range of a v2 chunk of `chunkLengthBytes` (the range is within it, not empty). */
export function blockSpan(chunkLengthBytes: number, offsetBytes: number, lengthBytes: number): BlockSpan {
  const firstBlock = Math.floor(offsetBytes / PACK_BLOCK_BYTES);
  const endByte = Math.min(chunkLengthBytes, Math.ceil((offsetBytes + lengthBytes) / PACK_BLOCK_BYTES) * PACK_BLOCK_BYTES);
  const storedOffsetBytes = firstBlock * STORED_BLOCK_BYTES;
  const storedEnd = storedChunkBytes(2, endByte);
  return { firstBlock, storedOffsetBytes, storedLengthBytes: storedEnd - storedOffsetBytes };
}

/**
 * Checks the blocks in `stored` (whole stored blocks from `firstBlock` on) against their
 * checksums; the index of the first that fails, or -1 when all hold.
 */
export function firstBadBlock(hash: string, firstBlock: number, stored: Uint8Array): number {
  return firstBadBlockSeeded(chunkHashSeed(hash), firstBlock, Buffer.from(stored.buffer, stored.byteOffset, stored.length));
}

/** firstBadBlock with the chunk's seed at hand (chunkHashSeed) and the stored blocks as a Buffer. */
export function firstBadBlockSeeded(hashSeed: number, firstBlock: number, stored: Buffer): number {
  for (let block = firstBlock, at = 0; at < stored.length; block++, at += STORED_BLOCK_BYTES) {
    const dataEnd = Math.min(stored.length, at + STORED_BLOCK_BYTES) - BLOCK_CHECKSUM_BYTES;
    if (dataEnd <= at) return block; // a checksum without its block: cut short
    if (crc32(stored.subarray(at, dataEnd), blockSeed(hashSeed, block)) !== stored.readUInt32LE(dataEnd)) return block;
  }
  return -1;
}

/**
 * `lengthBytes` of chunk bytes from `withinBytes` (counted from the first block's start) out of
 * checked stored blocks: a view when they lie in one block, else a copy without the checksums.
 */
export function bytesFromBlocks(stored: Uint8Array, withinBytes: number, lengthBytes: number): Uint8Array {
  if (withinBytes + lengthBytes <= PACK_BLOCK_BYTES) return stored.subarray(withinBytes, withinBytes + lengthBytes);
  const out = new Uint8Array(lengthBytes);
  copyFromBlocks(Buffer.from(stored.buffer, stored.byteOffset, stored.length), withinBytes, out);
  return out;
}

/**
 * bytesFromBlocks into the caller's `target` (all of it, from `withinBytes` counted from the first
 * stored block's start): the checksums left out, no buffer allocated.
 */
export function copyFromBlocks(stored: Buffer, withinBytes: number, target: Uint8Array): void {
  let filled = 0;
  let chunkByte = withinBytes;
  while (filled < target.length) {
    const block = Math.floor(chunkByte / PACK_BLOCK_BYTES);
    const inBlock = chunkByte - block * PACK_BLOCK_BYTES;
    const take = Math.min(PACK_BLOCK_BYTES - inBlock, target.length - filled);
    const from = block * STORED_BLOCK_BYTES + inBlock;
    stored.copy(target, filled, from, from + take);
    filled += take;
    chunkByte += take;
  }
}

/** A whole v2 chunk's bytes without the checksums (not checked here: the caller hashes them). */
export function chunkFromBlocks(stored: Uint8Array, lengthBytes: number): Uint8Array {
  if (stored.length !== storedChunkBytes(2, lengthBytes)) {
    throw new StorageError('CORRUPT', `a stored chunk of ${stored.length} bytes cannot hold ${lengthBytes} bytes in checked blocks`);
  }
  return bytesFromBlocks(stored, 0, lengthBytes);
}

/**
 * A whole v2 chunk's stored blocks checked against their CRCs and copied (without the checksums)
 * into `target` from `targetStart`: each block is copied once it passed, so the bytes go from the
 * pack's buffer to the caller's with no buffer of their own and no second pass. `target` may be the
 * memory `stored` views (a run compacted in place) when `targetStart` is not past stored's start:
 * each block then moves down, never over a block not yet moved. The index of the first block that
 * fails, is cut short (a checksum without its block) or does not fit `target` (what `target` holds
 * is then not the chunk: discard it), or -1.
 */
export function copyCheckedBlocks(hashSeed: number, stored: Buffer, target: Uint8Array, targetStart = 0): number {
  let to = targetStart;
  for (let block = 0, at = 0; at < stored.length; block++, at += STORED_BLOCK_BYTES) {
    const dataEnd = Math.min(stored.length, at + STORED_BLOCK_BYTES) - BLOCK_CHECKSUM_BYTES;
    if (dataEnd <= at || to + (dataEnd - at) > target.length) return block;
    if (crc32(stored.subarray(at, dataEnd), blockSeed(hashSeed, block)) !== stored.readUInt32LE(dataEnd)) return block;
    stored.copy(target, to, at, dataEnd);
    to += dataEnd - at;
  }
  return -1;
}
