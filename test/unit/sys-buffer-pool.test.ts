/** BufferPool: aligned data, headroom for a header, reuse after release, the cap on idle bytes. */
import { describe, expect, it } from 'vitest';
import { addressOf } from '../../src/sys/aligned-buffer.js';
import { BufferPool, POOL_MIN_BYTES, sizeClass } from '../../src/sys/buffer-pool.js';

const address = addressOf;

describe('BufferPool', () => {
  it('hands out page-aligned data with the header space right in front of it', () => {
    const pool = new BufferPool({ headroomBytes: 28 });
    for (const size of [POOL_MIN_BYTES, 100_000, 1024 * 1024, 3 * 1024 * 1024 + 5]) {
      const b = pool.acquire(size);
      expect(b.data.length).toBe(size);
      expect(address(b.data) % 4096).toBe(0);
      const framed = b.withHeader(16);
      expect(framed.length).toBe(16 + size);
      expect(address(framed)).toBe(address(b.data) - 16);
      framed.fill(7, 0, 16);
      b.data.fill(9);
      expect(framed[15]).toBe(7);
      expect(framed[16]).toBe(9);
      expect(() => b.withHeader(29)).toThrow(/headroom/);
      b.release();
    }
  });

  it('reuses a released buffer of the same size class, once per release', () => {
    const pool = new BufferPool({ headroomBytes: 16 });
    const a = pool.acquire(1024 * 1024);
    const aAddress = address(a.data);
    a.release();
    a.release(); // idempotent: the slab must not be pooled twice
    expect(pool.idleBytes).toBe(1024 * 1024);
    const b = pool.acquire(1000 * 1000); // same class (1 MiB)
    expect(address(b.data)).toBe(aAddress);
    expect(pool.idleBytes).toBe(0);
    const c = pool.acquire(1024 * 1024); // the only pooled one is taken: a new one
    expect(address(c.data)).not.toBe(aAddress);
    const d = pool.acquire(2 * 1024 * 1024);
    expect(address(d.data)).not.toBe(aAddress);
  });

  it('keeps no more than maxPooledBytes idle', () => {
    const pool = new BufferPool({ headroomBytes: 16, maxPooledBytes: 3 * 1024 * 1024 });
    const held = [1, 2, 3, 4, 5].map(() => pool.acquire(1024 * 1024));
    for (const b of held) b.release();
    expect(pool.idleBytes).toBe(3 * 1024 * 1024);
  });

  it('size classes are powers of two from 64 KiB, and bad sizes are refused', () => {
    expect(sizeClass(1)).toBe(POOL_MIN_BYTES);
    expect(sizeClass(POOL_MIN_BYTES + 1)).toBe(2 * POOL_MIN_BYTES);
    expect(sizeClass(32 * 1024 * 1024)).toBe(32 * 1024 * 1024);
    expect(() => sizeClass(-1)).toThrow(RangeError);
    expect(() => sizeClass(1.5)).toThrow(RangeError);
    expect(() => new BufferPool({ headroomBytes: 5000 })).toThrow(RangeError);
  });
});
