/** Byte comparisons for tests that handle many large buffers. */
import { expect } from 'vitest';

/** Byte equality without vitest's element-by-element diff (seconds for a few hundred 64 KiB chunks). */
export function expectSameBytes(actual: Uint8Array, expected: Uint8Array | undefined, what = 'bytes'): void {
  expect(expected, what).toBeDefined();
  expect(Buffer.compare(actual, expected!), `${what}: ${actual.length} bytes differ from the ${expected!.length} expected`).toBe(0);
}

/**
 * Fills a MiB-aligned region of `bytes` (chosen by rng, `regionBytes` long) with fresh random
 * words, so a round of a crash test writes data no earlier round wrote; returns its start.
 */
export function overwriteRandomRegion(bytes: Buffer, rng: { next(): number }, regionBytes: number): number {
  const mib = 1 << 20;
  const start = Math.floor(rng.next() * ((bytes.length - regionBytes) / mib)) * mib;
  for (let i = start; i < start + regionBytes; i += 4) bytes.writeUInt32LE(Math.floor(rng.next() * 0xffffffff), i);
  return start;
}
