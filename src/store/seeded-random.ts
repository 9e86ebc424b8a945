/**
 * A tiny seedable pseudo-random generator (mulberry32) for reproducible tests: crash simulation,
 * property tests, workload generators. Not for anything security-related.
 */

/** A source of uniformly distributed numbers in [0, 1), like Math.random. */
export type RandomFn = () => number;

/** mulberry32: 32 bits of state, period 2^32, good enough to drive tests. */
export function mulberry32(seed: number): RandomFn {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class SeededRandom {
  readonly seed: number;
  private readonly source: RandomFn;

  constructor(seed: number) {
    this.seed = seed >>> 0;
    this.source = mulberry32(this.seed);
  }

  /** A number in [0, 1). */
  next(): number {
    return this.source();
  }

  /** An integer in [0, maxExclusive). */
  int(maxExclusive: number): number {
    return Math.floor(this.source() * maxExclusive);
  }

  /** An integer in [min, max] (both inclusive). */
  intBetween(min: number, max: number): number {
    return min + Math.floor(this.source() * (max - min + 1));
  }

  /** True with probability p. */
  bool(p = 0.5): boolean {
    return this.source() < p;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error('SeededRandom.pick: empty array');
    return items[this.int(items.length)] as T;
  }

  /** Fills buf with random bytes. */
  fill(buf: Uint8Array): Uint8Array {
    for (let i = 0; i < buf.length; i++) buf[i] = (this.source() * 256) | 0;
    return buf;
  }

  /** An independent generator derived from this one (for sub-streams that must not shift others). */
  fork(): SeededRandom {
    return new SeededRandom((this.source() * 4294967296) >>> 0);
  }

  /** This generator as a plain function (shares state with it). */
  asFunction(): RandomFn {
    return this.source;
  }
}

/** Accepts either form so callers can pass Math.random, a RandomFn or a SeededRandom. */
export type RandomSource = RandomFn | SeededRandom;

export function toRandomFn(source: RandomSource): RandomFn {
  return typeof source === 'function' ? source : source.asFunction();
}
