/**
 * Catalog: Strata's metadata in LevelDB (the `level` package, classic-level on Node). One JSON
 * value per key `<kind>:<key>`, where the key is a pool's name or another record's id. Multi-record
 * changes go through batch(), which LevelDB applies atomically; batches are synced (fsync) unless
 * told otherwise, since they are rare (one per management operation) and must survive power loss.
 *
 * Nothing on a guest's I/O path writes here: job progress is persisted at most about once a second.
 */
import { Level } from 'level';
import { StorageError } from '../core/errors.js';
import { RECORD_KINDS, type CatalogRecords, type RecordKind } from './records.js';

/** Bumped when the record layout changes incompatibly; checked at open. */
export const CATALOG_SCHEMA_VERSION = 1;
const META_SCHEMA_KEY = 'meta:schema';

export type CatalogOp = {
  [K in RecordKind]: { type: 'put'; kind: K; value: CatalogRecords[K] } | { type: 'del'; kind: K; key: string };
}[RecordKind];

/** The key a record is stored under: a pool by its name, everything else by its id. */
export function recordKey<K extends RecordKind>(kind: K, value: CatalogRecords[K]): string {
  if (kind === 'pool') return (value as CatalogRecords['pool']).name;
  return (value as { id: string }).id;
}

function storageKey(kind: RecordKind, key: string): string {
  return `${kind}:${key}`;
}

export function putOp<K extends RecordKind>(kind: K, value: CatalogRecords[K]): CatalogOp {
  return { type: 'put', kind, value } as CatalogOp;
}

export function delOp(kind: RecordKind, key: string): CatalogOp {
  return { type: 'del', kind, key } as CatalogOp;
}

export interface CatalogWriteOptions {
  /** fsync before resolving (default true). */
  sync?: boolean;
}

export class Catalog {
  private constructor(
    private readonly db: Level<string, unknown>,
    readonly location: string,
  ) {}

  /** Opens (creating if needed) the catalog in the folder `location`. */
  static async open(location: string): Promise<Catalog> {
    const db = new Level<string, unknown>(location, { valueEncoding: 'json' });
    try {
      await db.open();
    } catch (err) {
      const cause = (err as { cause?: { message?: string } }).cause;
      const detail = cause?.message ?? (err as Error).message;
      const code = /lock/i.test(detail) ? 'BUSY' : 'IO_ERROR';
      throw new StorageError(code, `cannot open the catalog at ${location}: ${detail}`, { cause: err });
    }
    const catalog = new Catalog(db, location);
    const schema = await db.get(META_SCHEMA_KEY);
    if (schema === undefined) {
      await db.put(META_SCHEMA_KEY, CATALOG_SCHEMA_VERSION, { sync: true });
    } else if (schema !== CATALOG_SCHEMA_VERSION) {
      await db.close();
      throw new StorageError(
        'UNSUPPORTED',
        `the catalog at ${location} has schema version ${String(schema)}; this Strata reads version ${CATALOG_SCHEMA_VERSION}`,
      );
    }
    return catalog;
  }

  async get<K extends RecordKind>(kind: K, key: string): Promise<CatalogRecords[K] | undefined> {
    const value = await this.db.get(storageKey(kind, key));
    return value === undefined ? undefined : checkRecord(kind, key, value);
  }

  /** Like get, but a missing record is NOT_FOUND with the given description. */
  async require<K extends RecordKind>(kind: K, key: string, what?: string): Promise<CatalogRecords[K]> {
    const value = await this.get(kind, key);
    if (value === undefined) throw new StorageError('NOT_FOUND', `${what ?? `${kind} '${key}'`} does not exist`);
    return value;
  }

  async put<K extends RecordKind>(kind: K, value: CatalogRecords[K], options: CatalogWriteOptions = {}): Promise<void> {
    await this.db.put(storageKey(kind, recordKey(kind, value)), value, { sync: options.sync ?? true });
  }

  async del(kind: RecordKind, key: string, options: CatalogWriteOptions = {}): Promise<void> {
    await this.db.del(storageKey(kind, key), { sync: options.sync ?? true });
  }

  /** Every record of a kind, in key order. */
  async list<K extends RecordKind>(kind: K): Promise<CatalogRecords[K][]> {
    const out: CatalogRecords[K][] = [];
    const prefix = `${kind}:`;
    for await (const [key, value] of this.db.iterator({ gte: prefix, lt: `${kind};` })) {
      out.push(checkRecord(kind, key.slice(prefix.length), value));
    }
    return out;
  }

  /** Applies every operation or none. */
  async batch(ops: readonly CatalogOp[], options: CatalogWriteOptions = {}): Promise<void> {
    if (ops.length === 0) return;
    const seen = new Set<string>();
    const levelOps = ops.map((op) => {
      const key = op.type === 'put' ? storageKey(op.kind, recordKey(op.kind, op.value)) : storageKey(op.kind, op.key);
      if (seen.has(key)) throw new Error(`assertion failed: catalog batch touches ${key} twice`);
      seen.add(key);
      return op.type === 'put' ? { type: 'put' as const, key, value: op.value as unknown } : { type: 'del' as const, key };
    });
    await this.db.batch(levelOps, { sync: options.sync ?? true });
  }

  async close(): Promise<void> {
    await this.db.close();
  }
}

function checkRecord<K extends RecordKind>(kind: K, key: string, value: unknown): CatalogRecords[K] {
  if (!RECORD_KINDS.includes(kind) || value === null || typeof value !== 'object') {
    throw new StorageError('CORRUPT', `catalog record ${kind}:${key} is not an object`);
  }
  return value as CatalogRecords[K];
}
