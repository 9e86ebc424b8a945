/**
 * Single objects: PutObject (streamed, chunked, journalled), GetObject and HeadObject (conditional,
 * ranged, streamed out), DeleteObject (a delete marker when versioned), CopyObject (by reference
 * within a pool), DeleteObjects.
 */
import type { ChunkManifest } from '../store/chunked/manifest.js';
import { HASHES_PER_CALL } from '../store/chunked/seal.js';
import { GiB } from '../core/units.js';
import type { TxnBuilder, Versioned } from '../meta/table.js';
import { checkChecksumValue, type ChecksumAlgorithm } from './checksums.js';
import { evaluateConditions, type ConditionHeaders } from './conditions.js';
import type { ObjectContext } from './context.js';
import { readBody } from './data-reader.js';
import { manifestForRead } from './read-manifests.js';
import { writeBody, writeBodyOrKeepSmall, type HeldStep, type WriteBodyOptions, type WrittenBody } from './data-writer.js';
import { asObjectWrite, beginObjectWrite } from './hash-workers.js';
import { ObjectError, isObjectError, type S3ErrorCode } from './errors.js';
import { INLINE_OBJECT_BYTES_MAX, requireInlineObject, requireManifest, saveManifest } from './manifest-storage.js';
import { checkObjectKey } from './names.js';
import { PutJournal } from './put-journal.js';
import { resolveRange, type ByteRangeRequest } from './range.js';
import { resolveVersionForRead } from './read-buckets.js';
import type { ContentHeaders, ObjectVersionRecord, StoredChecksum } from './records.js';
import { installVersion, NULL_VERSION_ID, removeVersion, resolveVersion, type InstallRequest } from './versions.js';
import type { BucketRecord } from './records.js';

/** The largest object a single PUT (or one part) may carry: 5 GiB, as S3. */
export const SINGLE_PUT_BYTES_MAX = 5 * GiB;

/** What a client says about the body it sends. */
export interface BodyClaims {
  /** Content-Length (or the decoded length of an aws-chunked body). */
  readonly sizeBytes?: number;
  /** Content-MD5, base64: BadDigest when the body's MD5 differs. */
  readonly contentMd5?: string;
  /**
   * x-amz-content-sha256 of a payload signed as a whole (hex): XAmzContentSHA256Mismatch when the
   * body's SHA-256 differs. Checked here, where the body's MD5 is computed in the same pass.
   */
  readonly payloadSha256Hex?: string;
  readonly checksumAlgorithm?: ChecksumAlgorithm;
  /**
   * The checksum value the client sent (base64), read once the body has ended: a trailer
   * (aws-chunked) arrives after the body. BadDigest when it differs.
   */
  readonly expectedChecksum?: () => string | undefined;
}

export interface PutObjectRequest {
  readonly bucket: string;
  readonly key: string;
  readonly owner: string;
  readonly body: AsyncIterable<Uint8Array>;
  readonly claims?: BodyClaims;
  readonly headers?: ContentHeaders;
  readonly userMetadata?: Readonly<Record<string, string>>;
  readonly conditions?: ConditionHeaders;
  readonly signal?: AbortSignal;
}

export interface PutObjectResult {
  readonly versionId: string;
  readonly etag: string;
  readonly checksum?: StoredChecksum;
  readonly sizeBytes: number;
}

/** What the writer must know of a client's claims about a body: its size, the checksum to compute, whether the SHA-256 is needed. */
export function writeOptionsFor(claims: BodyClaims | undefined, signal: AbortSignal | undefined): Pick<WriteBodyOptions, 'expectedSizeBytes' | 'checksumAlgorithm' | 'sha256' | 'signal'> {
  return {
    ...(claims?.sizeBytes === undefined ? {} : { expectedSizeBytes: claims.sizeBytes }),
    ...(claims?.checksumAlgorithm === undefined ? {} : { checksumAlgorithm: claims.checksumAlgorithm }),
    ...(claims?.payloadSha256Hex === undefined ? {} : { sha256: true }),
    ...(signal === undefined ? {} : { signal }),
  };
}

