/**
 * Converting a catalog written by Strata's first release (one JSON record per `<kind>:<key>`, no
 * indexes) into the volume layer's tables: every record is checked by its table's parse (a damaged
 * one is CORRUPT naming its old key) and written with its index entries. The conversion is first
 * committed, record by record, to a scratch MemoryCatalogStore, so duplicate names (two volumes
 * called p/v) fail here with the tables' own checks, before anything is written to disk; the
 * LevelCatalogStore then applies the returned entries in one batch (src/meta/level-catalog.ts).
 */
import type { CatalogOp } from '../core/catalog-store.js';
import { isStorageError, StorageError } from '../core/errors.js';
import { MemoryCatalogStore } from '../meta/memory-catalog.js';
import { CatalogTxn, SCHEMA_KEY, VOLUME_CATALOG_SCHEMA_VERSION, VolumeCatalog, type RecordTable } from './catalog.js';

/** The first layout's record kinds, in the order their counts are reported. */
const LEGACY_KINDS = ['pool', 'volume', 'layer', 'snapshot', 'job', 'intent', 'export'] as const;
type LegacyKind = (typeof LEGACY_KINDS)[number];

/** One key and JSON value of the first layout. */
export interface LegacyEntry {
  readonly key: string;
  readonly value: unknown;
}
function isLegacyKind(kind: string): kind is LegacyKind {
  return (LEGACY_KINDS as readonly string[]).includes(kind);
}

/** Adds one old record to txn after checking it with its table's parse. */
function addRecord<T extends object>(table: RecordTable<T>, txn: CatalogTxn, entry: LegacyEntry, id: string): void {
  let record: T;
  try {
    record = table.table.schema.parse(JSON.parse(JSON.stringify(entry.value)));
  } catch (err) {
    throw new StorageError('CORRUPT', `catalog record ${entry.key} is damaged: ${(err as Error).message}; nothing was converted (repair or remove the record)`, {
      cause: err,
    });
  }
  if (table.table.schema.id(record) !== id) {
    throw new StorageError('CORRUPT', `catalog record ${entry.key} names another id (${table.table.schema.id(record)}); nothing was converted`);
  }
  table.create(txn, record);
}

/**
 * The entries of the tables that hold the old records, and how many of each kind there were.
 * Matches LegacyMigration (src/meta/level-catalog.ts).
 */
export async function migrateLegacyCatalog(entries: readonly LegacyEntry[]): Promise<{ ops: CatalogOp[]; summary: Record<string, number> }> {
  const scratch = new MemoryCatalogStore();
  const catalog = new VolumeCatalog(scratch);
  const ops: CatalogOp[] = [];
  const counts = new Map<LegacyKind, number>();
  for (const entry of entries) {
    const colon = entry.key.indexOf(':');
    const kind = entry.key.slice(0, Math.max(colon, 0));
    if (colon < 0 || !isLegacyKind(kind)) {
      throw new StorageError('CORRUPT', `the old catalog holds the key ${JSON.stringify(entry.key)}, which is no record Strata wrote; nothing was converted`);
    }
    const id = entry.key.slice(colon + 1);
    // One scratch transaction per record: a name another record holds fails its index compare.
    const txn = new CatalogTxn();
    const tables: { [K in LegacyKind]: () => void } = {
      pool: () => addRecord(catalog.pools, txn, entry, id),
      volume: () => addRecord(catalog.volumes, txn, entry, id),
      layer: () => addRecord(catalog.layers, txn, entry, id),
      snapshot: () => addRecord(catalog.snapshots, txn, entry, id),
      job: () => addRecord(catalog.jobs, txn, entry, id),
      intent: () => addRecord(catalog.intents, txn, entry, id),
      export: () => addRecord(catalog.exports, txn, entry, id),
    };
    tables[kind]();
    try {
      await catalog.commit(txn);
    } catch (err) {
      if (!isStorageError(err, 'ALREADY_EXISTS')) throw err;
      throw new StorageError('CORRUPT', `the old catalog has two records with one name (${entry.key}: ${err.message}); nothing was converted`, { cause: err });
    }
    ops.push(...txn.ops);
    counts.set(kind, (counts.get(kind) ?? 0) + 1);
  }
  ops.push({ type: 'put', key: SCHEMA_KEY, value: VOLUME_CATALOG_SCHEMA_VERSION });
  const summary: Record<string, number> = {};
  for (const kind of LEGACY_KINDS) summary[kind] = counts.get(kind) ?? 0;
  return { ops, summary };
}
