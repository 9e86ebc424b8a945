/**
 * Compressed clusters: the two codecs qcow2 knows, and the L2 entry's compressed-cluster descriptor.
 *
 * zlib (compression_type 0) is raw deflate with no zlib header or checksum. QEMU compresses with a
 * 4 KiB window (windowBits -12, memLevel 9, default level and strategy); we write the same and read
 * any window size. zstd (compression_type 1) is one zstd frame per cluster, see zstd.ts.
 *
 * The descriptor records where the compressed data starts and how many 512-byte sectors it touches,
 * not its exact length, so the bytes a reader fetches run on past the end of the compressed stream
 * (padding, or the next compressed cluster, which may share the last sector). Both decompressors
 * stop at the end of their stream and ignore the rest. The file may also end inside that last
 * sector (QEMU does not pad the file), so a reader must zero-fill a short read at end of file.
 */
import zlib from 'node:zlib';
import { StorageError } from '../../src/core/errors.js';
import { MAX_CLUSTER_BITS, MIN_CLUSTER_BITS } from './constants.js';
import type { Qcow2CompressionType } from './types.js';
import * as zstd from './zstd.js';

/** The unit of the descriptor's sector count, whatever the cluster size. */
export const COMPRESSED_SECTOR_SIZE_BYTES = 512;

/** QEMU's deflate parameters (block/qcow2-threads.c): raw deflate, 4 KiB window. */
const ZLIB_COMPRESS_OPTIONS: zlib.ZlibOptions = {
  level: zlib.constants.Z_DEFAULT_COMPRESSION,
  windowBits: 12,
  memLevel: 9,
  strategy: zlib.constants.Z_DEFAULT_STRATEGY,
};

/**
 * Compresses one cluster the way QEMU does. Returns undefined when compression does not make it
 * smaller: QEMU then writes the cluster uncompressed, and so should the caller. A returned buffer is
 * always shorter than `cluster`, so it fits in the descriptor of a cluster that size.
 */
export function compressCluster(type: Qcow2CompressionType, cluster: Uint8Array): Uint8Array | undefined {
  let compressed: Uint8Array;
  switch (type) {
    case 'zlib':
      compressed = zlib.deflateRawSync(cluster, ZLIB_COMPRESS_OPTIONS);
      break;
    case 'zstd':
      compressed = zstd.compress(cluster, zstd.ZSTD_DEFAULT_LEVEL);
      break;
    default:
      throw unknownType(type);
  }
  return compressed.length < cluster.length ? compressed : undefined;
}

/**
 * Decompresses one cluster into `out`, which must be exactly one cluster long, filling all of it.
 * `compressed` is what the descriptor points at (see decodeCompressedEntry); bytes after the end of
 * the stream are ignored. Throws CORRUPT when the data is damaged, decompresses to fewer bytes than
 * out.length, or would decompress to more (decompression stops at out.length: a hostile stream
 * cannot make us allocate or write past one cluster).
 *
 * zlib: like QEMU, a stream that fills the cluster exactly but lacks its final end-of-stream marker
 * is accepted. Unlike QEMU, which silently drops whatever a stream would produce past the cluster
 * end, such a stream is CORRUPT here; QEMU never writes one.
 */
export function decompressCluster(type: Qcow2CompressionType, compressed: Uint8Array, out: Uint8Array): void {
  switch (type) {
    case 'zlib':
      inflateCluster(compressed, out);
      return;
    case 'zstd':
      zstd.decompress(compressed, out);
      return;
    default:
      throw unknownType(type);
  }
}

