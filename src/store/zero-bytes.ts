/** The all-zero test every store makes before it stores a chunk (zero chunks are never stored). */

/** Compared against in slices of this size: one native memcmp per slice, one shared buffer. */
const ZERO_SLICE_BYTES = 64 * 1024;
const ZERO_SLICE = Buffer.alloc(ZERO_SLICE_BYTES);

/**
 * True when every byte is 0. Compares each slice with a zero buffer natively (Buffer.equals is a
 * memcmp): a JavaScript loop over 64-bit words was ~35x slower on full 64 KiB chunks, and disk
 * images are mostly zeroes, so this runs on most of what an import or a seal reads.
 */
export function isAllZero(bytes: Uint8Array): boolean {
  for (let offset = 0; offset < bytes.length; offset += ZERO_SLICE_BYTES) {
    const lengthBytes = Math.min(ZERO_SLICE_BYTES, bytes.length - offset);
    const slice = Buffer.from(bytes.buffer, bytes.byteOffset + offset, lengthBytes);
    if (!slice.equals(lengthBytes === ZERO_SLICE_BYTES ? ZERO_SLICE : ZERO_SLICE.subarray(0, lengthBytes))) return false;
  }
  return true;
}
