/**
 * Multipart uploads: create, upload part (streamed like a PUT; a part uploaded again replaces the
 * old one, whose references are given back), upload part copy (by reference when the range is
 * whole chunks of the source), list parts, abort, complete.
 *
 * Completing: an object is chunked from offset 0, so the object's manifest is the parts'
 * manifests end to end only when every part but the last is a whole number of chunks (5 MiB,
 * 8 MiB, 16 MiB: every part size clients use). Then the references simply change owner: one
 * transaction deletes the part records and installs the version whose manifest concatenates theirs,
 * and no chunk is read, written or counted again. When a part ends mid-chunk, every chunk after it
 * straddles a part boundary at a different offset than the parts were cut at: re-chunking only
 * the boundary chunks cannot help, as all later chunks shift. Then the whole chunks before that
 * first boundary are shared by reference, the bytes after it are streamed once more through the
 * writer (bounded memory) and cut at the object's own boundaries, and the parts are released.
 */
import { Readable } from 'node:stream';
import { createHash } from 'node:crypto';
import { MiB } from '../core/units.js';
import { TxnBuilder, type Versioned } from '../meta/table.js';
import type { ChunkManifest } from '../store/chunked/manifest.js';
import { HASHES_PER_CALL } from '../store/chunked/seal.js';
import { compositeChecksum, runningMd5, type ChecksumAlgorithm } from './checksums.js';
import { evaluateConditions, type ConditionHeaders } from './conditions.js';
import { finishAfterCommit, OBJECT_CHUNK_SIZE_BYTES, retryOnConflict, type ObjectContext } from './context.js';
import { readBody } from './data-reader.js';
import { writeBody } from './data-writer.js';
import { asObjectWrite, beginObjectWrite } from './hash-workers.js';
import { ObjectError } from './errors.js';
import { AppendingManifestBuilder, appendChunksOf } from './manifest-builder.js';
import { manifestCatalogKey, removeManifest, requireInlineObject, requireManifest, saveManifest } from './manifest-storage.js';
import { checkObjectKey } from './names.js';
import { addManifestReferences, checkClaims, SINGLE_PUT_BYTES_MAX, storeVersion, writeOptionsFor, type BodyClaims } from './objects.js';
import { PutJournal } from './put-journal.js';
import { resolveRange, type ByteRangeRequest } from './range.js';
import type { ChunkRepository } from '../store/dedup/repository.js';
import type { BucketRecord, ContentHeaders, PartRecord, StoredChecksum, UploadRecord } from './records.js';
import { releaseManifestInto, releaseUploadPartsInto, runReleases, uploadPartsReleaseId } from './releases.js';
import { partId } from './tables.js';
import { compareBucket, resolveVersion } from './versions.js';

export const PART_NUMBER_MIN = 1;
export const PART_NUMBER_MAX = 10_000;
/** Every part but the last must be at least this large (S3's EntityTooSmall). */
export const PART_SIZE_BYTES_MIN = 5 * MiB;
export const PARTS_PAGE_MAX = 1000;

export async function createMultipartUpload(
  context: ObjectContext,
  request: { bucket: string; key: string; owner: string; headers?: ContentHeaders; userMetadata?: Readonly<Record<string, string>>; checksumAlgorithm?: ChecksumAlgorithm },
): Promise<UploadRecord> {
  checkObjectKey(request.key);
  return retryOnConflict(context, async () => {
    const bucket = await context.bucket(request.bucket);
    const record: UploadRecord = {
      uploadId: context.newId(),
      bucketId: bucket.record.id,
      key: request.key,
      owner: request.owner,
      initiatedAtMs: context.nowMs(),
      headers: request.headers ?? {},
      userMetadata: request.userMetadata ?? {},
      ...(request.checksumAlgorithm === undefined ? {} : { checksumAlgorithm: request.checksumAlgorithm }),
    };
    const txn = new TxnBuilder();
    compareBucket(context, txn, bucket);
    context.tables.uploads.put(txn, record);
    await txn.commit(context.catalog);
    return record;
  });
}

async function requireUpload(context: ObjectContext, bucketName: string, key: string, uploadId: string): Promise<{ bucket: BucketRecord; upload: Versioned<UploadRecord> }> {
  const bucket = (await context.bucket(bucketName)).record;
  const upload = /^[0-9a-f]{32}$/.test(uploadId) ? await context.tables.uploads.get(uploadId) : undefined;
  if (upload === undefined || upload.record.bucketId !== bucket.id || upload.record.key !== key) {
    throw new ObjectError('NoSuchUpload', `there is no multipart upload ${uploadId.slice(0, 80)} of ${key} in bucket ${bucketName}: it may have been completed or aborted`);
  }
  return { bucket, upload };
}