/** Checks a written body against what the client claimed (after the body ended, before it is kept). */
export function checkClaims(written: Pick<WrittenBody, 'md5' | 'checksum' | 'sha256'>, claims: BodyClaims | undefined): StoredChecksum | undefined {
  if (claims?.payloadSha256Hex !== undefined && written.sha256?.toString('hex') !== claims.payloadSha256Hex) {
    throw new ObjectError('XAmzContentSHA256Mismatch', "the provided 'x-amz-content-sha256' header does not match what was computed");
  }
  if (claims?.contentMd5 !== undefined && written.md5.toString('base64') !== claims.contentMd5) {
    throw new ObjectError('BadDigest', 'the Content-MD5 you specified did not match the MD5 of the body received');
  }
  const algorithm = claims?.checksumAlgorithm;
  if (algorithm === undefined || written.checksum === undefined) return undefined;
  const expected = claims?.expectedChecksum?.();
  if (expected !== undefined) {
    checkChecksumValue(algorithm, expected);
    if (expected !== written.checksum) {
      throw new ObjectError('BadDigest', `the x-amz-checksum-${algorithm.toLowerCase()} you specified did not match the checksum of the body received`);
    }
  }
  return { algorithm, value: written.checksum };
}

/** Early refusal of a conditional put whose condition already fails (checked again at commit). */
async function precheck(context: ObjectContext, request: { bucket: string; key: string; conditions?: ConditionHeaders }): Promise<void> {
  if (request.conditions === undefined) return;
  try {
    const { version } = await resolveVersion(context, request.bucket, request.key);
    if (request.conditions.ifNoneMatch !== undefined && evaluateConditions({ ifNoneMatch: request.conditions.ifNoneMatch }, { etag: version.data!.etag, lastModifiedMs: version.lastModifiedMs }, false) !== 'proceed') {
      throw new ObjectError('PreconditionFailed', `${request.key} exists and If-None-Match refuses to replace it`);
    }
  } catch (err) {
    if (!isObjectError(err, 'NoSuchKey')) throw err;
  }
}

/**
 * Streams the body into the bucket's pool and makes it the key's newest version. Nothing is
 * visible until the one transaction that installs the version; a body that fails, is aborted or
 * breaks a condition leaves no version and gives back every reference it added.
 */
export async function putObject(context: ObjectContext, request: PutObjectRequest): Promise<PutObjectResult> {
  checkObjectKey(request.key);
  const bucketRead = await context.bucket(request.bucket);
  const bucket = bucketRead.record;
  await precheck(context, request);
  const repository = await context.repositoryOf(bucket.pool);
  const journal = PutJournal.begin(context, bucket.pool, repository);
  const endWrite = beginObjectWrite();
  let heldStep: HeldStep | undefined;
  try {
    const written = await writeBodyOrKeepSmall(journal, request.body, {
      sizeBytesMax: SINGLE_PUT_BYTES_MAX,
      inlineBytesMax: INLINE_OBJECT_BYTES_MAX,
      // A body of one step: its references go in with the version (one commit, no journal record).
      holdSingleStep: journal.recordsWithReferences,
      ...writeOptionsFor(request.claims, request.signal),
    });
    heldStep = written.heldStep;
    const checksum = checkClaims(written, request.claims);
    const etag = written.md5.toString('hex');
    const content = 'inlineBytes' in written ? written.inlineBytes : written.manifest;
    const references = heldStep === undefined ? undefined : { repository, chunks: heldStep.chunks };
    const version = await storeVersion(context, journal, { ...request, bucketRead }, content, { sizeBytes: written.sizeBytes, etag, checksum }, request.signal, undefined, references);
    return { versionId: version.versionId, etag, sizeBytes: written.sizeBytes, ...(checksum === undefined ? {} : { checksum }) };
  } catch (err) {
    await journal.abandon();
    throw err;
  } finally {
    heldStep?.release();
    endWrite();
  }
}

