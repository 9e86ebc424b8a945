/**
 * CatalogStore: the metadata seam. A sorted map of string keys to JSON values with a revision per
 * change, read by key or by paged prefix, changed only by transactions that first compare, and
 * watched by prefix. LevelDB implements it for one daemon (src/meta/level); etcd will for a
 * cluster, which is why the shape is etcd's (mod revisions, compare-and-swap, watch), not LevelDB's.
 *
 * Every implementation runs test/conformance/catalog-store.ts.
 */

/** A JSON value as stored: what JSON.parse(JSON.stringify(x)) gives back. */
export type CatalogValue = null | boolean | number | string | CatalogValue[] | { [key: string]: CatalogValue };

export interface CatalogEntry {
  readonly key: string;
  readonly value: CatalogValue;
  /** The store revision of the transaction that last wrote this key (> 0). */
  readonly modRevision: number;
}

/**
 * A condition a transaction checks before it writes. `modRevision: 0` means the key must not
 * exist; any other number means the key must exist and have been written last at that revision.
 */
export interface CatalogCompare {
  readonly key: string;
  readonly modRevision: number;
}

export type CatalogOp =
  | { readonly type: 'put'; readonly key: string; readonly value: CatalogValue }
  | { readonly type: 'delete'; readonly key: string };

export interface CatalogTxnResult {
  /** False when a compare failed; then nothing was written. */
  readonly succeeded: boolean;
  /** The store's revision after the transaction (unchanged when it failed or wrote nothing). */
  readonly revision: number;
  /** The keys whose compare failed (empty on success). */
  readonly failedKeys: readonly string[];
}

export interface CatalogListOptions {
  /** Start strictly after this key (the previous page's `nextAfter`). */
  readonly after?: string;
  /** At most this many entries (default and maximum: CATALOG_PAGE_MAX). */
  readonly limit?: number;
}

export interface CatalogPage {
  readonly entries: readonly CatalogEntry[];
  /** Pass as `after` for the next page; absent on the last page. */
  readonly nextAfter?: string;
}

export type CatalogEvent =
  | { readonly type: 'put'; readonly entry: CatalogEntry }
  | { readonly type: 'delete'; readonly key: string; readonly modRevision: number };

export interface CatalogWatch {
  /** Stops the callbacks; idempotent. */
  cancel(): void;
}

/** The largest page a list call returns: no call reads a whole table to answer one question. */
export const CATALOG_PAGE_MAX = 1000;

/**
 * The most keys one getMany call reads: a bounded request for every store (etcd caps the ops of
 * one request too). Callers with more keys split them (Table.getMany does).
 */
export const CATALOG_GET_MANY_MAX = 1000;

export interface CatalogStore {
  get(key: string): Promise<CatalogEntry | undefined>;
  /**
   * The entries of `keys` in the same order (undefined where a key is absent; a key listed twice
   * is answered twice), each exactly as get would return it. One read for the batch: the dedup
   * index resolves a call's chunks this way instead of one get per chunk. At most
   * CATALOG_GET_MANY_MAX keys (INVALID_ARGUMENT beyond).
   */
  getMany(keys: readonly string[]): Promise<(CatalogEntry | undefined)[]>;
  /** Entries whose key starts with `prefix`, in key order, a page at a time. */
  list(prefix: string, options?: CatalogListOptions): Promise<CatalogPage>;
  /**
   * Applies `ops` atomically and durably (on disk before it resolves) if every compare holds; a
   * key may appear in at most one op. All ops of a transaction get the same new revision.
   */
  txn(compares: readonly CatalogCompare[], ops: readonly CatalogOp[]): Promise<CatalogTxnResult>;
  /** The revision of the last committed transaction (0 for an empty store). */
  revision(): Promise<number>;
  /**
   * Calls `onEvent` for every change under `prefix` committed after this call, in commit order.
   * Callbacks run after the transaction resolved for its writer.
   */
  watch(prefix: string, onEvent: (event: CatalogEvent) => void): CatalogWatch;
  close(): Promise<void>;
}

/** Every entry under a prefix, page by page (for tools and recovery; not for request paths). */
export async function* listAll(store: CatalogStore, prefix: string): AsyncGenerator<CatalogEntry> {
  let after: string | undefined;
  for (;;) {
    const page = await store.list(prefix, after === undefined ? {} : { after });
    yield* page.entries;
    if (page.nextAfter === undefined) return;
    after = page.nextAfter;
  }
}