function checkPartNumber(partNumber: number): void {
  if (!Number.isInteger(partNumber) || partNumber < PART_NUMBER_MIN || partNumber > PART_NUMBER_MAX) {
    throw new ObjectError('InvalidArgument', `part number ${partNumber} is not a whole number from ${PART_NUMBER_MIN} to ${PART_NUMBER_MAX}`);
  }
}

export interface PartTarget {
  readonly bucket: string;
  readonly key: string;
  readonly uploadId: string;
  readonly partNumber: number;
}

/** Records a part whose references the journal holds; an older part of that number is released. */
async function installPart(
  context: ObjectContext,
  target: PartTarget,
  journal: PutJournal,
  manifest: ChunkManifest,
  facts: { sizeBytes: number; etag: string; checksum: StoredChecksum | undefined },
): Promise<PartRecord> {
  const saved = await saveManifest(context, journal, manifest);
  const releases: string[] = [];
  const part = await retryOnConflict(context, async () => {
    releases.length = 0;
    const { bucket, upload } = await requireUpload(context, target.bucket, target.key, target.uploadId);
    const record: PartRecord = {
      uploadId: target.uploadId,
      partNumber: target.partNumber,
      sizeBytes: facts.sizeBytes,
      etag: facts.etag,
      manifest: saved.ref,
      lastModifiedMs: context.nowMs(),
      ...(facts.checksum === undefined ? {} : { checksum: facts.checksum }),
    };
    const txn = new TxnBuilder();
    // An abort or a complete that deletes the upload meanwhile makes this fail: the part is given back.
    txn.compares.push({ key: context.tables.uploads.recordKey(target.uploadId), modRevision: upload.modRevision });
    const previous = await context.tables.parts.get(partId(target.uploadId, target.partNumber));
    if (previous !== undefined) releases.push(releaseManifestInto(context, txn, bucket.pool, previous.record.manifest));
    context.tables.parts.put(txn, record, previous);
    txn.ops.push(...saved.ops);
    await journal.commitInto(txn);
    journal.committedAt(await txn.commit(context.catalog));
    return record;
  });
  await finishAfterCommit(context, async () => {
    await runReleases(context, releases);
    await journal.settle();
  });
  return part;
}

export async function uploadPart(
  context: ObjectContext,
  request: PartTarget & { body: AsyncIterable<Uint8Array>; claims?: BodyClaims; signal?: AbortSignal },
): Promise<PartRecord> {
  checkPartNumber(request.partNumber);
  const { bucket, upload } = await requireUpload(context, request.bucket, request.key, request.uploadId);
  const repository = await context.repositoryOf(bucket.pool);
  const algorithm = request.claims?.checksumAlgorithm ?? upload.record.checksumAlgorithm;
  const claims: BodyClaims | undefined = algorithm === undefined ? request.claims : { ...request.claims, checksumAlgorithm: algorithm };
  const journal = PutJournal.begin(context, bucket.pool, repository);
  const endWrite = beginObjectWrite();
  try {
    const written = await writeBody(journal, request.body, { sizeBytesMax: SINGLE_PUT_BYTES_MAX, ...writeOptionsFor(claims, request.signal) });
    const checksum = checkClaims(written, claims);
    return await installPart(context, request, journal, written.manifest, { sizeBytes: written.sizeBytes, etag: written.md5.toString('hex'), checksum });
  } catch (err) {
    await journal.abandon();
    throw err;
  } finally {
    endWrite();
  }
}

/**
 * UploadPartCopy. A range that starts on a chunk boundary and ends on one (or at the source's end)
 * shares the source's chunks (references by hash; the bytes are read once for the part's MD5
 * unless the range is the whole of a single-PUT object, whose ETag is that MD5); any other range,
 * or a source in another pool, is copied through the writer.
 */
export function uploadPartCopy(context: ObjectContext, request: PartCopyRequest): Promise<PartRecord> {
  // An object write like UploadPart's, from the request to its commit (hash-workers.ts).
  return asObjectWrite(() => uploadPartCopyCounted(context, request));
}

type PartCopyRequest = PartTarget & { source: { bucket: string; key: string; versionId?: string }; range?: ByteRangeRequest; sourceConditions?: ConditionHeaders; signal?: AbortSignal };

