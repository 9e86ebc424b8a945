/**
 * Deterministic test data shared by the suites and the crash child process (no vitest here: the
 * child runs outside vitest).
 */
export const KiB = 1024;
export const MiB = 1024 * 1024;

/** Deterministic bytes (xorshift32) for a seed. */
export function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  const words = new Uint32Array(out.buffer, 0, Math.floor(length / 4));
  let x = (seed * 2654435761 + 0x9e3779b9) >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    words[i] = x;
  }
  for (let i = words.length * 4; i < length; i++) out[i] = (seed + i) & 0xff;
  return out;
}

/** A sparse image for imports: a few runs of pattern data separated by zeroes. */
export function sparseImage(sizeBytes: number, seed: number): Uint8Array {
  const out = new Uint8Array(sizeBytes);
  for (let i = 0; i < 4; i++) {
    const offset = Math.floor((sizeBytes / 4) * i) + ((seed * 4099 + i * 512) % (64 * KiB));
    const length = Math.min(sizeBytes - offset, 96 * KiB + ((seed + i) % 7) * 512);
    if (length > 0) out.set(pattern(length, seed * 31 + i), offset);
  }
  return out;
}
