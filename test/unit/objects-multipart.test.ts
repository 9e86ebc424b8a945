/**
 * Multipart uploads over the real DedupChunkRepository: parts, replacing a part, part copies (by
 * reference when chunk-aligned, by bytes otherwise), list parts, abort, and complete both ways
 * (manifests concatenated by reference when parts are whole chunks; re-chunked otherwise), with
 * S3's refusals (InvalidPart, InvalidPartOrder, EntityTooSmall, NoSuchUpload) and exact counts.
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { isObjectError, type S3ErrorCode } from '../../src/objects/errors.js';
import { PART_SIZE_BYTES_MIN } from '../../src/objects/multipart.js';
import { expectSameBytes } from '../support/bytes.js';
import { collect, createTestObjectModel, patternBytes, streamOf, totalReferences } from '../support/object-model.js';

const OWNER = 'user-1';
const KiB = 1024;
const MiB = 1024 * KiB;
const CHUNK = 64 * KiB;

async function expectS3Error(promise: Promise<unknown>, code: S3ErrorCode): Promise<void> {
  await expect(promise).rejects.toSatisfy((err) => isObjectError(err, code));
}

function md5(data: Uint8Array): Buffer {
  return createHash('md5').update(data).digest();
}

async function setup() {
  const reads = { count: 0 };
  const test = await createTestObjectModel({
    packTargetBytes: 4 * MiB,
    // Counts chunk reads (what a re-chunking complete costs).
    wrapRepository: (repository) => ({
      hash: (data) => repository.hash(data),
      addReferences: (chunks, options) => repository.addReferences(chunks, options),
      hashChunk: (data) => repository.hashChunk(data),
      addHashedReferences: (chunks, options) => repository.addHashedReferences(chunks, options),
      addReferencesByHash: (hashes, options) => repository.addReferencesByHash(hashes, options),
      dropReferences: (hashes, options) => repository.dropReferences(hashes, options),
      read: (hash, options) => {
        reads.count++;
        return repository.read(hash, options);
      },
      readRange: (hash, offsetBytes, lengthBytes, options) => {
        reads.count++;
        return repository.readRange(hash, offsetBytes, lengthBytes, options);
      },
      referenceCount: (hash) => repository.referenceCount(hash),
    }),
  });
  await test.model.createBucket({ name: 'mpu', owner: OWNER, pool: 'pool-a' });
  const upload = (key = 'big') => test.model.createMultipartUpload({ bucket: 'mpu', key, owner: OWNER, headers: { contentType: 'video/x-test' }, userMetadata: { m: '1' }, checksumAlgorithm: 'CRC32' });
  const part = (uploadId: string, partNumber: number, data: Uint8Array, key = 'big') =>
    test.model.uploadPart({ bucket: 'mpu', key, uploadId, partNumber, body: streamOf(data, 256 * KiB), claims: { sizeBytes: data.length } });
  const read = async (key = 'big') => {
    const got = await test.model.getObject({ bucket: 'mpu', key });
    if (got.outcome !== 'ok') throw new Error('unexpected');
    return collect(got.body());
  };
  return { ...test, upload, part, read, reads };
}

describe('multipart uploads', () => {
  it('completes chunk-aligned parts by reference: the parts\' references become the object\'s', async () => {
    const { model, upload, part, read, catalog, chunkStore } = await setup();
    const { uploadId } = await upload();
    const parts = [patternBytes(PART_SIZE_BYTES_MIN, 1), patternBytes(PART_SIZE_BYTES_MIN, 2), patternBytes(100 * KiB + 3, 3)];
    const etags: string[] = [];
    for (const [i, data] of parts.entries()) etags.push((await part(uploadId, i + 1, data)).etag);
    expect(etags[0]).toBe(md5(parts[0]!).toString('hex'));
    const listed = await model.listParts({ bucket: 'mpu', key: 'big', uploadId });
    expect(listed.parts.map((p) => [p.partNumber, p.sizeBytes])).toEqual(parts.map((d, i) => [i + 1, d.length]));
    const referencesBefore = await totalReferences(catalog, 'pool-a');
    const packsBefore = (await chunkStore.list('packs/')).keys.length;
    const done = await model.completeMultipartUpload({ bucket: 'mpu', key: 'big', uploadId, owner: OWNER, parts: etags.map((etag, i) => ({ partNumber: i + 1, etag: `"${etag}"` })) });
    expect(done.etag).toBe(`${createHash('md5').update(Buffer.concat(parts.map(md5))).digest('hex')}-3`);
    expect(done.checksum?.value).toMatch(/-3$/);
    expectSameBytes(await read(), Buffer.concat(parts));
    expect(await totalReferences(catalog, 'pool-a')).toBe(referencesBefore);
    expect((await chunkStore.list('packs/')).keys.length).toBe(packsBefore);
    const head = await model.getObject({ bucket: 'mpu', key: 'big' });
    expect(head.version.data).toMatchObject({ partCount: 3, headers: { contentType: 'video/x-test' }, userMetadata: { m: '1' } });
    await expectS3Error(model.listParts({ bucket: 'mpu', key: 'big', uploadId }), 'NoSuchUpload');
    expect((await catalog.list('s3-part/')).entries).toEqual([]);
    await model.deleteObject({ bucket: 'mpu', key: 'big', owner: OWNER });
    expect(await totalReferences(catalog, 'pool-a')).toBe(0);
  });

  it('re-chunks from the first part that ends mid-chunk (sharing the whole chunks before it), and releases every part', async () => {
    const { model, upload, part, read, catalog, reads } = await setup();
    const { uploadId } = await upload();
    const parts = [patternBytes(PART_SIZE_BYTES_MIN, 3), patternBytes(PART_SIZE_BYTES_MIN + 1, 4), patternBytes(200 * KiB, 5)];
    const etags = [];
    for (const [i, data] of parts.entries()) etags.push((await part(uploadId, i + 1, data)).etag);
    reads.count = 0;
    await model.completeMultipartUpload({ bucket: 'mpu', key: 'big', uploadId, owner: OWNER, parts: etags.map((etag, i) => ({ partNumber: i + 1, etag })) });
    // Only what lies after the first boundary was read again: part 2's last, one-byte chunk and part 3.
    expect(reads.count).toBe(1 + Math.ceil((200 * KiB) / CHUNK));
    const whole = Buffer.concat(parts);
    expectSameBytes(await read(), whole);
    // The object holds exactly its own chunks: one reference per chunk of the concatenation.
    expect(await totalReferences(catalog, 'pool-a')).toBe(Math.ceil(whole.length / CHUNK));
  });

  it('a part uploaded again replaces the old one; parts not named in complete are released', async () => {
    const { model, upload, part, read, catalog } = await setup();
    const { uploadId } = await upload();
    await part(uploadId, 1, patternBytes(PART_SIZE_BYTES_MIN, 6));
    const replaced = await part(uploadId, 1, patternBytes(PART_SIZE_BYTES_MIN, 7));
    const last = await part(uploadId, 2, patternBytes(10, 8));
    await part(uploadId, 3, patternBytes(300 * KiB, 9)); // uploaded, never completed
    expect(await totalReferences(catalog, 'pool-a')).toBe(80 + 1 + 5);
    await model.completeMultipartUpload({ bucket: 'mpu', key: 'big', uploadId, owner: OWNER, parts: [{ partNumber: 1, etag: replaced.etag }, { partNumber: 2, etag: last.etag }] });
    expectSameBytes(await read(), Buffer.concat([patternBytes(PART_SIZE_BYTES_MIN, 7), patternBytes(10, 8)]));
    expect(await totalReferences(catalog, 'pool-a')).toBe(81);
  });

  it('refuses InvalidPart, InvalidPartOrder, EntityTooSmall, bad part numbers and unknown uploads', async () => {
    const { model, upload, part } = await setup();
    const { uploadId } = await upload();
    const small = await part(uploadId, 1, patternBytes(1000, 1));
    const second = await part(uploadId, 2, patternBytes(1000, 2));
    const complete = (parts: { partNumber: number; etag: string }[]) => model.completeMultipartUpload({ bucket: 'mpu', key: 'big', uploadId, owner: OWNER, parts });
    await expectS3Error(complete([{ partNumber: 2, etag: second.etag }, { partNumber: 1, etag: small.etag }]), 'InvalidPartOrder');
    await expectS3Error(complete([{ partNumber: 1, etag: 'ffff' }]), 'InvalidPart');
    await expectS3Error(complete([{ partNumber: 1, etag: small.etag }, { partNumber: 5, etag: small.etag }]), 'InvalidPart');
    await expectS3Error(complete([{ partNumber: 1, etag: small.etag }, { partNumber: 2, etag: second.etag }]), 'EntityTooSmall');
    await expectS3Error(part(uploadId, 0, patternBytes(1, 1)), 'InvalidArgument');
    await expectS3Error(part(uploadId, 10_001, patternBytes(1, 1)), 'InvalidArgument');
    await expectS3Error(part('0'.repeat(32), 1, patternBytes(1, 1)), 'NoSuchUpload');
    await expectS3Error(part(uploadId, 1, patternBytes(1, 1), 'other-key'), 'NoSuchUpload');
    // A single small part is a valid upload (the last part may be any size).
    await complete([{ partNumber: 2, etag: second.etag }]);
  });

  it('abort gives back every part; a part finishing after the abort leaves nothing', async () => {
    const { model, upload, part, catalog } = await setup();
    const { uploadId } = await upload();
    await part(uploadId, 1, patternBytes(300 * KiB, 1));
    await part(uploadId, 2, patternBytes(300 * KiB, 2));
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    async function* slow(): AsyncGenerator<Uint8Array> {
      yield patternBytes(100 * KiB, 3);
      await gate;
      yield patternBytes(100 * KiB, 4);
    }
    const late = model.uploadPart({ bucket: 'mpu', key: 'big', uploadId, partNumber: 3, body: slow() });
    await model.abortMultipartUpload({ bucket: 'mpu', key: 'big', uploadId });
    release();
    await expectS3Error(late, 'NoSuchUpload');
    await expectS3Error(model.abortMultipartUpload({ bucket: 'mpu', key: 'big', uploadId }), 'NoSuchUpload');
    expect(await totalReferences(catalog, 'pool-a')).toBe(0);
    expect((await catalog.list('s3-part/')).entries).toEqual([]);
    expect((await catalog.list('s3-release/')).entries).toEqual([]);
    expect((await catalog.list('s3-put')).entries).toEqual([]);
  });

  it('UploadPartCopy shares chunks for an aligned range and copies bytes for any other', async () => {
    const { model, upload, read, catalog, repositories } = await setup();
    const source = patternBytes(6 * MiB + 5, 11);
    await model.putObject({ bucket: 'mpu', key: 'src', owner: OWNER, body: streamOf(source) });
    const { uploadId } = await upload('copy');
    const whole = await model.uploadPartCopy({ bucket: 'mpu', key: 'copy', uploadId, partNumber: 1, source: { bucket: 'mpu', key: 'src' }, range: { first: 0, last: PART_SIZE_BYTES_MIN - 1 } });
    expect(whole.etag).toBe(md5(source.subarray(0, PART_SIZE_BYTES_MIN)).toString('hex'));
    const repository = repositories.get('pool-a')!;
    expect(await repository.referenceCount(repository.hash(source.subarray(0, CHUNK)))).toBe(2);
    const odd = await model.uploadPartCopy({ bucket: 'mpu', key: 'copy', uploadId, partNumber: 2, source: { bucket: 'mpu', key: 'src' }, range: { first: 100, last: 100 + 70 * KiB } });
    expect(odd.sizeBytes).toBe(70 * KiB + 1);
    await model.completeMultipartUpload({ bucket: 'mpu', key: 'copy', uploadId, owner: OWNER, parts: [{ partNumber: 1, etag: whole.etag }, { partNumber: 2, etag: odd.etag }] });
    expectSameBytes(await read('copy'), Buffer.concat([source.subarray(0, PART_SIZE_BYTES_MIN), source.subarray(100, 100 + 70 * KiB + 1)]));
    await model.deleteObject({ bucket: 'mpu', key: 'copy', owner: OWNER });
    await model.deleteObject({ bucket: 'mpu', key: 'src', owner: OWNER });
    expect(await totalReferences(catalog, 'pool-a')).toBe(0);
  });
});
