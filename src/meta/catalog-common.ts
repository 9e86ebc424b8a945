/**
 * What every CatalogStore implementation shares: argument checks (so each one refuses the same
 * bad transactions with the same errors), page bounds, and the watch fan-out.
 */
import {
  CATALOG_GET_MANY_MAX,
  CATALOG_PAGE_MAX,
  type CatalogCompare,
  type CatalogEvent,
  type CatalogListOptions,
  type CatalogOp,
  type CatalogWatch,
} from '../core/catalog-store.js';
import { StorageError } from '../core/errors.js';

/** Keys are non-empty strings without NUL (LevelDB and etcd both sort them bytewise). */
export function checkKey(key: unknown): asserts key is string {
  if (typeof key !== 'string' || key.length === 0 || key.includes('\0')) {
    throw new StorageError('INVALID_ARGUMENT', `catalog key ${JSON.stringify(key)} is not a non-empty string without NUL`);
  }
}

/** The keys of one getMany call: each a valid key, at most CATALOG_GET_MANY_MAX of them. */
export function checkGetMany(keys: readonly string[]): void {
  if (keys.length > CATALOG_GET_MANY_MAX) {
    throw new StorageError('INVALID_ARGUMENT', `getMany of ${keys.length} keys: at most ${CATALOG_GET_MANY_MAX} per call; split the keys into batches`);
  }
  for (const key of keys) checkKey(key);
}

export function checkTxn(compares: readonly CatalogCompare[], ops: readonly CatalogOp[]): void {
  for (const compare of compares) {
    checkKey(compare.key);
    if (!Number.isSafeInteger(compare.modRevision) || compare.modRevision < 0) {
      throw new StorageError('INVALID_ARGUMENT', `compare on ${compare.key}: modRevision ${compare.modRevision} is not a revision`);
    }
  }
  const seen = new Set<string>();
  for (const op of ops) {
    checkKey(op.key);
    if (seen.has(op.key)) throw new StorageError('INVALID_ARGUMENT', `a transaction names the key ${op.key} twice`);
    seen.add(op.key);
    if (op.type === 'put' && op.value === undefined) {
      throw new StorageError('INVALID_ARGUMENT', `put of ${op.key}: undefined is not a JSON value`);
    }
  }
}

/** The page size a list call uses. */
export function pageLimit(options: CatalogListOptions | undefined): number {
  const limit = options?.limit ?? CATALOG_PAGE_MAX;
  if (!Number.isSafeInteger(limit) || limit < 1) {
    throw new StorageError('INVALID_ARGUMENT', `list limit ${limit} is not a positive whole number`);
  }
  return Math.min(limit, CATALOG_PAGE_MAX);
}

/** A deep copy through JSON: callers can never alias what the store holds. */
export function jsonCopy<T>(value: T): T {
  return JSON.parse(JSON.stringify(value)) as T;
}

interface Watcher {
  readonly prefix: string;
  readonly onEvent: (event: CatalogEvent) => void;
  cancelled: boolean;
}

/** Fans committed changes out to the watchers whose prefix matches, after the commit. */
export class WatchHub {
  private readonly watchers = new Set<Watcher>();

  watch(prefix: string, onEvent: (event: CatalogEvent) => void): CatalogWatch {
    const watcher: Watcher = { prefix, onEvent, cancelled: false };
    this.watchers.add(watcher);
    return {
      cancel: () => {
        watcher.cancelled = true;
        this.watchers.delete(watcher);
      },
    };
  }

  /**
   * Delivers on a later turn of the event loop (setImmediate keeps commit order), so a watcher
   * never runs inside the writer's transaction nor before the writer has seen its result.
   */
  publish(events: readonly CatalogEvent[]): void {
    if (events.length === 0 || this.watchers.size === 0) return;
    const targets = [...this.watchers];
    setImmediate(() => {
      for (const event of events) {
        const key = event.type === 'put' ? event.entry.key : event.key;
        for (const watcher of targets) {
          if (!watcher.cancelled && key.startsWith(watcher.prefix)) watcher.onEvent(event);
        }
      }
    });
  }

  clear(): void {
    for (const watcher of this.watchers) watcher.cancelled = true;
    this.watchers.clear();
  }
}
