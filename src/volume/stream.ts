/**
 * ManagedStream: an async iterator of byte chunks that owns resources (open images, a file
 * descriptor, a hold on a volume) and releases them exactly once: when the stream ends, fails, or
 * the consumer calls return() — also when it never started iterating. A consumer that stops early
 * must call return() (for await ... break does; Readable.from() does when destroyed).
 */
export class ManagedStream implements AsyncIterableIterator<Uint8Array> {
  private finished = false;
  private cleanupDone: Promise<void> | undefined;

  constructor(
    private readonly source: AsyncGenerator<Uint8Array, void, undefined>,
    private readonly cleanup: () => Promise<void>,
  ) {}

  [Symbol.asyncIterator](): this {
    return this;
  }

  async next(): Promise<IteratorResult<Uint8Array, undefined>> {
    if (this.finished) return { done: true, value: undefined };
    try {
      const result = await this.source.next();
      if (result.done) {
        await this.finish();
        return { done: true, value: undefined };
      }
      return result;
    } catch (err) {
      await this.finish().catch(() => {});
      throw err;
    }
  }

  async return(): Promise<IteratorResult<Uint8Array, undefined>> {
    try {
      await this.source.return(undefined);
    } finally {
      await this.finish();
    }
    return { done: true, value: undefined };
  }

  async throw(err?: unknown): Promise<IteratorResult<Uint8Array, undefined>> {
    await this.return();
    throw err;
  }

  /** Releases the resources without iterating (same as return()). */
  async close(): Promise<void> {
    await this.return();
  }

  private finish(): Promise<void> {
    if (!this.cleanupDone) {
      this.finished = true;
      this.cleanupDone = this.cleanup();
    }
    return this.cleanupDone;
  }
}
