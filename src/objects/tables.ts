/**
 * The object model's catalog tables. Keys are laid out so that every question is a bounded prefix
 * read in key order:
 *
 *   s3-bucket/<name>                         BucketRecord (index owner: <owner>\1<name>)
 *   s3-current/<bucketId>/<key>\1            the key's current version when it is an object
 *                                            (ListObjects reads only these)
 *   s3-version/<bucketId>/<key>\1<slot>      every version and delete marker, newest first per key
 *                                            (index null: <bucketId>/<key> -> its null version)
 *   s3-upload/<uploadId>                     UploadRecord (index key: <bucketId>/<key>\1<uploadId>)
 *   s3-part/<uploadId>/<part, 5 digits>      PartRecord
 *   s3-put/<putId>, s3-put-step/<putId>/<seq> puts in progress and their journalled reference steps
 *   s3-release/<id>                          references still to be given back
 *   s3-manifest/<manifestId>                 small encoded manifests (base64; manifest-storage.ts)
 *
 * The U+0001 after a key (shown as \1) ends it, so `a` sorts before `a/b` and before `a0`, as in S3
 * (keys hold no U+0001: names.ts refuses it; catalog keys hold no NUL). Order is the catalog's (UTF-16 code units), which is S3's UTF-8 byte
 * order except for characters past U+FFFF against U+E000..U+FFFF.
 */
import type { CatalogStore, CatalogValue } from '../core/catalog-store.js';
import { Table, type TableSchema } from '../meta/table.js';
import { CHECKSUM_ALGORITHMS } from './checksums.js';
import {
  CANNED_ACLS,
  VERSIONING_STATES,
  type BucketRecord,
  type ObjectVersionRecord,
  type PartRecord,
  type PendingPutRecord,
  type ReferenceStepRecord,
  type ReleaseRecord,
  type UploadRecord,
} from './records.js';

/** Ends an object key inside a catalog key. */
export const KEY_END = '\u0001';
export const PART_NUMBER_DIGITS = 5;
const STEP_SEQ_DIGITS = 8;

type Fields = Record<string, CatalogValue>;

function objectOf(value: CatalogValue, what: string): Fields {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new Error(`${what} is not an object`);
  return value;
}

function requireFields(fields: Fields, spec: Record<string, 'string' | 'number' | 'boolean' | 'object'>, what: string): void {
  for (const [name, type] of Object.entries(spec)) {
    const got = fields[name];
    const actual = got === null ? 'null' : Array.isArray(got) ? 'array' : typeof got;
    if (actual !== type) throw new Error(`${what}.${name} is ${actual}, not ${type}`);
  }
}

function oneOf(value: CatalogValue | undefined, allowed: readonly string[], what: string): void {
  if (typeof value !== 'string' || !allowed.includes(value)) throw new Error(`${what} is ${JSON.stringify(value)}, not one of ${allowed.join(', ')}`);
}

function checkData(data: CatalogValue | undefined, what: string): void {
  const fields = objectOf(data ?? null, what);
  requireFields(fields, { sizeBytes: 'number', etag: 'string', manifest: 'object' }, what);
  if (fields.checksum !== undefined) oneOf(objectOf(fields.checksum, `${what}.checksum`).algorithm, CHECKSUM_ALGORITHMS, `${what}.checksum.algorithm`);
}

export const BUCKET_SCHEMA: TableSchema<BucketRecord> = {
  name: 's3-bucket',
  id: (record) => record.name,
  parse(value) {
    const fields = objectOf(value, 'bucket');
    requireFields(fields, { name: 'string', id: 'string', owner: 'string', pool: 'string', createdAtMs: 'number' }, 'bucket');
    oneOf(fields.versioning, VERSIONING_STATES, 'bucket.versioning');
    oneOf(fields.acl, CANNED_ACLS, 'bucket.acl');
    if (fields.deleting !== undefined && fields.deleting !== true) throw new Error(`bucket.deleting is ${JSON.stringify(fields.deleting)}, not true`);
    if (fields.purging !== undefined && fields.purging !== true) throw new Error(`bucket.purging is ${JSON.stringify(fields.purging)}, not true`);
    return fields as unknown as BucketRecord;
  },
  indexes: { owner: (record) => `${record.owner}${KEY_END}${record.name}` },
};

export function versionId(bucketId: string, key: string, slot: string): string {
  return `${bucketId}/${key}${KEY_END}${slot}`;
}

function parseVersion(value: CatalogValue): ObjectVersionRecord {
  const fields = objectOf(value, 'version');
  requireFields(fields, { bucketId: 'string', key: 'string', versionId: 'string', slot: 'string', isDeleteMarker: 'boolean', lastModifiedMs: 'number' }, 'version');
  if (!fields.isDeleteMarker) checkData(fields.data, 'version.data');
  return fields as unknown as ObjectVersionRecord;
}