async function uploadPartCopyCounted(context: ObjectContext, request: PartCopyRequest): Promise<PartRecord> {
  checkPartNumber(request.partNumber);
  const { bucket } = await requireUpload(context, request.bucket, request.key, request.uploadId);
  const { bucket: sourceBucket, version } = await resolveVersion(context, request.source.bucket, request.source.key, request.source.versionId);
  const data = version.data!;
  if (request.sourceConditions !== undefined && evaluateConditions(request.sourceConditions, { etag: data.etag, lastModifiedMs: version.lastModifiedMs }, false) !== 'proceed') {
    throw new ObjectError('PreconditionFailed', `a copy-source precondition did not hold for ${request.source.key}`);
  }
  // A GET's range may run past the end (it is cut there); a copied part's must lie within the
  // source, as S3 requires: a cut part would be shorter than the client asked for, unannounced.
  if (request.range !== undefined && 'first' in request.range && request.range.last !== undefined && request.range.last >= data.sizeBytes) {
    throw new ObjectError('InvalidArgument', `x-amz-copy-source-range bytes=${request.range.first}-${request.range.last} is not within the source object of ${data.sizeBytes} bytes`);
  }
  const { startBytes, endBytes } = request.range === undefined ? { startBytes: 0, endBytes: data.sizeBytes } : resolveRange(request.range, data.sizeBytes);
  if (endBytes - startBytes > SINGLE_PUT_BYTES_MAX) throw new ObjectError('EntityTooLarge', `a copied part may hold at most ${SINGLE_PUT_BYTES_MAX} bytes`);
  const repository = await context.repositoryOf(bucket.pool);
  const journal = PutJournal.begin(context, bucket.pool, repository);
  if (data.manifest.place === 'inline') {
    // A small object's bytes: the part is written from them.
    const bytes = await requireInlineObject(context, data.manifest);
    try {
      const written = await writeBody(journal, Readable.from([bytes.subarray(startBytes, endBytes)]), { sizeBytesMax: SINGLE_PUT_BYTES_MAX, ...(request.signal === undefined ? {} : { signal: request.signal }) });
      return await installPart(context, request, journal, written.manifest, { sizeBytes: written.sizeBytes, etag: written.md5.toString('hex'), checksum: undefined });
    } catch (err) {
      await journal.abandon();
      throw err;
    }
  }
  const source = await requireManifest(context, data.manifest);
  const sourceRepository = await context.repositoryOf(sourceBucket.pool);
  const aligned = startBytes % OBJECT_CHUNK_SIZE_BYTES === 0 && (endBytes % OBJECT_CHUNK_SIZE_BYTES === 0 || endBytes === data.sizeBytes);
  try {
    if (aligned && sourceBucket.pool === bucket.pool) {
      const builder = new AppendingManifestBuilder(OBJECT_CHUNK_SIZE_BYTES, source.hashBytes);
      appendChunksOf(builder, source, startBytes / OBJECT_CHUNK_SIZE_BYTES, Math.ceil(endBytes / OBJECT_CHUNK_SIZE_BYTES));
      const manifest = builder.finish();
      await addManifestReferences(journal, manifest, request.signal);
      const wholeSinglePut = startBytes === 0 && endBytes === data.sizeBytes && !data.etag.includes('-');
      const etag = wholeSinglePut ? data.etag : await md5Of(readBody(sourceRepository, source, startBytes, endBytes, request.signal));
      return await installPart(context, request, journal, manifest, { sizeBytes: endBytes - startBytes, etag, checksum: undefined });
    }
    const written = await writeBody(journal, readBody(sourceRepository, source, startBytes, endBytes, request.signal), {
      sizeBytesMax: SINGLE_PUT_BYTES_MAX,
      ...(request.signal === undefined ? {} : { signal: request.signal }),
    });
    return await installPart(context, request, journal, written.manifest, { sizeBytes: written.sizeBytes, etag: written.md5.toString('hex'), checksum: undefined });
  } catch (err) {
    await journal.abandon();
    throw err;
  }
}

async function md5Of(body: AsyncIterable<Uint8Array>): Promise<string> {
  const md5 = runningMd5();
  for await (const piece of body) md5.update(piece);
  return md5.digest().toString('hex');
}