function inflateCluster(compressed: Uint8Array, out: Uint8Array): void {
  if (out.length === 0) return;
  let result: Buffer;
  try {
    result = zlib.inflateRawSync(compressed, {
      // Z_SYNC_FLUSH instead of Z_FINISH: a stream without its end marker yields what it has instead
      // of failing, and the length check below decides. Trailing bytes after the end are ignored.
      finishFlush: zlib.constants.Z_SYNC_FLUSH,
      // Node stops and throws ERR_BUFFER_TOO_LARGE as soon as the output passes this.
      maxOutputLength: out.length,
      // One output chunk with a byte to spare: a stream that fills the cluster exactly then ends
      // leaves room in it, so Node neither allocates a second chunk nor concatenates.
      chunkSize: Math.max(zlib.constants.Z_MIN_CHUNK, out.length + 1),
    });
  } catch (err) {
    const code = (err as { code?: unknown } | null)?.code;
    if (code === 'ERR_BUFFER_TOO_LARGE') {
      throw new StorageError('CORRUPT', `deflate data decompresses to more than ${out.length} bytes`, { cause: err });
    }
    const reason = err instanceof Error ? err.message : String(err);
    throw new StorageError(
      'CORRUPT',
      `deflate data does not decompress: ${reason}${typeof code === 'string' ? ` (${code})` : ''}`,
      { cause: err },
    );
  }
  if (result.length !== out.length) {
    throw new StorageError(
      'CORRUPT',
      `deflate data ends after producing ${result.length} of ${out.length} bytes`,
    );
  }
  out.set(result);
}

function unknownType(type: never): StorageError {
  return new StorageError('INVALID_ARGUMENT', `unknown compression type ${String(type)}`);
}

/**
 * Layout of a compressed cluster's L2 entry (bits 0..61; bit 62 is the compressed flag, bit 63 must
 * be zero), with x = 62 - (cluster_bits - 8):
 *   bits 0..x-1   host byte offset of the compressed data (not aligned to anything);
 *   bits x..61    number of 512-byte sectors the data occupies beyond the sector holding its first
 *                 byte. The field is cluster_bits - 8 bits wide, so it can describe up to twice a
 *                 cluster's worth of sectors; QEMU only writes data shorter than one cluster.
 */
export interface CompressedDescriptor {
  clusterBits: number;
  /** x: the host offset field's width in bits. */
  offsetBits: number;
  /** Selects the host offset field: (1 << x) - 1. */
  offsetMask: bigint;
  /** Shift right by this to bring the sector count field down to bit 0: x. */
  sectorCountShift: bigint;
  /** Selects the sector count after shifting: (1 << (cluster_bits - 8)) - 1. */
  sectorCountMask: bigint;
}

/** The spec: offset bits above 55 "must be set to 0" (they exist when cluster_bits < 14). */
const MAX_HOST_OFFSET_EXCLUSIVE = 1n << 56n;
const U64_LIMIT = 1n << 64n;
const descriptors = new Map<number, Readonly<CompressedDescriptor>>();

export function compressedDescriptor(clusterBits: number): Readonly<CompressedDescriptor> {
  const cached = descriptors.get(clusterBits);
  if (cached) return cached;
  if (!Number.isInteger(clusterBits) || clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS) {
    throw new StorageError(
      'INVALID_ARGUMENT',
      `cluster_bits ${clusterBits} is outside ${MIN_CLUSTER_BITS}..${MAX_CLUSTER_BITS}`,
    );
  }
  const offsetBits = 62 - (clusterBits - 8);
  const descriptor = Object.freeze({
    clusterBits,
    offsetBits,
    offsetMask: (1n << BigInt(offsetBits)) - 1n,
    sectorCountShift: BigInt(offsetBits),
    sectorCountMask: (1n << BigInt(clusterBits - 8)) - 1n,
  });
  descriptors.set(clusterBits, descriptor);
  return descriptor;
}

export interface CompressedEntry {
  /** Byte offset in the image file where the compressed data starts. */
  hostOffset: number;
  /**
   * Bytes from hostOffset to the end of the last sector the data occupies:
   * sectorCount * 512 - (hostOffset & 511). The compressed stream is at most this long; read this
   * many bytes (zero-filling past end of file) and hand them to decompressCluster.
   */
  maxLengthBytes: number;
  /**
   * 512-byte sectors the data touches, counting the one holding hostOffset. The host range the
   * cluster holds a reference on (what refcounting and check count) is
   * [hostOffset & ~511, (hostOffset & ~511) + sectorCount * 512).
   */
  sectorCount: number;
}

