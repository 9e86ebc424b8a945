/**
 * TierCatalog: where each object of a TieredChunkStore is and when it was last read, kept in a
 * CatalogStore table so the cooling clock and the cache survive a restart.
 *
 * Why a table and not only the stores: the hot tier is local and cheap to list, but the cold tier
 * (S3) is not, and neither store keeps read times or sizes (`pool df` needs the bytes on each
 * tier). So records live in the table, and the hot tier's listing is the truth they are reconciled
 * against at open:
 * - a hot key without a record (a put whose batched record was lost in a crash) gets one;
 * - a record that says `hot` for a key the hot tier lacks is checked against the cold tier once;
 * - a record that says `both` for a key the hot tier lacks is `cold` (its hot copy was dropped);
 * - a record that says `cold` for a key the hot tier has is `hot` again (a promotion whose record
 *   was lost): the next migration copies it once more, which is safe, never wrong.
 *
 * Only two transitions are written at once, because only they guard data: `both` (the cold copy
 * was verified: the hot copy may go) is durable before any hot copy is deleted, and `both` becomes
 * `hot` durably before the hot copy is overwritten by a put. Everything else (read times, new hot
 * objects, `both` -> `cold`) is written in batches by flush(); a read time is marked for writing
 * at most once per `readTimeGranularityMs` per object, so a busy object costs no catalog writes.
 *
 * Memory holds the records of objects with a hot copy only (bounded by the local disk); records of
 * cold objects stay in the table, summed at open for the byte counts.
 *
 * One TieredChunkStore owns its table: records are compared by the revision this process last
 * wrote, so a second writer shows up as BUSY, never as silent loss.
 */
import { listAll, type CatalogStore, type CatalogValue } from '../../core/catalog-store.js';
import type { ChunkStore } from '../../core/chunk-store.js';
import { StorageError } from '../../core/errors.js';
import { Table, TxnBuilder, type TableSchema } from '../../meta/table.js';

/** `hot`: only the hot copy is good; `cold`: only the cold copy; `both`: a verified cold copy and a hot copy. */
export type TierPlace = 'hot' | 'cold' | 'both';

export interface TierRecord {
  readonly key: string;
  readonly place: TierPlace;
  readonly sizeBytes: number;
  readonly lastReadMs: number;
}

/** The table's default name in the CatalogStore. */
export const TIER_TABLE_DEFAULT = 'tier-objects';
/** Read times are written at most this often per object. */
export const READ_TIME_GRANULARITY_DEFAULT_MS = 60_000;
/** Most records one catalog transaction writes (a flush of more takes several). */
const FLUSH_BATCH_MAX = 500;

function tierSchema(name: string): TableSchema<TierRecord> {
  return {
    name,
    id: (record) => record.key,
    parse(value: CatalogValue): TierRecord {
      const v = value as Partial<Record<keyof TierRecord, unknown>> | null;
      if (
        typeof v !== 'object' || v === null || typeof v.key !== 'string' || !['hot', 'cold', 'both'].includes(v.place as string) ||
        !Number.isSafeInteger(v.sizeBytes) || !Number.isSafeInteger(v.lastReadMs)
      ) {
        throw new Error('not a tier record');
      }
      return { key: v.key, place: v.place as TierPlace, sizeBytes: v.sizeBytes as number, lastReadMs: v.lastReadMs as number };
    },
  };
}

function parseRecord(table: Table<TierRecord>, key: string, value: CatalogValue): TierRecord {
  try {
    return table.schema.parse(value);
  } catch (err) {
    throw new StorageError('CORRUPT', `tier catalog record ${key} is damaged: ${(err as Error).message} (${JSON.stringify(value).slice(0, 120)})`, { cause: err });
  }
}

interface Resident {
  record: TierRecord;
  /** The revision the table holds this record at (0: not stored). */
  modRevision: number;
  /** The last read time written (or queued) to the table. */
  lastReadWrittenMs: number;
}

