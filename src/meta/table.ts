/**
 * Tables over a CatalogStore: records of one kind under `<table>/<id>`, each checked against the
 * table's schema when read, with unique secondary indexes (`<table>.<index>/<value>` -> id) kept
 * in the same transaction as the record. Finding a volume by pool and name is then one index read
 * and one get, never a scan; two writers that race for the same name cannot both win (the index
 * key is created with a modRevision-0 compare).
 */
import { CATALOG_GET_MANY_MAX, type CatalogCompare, type CatalogOp, type CatalogStore, type CatalogValue } from '../core/catalog-store.js';
import { StorageError } from '../core/errors.js';

export interface TableSchema<T> {
  /** The key prefix: lower-case letters, digits and dashes. */
  readonly name: string;
  /** The record's id (stable across renames). */
  id(record: T): string;
  /** Checks a stored value and returns it typed; throws for a value that is not a T. */
  parse(value: CatalogValue): T;
  /** Unique indexes: index name -> the record's value in it (undefined: not indexed). */
  readonly indexes?: Readonly<Record<string, (record: T) => string | undefined>>;
}

export interface Versioned<T> {
  readonly record: T;
  /** The revision the record was read at: the compare for an update. */
  readonly modRevision: number;
}

/** Compares and ops gathered from one or more tables, committed together. */
export class TxnBuilder {
  readonly compares: CatalogCompare[] = [];
  readonly ops: CatalogOp[] = [];
  /** Index keys created in this transaction, to name the conflict when one already exists. */
  readonly claimedIndexKeys = new Map<string, string>();

  /**
   * Commits. When only claimed index keys failed their compare, ALREADY_EXISTS names them; when a
   * record read earlier changed, BUSY (the cause: any name conflict came with that change).
   */
  async commit(store: CatalogStore): Promise<number> {
    const result = await store.txn(this.compares, this.ops);
    if (result.succeeded) return result.revision;
    throw this.conflictOf(result.failedKeys) ?? new StorageError('BUSY', 'the catalog refused this operation without naming a key; try again');
  }

  /**
   * What a commit that failed on `failedKeys` throws, from those of them this transaction compares
   * (undefined when none is: a transaction merged into another's failed on the other's keys).
   */
  conflictOf(failedKeys: readonly string[]): StorageError | undefined {
    const compared = new Set(this.compares.map((compare) => compare.key));
    const mine = failedKeys.filter((key) => compared.has(key));
    if (mine.length === 0) return undefined;
    const taken = mine.map((key) => this.claimedIndexKeys.get(key));
    if (taken.every((what) => what !== undefined)) return new StorageError('ALREADY_EXISTS', `${taken.join(', ')} already exists`);
    return new StorageError('BUSY', `the catalog changed underneath this operation (${mine.join(', ')}); try again`);
  }
}

const NAME_PATTERN = /^[a-z][a-z0-9-]*$/;

export class Table<T> {
  constructor(
    private readonly store: CatalogStore,
    readonly schema: TableSchema<T>,
  ) {
    if (!NAME_PATTERN.test(schema.name)) throw new Error(`assertion failed: table name ${schema.name}`);
    for (const index of Object.keys(schema.indexes ?? {})) {
      if (!NAME_PATTERN.test(index)) throw new Error(`assertion failed: index name ${index}`);
    }
  }

  recordKey(id: string): string {
    return `${this.schema.name}/${id}`;
  }

  indexKey(index: string, value: string): string {
    return `${this.schema.name}.${index}/${value}`;
  }

  async get(id: string): Promise<Versioned<T> | undefined> {
    const entry = await this.store.get(this.recordKey(id));
    return entry === undefined ? undefined : { record: this.parse(entry.key, entry.value), modRevision: entry.modRevision };
  }

  /**
   * The records of `ids` in the same order (undefined where absent), each checked like get's:
   * one CatalogStore.getMany per CATALOG_GET_MANY_MAX ids, so any number of ids is fine.
   */
  async getMany(ids: readonly string[]): Promise<(Versioned<T> | undefined)[]> {
    const found: (Versioned<T> | undefined)[] = [];
    for (let start = 0; start < ids.length; start += CATALOG_GET_MANY_MAX) {
      const entries = await this.store.getMany(ids.slice(start, start + CATALOG_GET_MANY_MAX).map((id) => this.recordKey(id)));
      for (const entry of entries) {
        found.push(entry === undefined ? undefined : { record: this.parse(entry.key, entry.value), modRevision: entry.modRevision });
      }
    }
    return found;
  }

  /** The record whose index `index` has `value`, if any. */
  async lookup(index: string, value: string): Promise<Versioned<T> | undefined> {
    this.indexFunction(index);
    const entry = await this.store.get(this.indexKey(index, value));
    if (entry === undefined) return undefined;
    if (typeof entry.value !== 'string') throw this.damaged(entry.key, entry.value);
    return this.get(entry.value);
  }

  /** One page of records in id order. */
  async page(options: { after?: string; limit?: number } = {}): Promise<{ records: Versioned<T>[]; nextAfter?: string }> {
    const prefix = `${this.schema.name}/`;
    const page = await this.store.list(prefix, {
      ...(options.after === undefined ? {} : { after: this.recordKey(options.after) }),
      ...(options.limit === undefined ? {} : { limit: options.limit }),
    });
    const records = page.entries.map((entry) => ({ record: this.parse(entry.key, entry.value), modRevision: entry.modRevision }));
    return page.nextAfter === undefined ? { records } : { records, nextAfter: page.nextAfter.slice(prefix.length) };
  }

