/**
 * VolumeCatalog: the volume layer's records on a CatalogStore (whichever: LevelDB in the daemon,
 * memory in tests, etcd later), as tables (catalog-tables.ts) with compare-and-set. Every record
 * read through it remembers the revision it was read at, so an update or delete built from it
 * compares that revision: a change that raced with another writer fails (BUSY) instead of losing
 * the other's update. Several changes go in one CatalogTxn and commit atomically.
 */
import type { CatalogStore } from '../core/catalog-store.js';
import { StorageError } from '../core/errors.js';
import { Table, TxnBuilder, type TableSchema, type Versioned } from '../meta/table.js';
import {
  exportSchema,
  intentSchema,
  jobSchema,
  layerSchema,
  poolSchema,
  qosPolicySchema,
  reservationSchema,
  snapshotSchema,
  volumeSchema,
} from './catalog-tables.js';
import type {
  ExportRecord,
  IntentRecord,
  JobRecord,
  LayerRecord,
  PoolRecord,
  QosPolicyRecord,
  ReservationRecord,
  SnapshotRecord,
  VolumeRecord,
} from './records.js';
import {
  groupMemberSchema,
  groupSchema,
  groupSnapshotSchema,
  type GroupMemberRecord,
  type GroupRecord,
  type GroupSnapshotRecord,
} from './group-tables.js';

/** The layout of the volume layer's tables; a catalog written by a newer Strata is refused. */
export const VOLUME_CATALOG_SCHEMA_VERSION = 2;
/** Where the layout version is kept (no table is named so: table keys contain a '/'). */
export const SCHEMA_KEY = 'catalog-schema';

/** A transaction under construction; remembers the records it writes to learn their revision. */
export class CatalogTxn extends TxnBuilder {
  readonly written: object[] = [];
}

/** Revisions of the records read (or written) through a VolumeCatalog, by record object. */
type Revisions = WeakMap<object, number>;

export class RecordTable<T extends object> {
  readonly table: Table<T>;

  constructor(
    store: CatalogStore,
    schema: TableSchema<T>,
    private readonly revisions: Revisions,
  ) {
    this.table = new Table(store, schema);
  }

  async get(id: string): Promise<T | undefined> {
    return this.remember(await this.table.get(id));
  }

  /** Like get, but a missing record is NOT_FOUND saying what is missing. */
  async require(id: string, what: string): Promise<T> {
    const record = await this.get(id);
    if (record === undefined) throw new StorageError('NOT_FOUND', `${what} does not exist`);
    return record;
  }

  async lookup(index: string, value: string): Promise<T | undefined> {
    return this.remember(await this.table.lookup(index, value));
  }

  /** The records whose value in `index` starts with `prefix`, read a bounded page at a time. */
  async byIndexPrefix(index: string, prefix: string): Promise<T[]> {
    const out: T[] = [];
    for await (const versioned of this.table.indexScan(index, prefix)) out.push(this.remember(versioned)!);
    return out;
  }

  /** One page of the records in `index` order from after the value `after` (see Table.indexPage). */
  async indexPage(index: string, options: { after?: string; limit: number }): Promise<{ records: T[]; nextAfter?: string }> {
    const page = await this.table.indexPage(index, '', options);
    const records = page.records.map((versioned) => this.remember(versioned)!);
    return page.nextAfter === undefined ? { records } : { records, nextAfter: page.nextAfter };
  }

  /** Every record of the table, a page at a time: for start-up recovery and job listings. */
  async all(): Promise<T[]> {
    const out: T[] = [];
    let after: string | undefined;
    for (;;) {
      const page = await this.table.page(after === undefined ? {} : { after });
      for (const versioned of page.records) out.push(this.remember(versioned)!);
      if (page.nextAfter === undefined) return out;
      after = page.nextAfter;
    }
  }

  /** Adds the creation of `record` (its id and unique index values must be free). */
  create(txn: CatalogTxn, record: T): void {
    this.table.put(txn, record);
    txn.written.push(record);
  }

  /** Adds the replacement of `previous` (as read) by `next`; fails at commit if it changed since. */
  update(txn: CatalogTxn, previous: T, next: T): void {
    this.table.put(txn, next, this.versioned(previous));
    txn.written.push(next);
  }

  /**
   * Adds a compare only: the commit fails (BUSY) if `record` changed or went since it was read
   * (the pool whose quota a new volume was checked against).
   */
  requireUnchanged(txn: CatalogTxn, record: T): void {
    const { modRevision } = this.versioned(record);
    txn.compares.push({ key: this.table.recordKey(this.table.schema.id(record)), modRevision });
  }

  /** Adds the removal of `current` (as read); fails at commit if it changed since. */
  remove(txn: CatalogTxn, current: T): void {
    this.table.delete(txn, this.versioned(current));
  }

  private versioned(record: T): Versioned<T> {
    const modRevision = this.revisions.get(record);
    if (modRevision === undefined) {
      throw new Error(`assertion failed: a ${this.table.schema.name} record changed without having been read from the catalog`);
    }
    return { record, modRevision };
  }

  private remember(versioned: Versioned<T> | undefined): T | undefined {
    if (versioned === undefined) return undefined;
    this.revisions.set(versioned.record, versioned.modRevision);
    return versioned.record;
  }
}