/** Saves the manifest (or a small object's bytes) under the put's id and installs the version that names it. */
export async function storeVersion(
  context: ObjectContext,
  journal: PutJournal,
  request: { bucket: string; key: string; owner: string; headers?: ContentHeaders; userMetadata?: Readonly<Record<string, string>>; conditions?: ConditionHeaders; bucketRead?: Versioned<BucketRecord> },
  content: ChunkManifest | Uint8Array,
  facts: { sizeBytes: number; etag: string; checksum: StoredChecksum | undefined; partCount?: number },
  signal?: AbortSignal,
  extend?: (txn: TxnBuilder) => void,
  references?: InstallRequest['references'],
): Promise<ObjectVersionRecord> {
  const saved = await saveManifest(context, journal, content, signal);
  return installVersion(context, {
    bucketName: request.bucket,
    key: request.key,
    version: {
      owner: request.owner,
      isDeleteMarker: false,
      data: {
        sizeBytes: facts.sizeBytes,
        etag: facts.etag,
        manifest: saved.ref,
        headers: request.headers ?? {},
        userMetadata: request.userMetadata ?? {},
        ...(facts.checksum === undefined ? {} : { checksum: facts.checksum }),
        ...(facts.partCount === undefined ? {} : { partCount: facts.partCount }),
      },
    },
    ops: saved.ops,
    journal,
    ...(extend === undefined ? {} : { extend }),
    ...(references === undefined ? {} : { references }),
    ...(request.conditions === undefined ? {} : { conditions: request.conditions }),
    ...(request.bucketRead === undefined ? {} : { bucket: request.bucketRead }),
  });
}

export interface GetObjectRequest {
  readonly bucket: string;
  readonly key: string;
  readonly versionId?: string;
  readonly range?: ByteRangeRequest;
  readonly conditions?: ConditionHeaders;
}

export type GetObjectResult =
  | { readonly outcome: 'not-modified'; readonly version: ObjectVersionRecord }
  | {
      readonly outcome: 'ok';
      readonly version: ObjectVersionRecord;
      /** The bytes [startBytes, endBytes) the body carries (the whole object without a range). */
      readonly startBytes: number;
      readonly endBytes: number;
      /** Present when a range was asked for (206 with Content-Range). */
      readonly ranged: boolean;
      /** Streams the bytes (call once; GET only). */
      body(signal?: AbortSignal): AsyncIterable<Uint8Array>;
    };

/** GetObject and HeadObject (HEAD never calls body()). PreconditionFailed and InvalidRange are thrown. */
export async function getObject(context: ObjectContext, request: GetObjectRequest): Promise<GetObjectResult> {
  checkObjectKey(request.key);
  const { bucket, version } = await resolveVersionForRead(context, request.bucket, request.key, request.versionId);
  const data = version.data!;
  if (request.conditions !== undefined) {
    const outcome = evaluateConditions(request.conditions, { etag: data.etag, lastModifiedMs: version.lastModifiedMs }, true);
    if (outcome === 'precondition-failed') throw new ObjectError('PreconditionFailed', `at least one of the preconditions given for ${request.key} did not hold`);
    if (outcome === 'not-modified') return { outcome, version };
  }
  const { startBytes, endBytes } = request.range === undefined ? { startBytes: 0, endBytes: data.sizeBytes } : resolveRange(request.range, data.sizeBytes);
  return {
    outcome: 'ok',
    version,
    startBytes,
    endBytes,
    ranged: request.range !== undefined,
    body: (signal) => streamVersion(context, bucket, version, startBytes, endBytes, signal),
  };
}

