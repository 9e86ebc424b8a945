/**
 * ChunkStore: immutable objects by key (content-addressed chunks, packs, S3 object parts). Memory,
 * a local folder and S3 implement it; dedup and tiering wrap another one (nbdkit-filter style).
 * Objects are written whole and never changed in place, which is what lets S3 hold them.
 *
 * Every implementation runs test/conformance/chunk-store.ts.
 */
import { StorageError } from './errors.js';

/**
 * Why a read happens. 'guest' (the default): data someone asked for. 'maintenance': a scrub or GC
 * reading every pack; a store that ranks objects by their reads (TieredChunkStore) must not count
 * it, or each pass would make every pack look recently read and pull cold ones back. Stores that
 * rank nothing ignore it.
 */
export type ChunkReadPurpose = 'guest' | 'maintenance';

export interface ChunkStoreCallOptions {
  /** Aborts the call: it rejects with StorageError CANCELLED and leaves no partial object. */
  readonly signal?: AbortSignal;
  /** For get and getRange: why the read happens (default 'guest'); other calls ignore it. */
  readonly readPurpose?: ChunkReadPurpose;
  /**
   * For get and getRange: the caller only reads the result, never changes it, and lets it go
   * soon (it copies what it keeps), so the store may answer a view of bytes it shares with other
   * reads, and of a larger buffer, instead of a copy of its own. Default false: the result is
   * the caller's to change.
   */
  readonly borrowResult?: boolean;
  /**
   * For getRange: an array the store may write the range's bytes into, answering a view of its
   * first bytes instead of an array of its own (a caller that reuses its arrays spares an
   * allocation per read). At least `lengthBytes` long; what it holds after a failed call is
   * undefined. Stores that do not support it ignore it.
   */
  readonly into?: Uint8Array;
}

export interface ChunkListPage {
  /** Keys in ascending order. */
  readonly keys: readonly string[];
  /** Pass as `after` for the next page; absent on the last page. */
  readonly nextAfter?: string;
}

export interface ChunkStore {
  /** The whole object, or undefined when there is none. */
  get(key: string, options?: ChunkStoreCallOptions): Promise<Uint8Array | undefined>;
  /**
   * `lengthBytes` bytes from `offsetBytes`; a range that runs past the object's end is cut short
   * (the result is shorter); undefined when there is no object.
   */
  getRange(key: string, offsetBytes: number, lengthBytes: number, options?: ChunkStoreCallOptions): Promise<Uint8Array | undefined>;
  /**
   * Optional: fills all of `target` with the object's bytes from `offsetBytes`, synchronously,
   * when that needs no waiting (the object is in memory, or open with those bytes in the page
   * cache), and answers true; false otherwise (not at hand, missing, shorter, any failure), and
   * then nothing is promised about `target`: the caller uses getRange, which reports errors.
   * A 4 KiB read of a sealed layer thus costs no promise and no thread-pool round trip.
   */
  getRangeNow?(key: string, offsetBytes: number, target: Uint8Array): boolean;
  /**
   * Stores the object durably, replacing any object of that key. Once the promise resolves,
   * `data` is the caller's again (it may be reused): a store that keeps the bytes keeps a copy.
   */
  put(key: string, data: Uint8Array, options?: ChunkStoreCallOptions): Promise<void>;
  /** Stores the object unless one exists; true when this call stored it. */
  putIfAbsent(key: string, data: Uint8Array, options?: ChunkStoreCallOptions): Promise<boolean>;
  /** Removes the object; removing a missing one is not an error. */
  delete(key: string, options?: ChunkStoreCallOptions): Promise<void>;
  /** A page of keys that start with `prefix`, after `after`. */
  list(prefix: string, options?: ChunkStoreCallOptions & { after?: string; limit?: number }): Promise<ChunkListPage>;
  /**
   * Lets go of what the store holds (open files and folders, connections, timers); idempotent.
   * Calls made after it reject with IO_ERROR saying the store is closed (getRangeNow answers
   * false); calls running when it is called finish or fail (an S3 store's connections are cut).
   * A store that wraps another one closes it only when it says so (the wrapped store may have
   * other users).
   */
  close(): Promise<void>;
}

/** What a call on a closed store rejects with (ChunkStore.close). */
export function chunkStoreClosed(store: string, what: string): StorageError {
  return new StorageError('IO_ERROR', `${what}: the chunk store ${store} is closed`);
}

/** The most keys one list call returns (S3's ListObjectsV2 maximum). */
export const CHUNK_LIST_PAGE_MAX = 1000;