export class VolumeCatalog {
  private readonly revisions: Revisions = new WeakMap();
  readonly pools: RecordTable<PoolRecord>;
  readonly volumes: RecordTable<VolumeRecord>;
  readonly layers: RecordTable<LayerRecord>;
  readonly snapshots: RecordTable<SnapshotRecord>;
  readonly jobs: RecordTable<JobRecord>;
  readonly intents: RecordTable<IntentRecord>;
  readonly exports: RecordTable<ExportRecord>;
  readonly reservations: RecordTable<ReservationRecord>;
  /** Consistency groups (group-tables.ts). */
  readonly groups: RecordTable<GroupRecord>;
  readonly groupMembers: RecordTable<GroupMemberRecord>;
  readonly groupSnapshots: RecordTable<GroupSnapshotRecord>;
  readonly qosPolicies: RecordTable<QosPolicyRecord>;

  constructor(readonly store: CatalogStore) {
    this.pools = new RecordTable(store, poolSchema, this.revisions);
    this.volumes = new RecordTable(store, volumeSchema, this.revisions);
    this.layers = new RecordTable(store, layerSchema, this.revisions);
    this.snapshots = new RecordTable(store, snapshotSchema, this.revisions);
    this.jobs = new RecordTable(store, jobSchema, this.revisions);
    this.intents = new RecordTable(store, intentSchema, this.revisions);
    this.exports = new RecordTable(store, exportSchema, this.revisions);
    this.reservations = new RecordTable(store, reservationSchema, this.revisions);
    this.groups = new RecordTable(store, groupSchema, this.revisions);
    this.groupMembers = new RecordTable(store, groupMemberSchema, this.revisions);
    this.groupSnapshots = new RecordTable(store, groupSnapshotSchema, this.revisions);
    this.qosPolicies = new RecordTable(store, qosPolicySchema, this.revisions);
  }

  /**
   * Start-up: records the layout version in an empty catalog, and refuses one written by a newer
   * Strata (its records may mean something this one does not know).
   */
  async checkSchema(): Promise<void> {
    const entry = await this.store.get(SCHEMA_KEY);
    if (entry === undefined) {
      const result = await this.store.txn([{ key: SCHEMA_KEY, modRevision: 0 }], [{ type: 'put', key: SCHEMA_KEY, value: VOLUME_CATALOG_SCHEMA_VERSION }]);
      if (!result.succeeded) return this.checkSchema();
      return;
    }
    if (entry.value !== VOLUME_CATALOG_SCHEMA_VERSION) {
      throw new StorageError(
        'UNSUPPORTED',
        `the catalog has layout version ${JSON.stringify(entry.value)}; this Strata reads version ${VOLUME_CATALOG_SCHEMA_VERSION}: run the Strata release that wrote it`,
      );
    }
  }

  /** Runs `build` to fill one transaction, then commits it (BUSY if a compared record changed). */
  async change(build: (txn: CatalogTxn) => void): Promise<void> {
    const txn = new CatalogTxn();
    build(txn);
    await this.commit(txn);
  }

  async commit(txn: CatalogTxn): Promise<void> {
    if (txn.ops.length === 0) return;
    const revision = await txn.commit(this.store);
    for (const record of txn.written) this.revisions.set(record, revision);
  }

  /**
   * Adds a volume's creation. Its name must be free of volumes (the name index) and of claims
   * (the reservation index) unless `claim` is the caller's own reservation, which it replaces.
   */
  createVolume(txn: CatalogTxn, volume: VolumeRecord, claim?: ReservationRecord): void {
    this.volumes.create(txn, volume);
    if (claim === undefined) this.requireNoClaim(txn, volume.pool, volume.name);
    else this.reservations.remove(txn, claim);
  }

  /** Adds a volume's rename (its new name free of volumes and claims). */
  renameVolume(txn: CatalogTxn, volume: VolumeRecord, newName: string): VolumeRecord {
    const renamed = { ...volume, name: newName };
    this.volumes.update(txn, volume, renamed);
    this.requireNoClaim(txn, volume.pool, newName);
    return renamed;
  }

  /**
   * Adds a volume's return from the trash under `name` (free of volumes and claims): its name
   * index entry comes back, its trash index entries go.
   */
  restoreVolume(txn: CatalogTxn, trashed: VolumeRecord, name: string): VolumeRecord {
    const { trash: _trash, ...rest } = trashed;
    const restored: VolumeRecord = { ...rest, name };
    this.volumes.update(txn, trashed, restored);
    this.requireNoClaim(txn, restored.pool, name);
    return restored;
  }

  /** Adds a claim on a volume name (free of volumes and claims) while an import creates it. */
  claimVolumeName(txn: CatalogTxn, reservation: ReservationRecord): void {
    this.reservations.create(txn, reservation);
    const key = this.volumes.table.indexKey('name', `${reservation.pool}/${reservation.name}`);
    txn.compares.push({ key, modRevision: 0 });
    txn.claimedIndexKeys.set(key, `volume '${reservation.pool}/${reservation.name}'`);
  }

  private requireNoClaim(txn: CatalogTxn, pool: string, name: string): void {
    const key = this.reservations.table.indexKey('name', `${pool}/${name}`);
    txn.compares.push({ key, modRevision: 0 });
    txn.claimedIndexKeys.set(key, `volume '${pool}/${name}' (being created)`);
  }
}
