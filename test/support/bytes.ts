/** Byte comparisons for tests that handle many large buffers. */
import { expect } from 'vitest';

/** Byte equality without vitest's element-by-element diff (seconds for a few hundred 64 KiB chunks). */
export function expectSameBytes(actual: Uint8Array, expected: Uint8Array | undefined, what = 'bytes'): void {
  expect(expected, what).toBeDefined();
  expect(Buffer.compare(actual, expected!), `${what}: ${actual.length} bytes differ from the ${expected!.length} expected`).toBe(0);
}