export async function listParts(
  context: ObjectContext,
  request: { bucket: string; key: string; uploadId: string; partNumberMarker?: number; maxParts?: number },
): Promise<{ upload: UploadRecord; parts: PartRecord[]; isTruncated: boolean; nextPartNumberMarker?: number }> {
  const { upload } = await requireUpload(context, request.bucket, request.key, request.uploadId);
  const maxParts = Math.min(request.maxParts ?? PARTS_PAGE_MAX, PARTS_PAGE_MAX);
  const page = await context.tables.parts.prefixPage(`${request.uploadId}/`, {
    limit: maxParts + 1,
    ...(request.partNumberMarker === undefined || request.partNumberMarker < 1 ? {} : { after: partId(request.uploadId, request.partNumberMarker) }),
  });
  const parts = page.records.slice(0, maxParts).map((entry) => entry.record);
  const isTruncated = page.records.length > maxParts;
  const last = parts.at(-1);
  return { upload: upload.record, parts, isTruncated, ...(isTruncated && last !== undefined ? { nextPartNumberMarker: last.partNumber } : {}) };
}

export async function abortMultipartUpload(context: ObjectContext, request: { bucket: string; key: string; uploadId: string }): Promise<void> {
  const releases: string[] = [];
  await retryOnConflict(context, async () => {
    releases.length = 0;
    const { bucket, upload } = await requireUpload(context, request.bucket, request.key, request.uploadId);
    const txn = new TxnBuilder();
    context.tables.uploads.delete(txn, upload);
    releases.push(releaseUploadPartsInto(context, txn, bucket.pool, request.uploadId));
    await txn.commit(context.catalog);
  });
  await finishAfterCommit(context, () => runReleases(context, releases));
}

/** Every part of an upload, by number (at most PART_NUMBER_MAX, read a page at a time). */
async function allParts(context: ObjectContext, uploadId: string): Promise<Map<number, Versioned<PartRecord>>> {
  const parts = new Map<number, Versioned<PartRecord>>();
  let after: string | undefined;
  for (;;) {
    const page = await context.tables.parts.prefixPage(`${uploadId}/`, { limit: PARTS_PAGE_MAX, ...(after === undefined ? {} : { after }) });
    for (const part of page.records) parts.set(part.record.partNumber, part);
    if (page.nextAfter === undefined) return parts;
    after = page.nextAfter;
  }
}

function unquote(etag: string): string {
  return etag.length >= 2 && etag.startsWith('"') && etag.endsWith('"') ? etag.slice(1, -1) : etag;
}

export async function completeMultipartUpload(
  context: ObjectContext,
  request: { bucket: string; key: string; uploadId: string; owner: string; parts: readonly { partNumber: number; etag: string }[]; conditions?: ConditionHeaders; signal?: AbortSignal },
): Promise<{ versionId: string; etag: string; checksum?: StoredChecksum; sizeBytes: number }> {
  const { bucket, upload } = await requireUpload(context, request.bucket, request.key, request.uploadId);
  if (request.parts.length === 0) throw new ObjectError('InvalidRequest', 'CompleteMultipartUpload must name at least one part');
  const stored = await allParts(context, request.uploadId);
  const chosen: Versioned<PartRecord>[] = [];
  for (const [i, wanted] of request.parts.entries()) {
    if (i > 0 && wanted.partNumber <= request.parts[i - 1]!.partNumber) {
      throw new ObjectError('InvalidPartOrder', `part ${wanted.partNumber} follows part ${request.parts[i - 1]!.partNumber}: list the parts in ascending order, each once`);
    }
    const part = stored.get(wanted.partNumber);
    if (part === undefined || part.record.etag !== unquote(wanted.etag)) {
      throw new ObjectError('InvalidPart', `part ${wanted.partNumber} was not uploaded or its ETag is not ${wanted.etag}`);
    }
    chosen.push(part);
  }
  for (const part of chosen.slice(0, -1)) {
    if (part.record.sizeBytes < PART_SIZE_BYTES_MIN) {
      throw new ObjectError('EntityTooSmall', `part ${part.record.partNumber} has ${part.record.sizeBytes} bytes; every part but the last needs at least ${PART_SIZE_BYTES_MIN}`);
    }
  }
  const etagHash = createHash('md5');
  for (const part of chosen) etagHash.update(Buffer.from(part.record.etag, 'hex'));
  const etag = `${etagHash.digest('hex')}-${chosen.length}`;
  const algorithm = upload.record.checksumAlgorithm;
  const partChecksums = chosen.map((part) => part.record.checksum?.value);
  const checksum: StoredChecksum | undefined =
    algorithm !== undefined && partChecksums.every((value) => value !== undefined)
      ? { algorithm, value: compositeChecksum(algorithm, partChecksums as string[]) }
      : undefined;
  const sizeBytes = chosen.reduce((sum, part) => sum + part.record.sizeBytes, 0);
  const byReference = chosen.slice(0, -1).every((part) => part.record.sizeBytes % OBJECT_CHUNK_SIZE_BYTES === 0);
  const repository = await context.repositoryOf(bucket.pool);
  const journal = PutJournal.begin(context, bucket.pool, repository);
  const partManifests = chosen.map((part) => part.record.manifest);
  try {
    let manifest: ChunkManifest;
    if (byReference) {
      const builder = new AppendingManifestBuilder(OBJECT_CHUNK_SIZE_BYTES, repository.hash(new Uint8Array(0)).length / 2);
      for (const ref of partManifests) {
        const part = await requireManifest(context, ref);
        appendChunksOf(builder, part, 0, part.entryCount);
      }
      manifest = builder.finish();
    } else {
      manifest = await rechunkParts(context, journal, chosen.map((part) => part.record), request.signal);
    }
    const version = await storeVersion(
      context,
      journal,
      { bucket: request.bucket, key: request.key, owner: request.owner, headers: upload.record.headers, userMetadata: upload.record.userMetadata, ...(request.conditions === undefined ? {} : { conditions: request.conditions }) },
      manifest,
      { sizeBytes, etag, checksum, partCount: chosen.length },
      request.signal,
      (txn) => {
        context.tables.uploads.delete(txn, upload);
        if (byReference) {
          // The chosen parts' references now belong to the object: their records and manifests go, nothing is dropped.
          for (const part of chosen) {
            context.tables.parts.delete(txn, part);
            if (part.record.manifest.place === 'catalog') txn.ops.push({ type: 'delete', key: manifestCatalogKey(part.record.manifest.id) });
          }
        }
        releaseUploadPartsInto(context, txn, bucket.pool, request.uploadId);
      },
    );
    await finishAfterCommit(context, async () => {
      if (byReference) for (const ref of partManifests) if (ref.place === 'chunk-store') await removeManifest(context, ref);
      await runReleases(context, [uploadPartsReleaseId(request.uploadId)]);
    });
    return { versionId: version.versionId, etag, sizeBytes, ...(checksum === undefined ? {} : { checksum }) };
  } catch (err) {
    await journal.abandon();
    throw err;
  }
}

