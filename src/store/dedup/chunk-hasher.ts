/**
 * The hash that names a pool's chunks. BLAKE3 is the default (bench/RESULTS.md, "Chunk hash
 * (issue 12)"): collision resistant, so a chunk is shared on its hash alone. xxh128 is three
 * times faster to compute but anyone can craft two chunks with the same xxh128, so sharing by it
 * needs a byte compare against the stored copy, which costs a read of that copy (from disk, or
 * from S3 once the pack is tiered) on every duplicate: more than BLAKE3 saves.
 */
import { StorageError } from '../../core/errors.js';
import { blake3Hex, BLAKE3_DIGEST_BYTES } from '../../sys/blake3.js';
import { xxh128Hex } from '../../sys/xxhash.js';

import type { ChunkHashAlgorithm } from '../../core/chunked-pools.js';
export { CHUNK_HASH_ALGORITHMS, type ChunkHashAlgorithm } from '../../core/chunked-pools.js';

export interface ChunkHasher {
  readonly algorithm: ChunkHashAlgorithm;
  /** The digest's length in bytes (its hex name has twice as many digits). */
  readonly digestBytes: number;
  /** True when equal hashes do not promise equal bytes: compare before sharing a chunk. */
  readonly byteCompareBeforeSharing: boolean;
  /** The digest as lower-case hex. */
  hash(data: Uint8Array): string;
}

const XXH128_DIGEST_BYTES = 16;

export const BLAKE3_HASHER: ChunkHasher = {
  algorithm: 'blake3',
  digestBytes: BLAKE3_DIGEST_BYTES,
  byteCompareBeforeSharing: false,
  hash: blake3Hex,
};

export const XXH128_HASHER: ChunkHasher = {
  algorithm: 'xxh128',
  digestBytes: XXH128_DIGEST_BYTES,
  byteCompareBeforeSharing: true,
  hash: xxh128Hex,
};

export function chunkHasher(algorithm: ChunkHashAlgorithm): ChunkHasher {
  return algorithm === 'blake3' ? BLAKE3_HASHER : XXH128_HASHER;
}

/** Checks that `hash` could be a name this hasher gives (so a bad name never reaches the catalog). */
export function checkChunkHash(hasher: ChunkHasher, hash: unknown): asserts hash is string {
  if (typeof hash !== 'string' || hash.length !== hasher.digestBytes * 2 || !/^[0-9a-f]+$/.test(hash)) {
    throw new StorageError(
      'INVALID_ARGUMENT',
      `${JSON.stringify(hash)} is not a chunk hash: expected ${hasher.digestBytes * 2} lower-case hex digits (${hasher.algorithm})`,
    );
  }
}
