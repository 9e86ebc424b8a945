/**
 * CopyTurns: at most a fixed number of copies of one file on the thread pool at once, the rest
 * waiting in arrival order. The copies that need no inode lock (hole-copy-writes.ts,
 * mapped-overwrites.ts) would otherwise take as many pool threads as requests are in flight:
 * more copies at once than CPUs only contend in the page allocator, and the pool is shared with
 * every other file's I/O.
 */
/**
 * Kernel copies in flight for one file (hole copies and mapped overwrites alike); the rest wait
 * their turn. Measured with hole copies (`strata img bench`, 1 MiB allocating writes, QD 32, tmpfs,
 * two CPUs; 3,000 writes, three rounds each, quiet): 2 at once 1.18-1.57 s, 4 0.91-1.09, 8
 * 0.93-0.97, every write at once (up to 32) 1.02-1.36, the pool's pwrites 1.18-1.35; beside two
 * CPU-bound processes 8 1.33-1.92 s, 16 1.33-1.80, the pool 1.58-2.66, qemu-img 1.62-2.23. More
 * copies at once than CPUs only add contention in the page allocator; fewer than 8 leave the CPUs
 * idle between a copy's end and the next one's start. Overwrites take the same count (not tuned
 * apart; bench/RESULTS.md, issue 13).
 */
export const KERNEL_COPIES_IN_FLIGHT = 8;

/** Writes bufs (back to back) at hostOffset through the pool: the way every byte a copy left goes. */
export type WriteRest = (bufs: readonly Uint8Array[], hostOffset: number, lengthBytes: number) => Promise<void>;

export class CopyTurns {
  private running = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(private readonly limit: number = KERNEL_COPIES_IN_FLIGHT) {}

  /** Runs copy once a turn is free; the turn is given back when it settles. */
  async run<T>(copy: () => Promise<T>): Promise<T> {
    if (this.running >= this.limit) await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.running++;
    try {
      return await copy();
    } finally {
      this.running--;
      this.waiting.shift()?.();
    }
  }
}
