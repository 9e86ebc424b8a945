/**
 * The dedup index in the catalog: two tables per pool.
 *
 *   chunk/<hash>  where the chunk lies (pack, offset, length), its reference count, and when the
 *                 count reached zero (the start of its grace period; null while referenced)
 *   pack/<id>     every pack the index has referenced: its size and when it was written, so GC
 *                 weighs packs without reading them and tells a pack it knows from an orphan;
 *                 and its format version, so a reader needs no header read (a GET from S3)
 *
 * A pool other than the default gets its own pair (`chunk-<pool>`, `pack-<pool>`), so each pool
 * stores a content once, whoever wrote it, and pools never share chunks. The pool's hash algorithm
 * is recorded once (`dedup-config/<pool>`) and a repository opened with another is refused.
 */
import type { CatalogStore, CatalogValue } from '../../core/catalog-store.js';
import { StorageError } from '../../core/errors.js';
import { Table, TxnBuilder, type TableSchema } from '../../meta/table.js';
import { CHUNK_HASH_ALGORITHMS, type ChunkHashAlgorithm } from './chunk-hasher.js';

export interface ChunkRecord {
  readonly hash: string;
  readonly pack: string;
  readonly offsetBytes: number;
  readonly lengthBytes: number;
  readonly refs: number;
  /** When refs reached zero (ms since the epoch); null while referenced. */
  readonly zeroSinceMs: number | null;
}

export interface PackRecord {
  readonly id: string;
  readonly sizeBytes: number;
  readonly chunkCount: number;
  readonly createdAtMs: number;
  /**
   * The pack's format version (pack-format.ts), recorded by the writer so a reader of a cold pack
   * needs no 16-byte header GET before its chunks; absent in records written before it was kept
   * (the reader then reads the header).
   */
  readonly version?: number;
}

const DEFAULT_POOL = 'default';
const POOL_PATTERN = /^[a-z0-9][a-z0-9-]{0,62}$/;

function object(value: CatalogValue): Record<string, CatalogValue> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error('not an object');
  return value;
}

function wholeNumber(value: CatalogValue | undefined, field: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) throw new Error(`${field} is not a whole number`);
  return value;
}

function text(value: CatalogValue | undefined, field: string): string {
  if (typeof value !== 'string' || value.length === 0) throw new Error(`${field} is not a non-empty string`);
  return value;
}

function chunkSchema(name: string): TableSchema<ChunkRecord> {
  return {
    name,
    id: (record) => record.hash,
    parse(value) {
      const v = object(value);
      const zeroSinceMs = v.zeroSinceMs === null ? null : wholeNumber(v.zeroSinceMs, 'zeroSinceMs');
      const refs = wholeNumber(v.refs, 'refs');
      if ((refs === 0) !== (zeroSinceMs !== null)) throw new Error(`refs ${refs} and zeroSinceMs ${zeroSinceMs} disagree`);
      return {
        hash: text(v.hash, 'hash'),
        pack: text(v.pack, 'pack'),
        offsetBytes: wholeNumber(v.offsetBytes, 'offsetBytes'),
        lengthBytes: wholeNumber(v.lengthBytes, 'lengthBytes'),
        refs,
        zeroSinceMs,
      };
    },
  };
}

function packSchema(name: string): TableSchema<PackRecord> {
  return {
    name,
    id: (record) => record.id,
    parse(value) {
      const v = object(value);
      return {
        id: text(v.id, 'id'),
        sizeBytes: wholeNumber(v.sizeBytes, 'sizeBytes'),
        chunkCount: wholeNumber(v.chunkCount, 'chunkCount'),
        createdAtMs: wholeNumber(v.createdAtMs, 'createdAtMs'),
        ...(v.version === undefined ? {} : { version: wholeNumber(v.version, 'version') }),
      };
    },
  };
}

export interface ChunkIndex {
  readonly chunks: Table<ChunkRecord>;
  readonly packs: Table<PackRecord>;
}

/** The pool's tables, after checking (or, the first time, recording) its hash algorithm. */
export async function openChunkIndex(catalog: CatalogStore, pool: string | undefined, algorithm: ChunkHashAlgorithm): Promise<ChunkIndex> {
  const poolName = pool ?? DEFAULT_POOL;
  if (!POOL_PATTERN.test(poolName)) {
    throw new StorageError('INVALID_ARGUMENT', `dedup pool name ${JSON.stringify(pool)} must be 1 to 63 lower-case letters, digits and dashes`);
  }
  const suffix = pool === undefined ? '' : `-${pool}`;
  const configKey = `dedup-config/${poolName}`;
  const config = await catalog.get(configKey);
  if (config === undefined) {
    const txn = new TxnBuilder();
    txn.compares.push({ key: configKey, modRevision: 0 });
    txn.ops.push({ type: 'put', key: configKey, value: { hashAlgorithm: algorithm } });
    const result = await catalog.txn(txn.compares, txn.ops);
    // Another opener recorded it first: check against what it recorded.
    if (!result.succeeded) return openChunkIndex(catalog, pool, algorithm);
  } else {
    const stored = typeof config.value === 'object' && config.value !== null && !Array.isArray(config.value) ? config.value.hashAlgorithm : undefined;
    if (typeof stored !== 'string' || !(CHUNK_HASH_ALGORITHMS as readonly string[]).includes(stored)) {
      throw new StorageError('CORRUPT', `catalog record ${configKey} is damaged (${JSON.stringify(config.value).slice(0, 80)})`);
    }
    if (stored !== algorithm) {
      throw new StorageError('INVALID_ARGUMENT', `dedup pool ${poolName} names its chunks by ${stored}, not ${algorithm}; open it with ${stored}`);
    }
  }
  return {
    chunks: new Table(catalog, chunkSchema(`chunk${suffix}`)),
    packs: new Table(catalog, packSchema(`pack${suffix}`)),
  };
}
