import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { copyBytes, SHARED_MEMCPY_MIN_BYTES } from '../../src/sys/shared-copy.js';

describe('copyBytes', () => {
  it('copies small and large pieces into shared and plain memory at any offset, touching nothing else', () => {
    for (const shared of [true, false]) {
      for (const lengthBytes of [0, 1, 4095, SHARED_MEMCPY_MIN_BYTES - 1, SHARED_MEMCPY_MIN_BYTES, 65_536, 65_536 + 3]) {
        for (const offsetBytes of [0, 1, 4096, 100_003]) {
          const memory = shared ? new SharedArrayBuffer(256 * 1024) : new ArrayBuffer(256 * 1024);
          // A view that starts inside its buffer: the offset is relative to the view.
          const target = new Uint8Array(memory, 8, 200 * 1024);
          target.fill(0xee);
          const source = randomBytes(lengthBytes + 10).subarray(5, 5 + lengthBytes);
          copyBytes(target, offsetBytes, source);
          expect(Buffer.from(target.subarray(offsetBytes, offsetBytes + lengthBytes)).equals(source)).toBe(true);
          expect(target.subarray(0, offsetBytes).every((b) => b === 0xee)).toBe(true);
          expect(target.subarray(offsetBytes + lengthBytes).every((b) => b === 0xee)).toBe(true);
          expect(new Uint8Array(memory, 0, 8).every((b) => b === 0)).toBe(true);
        }
      }
    }
  });

  it('refuses a copy past the target with a RangeError before moving a byte', () => {
    for (const lengthBytes of [100, SHARED_MEMCPY_MIN_BYTES * 2]) {
      const target = new Uint8Array(new SharedArrayBuffer(lengthBytes + 10));
      const source = new Uint8Array(lengthBytes).fill(7);
      expect(() => copyBytes(target, 11, source)).toThrow(RangeError);
      expect(() => copyBytes(target, -1, source)).toThrow(RangeError);
      expect(target.every((b) => b === 0)).toBe(true);
    }
  });
});