/** A record to write at the next flush (null: delete it), against the revision the table holds. */
interface PendingWrite {
  readonly key: string;
  readonly record: TierRecord | null;
  modRevision: number;
}

export class TierCatalog {
  /** Records of objects with a hot copy (`hot` and `both`). */
  private readonly resident = new Map<string, Resident>();
  private readonly pending = new Map<string, PendingWrite>();
  private coldBytesTotal = 0;
  private coldObjectsTotal = 0;
  private flushTail: Promise<void> = Promise.resolve();
  private nextFlush: Promise<void> | undefined;

  private constructor(
    private readonly catalog: CatalogStore | undefined,
    private readonly table: Table<TierRecord> | undefined,
    private readonly readTimeGranularityMs: number,
  ) {}

  /**
   * Loads the table (when there is one) and reconciles it with the hot tier's listing (see the
   * file comment). Without a catalog, every hot object starts as just read and hot.
   */
  static async open(options: {
    catalog?: CatalogStore;
    tableName?: string;
    hot: ChunkStore;
    /** Whether the cold tier has `key` (asked only for records a crash left in doubt). */
    coldHas: (key: string) => Promise<boolean>;
    nowMs: number;
    readTimeGranularityMs?: number;
  }): Promise<TierCatalog> {
    const { catalog: store } = options;
    const table = store === undefined ? undefined : new Table(store, tierSchema(options.tableName ?? TIER_TABLE_DEFAULT));
    const catalog = new TierCatalog(store, table, options.readTimeGranularityMs ?? READ_TIME_GRANULARITY_DEFAULT_MS);
    const hotKeys = new Set<string>();
    for (let after: string | undefined; ; ) {
      const page = await options.hot.list('', after === undefined ? {} : { after });
      for (const key of page.keys) hotKeys.add(key);
      if (page.nextAfter === undefined) break;
      after = page.nextAfter;
    }
    if (store !== undefined && table !== undefined) {
      for await (const entry of listAll(store, table.recordKey(''))) {
        const record = parseRecord(table, entry.key, entry.value);
        const { modRevision } = entry;
        if (hotKeys.delete(record.key)) {
          if (record.place === 'both') catalog.countCold(record.sizeBytes, 1);
          catalog.admit(record.place === 'both' ? record : { ...record, place: 'hot' }, modRevision, record.place === 'cold');
        } else if (record.place === 'cold') {
          catalog.countCold(record.sizeBytes, 1);
        } else {
          // A `both` record's cold copy was verified; a `hot` one's is asked for. When the cold
          // tier cannot answer now, the record stays as it is for the next open to settle.
          const inCold = record.place === 'both' ? true : await options.coldHas(record.key).catch(() => undefined);
          if (inCold === true) {
            catalog.countCold(record.sizeBytes, 1);
            catalog.pending.set(record.key, { key: record.key, record: { ...record, place: 'cold' }, modRevision });
          } else if (inCold === false) {
            catalog.pending.set(record.key, { key: record.key, record: null, modRevision });
          }
        }
      }
    }
    for (const key of hotKeys) {
      const data = await options.hot.get(key);
      if (data !== undefined) catalog.admit({ key, place: 'hot', sizeBytes: data.length, lastReadMs: options.nowMs }, 0, true);
    }
    await catalog.flush();
    return catalog;
  }

  /** The record of an object with a hot copy, if any. */
  get(key: string): TierRecord | undefined {
    return this.resident.get(key)?.record;
  }

  /** Records of objects with a hot copy (a snapshot: safe to change the catalog while iterating). */
  residents(): TierRecord[] {
    return [...this.resident.values()].map((r) => r.record);
  }

  /**
   * The size of `key` when it is on the cold tier only (a queued write counts), else undefined:
   * the read-ahead's bound, so it never asks for bytes past an object's end.
   */
  async coldSizeBytes(key: string): Promise<number | undefined> {
    if (this.resident.has(key)) return undefined;
    const stored = await this.stored(key);
    return stored?.record?.place === 'cold' ? stored.record.sizeBytes : undefined;
  }

