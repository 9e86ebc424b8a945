import { describe, expect, it } from 'vitest';
import { mulberry32, SeededRandom, toRandomFn } from '../../src/store/seeded-random.js';

describe('seeded random', () => {
  it('is reproducible per seed and differs across seeds', () => {
    const a = mulberry32(42);
    const b = mulberry32(42);
    const c = mulberry32(43);
    const xs = Array.from({ length: 20 }, a);
    expect(Array.from({ length: 20 }, b)).toEqual(xs);
    expect(Array.from({ length: 20 }, c)).not.toEqual(xs);
  });

  it('stays in [0, 1) and is roughly uniform', () => {
    const r = mulberry32(7);
    const buckets = new Array<number>(10).fill(0);
    let outOfRange = 0;
    for (let i = 0; i < 100_000; i++) {
      const x = r();
      if (!(x >= 0 && x < 1)) outOfRange++;
      else buckets[Math.floor(x * 10)]!++;
    }
    expect(outOfRange).toBe(0);
    for (const n of buckets) expect(Math.abs(n - 10_000)).toBeLessThan(600);
  });

  it('SeededRandom helpers stay in range', () => {
    const r = new SeededRandom(1);
    for (let i = 0; i < 1000; i++) {
      const n = r.int(7);
      expect(Number.isInteger(n) && n >= 0 && n < 7).toBe(true);
      const m = r.intBetween(-3, 3);
      expect(Number.isInteger(m) && m >= -3 && m <= 3).toBe(true);
    }
    expect(['a', 'b']).toContain(r.pick(['a', 'b']));
    expect(() => r.pick([])).toThrow();
    const buf = r.fill(new Uint8Array(1000));
    expect(new Set(buf).size).toBeGreaterThan(200);
  });

  it('fork and asFunction', () => {
    const r = new SeededRandom(5);
    const f = r.fork();
    const r2 = new SeededRandom(5);
    const f2 = r2.fork();
    expect(f.next()).toBe(f2.next());
    expect(r.next()).toBe(r2.next());
    const fn = toRandomFn(r);
    expect(fn()).toBe(toRandomFn(r2)());
    expect(toRandomFn(Math.random)).toBe(Math.random);
  });
});