  /** Every record in id order, read a bounded page at a time (a whole-table walk: GC, scrub, usage). */
  async *records(): AsyncIterable<T> {
    let after: string | undefined;
    do {
      const page = await this.page(after === undefined ? {} : { after });
      for (const entry of page.records) yield entry.record;
      after = page.nextAfter;
    } while (after !== undefined);
  }

  /**
   * One page of the records whose id starts with `idPrefix`, in id order (`after`: an id). For
   * tables whose ids are built to be read by prefix ("the versions of this key").
   */
  async prefixPage(idPrefix: string, options: { after?: string; limit?: number } = {}): Promise<{ records: Versioned<T>[]; nextAfter?: string }> {
    const prefix = `${this.schema.name}/`;
    const page = await this.store.list(this.recordKey(idPrefix), {
      ...(options.after === undefined ? {} : { after: this.recordKey(options.after) }),
      ...(options.limit === undefined ? {} : { limit: options.limit }),
    });
    const records = page.entries.map((entry) => ({ record: this.parse(entry.key, entry.value), modRevision: entry.modRevision }));
    return page.nextAfter === undefined ? { records } : { records, nextAfter: page.nextAfter.slice(prefix.length) };
  }

  /**
   * One page of the records whose value in `index` starts with `valuePrefix`, in index order:
   * "the snapshots of volume v" is a bounded read of `snapshot.name/v/`, not a scan of the table.
   * `nextAfter` is an index value to pass as `after`. A record deleted between the index read and
   * its own read is skipped.
   */
  async indexPage(
    index: string,
    valuePrefix: string,
    options: { after?: string; limit?: number } = {},
  ): Promise<{ records: Versioned<T>[]; nextAfter?: string }> {
    this.indexFunction(index);
    const page = await this.store.list(this.indexKey(index, valuePrefix), {
      ...(options.after === undefined ? {} : { after: this.indexKey(index, options.after) }),
      ...(options.limit === undefined ? {} : { limit: options.limit }),
    });
    const ids = page.entries.map((entry) => {
      if (typeof entry.value !== 'string') throw this.damaged(entry.key, entry.value);
      return entry.value;
    });
    const records = (await Promise.all(ids.map((id) => this.get(id)))).filter((record) => record !== undefined);
    const next = page.nextAfter?.slice(this.indexKey(index, '').length);
    return next === undefined ? { records } : { records, nextAfter: next };
  }

  /** Every record whose value in `index` starts with `valuePrefix`, read a bounded page at a time. */
  async *indexScan(index: string, valuePrefix: string): AsyncGenerator<Versioned<T>> {
    let after: string | undefined;
    for (;;) {
      const page = await this.indexPage(index, valuePrefix, after === undefined ? {} : { after });
      yield* page.records;
      if (page.nextAfter === undefined) return;
      after = page.nextAfter;
    }
  }

  /**
   * Adds the writes of `record` to `txn`: the record (compared against `previous`, or created
   * only if absent) and its index entries (new values claimed only if free, stale ones dropped).
   */
  put(txn: TxnBuilder, record: T, previous?: Versioned<T>): void {
    const id = this.schema.id(record);
    if (previous !== undefined && this.schema.id(previous.record) !== id) {
      throw new Error(`assertion failed: ${this.schema.name} ${id} replaces a record with another id`);
    }
    txn.compares.push({ key: this.recordKey(id), modRevision: previous?.modRevision ?? 0 });
    txn.ops.push({ type: 'put', key: this.recordKey(id), value: record as unknown as CatalogValue });
    for (const [index, valueOf] of Object.entries(this.schema.indexes ?? {})) {
      const next = valueOf(record);
      const before = previous === undefined ? undefined : valueOf(previous.record);
      if (next === before) continue;
      if (before !== undefined) txn.ops.push({ type: 'delete', key: this.indexKey(index, before) });
      if (next !== undefined) {
        const key = this.indexKey(index, next);
        txn.compares.push({ key, modRevision: 0 });
        txn.ops.push({ type: 'put', key, value: id });
        txn.claimedIndexKeys.set(key, `${this.schema.name} ${index} ${JSON.stringify(next)}`);
      }
    }
  }

  /** Adds the removal of `current` and its index entries to `txn`. */
  delete(txn: TxnBuilder, current: Versioned<T>): void {
    const id = this.schema.id(current.record);
    txn.compares.push({ key: this.recordKey(id), modRevision: current.modRevision });
    txn.ops.push({ type: 'delete', key: this.recordKey(id) });
    for (const [index, valueOf] of Object.entries(this.schema.indexes ?? {})) {
      const value = valueOf(current.record);
      if (value !== undefined) txn.ops.push({ type: 'delete', key: this.indexKey(index, value) });
    }
  }

  private indexFunction(index: string): (record: T) => string | undefined {
    const fn = this.schema.indexes?.[index];
    if (fn === undefined) throw new Error(`assertion failed: table ${this.schema.name} has no index ${index}`);
    return fn;
  }

  private parse(key: string, value: CatalogValue): T {
    try {
      return this.schema.parse(value);
    } catch (err) {
      throw this.damaged(key, value, err);
    }
  }

  private damaged(key: string, value: CatalogValue, cause?: unknown): StorageError {
    const why = cause instanceof Error ? `: ${cause.message}` : '';
    return new StorageError('CORRUPT', `catalog record ${key} is damaged${why} (${JSON.stringify(value).slice(0, 120)})`, { cause });
  }
}
