/**
 * Versions: what makes a new version (or delete marker) visible, removes one, and finds one.
 *
 * A key's versions are records in key order, newest first; `s3-current` holds a copy of the
 * newest when it is an object (a key whose newest version is a delete marker is not listed).
 * Versioning 'enabled' gives every write a new version id; 'unversioned' and 'suspended' write
 * the null version, replacing the previous null version (whose data is released). Every change
 * is one transaction that compares the bucket record and each record it read, retried when
 * another writer got there first.
 */
import type { CatalogOp, CatalogValue } from '../core/catalog-store.js';
import { assert } from '../core/errors.js';
import { TxnBuilder, type Versioned } from '../meta/table.js';
import type { ChunkRepository, HashedChunk } from '../store/dedup/repository.js';
import { checkWriteConditions, type ConditionHeaders } from './conditions.js';
import { finishAfterCommit, retryOnConflict, type ObjectContext } from './context.js';
import { ObjectError } from './errors.js';
import type { PutJournal } from './put-journal.js';
import type { BucketRecord, ObjectVersionRecord } from './records.js';
import { releaseManifestInto, runReleases } from './releases.js';
import { currentId, KEY_END, versionId as versionRecordId } from './tables.js';

export const NULL_VERSION_ID = 'null';

/** What a new version carries (the model fills in ids, slot, time). */
export type NewVersion = Pick<ObjectVersionRecord, 'owner' | 'isDeleteMarker' | 'data'>;

export interface InstallRequest {
  readonly bucketName: string;
  readonly key: string;
  readonly version: NewVersion;
  /** Catalog ops that must commit with the version (a small manifest). */
  readonly ops?: readonly CatalogOp[];
  /** The put whose references the version takes over. */
  readonly journal?: PutJournal;
  readonly conditions?: ConditionHeaders;
  /** Ops and compares of other records the same transaction must carry (a completed upload). */
  readonly extend?: (txn: TxnBuilder) => Promise<void> | void;
  /** The bucket as the caller just read it: the first attempt uses it (the commit compares it) instead of reading it again. */
  readonly bucket?: Versioned<BucketRecord>;
  /**
   * A put's only step of chunks (data-writer.ts, holdSingleStep), whose references are added in
   * the version's own transaction: one catalog commit for the put, and no journal record, since
   * nothing of the put exists outside that transaction but packs nothing references yet.
   */
  readonly references?: { readonly repository: ChunkRepository; readonly chunks: readonly HashedChunk[] };
}

/** The newest version (object or delete marker) of a key, if any. */
export async function newestVersion(context: ObjectContext, bucketId: string, key: string): Promise<Versioned<ObjectVersionRecord> | undefined> {
  const page = await context.tables.versions.prefixPage(`${bucketId}/${key}${KEY_END}`, { limit: 1 });
  return page.records[0];
}

/** The version `versionId` of a key ("null" for the null version), if it exists. */
export async function findVersion(context: ObjectContext, bucketId: string, key: string, versionId: string): Promise<Versioned<ObjectVersionRecord> | undefined> {
  if (versionId === NULL_VERSION_ID) return context.tables.versions.lookup('null', `${bucketId}/${key}`);
  if (!/^[0-9a-f]{21}$/.test(versionId)) throw new ObjectError('InvalidArgument', `version id "${versionId.slice(0, 80)}" is not one this store made`);
  const found = await context.tables.versions.get(versionRecordId(bucketId, key, versionId));
  return found?.record.key === key ? found : undefined;
}

/** The transaction fails (BUSY) unless the bucket record is still as read: a bucket deleted or changed meanwhile (bucket-cache.ts relies on it). */
export function compareBucket(context: ObjectContext, txn: TxnBuilder, bucket: Versioned<BucketRecord>): void {
  txn.compares.push({ key: context.tables.buckets.recordKey(bucket.record.name), modRevision: bucket.modRevision });
}

