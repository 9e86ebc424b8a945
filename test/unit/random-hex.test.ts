import { describe, expect, it } from 'vitest';
import { randomHex } from '../../src/sys/random-hex.js';

describe('randomHex', () => {
  it('gives 2n hex digits of fresh bytes each call, across refills of its pool', () => {
    const seen = new Set<string>();
    // 3,000 names of 8 bytes: the 4 KiB pool is refilled five times on the way.
    for (let i = 0; i < 3000; i++) {
      const name = randomHex(8);
      expect(name).toMatch(/^[0-9a-f]{16}$/);
      seen.add(name);
    }
    expect(seen.size).toBe(3000);
    expect(randomHex(1)).toMatch(/^[0-9a-f]{2}$/);
    expect(randomHex(4096)).toHaveLength(8192);
  });

  it('refuses a length the pool cannot give', () => {
    for (const bad of [0, -1, 1.5, 4097, Number.NaN]) expect(() => randomHex(bad)).toThrow(RangeError);
  });
});