export const VERSION_SCHEMA: TableSchema<ObjectVersionRecord> = {
  name: 's3-version',
  id: (record) => versionId(record.bucketId, record.key, record.slot),
  parse: parseVersion,
  indexes: { null: (record) => (record.versionId === 'null' ? `${record.bucketId}/${record.key}` : undefined) },
};

export function currentId(bucketId: string, key: string): string {
  return `${bucketId}/${key}${KEY_END}`;
}

export const CURRENT_SCHEMA: TableSchema<ObjectVersionRecord> = {
  name: 's3-current',
  id: (record) => currentId(record.bucketId, record.key),
  parse: parseVersion,
};

export const UPLOAD_SCHEMA: TableSchema<UploadRecord> = {
  name: 's3-upload',
  id: (record) => record.uploadId,
  parse(value) {
    const fields = objectOf(value, 'upload');
    requireFields(fields, { uploadId: 'string', bucketId: 'string', key: 'string', owner: 'string', initiatedAtMs: 'number' }, 'upload');
    return fields as unknown as UploadRecord;
  },
  indexes: { key: (record) => `${record.bucketId}/${record.key}${KEY_END}${record.uploadId}` },
};

export function partId(uploadId: string, partNumber: number): string {
  return `${uploadId}/${String(partNumber).padStart(PART_NUMBER_DIGITS, '0')}`;
}

export const PART_SCHEMA: TableSchema<PartRecord> = {
  name: 's3-part',
  id: (record) => partId(record.uploadId, record.partNumber),
  parse(value) {
    const fields = objectOf(value, 'part');
    requireFields(fields, { uploadId: 'string', partNumber: 'number', lastModifiedMs: 'number' }, 'part');
    checkData(fields, 'part');
    return fields as unknown as PartRecord;
  },
};

export const PUT_SCHEMA: TableSchema<PendingPutRecord> = {
  name: 's3-put',
  id: (record) => record.putId,
  parse(value) {
    const fields = objectOf(value, 'put');
    requireFields(fields, { putId: 'string', pool: 'string', startedAtMs: 'number' }, 'put');
    oneOf(fields.state, ['writing', 'committed'], 'put.state');
    return fields as unknown as PendingPutRecord;
  },
};

export function stepId(putId: string, seq: number): string {
  return `${putId}/${String(seq).padStart(STEP_SEQ_DIGITS, '0')}`;
}

export const STEP_SCHEMA: TableSchema<ReferenceStepRecord> = {
  name: 's3-put-step',
  id: (record) => stepId(record.putId, record.seq),
  parse(value) {
    const fields = objectOf(value, 'step');
    requireFields(fields, { putId: 'string', seq: 'number', pool: 'string' }, 'step');
    if (!Array.isArray(fields.hashes)) throw new Error('step.hashes is not an array');
    if (fields.appliedWithRecord !== undefined) {
      if (fields.appliedWithRecord !== true) throw new Error(`step.appliedWithRecord is ${JSON.stringify(fields.appliedWithRecord)}, not true`);
      if (fields.marker !== undefined) throw new Error('a step applied with its record has no marker');
    } else {
      requireFields(fields, { marker: 'string', markerRefsWhenApplied: 'number' }, 'step');
    }
    return fields as unknown as ReferenceStepRecord;
  },
};

export const RELEASE_SCHEMA: TableSchema<ReleaseRecord> = {
  name: 's3-release',
  id: (record) => record.id,
  parse(value) {
    const fields = objectOf(value, 'release');
    requireFields(fields, { id: 'string', pool: 'string' }, 'release');
    oneOf(fields.kind, ['manifest', 'upload-parts'], 'release.kind');
    return fields as unknown as ReleaseRecord;
  },
};

/** Every table of the model over one catalog. */
export class ObjectTables {
  readonly buckets: Table<BucketRecord>;
  readonly versions: Table<ObjectVersionRecord>;
  readonly current: Table<ObjectVersionRecord>;
  readonly uploads: Table<UploadRecord>;
  readonly parts: Table<PartRecord>;
  readonly puts: Table<PendingPutRecord>;
  readonly steps: Table<ReferenceStepRecord>;
  readonly releases: Table<ReleaseRecord>;

  constructor(readonly catalog: CatalogStore) {
    this.buckets = new Table(catalog, BUCKET_SCHEMA);
    this.versions = new Table(catalog, VERSION_SCHEMA);
    this.current = new Table(catalog, CURRENT_SCHEMA);
    this.uploads = new Table(catalog, UPLOAD_SCHEMA);
    this.parts = new Table(catalog, PART_SCHEMA);
    this.puts = new Table(catalog, PUT_SCHEMA);
    this.steps = new Table(catalog, STEP_SCHEMA);
    this.releases = new Table(catalog, RELEASE_SCHEMA);
  }
}
