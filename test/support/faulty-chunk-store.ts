/**
 * FaultyChunkStore: a ChunkStore wrapper that fails, stalls or corrupts calls on command. It
 * stands in for a failing server (an S3 endpoint that errors, hangs, or hands back other bytes
 * than it was given) in tests of what sits on top of a ChunkStore, such as the tiered store; the
 * real S3 client's fault tests run against a real server. It delegates to any ChunkStore.
 */
import type { ChunkListPage, ChunkStore, ChunkStoreCallOptions } from '../../src/core/chunk-store.js';
import { StorageError } from '../../src/core/errors.js';

export type ChunkStoreOperation = 'get' | 'getRange' | 'put' | 'putIfAbsent' | 'delete' | 'list';
export const CHUNK_STORE_OPERATIONS: readonly ChunkStoreOperation[] = ['get', 'getRange', 'put', 'putIfAbsent', 'delete', 'list'];

/**
 * - fail: the call rejects with IO_ERROR (a server that answers with errors);
 * - stall: the call hangs until its signal aborts, then rejects with CANCELLED (a server that
 *   stopped answering); with `ignoreSignal` it hangs until heal() (a client that never gives up);
 * - corrupt: put stores the bytes with the first one flipped; reads return it flipped.
 */
export type ChunkStoreFault = { readonly kind: 'fail' } | { readonly kind: 'stall'; readonly ignoreSignal?: boolean } | { readonly kind: 'corrupt' };

function flipped(data: Uint8Array): Uint8Array {
  const out = data.length === 0 ? new Uint8Array(1) : data.slice();
  out[0] = (out[0] as number) ^ 0xff;
  return out;
}

export class FaultyChunkStore implements ChunkStore {
  private readonly faults = new Map<ChunkStoreOperation, ChunkStoreFault>();
  private readonly releases = new Set<() => void>();
  /** Calls made, by operation (faulty or not). */
  readonly calls: Record<ChunkStoreOperation, number> = { get: 0, getRange: 0, put: 0, putIfAbsent: 0, delete: 0, list: 0 };
  /** Calls hanging in a stall right now. */
  stalled = 0;
  /** Every call in the order made, as "<operation> <key>" (for ordering assertions). */
  readonly log: string[] = [];
  /** Calls in the inner store right now, and the most at once. */
  inFlight = 0;
  inFlightMax = 0;

  constructor(readonly inner: ChunkStore) {}

  /** Injects `fault` into the given operations (all of them when none are given). */
  inject(fault: ChunkStoreFault, operations: readonly ChunkStoreOperation[] = CHUNK_STORE_OPERATIONS): void {
    for (const operation of operations) this.faults.set(operation, fault);
  }

  /** Removes every fault; stalled calls that ignore their signal go on to the inner store. */
  heal(): void {
    this.faults.clear();
    for (const release of this.releases) release();
    this.releases.clear();
  }

  async get(key: string, options?: ChunkStoreCallOptions): Promise<Uint8Array | undefined> {
    const fault = await this.enter('get', key, options);
    const data = await this.track(() => this.inner.get(key, options));
    return fault?.kind === 'corrupt' && data !== undefined ? flipped(data) : data;
  }

  async getRange(key: string, offsetBytes: number, lengthBytes: number, options?: ChunkStoreCallOptions): Promise<Uint8Array | undefined> {
    const fault = await this.enter('getRange', key, options);
    const data = await this.track(() => this.inner.getRange(key, offsetBytes, lengthBytes, options));
    return fault?.kind === 'corrupt' && data !== undefined && data.length > 0 ? flipped(data) : data;
  }

  async put(key: string, data: Uint8Array, options?: ChunkStoreCallOptions): Promise<void> {
    const fault = await this.enter('put', key, options);
    return this.track(() => this.inner.put(key, fault?.kind === 'corrupt' ? flipped(data) : data, options));
  }

  async putIfAbsent(key: string, data: Uint8Array, options?: ChunkStoreCallOptions): Promise<boolean> {
    const fault = await this.enter('putIfAbsent', key, options);
    return this.track(() => this.inner.putIfAbsent(key, fault?.kind === 'corrupt' ? flipped(data) : data, options));
  }

  async delete(key: string, options?: ChunkStoreCallOptions): Promise<void> {
    await this.enter('delete', key, options);
    return this.track(() => this.inner.delete(key, options));
  }

  async list(prefix: string, options?: ChunkStoreCallOptions & { after?: string; limit?: number }): Promise<ChunkListPage> {
    await this.enter('list', prefix, options);
    return this.track(() => this.inner.list(prefix, options));
  }

  /** Closes the inner store (no fault applies: a close is never refused). */
  close(): Promise<void> {
    return this.inner.close();
  }

  /** Counts the call and applies its fault: throws for fail, hangs for stall, returns corrupt. */
  private async enter(operation: ChunkStoreOperation, key: string, options?: ChunkStoreCallOptions): Promise<ChunkStoreFault | undefined> {
    this.calls[operation]++;
    this.log.push(`${operation} ${key}`);
    const fault = this.faults.get(operation);
    if (fault?.kind === 'fail') throw new StorageError('IO_ERROR', `injected: ${operation} ${key} failed (the server answered with an error)`);
    if (fault?.kind === 'stall') await this.stall(operation, key, fault.ignoreSignal === true ? undefined : options?.signal);
    return fault;
  }

  private async track<T>(call: () => Promise<T>): Promise<T> {
    this.inFlightMax = Math.max(this.inFlightMax, ++this.inFlight);
    try {
      return await call();
    } finally {
      this.inFlight--;
    }
  }

  /** Hangs until released by heal() or until `signal` aborts (counted in `stalled` until then). */
  private stall(operation: ChunkStoreOperation, key: string, signal: AbortSignal | undefined): Promise<void> {
    const cancelled = () => new StorageError('CANCELLED', `${operation} ${key} was cancelled`);
    if (signal?.aborted) return Promise.reject(cancelled());
    this.stalled++;
    return new Promise<void>((resolve, reject) => {
      const release = () => {
        this.stalled--;
        resolve();
      };
      this.releases.add(release);
      signal?.addEventListener('abort', () => {
        if (!this.releases.delete(release)) return;
        this.stalled--;
        reject(cancelled());
      }, { once: true });
    });
  }
}
