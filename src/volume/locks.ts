/**
 * KeyedMutex: FIFO async locks by name ("vol:<id>", "pool:<name>"). run() takes several keys at
 * once, always in sorted order, so two callers that need overlapping sets cannot deadlock.
 */
export class KeyedMutex {
  private readonly tails = new Map<string, Promise<void>>();

  async run<T>(keys: readonly string[], fn: () => Promise<T>): Promise<T> {
    const sorted = [...new Set(keys)].sort();
    const releases: (() => void)[] = [];
    try {
      for (const key of sorted) releases.push(await this.acquire(key));
      return await fn();
    } finally {
      for (const release of releases.reverse()) release();
    }
  }

  /** True while someone holds or waits for key (for tests and diagnostics). */
  isLocked(key: string): boolean {
    return this.tails.has(key);
  }

  private async acquire(key: string): Promise<() => void> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((resolve) => (release = resolve));
    this.tails.set(key, mine);
    await previous;
    return () => {
      if (this.tails.get(key) === mine) this.tails.delete(key);
      release();
    };
  }
}