/**
 * The object's manifest when a part ends mid-chunk: every whole chunk before the first such
 * boundary is shared by reference (new references by hash: the parts are released afterwards);
 * the bytes from there on are streamed through the writer, cut at the object's own chunk
 * boundaries, and appended.
 */
async function rechunkParts(context: ObjectContext, journal: PutJournal, parts: readonly PartRecord[], signal?: AbortSignal): Promise<ChunkManifest> {
  const repository = journal.repository;
  const builder = new AppendingManifestBuilder(OBJECT_CHUNK_SIZE_BYTES, repository.hash(new Uint8Array(0)).length / 2);
  const shared: string[] = [];
  let first = 0; // the part the streamed bytes start in
  let startBytes = 0; // where in that part
  for (; first < parts.length; first++) {
    const manifest = await requireManifest(context, parts[first]!.manifest);
    const wholeChunks = Math.floor(manifest.fileSizeBytes / OBJECT_CHUNK_SIZE_BYTES);
    shared.push(...appendChunksOf(builder, manifest, 0, wholeChunks));
    if (manifest.fileSizeBytes % OBJECT_CHUNK_SIZE_BYTES !== 0) {
      startBytes = wholeChunks * OBJECT_CHUNK_SIZE_BYTES;
      break;
    }
  }
  for (let from = 0; from < shared.length; from += HASHES_PER_CALL) await journal.addByHash(shared.slice(from, from + HASHES_PER_CALL), signal);
  const tailBytes = parts.slice(first).reduce((sum, part) => sum + part.sizeBytes, 0) - startBytes;
  const written = await writeBody(journal, partBytes(context, repository, parts.slice(first), startBytes, signal), {
    sizeBytesMax: tailBytes,
    expectedSizeBytes: tailBytes,
    appendTo: builder,
    ...(signal === undefined ? {} : { signal }),
  });
  return written.manifest;
}

/** The bytes of `parts` end to end, from `startBytes` into the first. */
async function* partBytes(context: ObjectContext, repository: ChunkRepository, parts: readonly PartRecord[], startBytes: number, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
  for (const [i, part] of parts.entries()) {
    const manifest = await requireManifest(context, part.manifest);
    yield* readBody(repository, manifest, i === 0 ? startBytes : 0, manifest.fileSizeBytes, signal);
  }
}