  /**
   * The first object after `key` in key order that is on the cold tier only, looking at most
   * `lookMax` records on: the next pack of a layer sealed in order (pack ids start with their
   * creation time). Undefined when there is none near, or no table.
   */
  async nextColdKey(key: string, lookMax: number): Promise<string | undefined> {
    if (this.table === undefined) return undefined;
    const page = await this.table.page({ after: key, limit: lookMax });
    return page.records.find(({ record }) => record.place === 'cold' && !this.resident.has(record.key) && !this.pending.has(record.key))?.record.key;
  }

  /** Bytes with a copy on the hot tier (`hot` and `both`). */
  get hotBytes(): number {
    let total = 0;
    for (const { record } of this.resident.values()) total += record.sizeBytes;
    return total;
  }

  get hotObjects(): number {
    return this.resident.size;
  }

  /** Bytes with a verified copy on the cold tier (`cold` and `both`). */
  get coldBytes(): number {
    return this.coldBytesTotal;
  }

  get coldObjects(): number {
    return this.coldObjectsTotal;
  }

  /** Records waiting for the next flush. */
  get pendingWrites(): number {
    return this.pending.size;
  }

  /** A read at `nowMs`: kept in memory, queued for the table at most once per granularity. */
  noteRead(key: string, nowMs: number): void {
    const resident = this.resident.get(key);
    if (resident === undefined || nowMs <= resident.record.lastReadMs) return;
    resident.record = { ...resident.record, lastReadMs: nowMs };
    if (nowMs - resident.lastReadWrittenMs >= this.readTimeGranularityMs) this.queue(resident);
  }

  /**
   * Call before the hot copy of `key` is written: a `both` record becomes `hot` durably, because
   * its cold copy is about to stop being the same bytes and must never again allow dropping the
   * hot one.
   */
  async beforeHotWrite(key: string): Promise<void> {
    const resident = this.resident.get(key);
    if (resident?.record.place !== 'both') return;
    this.countCold(-resident.record.sizeBytes, -1);
    resident.record = { ...resident.record, place: 'hot' };
    this.queue(resident);
    await this.flush();
  }

  /**
   * The hot copy of `key` was written (`sizeBytes` long) at `nowMs`. Batched; the lookup finds a
   * record the table holds for a cold object of that key, which the new one replaces.
   */
  async noteHotWrite(key: string, sizeBytes: number, nowMs: number): Promise<void> {
    let modRevision = this.resident.get(key)?.modRevision;
    if (modRevision === undefined) {
      const stored = await this.stored(key);
      if (stored?.record?.place === 'cold') this.countCold(-stored.record.sizeBytes, -1);
      modRevision = stored?.modRevision ?? 0;
    }
    this.admit({ key, place: 'hot', sizeBytes, lastReadMs: nowMs }, modRevision, true);
  }

  /**
   * A promoted copy of the cold object `key` is on the hot tier now. Batched: a crash before the
   * flush leaves a `cold` record over a hot copy, which open() treats as `hot` (copied again).
   */
  async notePromoted(key: string, sizeBytes: number, nowMs: number): Promise<void> {
    const stored = await this.stored(key);
    if (stored?.record?.place !== 'cold') this.countCold(sizeBytes, 1);
    this.admit({ key, place: 'both', sizeBytes, lastReadMs: nowMs }, stored?.modRevision ?? 0, true);
  }

  /** The cold copy of `key` was verified: durable before the caller may drop the hot copy. */
  async markVerified(key: string): Promise<void> {
    const resident = this.resident.get(key);
    if (resident === undefined || resident.record.place !== 'hot') return;
    const verified: TierRecord = { ...resident.record, place: 'both' };
    resident.record = verified;
    this.countCold(verified.sizeBytes, 1);
    this.queue(resident);
    try {
      await this.flush();
    } catch (err) {
      // Not durable: the hot copy must stay, so the record in memory says hot again.
      if (resident.record === verified) {
        resident.record = { ...verified, place: 'hot' };
        this.countCold(-verified.sizeBytes, -1);
        this.queue(resident); // and the queued `both` must not be written later
      }
      throw err;
    }
  }

