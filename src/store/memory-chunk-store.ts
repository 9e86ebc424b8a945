/**
 * MemoryChunkStore: a ChunkStore in a Map, for tests and as the reference the conformance suite
 * holds every other implementation to. Stores copies, so callers may reuse their buffers.
 */
import { CHUNK_LIST_PAGE_MAX, chunkStoreClosed, type ChunkListPage, type ChunkStore, type ChunkStoreCallOptions } from '../core/chunk-store.js';
import { StorageError } from '../core/errors.js';

/** Rejects with CANCELLED when the call's signal has aborted (checked before any effect). */
export function throwIfAborted(options: ChunkStoreCallOptions | undefined, what: string): void {
  if (options?.signal?.aborted) throw new StorageError('CANCELLED', `${what} was cancelled`);
}

export function checkChunkKey(key: string): void {
  if (typeof key !== 'string' || key.length === 0 || key.length > 1024 || key.includes('\0')) {
    throw new StorageError('INVALID_ARGUMENT', `chunk key ${JSON.stringify(key)} is not 1 to 1024 characters without NUL`);
  }
}

/** Throws INVALID_ARGUMENT unless offset and length are whole, non-negative byte counts. */
export function checkChunkRange(key: string, offsetBytes: number, lengthBytes: number): void {
  if (!Number.isSafeInteger(offsetBytes) || offsetBytes < 0 || !Number.isSafeInteger(lengthBytes) || lengthBytes < 0) {
    throw new StorageError('INVALID_ARGUMENT', `range ${offsetBytes}+${lengthBytes} of ${key} is not a byte range`);
  }
}

/** A list call's page size: `limit` capped at CHUNK_LIST_PAGE_MAX; INVALID_ARGUMENT when not positive. */
export function chunkListLimit(limit: number | undefined): number {
  const capped = Math.min(limit ?? CHUNK_LIST_PAGE_MAX, CHUNK_LIST_PAGE_MAX);
  if (!Number.isSafeInteger(capped) || capped < 1) throw new StorageError('INVALID_ARGUMENT', `list limit ${capped} is not a positive whole number`);
  return capped;
}

export class MemoryChunkStore implements ChunkStore {
  private readonly objects = new Map<string, Uint8Array>();
  private closed = false;

  /** Refuses a call once the store is closed. */
  private checkOpen(what: string): void {
    if (this.closed) throw chunkStoreClosed('in memory', what);
  }

  /** Drops the objects; later calls fail. */
  async close(): Promise<void> {
    this.closed = true;
    this.objects.clear();
  }

  async get(key: string, options?: ChunkStoreCallOptions): Promise<Uint8Array | undefined> {
    this.checkOpen(`get ${key}`);
    checkChunkKey(key);
    throwIfAborted(options, `get ${key}`);
    const data = this.objects.get(key);
    return data === undefined ? undefined : new Uint8Array(data);
  }

  async getRange(key: string, offsetBytes: number, lengthBytes: number, options?: ChunkStoreCallOptions): Promise<Uint8Array | undefined> {
    this.checkOpen(`get ${key}`);
    checkChunkKey(key);
    checkChunkRange(key, offsetBytes, lengthBytes);
    throwIfAborted(options, `get ${key}`);
    const data = this.objects.get(key);
    return data === undefined ? undefined : Uint8Array.prototype.slice.call(data, offsetBytes, offsetBytes + lengthBytes);
  }

  getRangeNow(key: string, offsetBytes: number, target: Uint8Array): boolean {
    if (this.closed) return false;
    const data = this.objects.get(key);
    if (data === undefined || !Number.isSafeInteger(offsetBytes) || offsetBytes < 0 || offsetBytes + target.length > data.length) return false;
    target.set(data.subarray(offsetBytes, offsetBytes + target.length));
    return true;
  }

  async put(key: string, data: Uint8Array, options?: ChunkStoreCallOptions): Promise<void> {
    this.checkOpen(`put ${key}`);
    checkChunkKey(key);
    throwIfAborted(options, `put ${key}`);
    this.objects.set(key, new Uint8Array(data));
  }

  async putIfAbsent(key: string, data: Uint8Array, options?: ChunkStoreCallOptions): Promise<boolean> {
    this.checkOpen(`put ${key}`);
    checkChunkKey(key);
    throwIfAborted(options, `put ${key}`);
    if (this.objects.has(key)) return false;
    this.objects.set(key, new Uint8Array(data));
    return true;
  }

  async delete(key: string, options?: ChunkStoreCallOptions): Promise<void> {
    this.checkOpen(`delete ${key}`);
    checkChunkKey(key);
    throwIfAborted(options, `delete ${key}`);
    this.objects.delete(key);
  }

  async list(prefix: string, options?: ChunkStoreCallOptions & { after?: string; limit?: number }): Promise<ChunkListPage> {
    this.checkOpen(`list ${prefix}`);
    throwIfAborted(options, `list ${prefix}`);
    const limit = chunkListLimit(options?.limit);
    const after = options?.after;
    const keys = [...this.objects.keys()]
      .filter((key) => key.startsWith(prefix) && (after === undefined || key > after))
      .sort();
    const page = keys.slice(0, limit);
    return keys.length > limit ? { keys: page, nextAfter: page.at(-1) as string } : { keys: page };
  }
}