async function* streamVersion(context: ObjectContext, bucket: BucketRecord, version: ObjectVersionRecord, startBytes: number, endBytes: number, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
  const ref = version.data!.manifest;
  if (ref.place === 'inline') {
    yield (await requireInlineObject(context, ref)).subarray(startBytes, endBytes);
    return;
  }
  const repository = await context.repositoryOf(bucket.pool);
  const manifest = await manifestForRead(context, ref);
  yield* readBody(repository, manifest, startBytes, endBytes, signal);
}

export interface DeleteObjectResult {
  readonly versionId?: string;
  /** True when the delete made a delete marker, or removed one by id. */
  readonly deleteMarker: boolean;
}

/**
 * DeleteObject: with a version id, removes that version for good; else a delete marker in a
 * versioned bucket (a null marker when suspended), or the null version when unversioned. Deleting
 * what does not exist succeeds, as in S3.
 */
export async function deleteObject(context: ObjectContext, request: { bucket: string; key: string; owner: string; versionId?: string }): Promise<DeleteObjectResult> {
  checkObjectKey(request.key);
  if (request.versionId !== undefined) {
    const { removed } = await removeVersion(context, request.bucket, request.key, request.versionId);
    return { versionId: request.versionId, deleteMarker: removed?.isDeleteMarker ?? false };
  }
  const bucket = (await context.bucket(request.bucket)).record;
  if (bucket.versioning === 'unversioned') {
    await removeVersion(context, request.bucket, request.key, NULL_VERSION_ID);
    return { deleteMarker: false };
  }
  const marker = await installVersion(context, { bucketName: request.bucket, key: request.key, version: { owner: request.owner, isDeleteMarker: true } });
  return { versionId: marker.versionId, deleteMarker: true };
}

/** DeleteObjects: each key deleted on its own; failures reported per key, as S3 does. */
export async function deleteObjects(
  context: ObjectContext,
  request: { bucket: string; owner: string; objects: readonly { key: string; versionId?: string }[] },
): Promise<{
  deleted: ({ key: string } & DeleteObjectResult)[];
  errors: { key: string; versionId?: string; code: S3ErrorCode | 'InternalError'; message: string }[];
}> {
  if (request.objects.length > DELETE_OBJECTS_MAX) {
    throw new ObjectError('InvalidRequest', `DeleteObjects takes at most ${DELETE_OBJECTS_MAX} keys; this request has ${request.objects.length}`);
  }
  await context.bucket(request.bucket);
  const deleted: ({ key: string } & DeleteObjectResult)[] = [];
  const errors: { key: string; versionId?: string; code: S3ErrorCode | 'InternalError'; message: string }[] = [];
  for (const object of request.objects) {
    try {
      const result = await deleteObject(context, { bucket: request.bucket, owner: request.owner, ...object });
      deleted.push({ key: object.key, ...result });
    } catch (err) {
      const code = isObjectError(err) ? err.s3Code : 'InternalError';
      errors.push({ key: object.key, ...(object.versionId === undefined ? {} : { versionId: object.versionId }), code, message: err instanceof Error ? err.message : String(err) });
    }
  }
  return { deleted, errors };
}

/** Keys one DeleteObjects request may name (S3's limit). */
export const DELETE_OBJECTS_MAX = 1000;

export interface CopyObjectRequest {
  readonly source: { readonly bucket: string; readonly key: string; readonly versionId?: string };
  readonly bucket: string;
  readonly key: string;
  readonly owner: string;
  /** COPY (default) keeps the source's content headers and metadata; REPLACE takes these. */
  readonly metadataDirective?: 'COPY' | 'REPLACE';
  readonly headers?: ContentHeaders;
  readonly userMetadata?: Readonly<Record<string, string>>;
  /** x-amz-copy-source-if-*: evaluated against the source. */
  readonly sourceConditions?: ConditionHeaders;
  /** If-Match / If-None-Match on the destination. */
  readonly conditions?: ConditionHeaders;
  readonly signal?: AbortSignal;
}

