/**
 * KeyLock: one change at a time per object key. A put, a delete, a migration step, a promotion or
 * a cache eviction of one key never interleave, so each sees the object and its record as the
 * previous one left them. Reads take no lock: they try the hot copy, then the cold one, and every
 * change keeps at least one of them whole.
 */
export class KeyLock {
  private readonly tails = new Map<string, Promise<void>>();

  async with<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(key);
    let release!: () => void;
    const mine = new Promise<void>((resolve) => (release = resolve));
    this.tails.set(key, mine);
    try {
      if (previous !== undefined) await previous;
      return await fn();
    } finally {
      if (this.tails.get(key) === mine) this.tails.delete(key);
      release();
    }
  }
}