/**
 * The new null version takes the place of the old one: the old record goes, the new one (at its
 * own slot, the newest) is created, and the null index entry is pointed at it in the same
 * transaction (Table.put would claim the entry as new, and it exists).
 */
function replaceNullVersion(context: ObjectContext, txn: TxnBuilder, previous: Versioned<ObjectVersionRecord>, record: ObjectVersionRecord): void {
  const table = context.tables.versions;
  const previousKey = table.recordKey(table.schema.id(previous.record));
  const key = table.recordKey(table.schema.id(record));
  txn.compares.push({ key: previousKey, modRevision: previous.modRevision }, { key, modRevision: 0 });
  txn.ops.push(
    { type: 'delete', key: previousKey },
    { type: 'put', key, value: record as unknown as CatalogValue },
    { type: 'put', key: table.indexKey('null', `${record.bucketId}/${record.key}`), value: table.schema.id(record) },
  );
}

/** Makes a new version the key's newest; returns it. */
export async function installVersion(context: ObjectContext, request: InstallRequest): Promise<ObjectVersionRecord> {
  const releases: string[] = [];
  let knownBucket = request.bucket;
  const installed = await retryOnConflict(context, async () => {
    releases.length = 0;
    const bucket = knownBucket ?? (await context.bucket(request.bucketName));
    knownBucket = undefined; // a retry reads it again
    const bucketId = bucket.record.id;
    const writesNull = bucket.record.versioning !== 'enabled';
    // The two reads the transaction compares, at once (a small PUT's latency is these round trips).
    const [current, previousNull] = await Promise.all([
      context.tables.current.get(currentId(bucketId, request.key)),
      writesNull ? context.tables.versions.lookup('null', `${bucketId}/${request.key}`) : undefined,
    ]);
    if (request.conditions !== undefined) {
      const target = current?.record.data === undefined ? undefined : { etag: current.record.data.etag, lastModifiedMs: current.record.lastModifiedMs };
      checkWriteConditions(request.conditions, target, request.key);
    }
    const slot = context.newSlot();
    const record: ObjectVersionRecord = {
      bucketId,
      key: request.key,
      versionId: writesNull ? NULL_VERSION_ID : slot,
      slot,
      isDeleteMarker: request.version.isDeleteMarker,
      lastModifiedMs: context.nowMs(),
      owner: request.version.owner,
      ...(request.version.data === undefined ? {} : { data: request.version.data }),
    };
    const txn = new TxnBuilder();
    compareBucket(context, txn, bucket);
    if (previousNull !== undefined) {
      replaceNullVersion(context, txn, previousNull, record);
      const data = previousNull.record.data;
      if (data !== undefined) releases.push(releaseManifestInto(context, txn, bucket.record.pool, data.manifest));
    } else {
      context.tables.versions.put(txn, record);
    }
    if (!record.isDeleteMarker) context.tables.current.put(txn, record, current);
    else if (current !== undefined) context.tables.current.delete(txn, current);
    txn.ops.push(...(request.ops ?? []));
    await request.journal?.commitInto(txn);
    await request.extend?.(txn);
    const revision = request.references === undefined ? await txn.commit(context.catalog) : await commitWithReferences(context, txn, request.references);
    request.journal?.committedAt(revision);
    return record;
  });
  await finishAfterCommit(context, async () => {
    await runReleases(context, releases);
    await request.journal?.settle();
  });
  return installed;
}

/**
 * Commits `txn` inside the repository call that adds `references` (its catalogChanges). A lost race
 * on the version's own records throws what txn.commit would (BUSY, or ALREADY_EXISTS for a claimed
 * name), for retryOnConflict to read them again and call again; a race lost on the counts alone the
 * call retries itself. An attempt that loses leaves packs nothing references, which GC removes, as
 * a crash before the commit does.
 */
