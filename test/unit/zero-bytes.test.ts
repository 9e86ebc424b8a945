import { describe, expect, it } from 'vitest';
import { isAllZero } from '../../src/store/zero-bytes.js';

describe('isAllZero', () => {
  it('is true only when every byte is zero, at any length, offset and slice boundary', () => {
    const backing = new Uint8Array(3 * 64 * 1024 + 17);
    for (const [start, length] of [[0, 0], [0, 1], [3, 64 * 1024], [5, 3 * 64 * 1024 + 12], [0, backing.length]] as const) {
      const view = backing.subarray(start, start + length);
      expect(isAllZero(view)).toBe(true);
      for (const at of [0, length - 1, 64 * 1024 - 1, 64 * 1024, 2 * 64 * 1024 + 1].filter((i) => i >= 0 && i < length)) {
        view[at] = 0x80;
        expect(isAllZero(view), `length ${length}, byte ${at} set`).toBe(false);
        view[at] = 0;
      }
    }
    backing[2] = 1; // outside the view: not its business
    expect(isAllZero(backing.subarray(3, 1000))).toBe(true);
  });
});
