/** The all-zero test every store makes before it stores a chunk (zero chunks are never stored). */

/** True when every byte is 0; compares 8 bytes at a time where alignment allows, the tail byte by byte. */
export function isAllZero(bytes: Uint8Array): boolean {
  let i = 0;
  if (bytes.byteOffset % 8 === 0) {
    const words = new BigUint64Array(bytes.buffer, bytes.byteOffset, bytes.length >>> 3);
    for (const w of words) if (w !== 0n) return false;
    i = words.length * 8;
  }
  for (; i < bytes.length; i++) if (bytes[i] !== 0) return false;
  return true;
}
