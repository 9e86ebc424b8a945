/**
 * Reading one chunk, or a range of it, out of its pack at a known location, checked: a whole
 * chunk against its hash, a range (in a version 2 pack) against the CRCs of the 4 KiB blocks it
 * covers, so a 4 KiB read costs one ~4 KiB ranged read and one CRC instead of the whole chunk
 * and its hash. A range of a version 1 pack (no block checksums) is read as the whole chunk.
 *
 * readChunkBlocksNow is readChunkBlocks without waiting, for a store that can answer at once.
 * readWholeChunkInto reads a whole chunk into the caller's buffer, a version 2 chunk checked by its
 * blocks' CRCs as readChunkBlocks checks a range (a sequential reader's path: no buffer, no hash).
 *
 * The others return undefined when the pack is missing or too short for the location (the caller then
 * asks the index: GC may have moved the chunk), and throws CORRUPT when the bytes fail their check.
 */
import type { ChunkStore, ChunkStoreCallOptions } from '../../core/chunk-store.js';
import { StorageError } from '../../core/errors.js';
import type { ChunkHasher } from './chunk-hasher.js';
import type { ChunkLocation, HintedLocation } from './location-hints.js';
import {
  blockSpan,
  bytesFromBlocks,
  chunkFromBlocks,
  chunkHashSeed,
  copyCheckedBlocks,
  copyFromBlocks,
  firstBadBlock,
  firstBadBlockSeeded,
  PACK_BLOCK_BYTES,
  storedChunkBytes,
} from './pack-blocks.js';
import { packKey } from './pack-format.js';

/** The whole chunk (the caller's to change), checked against its hash. */
export async function readWholeChunk(
  store: ChunkStore,
  hasher: ChunkHasher,
  hash: string,
  at: ChunkLocation,
  version: number,
  options: ChunkStoreCallOptions | undefined,
): Promise<Uint8Array | undefined> {
  const storedBytes = storedChunkBytes(version, at.lengthBytes);
  // A version 2 chunk is copied out of its blocks (chunkFromBlocks): the stored bytes are only read.
  const stored = await store.getRange(packKey(at.pack), at.offsetBytes, storedBytes, version === 1 ? options : { ...options, borrowResult: true });
  if (stored === undefined || stored.length !== storedBytes) return undefined;
  const data = version === 1 ? stored : chunkFromBlocks(stored, at.lengthBytes);
  if (hasher.hash(data) !== hash) {
    throw new StorageError(
      'CORRUPT',
      `chunk ${hash} in pack ${at.pack} (${at.lengthBytes} bytes at ${at.offsetBytes}) does not match its hash: the pack is damaged`,
    );
  }
  return data;
}

/**
 * readWholeChunk into `target` (exactly the chunk's length): true once it holds the chunk's bytes,
 * undefined when the pack is missing or short (as readWholeChunk), CORRUPT when they fail their
 * check. A version 2 chunk is checked by the CRC of each of its 4 KiB blocks as it is copied from
 * a view of the stored bytes (no buffer per chunk, no hash: the blocks' CRCs are seeded with the
 * chunk's hash and index, so a block from anywhere else fails as bit rot does); a version 1 chunk
 * (no block CRCs) is read whole and hashed. After a failure `target` holds part of it at most: discard it.
 */
export async function readWholeChunkInto(
  store: ChunkStore,
  hasher: ChunkHasher,
  hash: string,
  at: ChunkLocation,
  version: number,
  target: Uint8Array,
  options: ChunkStoreCallOptions | undefined,
): Promise<true | undefined> {
  if (version === 1) {
    const data = await readWholeChunk(store, hasher, hash, at, version, options);
    if (data === undefined) return undefined;
    target.set(data);
    return true;
  }
  const storedBytes = storedChunkBytes(version, at.lengthBytes);
  const stored = await store.getRange(packKey(at.pack), at.offsetBytes, storedBytes, { ...options, borrowResult: true });
  if (stored === undefined || stored.length !== storedBytes) return undefined;
  const bad = copyCheckedBlocks(chunkHashSeed(hash), Buffer.from(stored.buffer, stored.byteOffset, stored.length), target);
  if (bad !== -1) {
    throw new StorageError(
      'CORRUPT',
      `chunk ${hash} in pack ${at.pack} (${at.lengthBytes} bytes at ${at.offsetBytes}): its 4 KiB block ${bad} fails its checksum: the pack is damaged`,
    );
  }
  return true;
}

/**
 * `lengthBytes` of the chunk from `offsetBytes` (a range inside it, checked by the caller; not
 * empty), from a version 2 pack: only the blocks covering it are read, and each is checked.
 */
export async function readChunkBlocks(
  store: ChunkStore,
  hash: string,
  at: ChunkLocation,
  offsetBytes: number,
  lengthBytes: number,
  options: ChunkStoreCallOptions | undefined,
): Promise<Uint8Array | undefined> {
  const span = blockSpan(at.lengthBytes, offsetBytes, lengthBytes);
  const stored = await store.getRange(packKey(at.pack), at.offsetBytes + span.storedOffsetBytes, span.storedLengthBytes, options);
  if (stored === undefined || stored.length !== span.storedLengthBytes) return undefined;
  const bad = firstBadBlock(hash, span.firstBlock, stored);
  if (bad !== -1) {
    throw new StorageError(
      'CORRUPT',
      `chunk ${hash} in pack ${at.pack} (${at.lengthBytes} bytes at ${at.offsetBytes}): its 4 KiB block ${bad} fails its checksum: the pack is damaged`,
    );
  }
  return bytesFromBlocks(stored, offsetBytes - span.firstBlock * PACK_BLOCK_BYTES, lengthBytes);
}

/** The stored blocks a read without waiting takes at most (a larger read waits: it is not the hot case). */
const READ_NOW_STORED_BYTES_MAX = 128 * 1024;
/** Where such reads land: one buffer, used only within one synchronous call (no await in between). */
let nowScratch: Buffer | undefined;

/**
 * readChunkBlocks into `target` (all of it, from the chunk's byte `offsetBytes`; within the chunk,
 * not empty) from a version 2 pack, synchronously through the store's getRangeNow: 'done' once
 * every covered block passed its check and `target` holds the bytes; 'wait' when the store cannot
 * answer without waiting (or the read is large); 'damaged' when a block fails its check (the
 * caller asks the index and reads again, which reports CORRUPT if it still fails).
 */
export function readChunkBlocksNow(
  store: ChunkStore,
  at: HintedLocation,
  offsetBytes: number,
  target: Uint8Array,
): 'done' | 'wait' | 'damaged' {
  const span = blockSpan(at.lengthBytes, offsetBytes, target.length);
  if (span.storedLengthBytes > READ_NOW_STORED_BYTES_MAX) return 'wait';
  nowScratch ??= Buffer.allocUnsafe(READ_NOW_STORED_BYTES_MAX);
  const stored = nowScratch.subarray(0, span.storedLengthBytes);
  if (store.getRangeNow?.(at.packKey, at.offsetBytes + span.storedOffsetBytes, stored) !== true) return 'wait';
  if (firstBadBlockSeeded(at.hashSeed, span.firstBlock, stored) !== -1) return 'damaged';
  copyFromBlocks(stored, offsetBytes - span.firstBlock * PACK_BLOCK_BYTES, target);
  return 'done';
}