  /** The hot copy of a `both` object was deleted: it is `cold` now. Batched. */
  noteHotDropped(key: string): void {
    const resident = this.resident.get(key);
    if (resident === undefined) return;
    if (resident.record.place !== 'both') throw new Error(`assertion failed: dropped the only copy of ${key}`);
    this.resident.delete(key);
    this.pending.set(key, { key, record: { ...resident.record, place: 'cold' }, modRevision: resident.modRevision });
  }

  /** The object is gone from both tiers: its record is removed durably. */
  async noteDeleted(key: string): Promise<void> {
    const resident = this.resident.get(key);
    const stored = resident === undefined ? await this.stored(key) : { record: resident.record, modRevision: resident.modRevision };
    if (stored === undefined) return;
    if (stored.record !== null && stored.record.place !== 'hot') this.countCold(-stored.record.sizeBytes, -1);
    this.resident.delete(key);
    this.pending.set(key, { key, record: null, modRevision: stored.modRevision });
    await this.flush();
  }

  /**
   * Writes every queued record, FLUSH_BATCH_MAX per transaction. Callers that arrive while a
   * flush waits to start share it; one that arrives while a flush runs gets the next one.
   */
  flush(): Promise<void> {
    if (this.nextFlush !== undefined) return this.nextFlush;
    const flush = this.flushTail.then(() => {
      this.nextFlush = undefined;
      return this.writePending();
    });
    this.nextFlush = flush;
    this.flushTail = flush.catch(() => undefined);
    return flush;
  }

  private async writePending(): Promise<void> {
    while (this.pending.size > 0) {
      const batch = [...this.pending.values()].slice(0, FLUSH_BATCH_MAX);
      if (this.catalog === undefined || this.table === undefined) {
        for (const write of batch) this.pending.delete(write.key);
        continue;
      }
      const txn = new TxnBuilder();
      for (const write of batch) {
        if (write.record !== null) {
          this.table.put(txn, write.record, write.modRevision === 0 ? undefined : { record: write.record, modRevision: write.modRevision });
        } else if (write.modRevision !== 0) {
          this.table.delete(txn, { record: { key: write.key, place: 'cold', sizeBytes: 0, lastReadMs: 0 }, modRevision: write.modRevision });
        }
      }
      const revision = txn.ops.length === 0 ? 0 : await txn.commit(this.catalog);
      for (const write of batch) {
        const written = write.record === null ? 0 : revision;
        const later = this.pending.get(write.key);
        if (later === write) this.pending.delete(write.key);
        else if (later !== undefined) later.modRevision = written;
        const resident = this.resident.get(write.key);
        if (resident !== undefined) resident.modRevision = written;
      }
    }
  }

  /** What the table holds for a key without a hot copy (a queued write counts as held). */
  private async stored(key: string): Promise<{ record: TierRecord | null; modRevision: number } | undefined> {
    const pending = this.pending.get(key);
    if (pending !== undefined) return pending.record === null && pending.modRevision === 0 ? undefined : pending;
    return this.table?.get(key);
  }

  private admit(record: TierRecord, modRevision: number, write: boolean): void {
    const resident: Resident = { record, modRevision, lastReadWrittenMs: record.lastReadMs };
    this.resident.set(record.key, resident);
    if (write) this.queue(resident);
  }

  private queue(resident: Resident): void {
    resident.lastReadWrittenMs = resident.record.lastReadMs;
    const { key } = resident.record;
    this.pending.set(key, { key, record: resident.record, modRevision: resident.modRevision });
  }

  private countCold(bytes: number, objects: number): void {
    this.coldBytesTotal += bytes;
    this.coldObjectsTotal += objects;
  }
}
