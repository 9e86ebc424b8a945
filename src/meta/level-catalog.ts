/**
 * LevelCatalogStore: the CatalogStore of a single daemon, on LevelDB (the `level` package). Each
 * entry is stored under `e:<key>` as `{ value, modRevision }`; the store's revision under `rev`.
 * Transactions run one at a time (the data folder's lock gives one process per store), read their
 * compares, and commit ops plus the new revision in one synced LevelDB batch: atomic, and on disk
 * before they resolve.
 *
 * Key order is LevelDB's bytewise UTF-8 order, which equals JavaScript's string order for every
 * key without characters above U+FFFF.
 *
 * A folder in the layout of Strata's first catalog (`meta:schema` = 1, one JSON record per
 * `<kind>:<key>`) is converted at open by the caller's `migrateLegacy`, in one synced batch that
 * writes the new entries and deletes every old key: a crash leaves either layout whole, never a mix.
 */
import { Level } from 'level';
import type {
  CatalogCompare,
  CatalogEntry,
  CatalogEvent,
  CatalogListOptions,
  CatalogOp,
  CatalogPage,
  CatalogStore,
  CatalogTxnResult,
  CatalogValue,
  CatalogWatch,
} from '../core/catalog-store.js';
import { StorageError } from '../core/errors.js';
import { checkGetMany, checkKey, checkTxn, pageLimit, WatchHub } from './catalog-common.js';

const ENTRY_PREFIX = 'e:';
const REVISION_KEY = 'rev';
/** The first catalog's layout version key, and the one version of it that can be migrated. */
const LEGACY_SCHEMA_KEY = 'meta:schema';
const LEGACY_SCHEMA_VERSION = 1;

/** A key and JSON value of the first catalog's layout (`<kind>:<key>`). */
export interface LegacyEntry {
  readonly key: string;
  readonly value: unknown;
}

/**
 * Converts the first layout's records into this store's entries (throws for one it cannot read);
 * `summary` says what was converted, for the log.
 */
export type LegacyMigration = (entries: readonly LegacyEntry[]) => Promise<{ ops: CatalogOp[]; summary: Record<string, number> }>;

export interface LevelCatalogStoreOptions {
  /** How to convert a folder in the first layout; without it such a folder is refused. */
  readonly migrateLegacy?: LegacyMigration;
}

interface StoredEntry {
  value: CatalogValue;
  modRevision: number;
}

function isStoredEntry(value: unknown): value is StoredEntry {
  return typeof value === 'object' && value !== null && 'value' in value && Number.isSafeInteger((value as StoredEntry).modRevision);
}

export class LevelCatalogStore implements CatalogStore {
  private readonly hub = new WatchHub();
  /** The tail of the transaction queue: each txn starts after the previous one settled. */
  private queue: Promise<unknown> = Promise.resolve();

  /** What open() converted from the first layout (absent: nothing to convert). */
  migrated: Record<string, number> | undefined;

  private constructor(
    private readonly db: Level<string, unknown>,
    private currentRevision: number,
    readonly location: string,
  ) {}

  /** Opens (creating if needed) the store in the folder `location`. */
  static async open(location: string, options: LevelCatalogStoreOptions = {}): Promise<LevelCatalogStore> {
    const db = new Level<string, unknown>(location, { valueEncoding: 'json' });
    try {
      await db.open();
    } catch (err) {
      const detail = (err as { cause?: { message?: string } }).cause?.message ?? (err as Error).message;
      throw new StorageError(/lock/i.test(detail) ? 'BUSY' : 'IO_ERROR', `cannot open the catalog at ${location}: ${detail}`, {
        cause: err,
      });
    }
    try {
      const revision = await db.get(REVISION_KEY);
      if (revision !== undefined && !Number.isSafeInteger(revision)) {
        throw new StorageError('CORRUPT', `the catalog at ${location} has a damaged revision counter (${JSON.stringify(revision)})`);
      }
      const store = new LevelCatalogStore(db, (revision as number | undefined) ?? 0, location);
      const legacySchema = await db.get(LEGACY_SCHEMA_KEY);
      if (legacySchema !== undefined) store.migrated = await store.migrateLegacy(legacySchema, options.migrateLegacy);
      return store;
    } catch (err) {
      await db.close();
      throw err;
    }
  }

  /** Converts a folder in the first layout: one synced batch, new entries in and old keys out. */
  private async migrateLegacy(schema: unknown, migrate: LegacyMigration | undefined): Promise<Record<string, number>> {
    if (schema !== LEGACY_SCHEMA_VERSION) {
      throw new StorageError(
        'UNSUPPORTED',
        `the catalog at ${this.location} has schema version ${JSON.stringify(schema)}; this Strata reads version ${LEGACY_SCHEMA_VERSION} of that layout: run the Strata release that wrote it`,
      );
    }
    if (migrate === undefined) {
      throw new StorageError('UNSUPPORTED', `the catalog at ${this.location} is in the first layout; open it with 'strata serve', which converts it`);
    }
    const legacy: LegacyEntry[] = [];
    for await (const [key, value] of this.db.iterator()) {
      if (key !== REVISION_KEY && !key.startsWith(ENTRY_PREFIX) && key !== LEGACY_SCHEMA_KEY) legacy.push({ key, value });
    }
    const { ops, summary } = await migrate(legacy);
    checkTxn([], ops);
    const modRevision = this.currentRevision + 1;
    const batch: ({ type: 'put'; key: string; value: unknown } | { type: 'del'; key: string })[] = [];
    for (const op of ops) {
      if (op.type !== 'put') throw new Error('assertion failed: a legacy migration only puts entries');
      batch.push({ type: 'put', key: ENTRY_PREFIX + op.key, value: { value: op.value, modRevision } satisfies StoredEntry });
    }
    for (const { key } of legacy) batch.push({ type: 'del', key });
    batch.push({ type: 'del', key: LEGACY_SCHEMA_KEY });
    batch.push({ type: 'put', key: REVISION_KEY, value: modRevision });
    await this.db.batch(batch, { sync: true });
    this.currentRevision = modRevision;
    return summary;
  }

