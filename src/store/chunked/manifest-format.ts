/**
 * The chunk manifest's binary encoding: how a sealed layer's manifest is stored (as an object in a
 * ChunkStore or a file beside the pool). Little-endian throughout:
 *
 *   offset  size  field
 *        0     8  magic "STRATACM"
 *        8     4  version (1)
 *       12     4  hash bytes (the repository's hash length, 1..64)
 *       16     4  chunk size in bytes (a power of two, 512 B..16 MiB)
 *       20     4  flags (none defined: must be 0)
 *       24     8  file size in bytes
 *       32     8  stored chunks (the bits set in the bitmap)
 *       40     B  bitmap: bit i (byte i >> 3, bit i & 7) set = chunk i is stored, B = ceil(chunks / 8);
 *                 bits past the last chunk are 0
 *     40+B   S*H  the stored chunks' hashes, binary, in chunk order (S stored chunks, H hash bytes)
 *   40+B+S*H  4  CRC-32 (zlib's) of every byte before it
 *
 * A 1 TiB layer at 64 KiB chunks (16M chunks) costs 2 MiB of bitmap plus its stored chunks' hashes
 * (at most 512 MiB with 32-byte hashes); a sparse layer pays only for its data. decodeManifest
 * checks every field and the length before it allocates anything, so a damaged manifest is a
 * StorageError CORRUPT that says what is wrong, never a crash or a huge allocation.
 */
import { StorageError } from '../../core/errors.js';
import { bitmapBytesOf, ChunkManifest, chunkCountOf, countSetBits } from './manifest.js';
import { crc32 } from '../../sys/crc.js';

export const MANIFEST_MAGIC = Buffer.from('STRATACM', 'latin1');
export const MANIFEST_VERSION = 1;
export const MANIFEST_HEADER_BYTES = 40;
export const MANIFEST_CHECKSUM_BYTES = 4;
export const MANIFEST_HASH_BYTES_MAX = 64;
export const MANIFEST_CHUNK_SIZE_MIN_BYTES = 512;
export const MANIFEST_CHUNK_SIZE_MAX_BYTES = 16 * 1024 * 1024;
/**
 * Chunks one manifest may describe: 2^28 (16 TiB at 64 KiB chunks), so the rank directory and the
 * bitmap stay far inside what typed arrays hold.
 */
export const MANIFEST_ENTRIES_MAX = 2 ** 28;

const OFFSET_VERSION = 8;
const OFFSET_HASH_BYTES = 12;
const OFFSET_CHUNK_SIZE = 16;
const OFFSET_FLAGS = 20;
const OFFSET_FILE_SIZE = 24;
const OFFSET_STORED_COUNT = 32;

/** Throws INVALID_ARGUMENT unless chunkSizeBytes is a chunk size a manifest can record. */
export function checkChunkSize(chunkSizeBytes: number): void {
  if (!isValidChunkSize(chunkSizeBytes)) {
    throw new StorageError(
      'INVALID_ARGUMENT',
      `chunk size ${chunkSizeBytes} is not a power of two from ${MANIFEST_CHUNK_SIZE_MIN_BYTES} to ${MANIFEST_CHUNK_SIZE_MAX_BYTES} bytes: pick one (64 KiB matches qcow2's default cluster)`,
    );
  }
}

function isValidChunkSize(chunkSizeBytes: number): boolean {
  return (
    Number.isSafeInteger(chunkSizeBytes) &&
    chunkSizeBytes >= MANIFEST_CHUNK_SIZE_MIN_BYTES &&
    chunkSizeBytes <= MANIFEST_CHUNK_SIZE_MAX_BYTES &&
    (chunkSizeBytes & (chunkSizeBytes - 1)) === 0
  );
}

/** Throws LIMIT_EXCEEDED when a file of this size has more chunks than a manifest may hold. */
export function checkManifestEntries(fileSizeBytes: number, chunkSizeBytes: number, what: string): void {
  if (chunkCountOf(fileSizeBytes, chunkSizeBytes) > MANIFEST_ENTRIES_MAX) {
    throw new StorageError(
      'LIMIT_EXCEEDED',
      `${what}: ${fileSizeBytes} bytes in ${chunkSizeBytes}-byte chunks is more than the ${MANIFEST_ENTRIES_MAX} chunks a manifest holds: use larger chunks`,
    );
  }
}

