/** Byte comparisons for tests that handle many large buffers. */
import { readSync } from 'node:fs';
import { expect } from 'vitest';
import { SeededRandom } from '../../src/store/seeded-random.js';

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

/** lengthBytes of seeded random bytes: the same seed, the same bytes. */
export function seededBytes(seed: number, lengthBytes: number): Uint8Array {
  return new SeededRandom(seed).fill(new Uint8Array(lengthBytes));
}

/** lengthBytes of an open file from hostOffset, read whole (a short read fails the test). */
export function readFileAt(fd: number, hostOffset: number, lengthBytes: number): Uint8Array {
  const out = new Uint8Array(lengthBytes);
  expect(readSync(fd, out, 0, lengthBytes, hostOffset), `bytes read at ${hostOffset}`).toBe(lengthBytes);
  return out;
}
