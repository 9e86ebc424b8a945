/**
 * LevelCatalogStore: the CatalogStore of a single daemon, on LevelDB (the `level` package). Each
 * entry is stored under `e:<key>` as `{ value, modRevision }`; the store's revision under `rev`.
 * Transactions apply one after another (the data folder's lock gives one process per store), each
 * at its own new revision, and commit in one synced LevelDB batch: atomic, and on disk before they
 * resolve. Group commit: the transactions that arrive while a batch is being written go together
 * into the next one (one read of their compares, one synced write), each checked against the
 * keys as the ones before it in the group left them; a failed write fails the whole group.
 *
 * Key order is LevelDB's bytewise UTF-8 order, which equals JavaScript's string order for every
 * key without characters above U+FFFF.
 *
 * Reads on a folder in memory (tmpfs) run on the calling thread (LevelDB's getSync) instead of
 * libuv's thread pool: a hand-off is two thread wake-ups, and on a busy machine each waits for a
 * time slice (a 1 MiB PUT made ~4 such reads; beside two CPU-bound processes, 1 MiB PUTs one at a
 * time ran ~8% faster reading here; bench/RESULTS.md). On a disk a read of a block not in memory
 * would stop the event loop for the device, so reads there keep the pool, as do reads of many keys.
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
import { folderOnTmpfs } from '../sys/tmpfs.js';

const ENTRY_PREFIX = 'e:';
const REVISION_KEY = 'rev';
/** The first catalog's layout version key, and the one version of it that can be migrated. */
const LEGACY_SCHEMA_KEY = 'meta:schema';
const LEGACY_SCHEMA_VERSION = 1;
/** Most transactions committed in one batch (bounds the batch of a burst of large transactions). */
const GROUP_TXNS_MAX = 64;
/**
 * Most keys one read answers on the calling thread when reads are synchronous. From LevelDB's
 * cache a key costs ~2 us there (100k entries on tmpfs: 16 keys in 41 us against 86 us through
 * the pool, 64 in 129 against 179); a larger read (a dedup commit compares thousands of chunk
 * records) goes to the pool, where it does not hold up every other request.
 */
export const SYNC_READ_KEYS_MAX = 64;

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
  /**
   * Reads on the calling thread (true) or libuv's thread pool (false). Default 'auto': on the
   * calling thread when the folder is on tmpfs, where a read never waits for a device.
   */
  readonly syncReads?: boolean | 'auto';
}

interface StoredEntry {
  value: CatalogValue;
  modRevision: number;
}

/** A transaction waiting for the next group commit. */
interface QueuedTxn {
  readonly compares: readonly CatalogCompare[];
  readonly ops: readonly CatalogOp[];
  readonly resolve: (result: CatalogTxnResult) => void;
  readonly reject: (err: unknown) => void;
}

type BatchOp = { type: 'put'; key: string; value: unknown } | { type: 'del'; key: string };

function isStoredEntry(value: unknown): value is StoredEntry {
  return typeof value === 'object' && value !== null && 'value' in value && Number.isSafeInteger((value as StoredEntry).modRevision);
}

export class LevelCatalogStore implements CatalogStore {
  private readonly hub = new WatchHub();
  /** Transactions waiting for the next group commit. */
  private waiting: QueuedTxn[] = [];
  /** The group commits running until `waiting` is empty (undefined: none). */
  private committing: Promise<void> | undefined;

  /** What open() converted from the first layout (absent: nothing to convert). */
  migrated: Record<string, number> | undefined;

  private constructor(
    private readonly db: Level<string, unknown>,
    private currentRevision: number,
    readonly location: string,
    /** Reads of up to SYNC_READ_KEYS_MAX keys run on the calling thread. */
    readonly syncReads: boolean,
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
      const syncReads = options.syncReads ?? 'auto';
      const store = new LevelCatalogStore(db, (revision as number | undefined) ?? 0, location, syncReads === 'auto' ? (await folderOnTmpfs(location)) === true : syncReads);
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
    const storedKey = ENTRY_PREFIX + key;
    return this.toEntry(key, this.syncReads ? this.db.getSync(storedKey) : await this.db.get(storedKey));
  }

  async getMany(keys: readonly string[]): Promise<(CatalogEntry | undefined)[]> {
    checkGetMany(keys);
    if (keys.length === 0) return [];
    const stored = await this.readMany(keys);
    return keys.map((key, i) => this.toEntry(key, stored[i]));
  }