/**
 * Decodes bits 0..61 of a compressed cluster's L2 entry. Bits 62 (compressed) and 63 (COPIED, which
 * must be clear for compressed clusters) are ignored: checking the flags is the caller's business.
 * Throws CORRUPT when the host offset uses bits above 55.
 */
export function decodeCompressedEntry(entry: bigint, clusterBits: number): CompressedEntry {
  if (entry < 0n || entry >= U64_LIMIT) {
    throw new StorageError('INVALID_ARGUMENT', `L2 entry 0x${entry.toString(16)} is not a 64-bit value`);
  }
  const descriptor = compressedDescriptor(clusterBits);
  const offset = entry & descriptor.offsetMask;
  if (offset >= MAX_HOST_OFFSET_EXCLUSIVE) {
    throw new StorageError(
      'CORRUPT',
      `compressed cluster descriptor 0x${entry.toString(16)} has host offset 0x${offset.toString(16)} above bit 55`,
    );
  }
  if (offset > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new StorageError(
      'CORRUPT',
      `compressed cluster descriptor 0x${entry.toString(16)} has host offset 0x${offset.toString(16)} beyond 2^53`,
    );
  }
  const hostOffset = Number(offset);
  const sectorCount = Number((entry >> descriptor.sectorCountShift) & descriptor.sectorCountMask) + 1;
  return {
    hostOffset,
    maxLengthBytes: sectorCount * COMPRESSED_SECTOR_SIZE_BYTES - (hostOffset % COMPRESSED_SECTOR_SIZE_BYTES),
    sectorCount,
  };
}

/**
 * Encodes bits 0..61 of the L2 entry for `lengthBytes` of compressed data at `hostOffset`. The
 * result has neither the compressed flag (bit 62) nor any other flag: the caller ORs them in.
 * Throws INVALID_ARGUMENT when the offset does not fit the field or the data spans more sectors
 * than the field can count (2^(cluster_bits - 8)). Data from compressCluster is always shorter than
 * a cluster and fits wherever it starts.
 */
export function encodeCompressedEntry(hostOffset: number, lengthBytes: number, clusterBits: number): bigint {
  const descriptor = compressedDescriptor(clusterBits);
  if (!Number.isSafeInteger(hostOffset) || hostOffset < 0) {
    throw new StorageError('INVALID_ARGUMENT', `invalid compressed cluster host offset ${hostOffset}`);
  }
  const offset = BigInt(hostOffset);
  if (offset > descriptor.offsetMask || offset >= MAX_HOST_OFFSET_EXCLUSIVE) {
    throw new StorageError(
      'INVALID_ARGUMENT',
      `compressed cluster host offset 0x${hostOffset.toString(16)} does not fit the ` +
        `${Math.min(descriptor.offsetBits, 56)}-bit field for cluster_bits ${clusterBits}`,
    );
  }
  if (!Number.isSafeInteger(lengthBytes) || lengthBytes < 1) {
    throw new StorageError('INVALID_ARGUMENT', `invalid compressed cluster length ${lengthBytes}`);
  }
  const additionalSectors = Math.floor(
    ((hostOffset % COMPRESSED_SECTOR_SIZE_BYTES) + lengthBytes - 1) / COMPRESSED_SECTOR_SIZE_BYTES,
  );
  if (BigInt(additionalSectors) > descriptor.sectorCountMask) {
    throw new StorageError(
      'INVALID_ARGUMENT',
      `${lengthBytes} bytes of compressed data at offset 0x${hostOffset.toString(16)} span ` +
        `${additionalSectors + 1} sectors, more than the ${descriptor.sectorCountMask + 1n} ` +
        `a cluster_bits ${clusterBits} descriptor can count`,
    );
  }
  return offset | (BigInt(additionalSectors) << descriptor.sectorCountShift);
}