export interface CopyObjectResult {
  readonly versionId: string;
  readonly sourceVersionId: string;
  readonly etag: string;
  readonly lastModifiedMs: number;
}

/**
 * CopyObject. Within one pool the copy shares every chunk of the source (references added by
 * hash, no byte moved); across pools the bytes stream from one repository into the other.
 */
export function copyObject(context: ObjectContext, request: CopyObjectRequest): Promise<CopyObjectResult> {
  // An object write like a PUT's, from the request to its commit (hash-workers.ts: a body beside it goes to a worker).
  return asObjectWrite(() => copyObjectCounted(context, request));
}

async function copyObjectCounted(context: ObjectContext, request: CopyObjectRequest): Promise<CopyObjectResult> {
  checkObjectKey(request.key);
  checkObjectKey(request.source.key);
  const directive = request.metadataDirective ?? 'COPY';
  const { bucket: sourceBucket, version: source } = await resolveVersion(context, request.source.bucket, request.source.key, request.source.versionId);
  const data = source.data!;
  if (request.sourceConditions !== undefined && evaluateConditions(request.sourceConditions, { etag: data.etag, lastModifiedMs: source.lastModifiedMs }, false) !== 'proceed') {
    throw new ObjectError('PreconditionFailed', `a copy-source precondition did not hold for ${request.source.key}`);
  }
  if (request.source.bucket === request.bucket && request.source.key === request.key && request.source.versionId === undefined && directive === 'COPY') {
    throw new ObjectError('InvalidRequest', 'this copy request is illegal because it is trying to copy an object to itself without changing the object\'s metadata: use the REPLACE metadata directive');
  }
  const target = (await context.bucket(request.bucket)).record;
  const repository = await context.repositoryOf(target.pool);
  const journal = PutJournal.begin(context, target.pool, repository);
  try {
    let copied: ChunkManifest | Uint8Array;
    if (data.manifest.place === 'inline') {
      copied = await requireInlineObject(context, data.manifest); // a small object's bytes are copied
    } else if (target.pool === sourceBucket.pool) {
      const manifest = await requireManifest(context, data.manifest);
      copied = manifest;
      await addManifestReferences(journal, manifest, request.signal);
    } else {
      const manifest = await requireManifest(context, data.manifest);
      const sourceRepository = await context.repositoryOf(sourceBucket.pool);
      ({ manifest: copied } = await writeBody(journal, readBody(sourceRepository, manifest, 0, manifest.fileSizeBytes, request.signal), {
        sizeBytesMax: manifest.fileSizeBytes,
        ...(request.signal === undefined ? {} : { signal: request.signal }),
      }));
    }
    const version = await storeVersion(
      context,
      journal,
      {
        bucket: request.bucket,
        key: request.key,
        owner: request.owner,
        headers: directive === 'COPY' ? data.headers : (request.headers ?? {}),
        userMetadata: directive === 'COPY' ? data.userMetadata : (request.userMetadata ?? {}),
        ...(request.conditions === undefined ? {} : { conditions: request.conditions }),
      },
      copied,
      { sizeBytes: data.sizeBytes, etag: data.etag, checksum: data.checksum, ...(data.partCount === undefined ? {} : { partCount: data.partCount }) },
      request.signal,
    );
    return { versionId: version.versionId, sourceVersionId: source.versionId, etag: data.etag, lastModifiedMs: version.lastModifiedMs };
  } catch (err) {
    await journal.abandon();
    throw err;
  }
}

/** Adds one reference per stored chunk of `manifest` through the journal, a bounded call at a time. */
export async function addManifestReferences(journal: PutJournal, manifest: ChunkManifest, signal?: AbortSignal): Promise<void> {
  let batch: string[] = [];
  for (const hash of manifest.storedHashes()) {
    batch.push(hash);
    if (batch.length === HASHES_PER_CALL) {
      await journal.addByHash(batch, signal);
      batch = [];
    }
  }
  await journal.addByHash(batch, signal);
}