  /**
   * The stored values of `keys` as of one moment: through the pool one LevelDB read from one
   * implicit snapshot (classic-level's getMany); on this thread one read per key from an explicit
   * snapshot, since a group's batch may be applied on a pool thread between two of them.
   */
  private async readMany(keys: readonly string[]): Promise<unknown[]> {
    const storedKeys = keys.map((key) => ENTRY_PREFIX + key);
    if (!this.syncReads || storedKeys.length > SYNC_READ_KEYS_MAX) return this.db.getMany(storedKeys);
    if (storedKeys.length === 1) return [this.db.getSync(storedKeys[0]!)];
    const snapshot = this.db.snapshot();
    try {
      return storedKeys.map((storedKey) => this.db.getSync(storedKey, { snapshot }));
    } finally {
      await snapshot.close();
    }
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
    return new Promise((resolve, reject) => {
      this.waiting.push({ compares, ops, resolve, reject });
      this.committing ??= this.commitWaiting();
    });
  }

  async revision(): Promise<number> {
    return this.currentRevision;
  }

  watch(prefix: string, onEvent: (event: CatalogEvent) => void): CatalogWatch {
    return this.hub.watch(prefix, onEvent);
  }

  async close(): Promise<void> {
    this.hub.clear();
    await this.committing;
    await this.db.close();
  }

  /** Commits the waiting transactions a group at a time until none is left. */
  private async commitWaiting(): Promise<void> {
    // Let the callers of this turn queue theirs first: they share the first batch.
    await Promise.resolve();
    while (this.waiting.length > 0) {
      const group = this.waiting.splice(0, GROUP_TXNS_MAX);
      try {
        const results = await this.commitGroup(group);
        for (const [i, queued] of group.entries()) {
          const result = results[i]!;
          if ('succeeded' in result) queued.resolve(result);
          else queued.reject(result.error);
        }
      } catch (err) {
        for (const queued of group) queued.reject(err);
      }
    }
    this.committing = undefined;
  }

  /**
   * Applies `group` in order, each transaction at its own revision against the keys as the ones
   * before it left them, and writes what succeeded in one synced batch; then tells the watchers.
   */
  private async commitGroup(group: readonly QueuedTxn[]): Promise<(CatalogTxnResult | { error: unknown })[]> {
    // One read for all compares and deletes (a dedup commit compares thousands of chunk records);
    // later reads come from `view`, which holds what the group has written so far.
    const keys = [...new Set(group.flatMap((txn) => [...txn.compares.map((compare) => compare.key), ...txn.ops.filter((op) => op.type === 'delete').map((op) => op.key)]))];
    const stored = keys.length === 0 ? [] : await this.readMany(keys);
    const view = new Map<string, CatalogEntry | undefined>(keys.map((key, i) => [key, this.toEntry(key, stored[i])]));
    let revision = this.currentRevision;
    const batch: BatchOp[] = [];
    const events: CatalogEvent[][] = [];
    const results: (CatalogTxnResult | { error: unknown })[] = [];
    for (const { compares, ops } of group) {
      const failedKeys = compares.filter((compare) => (view.get(compare.key)?.modRevision ?? 0) !== compare.modRevision).map((compare) => compare.key);
      if (failedKeys.length > 0 || ops.length === 0) {
        results.push({ succeeded: failedKeys.length === 0, revision, failedKeys });
        continue;
      }
      let values: (CatalogValue | undefined)[];
      try {
        // Through JSON so that what watchers and later reads see is exactly what LevelDB holds.
        values = ops.map((op) => (op.type === 'put' ? (JSON.parse(JSON.stringify(op.value)) as CatalogValue) : undefined));
      } catch (error) {
        results.push({ error }); // this transaction alone fails, before it changed anything
        continue;
      }
      const modRevision = ++revision;
      const changes: CatalogEvent[] = [];
      for (const [i, op] of ops.entries()) {
        if (op.type === 'put') {
          const value = values[i]!;
          batch.push({ type: 'put', key: ENTRY_PREFIX + op.key, value: { value, modRevision } satisfies StoredEntry });
          view.set(op.key, { key: op.key, value, modRevision });
          changes.push({ type: 'put', entry: { key: op.key, value, modRevision } });
        } else if (view.get(op.key) !== undefined) {
          batch.push({ type: 'del', key: ENTRY_PREFIX + op.key });
          view.set(op.key, undefined);
          changes.push({ type: 'delete', key: op.key, modRevision });
        }
      }
      events.push(changes);
      results.push({ succeeded: true, revision: modRevision, failedKeys: [] });
    }
    if (revision !== this.currentRevision) {
      batch.push({ type: 'put', key: REVISION_KEY, value: revision });
      await this.db.batch(batch, { sync: true });
      this.currentRevision = revision;
      for (const changes of events) this.hub.publish(changes);
    }
    return results;
  }

  private toEntry(key: string, stored: unknown): CatalogEntry | undefined {
    if (stored === undefined) return undefined;
    if (!isStoredEntry(stored)) {
      throw new StorageError('CORRUPT', `catalog entry ${key} in ${this.location} is damaged (${JSON.stringify(stored).slice(0, 80)})`);
    }
    return { key, value: stored.value, modRevision: stored.modRevision };
  }
}