  async get(key: string): Promise<CatalogEntry | undefined> {
    checkKey(key);
    return this.toEntry(key, await this.db.get(ENTRY_PREFIX + key));
  }

  async getMany(keys: readonly string[]): Promise<(CatalogEntry | undefined)[]> {
    checkGetMany(keys);
    if (keys.length === 0) return [];
    // One LevelDB read for the batch (classic-level's getMany), from one implicit snapshot.
    const stored = await this.db.getMany(keys.map((key) => ENTRY_PREFIX + key));
    return keys.map((key, i) => this.toEntry(key, stored[i]));
  }

  async list(prefix: string, options?: CatalogListOptions): Promise<CatalogPage> {
    const limit = pageLimit(options);
    const after = options?.after !== undefined && options.after >= prefix ? options.after : undefined;
    // One more than the page, to learn whether another page follows.
    const rows = await this.db
      .iterator({
        ...(after === undefined ? { gte: ENTRY_PREFIX + prefix } : { gt: ENTRY_PREFIX + after }),
        // Every key that starts with the prefix sorts below prefix + U+FFFF.
        lt: `${ENTRY_PREFIX}${prefix}\uffff`,
        limit: limit + 1,
      })
      .all();
    const entries = rows.slice(0, limit).map(([storedKey, value]) => this.toEntry(storedKey.slice(ENTRY_PREFIX.length), value) as CatalogEntry);
    const last = entries.at(-1);
    return rows.length > limit && last !== undefined ? { entries, nextAfter: last.key } : { entries };
  }

  txn(compares: readonly CatalogCompare[], ops: readonly CatalogOp[]): Promise<CatalogTxnResult> {
    // A malformed transaction rejects like any other failure (callers await, they do not catch).
    try {
      checkTxn(compares, ops);
    } catch (err) {
      return Promise.reject(err);
    }
    const run = this.queue.then(() => this.commit(compares, ops));
    this.queue = run.catch(() => undefined);
    return run;
  }

  async revision(): Promise<number> {
    return this.currentRevision;
  }

  watch(prefix: string, onEvent: (event: CatalogEvent) => void): CatalogWatch {
    return this.hub.watch(prefix, onEvent);
  }

  async close(): Promise<void> {
    this.hub.clear();
    await this.queue;
    await this.db.close();
  }

  private async commit(compares: readonly CatalogCompare[], ops: readonly CatalogOp[]): Promise<CatalogTxnResult> {
    const failedKeys: string[] = [];
    // One read for all compares (a dedup commit compares thousands of chunk records); the queue
    // keeps other transactions out until this one is written.
    const current = compares.length === 0 ? [] : await this.db.getMany(compares.map((compare) => ENTRY_PREFIX + compare.key));
    for (const [i, compare] of compares.entries()) {
      const stored = this.toEntry(compare.key, current[i]);
      if ((stored?.modRevision ?? 0) !== compare.modRevision) failedKeys.push(compare.key);
    }
    if (failedKeys.length > 0) return { succeeded: false, revision: this.currentRevision, failedKeys };
    if (ops.length === 0) return { succeeded: true, revision: this.currentRevision, failedKeys: [] };
    const modRevision = this.currentRevision + 1;
    const existing = await this.db.getMany(ops.filter((op) => op.type === 'delete').map((op) => ENTRY_PREFIX + op.key));
    const deletedKeys = new Set(ops.filter((op) => op.type === 'delete').filter((_, i) => existing[i] !== undefined).map((op) => op.key));
    const events: CatalogEvent[] = [];
    const batch: ({ type: 'put'; key: string; value: unknown } | { type: 'del'; key: string })[] = [];
    for (const op of ops) {
      if (op.type === 'put') {
        // Through JSON so that what watchers and later reads see is exactly what LevelDB holds.
        const value = JSON.parse(JSON.stringify(op.value)) as CatalogValue;
        batch.push({ type: 'put', key: ENTRY_PREFIX + op.key, value: { value, modRevision } satisfies StoredEntry });
        events.push({ type: 'put', entry: { key: op.key, value, modRevision } });
      } else if (deletedKeys.has(op.key)) {
        batch.push({ type: 'del', key: ENTRY_PREFIX + op.key });
        events.push({ type: 'delete', key: op.key, modRevision });
      }
    }
    batch.push({ type: 'put', key: REVISION_KEY, value: modRevision });
    await this.db.batch(batch, { sync: true });
    this.currentRevision = modRevision;
    this.hub.publish(events);
    return { succeeded: true, revision: modRevision, failedKeys: [] };
  }

  private toEntry(key: string, stored: unknown): CatalogEntry | undefined {
    if (stored === undefined) return undefined;
    if (!isStoredEntry(stored)) {
      throw new StorageError('CORRUPT', `catalog entry ${key} in ${this.location} is damaged (${JSON.stringify(stored).slice(0, 80)})`);
    }
    return { key, value: stored.value, modRevision: stored.modRevision };
  }
}
