/**
 * A token bucket on a virtual time line: `level` tokens, refilled at `ratePerSecond` up to
 * `capacity`. A request costing more than the capacity is let through once the bucket is full and
 * leaves it in debt (a 1 MiB write under a 512 KiB bucket still goes, and the time it owes is
 * paid by whatever follows), so no request size can be refused or starve.
 */

/** Float slack: refills computed at the exact instant a wait ends may fall a hair short. */
const EPSILON = 1e-9;

export class TokenBucket {
  private level: number;
  private lastMs: number;

  constructor(
    readonly ratePerSecond: number,
    readonly capacity: number,
    nowMs: number,
  ) {
    // A new bucket (a new volume export, limits just changed) starts full.
    this.level = capacity;
    this.lastMs = nowMs;
  }

  private refill(nowMs: number): void {
    if (nowMs > this.lastMs) {
      this.level = Math.min(this.capacity, this.level + ((nowMs - this.lastMs) * this.ratePerSecond) / 1000);
      this.lastMs = nowMs;
    }
  }

  /** Milliseconds until a request of `cost` may take its tokens (0: now). */
  waitMs(cost: number, nowMs: number): number {
    this.refill(nowMs);
    const need = Math.min(cost, this.capacity);
    const missing = need - this.level;
    return missing <= EPSILON * Math.max(1, need) ? 0 : (missing * 1000) / this.ratePerSecond;
  }

  /** Takes a request's tokens (after waitMs said 0). */
  take(cost: number, nowMs: number): void {
    this.refill(nowMs);
    this.level -= cost;
  }
}
