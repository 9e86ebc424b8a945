/**
 * CopyTurns: at most a fixed number of copies of one file on the thread pool at once, the rest
 * waiting in arrival order. The copies that need no inode lock (hole-copy-writes.ts,
 * mapped-overwrites.ts) would otherwise take as many pool threads as requests are in flight:
 * more copies at once than CPUs only contend in the page allocator, and the pool is shared with
 * every other file's I/O.
 */
/** Writes bufs (back to back) at hostOffset through the pool: the way every byte a copy left goes. */
export type WriteRest = (bufs: readonly Uint8Array[], hostOffset: number, lengthBytes: number) => Promise<void>;

export class CopyTurns {
  private running = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(private readonly limit: number) {}

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