async function commitWithReferences(context: ObjectContext, txn: TxnBuilder, references: NonNullable<InstallRequest['references']>): Promise<number> {
  let revision: number | undefined;
  await references.repository.addHashedReferences(references.chunks, {
    catalogChanges: {
      catalog: context.catalog,
      add: (target) => {
        target.compares.push(...txn.compares);
        target.ops.push(...txn.ops);
      },
      committedAt: (committed) => (revision = committed),
      conflictOf: (failedKeys) => txn.conflictOf(failedKeys),
    },
  });
  assert(revision !== undefined, 'the repository call that added the references committed the version with them');
  return revision;
}

export interface RemovedVersion {
  /** The version removed, if there was one. */
  readonly removed?: ObjectVersionRecord;
}

/** Removes one version for good (DELETE with a version id, or a delete in an unversioned bucket). */
export async function removeVersion(context: ObjectContext, bucketName: string, key: string, versionId: string): Promise<RemovedVersion> {
  const releases: string[] = [];
  const removed = await retryOnConflict(context, async () => {
    releases.length = 0;
    const bucket = await context.bucket(bucketName);
    const bucketId = bucket.record.id;
    const target = await findVersion(context, bucketId, key, versionId);
    if (target === undefined) return undefined;
    const txn = new TxnBuilder();
    compareBucket(context, txn, bucket);
    context.tables.versions.delete(txn, target);
    if (target.record.data !== undefined) releases.push(releaseManifestInto(context, txn, bucket.record.pool, target.record.data.manifest));
    const newest = await context.tables.versions.prefixPage(`${bucketId}/${key}${KEY_END}`, { limit: 2 });
    if (newest.records[0]?.record.slot === target.record.slot) {
      // The newest goes: the next one (if it is an object) becomes current.
      const current = await context.tables.current.get(currentId(bucketId, key));
      const next = newest.records[1];
      if (next !== undefined) txn.compares.push({ key: context.tables.versions.recordKey(context.tables.versions.schema.id(next.record)), modRevision: next.modRevision });
      if (next !== undefined && !next.record.isDeleteMarker) context.tables.current.put(txn, next.record, current);
      else if (current !== undefined) context.tables.current.delete(txn, current);
    }
    await txn.commit(context.catalog);
    return target.record;
  });
  await finishAfterCommit(context, () => runReleases(context, releases));
  return removed === undefined ? {} : { removed };
}

/**
 * The version a read names: the given version id, or the current one. NoSuchKey (with
 * deleteMarker when the newest is a marker), NoSuchVersion, or MethodNotAllowed for a marker
 * asked for by id.
 */
export async function resolveVersion(context: ObjectContext, bucketName: string, key: string, versionId?: string): Promise<{ bucket: BucketRecord; version: ObjectVersionRecord }> {
  return resolveVersionIn(context, (await context.bucket(bucketName)).record, key, versionId);
}

/** resolveVersion in a bucket record the caller already has. */
export async function resolveVersionIn(context: ObjectContext, bucket: BucketRecord, key: string, versionId?: string): Promise<{ bucket: BucketRecord; version: ObjectVersionRecord }> {
  const bucketName = bucket.name;
  if (versionId !== undefined) {
    const found = await findVersion(context, bucket.id, key, versionId);
    if (found === undefined) throw new ObjectError('NoSuchVersion', `${key} has no version ${versionId}`);
    if (found.record.isDeleteMarker) {
      throw new ObjectError('MethodNotAllowed', `version ${versionId} of ${key} is a delete marker`, { details: { deleteMarker: true, versionId } });
    }
    return { bucket, version: found.record };
  }
  const current = await context.tables.current.get(currentId(bucket.id, key));
  if (current !== undefined) return { bucket, version: current.record };
  const newest = await newestVersion(context, bucket.id, key);
  if (newest?.record.isDeleteMarker) {
    throw new ObjectError('NoSuchKey', `${key} was deleted`, { details: { deleteMarker: true, versionId: newest.record.versionId } });
  }
  throw new ObjectError('NoSuchKey', `${key} does not exist in bucket ${bucketName}`);
}
