/**
 * MemoryCatalogStore: a CatalogStore in a Map, for tests and for tools that need a scratch
 * catalog. Same semantics as the LevelDB store (the conformance suite runs both), no durability.
 */
import type {
  CatalogCompare,
  CatalogEntry,
  CatalogEvent,
  CatalogListOptions,
  CatalogOp,
  CatalogPage,
  CatalogStore,
  CatalogTxnResult,
  CatalogWatch,
} from '../core/catalog-store.js';
import { StorageError } from '../core/errors.js';
import { checkGetMany, checkKey, checkTxn, jsonCopy, pageLimit, WatchHub } from './catalog-common.js';

/** Index of the first key >= `key` in a sorted array. */
function lowerBound(keys: readonly string[], key: string): number {
  let lo = 0;
  let hi = keys.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((keys[mid] as string) < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

export class MemoryCatalogStore implements CatalogStore {
  private readonly entries = new Map<string, CatalogEntry>();
  /** The keys of `entries`, sorted (JavaScript string order = UTF-16 code units). */
  private readonly sortedKeys: string[] = [];
  private currentRevision = 0;
  private closed = false;
  private readonly hub = new WatchHub();

  async get(key: string): Promise<CatalogEntry | undefined> {
    this.checkOpen();
    checkKey(key);
    const entry = this.entries.get(key);
    return entry === undefined ? undefined : jsonCopy(entry);
  }

  async getMany(keys: readonly string[]): Promise<(CatalogEntry | undefined)[]> {
    this.checkOpen();
    checkGetMany(keys);
    return keys.map((key) => {
      const entry = this.entries.get(key);
      return entry === undefined ? undefined : jsonCopy(entry);
    });
  }

  async list(prefix: string, options?: CatalogListOptions): Promise<CatalogPage> {
    this.checkOpen();
    const limit = pageLimit(options);
    let index = lowerBound(this.sortedKeys, prefix);
    if (options?.after !== undefined && options.after >= prefix) {
      index = lowerBound(this.sortedKeys, options.after);
      if (this.sortedKeys[index] === options.after) index++;
    }
    const page: CatalogEntry[] = [];
    for (; index < this.sortedKeys.length && page.length < limit; index++) {
      const key = this.sortedKeys[index] as string;
      if (!key.startsWith(prefix)) break;
      page.push(jsonCopy(this.entries.get(key) as CatalogEntry));
    }
    const more = index < this.sortedKeys.length && (this.sortedKeys[index] as string).startsWith(prefix);
    const last = page.at(-1);
    return more && last !== undefined ? { entries: page, nextAfter: last.key } : { entries: page };
  }

  async txn(compares: readonly CatalogCompare[], ops: readonly CatalogOp[]): Promise<CatalogTxnResult> {
    this.checkOpen();
    checkTxn(compares, ops);
    const failedKeys = compares
      .filter((c) => (this.entries.get(c.key)?.modRevision ?? 0) !== c.modRevision)
      .map((c) => c.key);
    if (failedKeys.length > 0) return { succeeded: false, revision: this.currentRevision, failedKeys };
    if (ops.length === 0) return { succeeded: true, revision: this.currentRevision, failedKeys: [] };
    const modRevision = ++this.currentRevision;
    const events: CatalogEvent[] = [];
    for (const op of ops) {
      if (op.type === 'put') {
        const entry: CatalogEntry = { key: op.key, value: jsonCopy(op.value), modRevision };
        if (!this.entries.has(op.key)) this.sortedKeys.splice(lowerBound(this.sortedKeys, op.key), 0, op.key);
        this.entries.set(op.key, entry);
        events.push({ type: 'put', entry: jsonCopy(entry) });
      } else if (this.entries.delete(op.key)) {
        this.sortedKeys.splice(lowerBound(this.sortedKeys, op.key), 1);
        events.push({ type: 'delete', key: op.key, modRevision });
      }
    }
    this.hub.publish(events);
    return { succeeded: true, revision: modRevision, failedKeys: [] };
  }

  async revision(): Promise<number> {
    this.checkOpen();
    return this.currentRevision;
  }

  watch(prefix: string, onEvent: (event: CatalogEvent) => void): CatalogWatch {
    this.checkOpen();
    return this.hub.watch(prefix, onEvent);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.hub.clear();
  }

  private checkOpen(): void {
    if (this.closed) throw new StorageError('INVALID_ARGUMENT', 'the catalog store is closed');
  }
}