export function encodeManifest(manifest: ChunkManifest): Buffer {
  const total = MANIFEST_HEADER_BYTES + manifest.bitmap.length + manifest.hashes.length + MANIFEST_CHECKSUM_BYTES;
  const out = Buffer.alloc(total);
  MANIFEST_MAGIC.copy(out, 0);
  out.writeUInt32LE(MANIFEST_VERSION, OFFSET_VERSION);
  out.writeUInt32LE(manifest.hashBytes, OFFSET_HASH_BYTES);
  out.writeUInt32LE(manifest.chunkSizeBytes, OFFSET_CHUNK_SIZE);
  out.writeUInt32LE(0, OFFSET_FLAGS);
  out.writeBigUInt64LE(BigInt(manifest.fileSizeBytes), OFFSET_FILE_SIZE);
  out.writeBigUInt64LE(BigInt(manifest.storedCount), OFFSET_STORED_COUNT);
  out.set(manifest.bitmap, MANIFEST_HEADER_BYTES);
  manifest.hashes.copy(out, MANIFEST_HEADER_BYTES + manifest.bitmap.length);
  const checksumAt = total - MANIFEST_CHECKSUM_BYTES;
  out.writeUInt32LE(crc32(out.subarray(0, checksumAt)), checksumAt);
  return out;
}

/**
 * Decodes and checks a manifest; `what` names it in errors (the layer it belongs to). The result
 * shares no memory with `bytes`.
 */
export function decodeManifest(bytes: Uint8Array, what: string): ChunkManifest {
  const corrupt = (problem: string): StorageError =>
    new StorageError('CORRUPT', `chunk manifest of ${what} is damaged: ${problem}; the sealed layer cannot be read`);
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  if (buf.length < MANIFEST_HEADER_BYTES + MANIFEST_CHECKSUM_BYTES) {
    throw corrupt(`${buf.length} bytes is shorter than a manifest's header and checksum`);
  }
  if (!buf.subarray(0, MANIFEST_MAGIC.length).equals(MANIFEST_MAGIC)) throw corrupt('wrong magic (not a chunk manifest)');
  const version = buf.readUInt32LE(OFFSET_VERSION);
  if (version !== MANIFEST_VERSION) {
    throw new StorageError('UNSUPPORTED', `chunk manifest of ${what} has version ${version}; this Strata reads version ${MANIFEST_VERSION}: upgrade Strata`);
  }
  const checksumAt = buf.length - MANIFEST_CHECKSUM_BYTES;
  if (crc32(buf.subarray(0, checksumAt)) !== buf.readUInt32LE(checksumAt)) throw corrupt('checksum mismatch');
  // The checksum matched, so what follows catches a manifest that was written wrong, not bit rot.
  const hashBytes = buf.readUInt32LE(OFFSET_HASH_BYTES);
  if (hashBytes < 1 || hashBytes > MANIFEST_HASH_BYTES_MAX) throw corrupt(`hash length ${hashBytes} is not 1..${MANIFEST_HASH_BYTES_MAX} bytes`);
  const chunkSizeBytes = buf.readUInt32LE(OFFSET_CHUNK_SIZE);
  if (!isValidChunkSize(chunkSizeBytes)) throw corrupt(`chunk size ${chunkSizeBytes} is not a power of two from ${MANIFEST_CHUNK_SIZE_MIN_BYTES} to ${MANIFEST_CHUNK_SIZE_MAX_BYTES}`);
  const flags = buf.readUInt32LE(OFFSET_FLAGS);
  if (flags !== 0) throw corrupt(`unknown flags 0x${flags.toString(16)}`);
  const fileSize = buf.readBigUInt64LE(OFFSET_FILE_SIZE);
  if (fileSize > BigInt(MANIFEST_ENTRIES_MAX) * BigInt(chunkSizeBytes)) throw corrupt(`file size ${fileSize} needs more than ${MANIFEST_ENTRIES_MAX} chunks`);
  const fileSizeBytes = Number(fileSize);
  const entryCount = chunkCountOf(fileSizeBytes, chunkSizeBytes);
  const storedCountField = buf.readBigUInt64LE(OFFSET_STORED_COUNT);
  if (storedCountField > BigInt(entryCount)) throw corrupt(`${storedCountField} stored chunks in a file of ${entryCount} chunks`);
  const storedCount = Number(storedCountField);
  const bitmapBytes = bitmapBytesOf(entryCount);
  const expectedLength = MANIFEST_HEADER_BYTES + bitmapBytes + storedCount * hashBytes + MANIFEST_CHECKSUM_BYTES;
  if (buf.length !== expectedLength) throw corrupt(`${buf.length} bytes where its header says ${expectedLength}`);
  const bitmap = Uint8Array.prototype.slice.call(buf, MANIFEST_HEADER_BYTES, MANIFEST_HEADER_BYTES + bitmapBytes);
  const tailBits = entryCount % 8;
  if (tailBits !== 0 && (bitmap[bitmapBytes - 1]! >> tailBits) !== 0) throw corrupt('bits set past the last chunk');
  const setBits = countSetBits(bitmap);
  if (setBits !== storedCount) throw corrupt(`bitmap marks ${setBits} stored chunks where the header says ${storedCount}`);
  const hashesAt = MANIFEST_HEADER_BYTES + bitmapBytes;
  const hashes = Uint8Array.prototype.slice.call(buf, hashesAt, hashesAt + storedCount * hashBytes);
  return new ChunkManifest({ chunkSizeBytes, fileSizeBytes, hashBytes, bitmap, hashes });
}
