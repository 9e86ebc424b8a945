/**
 * The object model over the real DedupChunkRepository, on memory stores and on LevelDB with a
 * LocalChunkStore: buckets, put/get/head,
 * versions and delete markers, conditional writes, copy by reference, DeleteObjects, failed and
 * aborted bodies leaking nothing, dedup across objects.
 */
import { createHash } from 'node:crypto';
import path from 'node:path';
import { beforeEach, describe, expect, it, onTestFinished } from 'vitest';
import { LevelCatalogStore } from '../../src/meta/level-catalog.js';
import { LocalChunkStore } from '../../src/store/local-chunk-store.js';
import { tempDir } from '../support/tmp.js';
import { isObjectError, type S3ErrorCode } from '../../src/objects/errors.js';
import { CHUNKS_PER_STEP } from '../../src/objects/data-writer.js';
import { expectSameBytes } from '../support/bytes.js';
import { collect, createTestObjectModel, patternBytes, streamOf, totalReferences } from '../support/object-model.js';

const OWNER = 'user-1';
const KiB = 1024;

async function expectS3Error(promise: Promise<unknown>, code: S3ErrorCode): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    expect(isObjectError(err) ? err.s3Code : err).toBe(code);
    return err;
  }
  throw new Error(`expected ${code}, but it succeeded`);
}

/** The stores the model runs on: memory ones, and LevelDB with a LocalChunkStore (a daemon's). */
const STORES = (process.env.STRATA_OBJECT_STORES ?? 'memory,disk').split(',') as ('memory' | 'disk')[];
let stores: 'memory' | 'disk' = 'memory';

async function createModel() {
  if (stores === 'memory') return createTestObjectModel();
  const dir = tempDir();
  const catalog = await LevelCatalogStore.open(path.join(dir, 'catalog'));
  onTestFinished(() => catalog.close());
  return createTestObjectModel({ catalog, chunkStore: new LocalChunkStore(path.join(dir, 'chunks')) });
}

async function setup(versioning?: 'enabled' | 'suspended') {
  const test = await createModel();
  await test.model.createBucket({ name: 'photos', owner: OWNER, pool: 'pool-a' });
  if (versioning !== undefined) await test.model.putBucketVersioning('photos', versioning);
  const put = (key: string, data: Uint8Array, extra: object = {}) =>
    test.model.putObject({ bucket: 'photos', key, owner: OWNER, body: streamOf(data), claims: { sizeBytes: data.length }, ...extra });
  const read = async (key: string, versionId?: string) => {
    const result = await test.model.getObject({ bucket: 'photos', key, ...(versionId === undefined ? {} : { versionId }) });
    if (result.outcome !== 'ok') throw new Error('not modified');
    return collect(result.body());
  };
  return { ...test, put, read };
}

describe.each(STORES)('on %s stores', (kind) => {
  beforeEach(() => {
    stores = kind;
  });

  describe('buckets', () => {
    it('creates, heads, lists by owner and refuses names taken or malformed', async () => {
      const { model } = await createModel();
      const created = await model.createBucket({ name: 'alpha', owner: OWNER, pool: 'pool-a', acl: 'public-read' });
      expect(created).toMatchObject({ name: 'alpha', owner: OWNER, pool: 'pool-a', versioning: 'unversioned', acl: 'public-read' });
      await model.createBucket({ name: 'beta', owner: OWNER, pool: 'pool-b' });
      await model.createBucket({ name: 'gamma', owner: 'user-2', pool: 'pool-a' });
      await expectS3Error(model.createBucket({ name: 'alpha', owner: OWNER, pool: 'pool-a' }), 'BucketAlreadyOwnedByYou');
      await expectS3Error(model.createBucket({ name: 'alpha', owner: 'user-2', pool: 'pool-a' }), 'BucketAlreadyExists');
      await expectS3Error(model.createBucket({ name: 'Bad_Name', owner: OWNER, pool: 'pool-a' }), 'InvalidBucketName');
      await expect(model.createBucket({ name: 'delta', owner: OWNER, pool: 'no-such-pool' })).rejects.toMatchObject({ code: 'NOT_FOUND' });
      expect((await model.listBuckets(OWNER)).buckets.map((b) => b.name)).toEqual(['alpha', 'beta']);
      const firstPage = await model.listBuckets(OWNER, { limit: 1 });
      expect(firstPage.buckets.map((b) => b.name)).toEqual(['alpha']);
      expect((await model.listBuckets(OWNER, { after: firstPage.nextAfter! })).buckets.map((b) => b.name)).toEqual(['beta']);
      expect((await model.headBucket('gamma')).owner).toBe('user-2');
      await expectS3Error(model.headBucket('nope'), 'NoSuchBucket');
      expect((await model.putBucketAcl('alpha', 'private')).acl).toBe('private');
    });

    it('two creators racing for one name: one wins, the other is told', async () => {
      const { model } = await createModel();
      const results = await Promise.allSettled([
        model.createBucket({ name: 'race', owner: 'a', pool: 'pool-a' }),
        model.createBucket({ name: 'race', owner: 'b', pool: 'pool-a' }),
      ]);
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
      const loser = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
      expect(isObjectError(loser.reason, 'BucketAlreadyExists')).toBe(true);
    });

    it('deletes only an empty bucket: versions, delete markers and uploads count', async () => {
      const { model, put } = await setup('enabled');
      await put('k', Buffer.from('x'));
      await expectS3Error(model.deleteBucket('photos'), 'BucketNotEmpty');
      const marker = await model.deleteObject({ bucket: 'photos', key: 'k', owner: OWNER });
      await expectS3Error(model.deleteBucket('photos'), 'BucketNotEmpty'); // the old version and the marker remain
      const versions = await model.listObjectVersions({ bucket: 'photos' });
      for (const { version } of versions.versions) await model.deleteObject({ bucket: 'photos', key: 'k', owner: OWNER, versionId: version.versionId });
      expect(marker.deleteMarker).toBe(true);
      const upload = await model.createMultipartUpload({ bucket: 'photos', key: 'big', owner: OWNER });
      await expectS3Error(model.deleteBucket('photos'), 'BucketNotEmpty');
      await model.abortMultipartUpload({ bucket: 'photos', key: 'big', uploadId: upload.uploadId });
      await model.deleteBucket('photos');
      await expectS3Error(model.headBucket('photos'), 'NoSuchBucket');
      // The name is free again, and the new bucket starts empty.
      await model.createBucket({ name: 'photos', owner: 'user-2', pool: 'pool-a' });
      expect((await model.listObjectVersions({ bucket: 'photos' })).versions).toEqual([]);
    });
  });

  describe('objects', () => {
    it('round-trips a body with its ETag, checksum, headers and metadata; zero chunks are not stored', async () => {
      const { model, put, read, catalog } = await setup();
      const data = Buffer.concat([patternBytes(100 * KiB, 1), Buffer.alloc(200 * KiB), patternBytes(13, 2)]);
      const result = await put('dir/a.bin', data, {
        headers: { contentType: 'application/x-test', cacheControl: 'no-cache' },
        userMetadata: { color: 'blue' },
        claims: { sizeBytes: data.length, checksumAlgorithm: 'CRC32C', contentMd5: createHash('md5').update(data).digest('base64') },
      });
      expect(result.etag).toBe(createHash('md5').update(data).digest('hex'));
      expect(result.versionId).toBe('null');
      expect(result.checksum?.algorithm).toBe('CRC32C');
      expectSameBytes(await read('dir/a.bin'), data);
      const head = await model.getObject({ bucket: 'photos', key: 'dir/a.bin' });
      expect(head.version.data).toMatchObject({ sizeBytes: data.length, etag: result.etag, headers: { contentType: 'application/x-test', cacheControl: 'no-cache' }, userMetadata: { color: 'blue' } });
      // 5 chunks: 3 hold data (the first two and the one with the 13-byte tail), 2 are all zero (not stored).
      expect(await totalReferences(catalog, 'pool-a')).toBe(3);
    });

    it('reads byte ranges across chunk boundaries, streamed', async () => {
      const { model, put } = await setup();
      const data = patternBytes(300 * KiB + 7, 3);
      await put('r', data);
      for (const [first, last] of [[0, 0], [65535, 65536], [10, 200_000], [300 * KiB, 300 * KiB + 6]] as const) {
        const result = await model.getObject({ bucket: 'photos', key: 'r', range: { first, last } });
        if (result.outcome !== 'ok') throw new Error('unexpected');
        expect(result.ranged).toBe(true);
        expectSameBytes(await collect(result.body()), data.subarray(first, last + 1));
      }
      await expectS3Error(model.getObject({ bucket: 'photos', key: 'r', range: { first: data.length } }), 'InvalidRange');
    });

    it('reads a large object in 1 MiB runs: ranges across runs and zero chunks come back exact', async () => {
      const { model, put } = await setup();
      const data = patternBytes(2 * 1024 * KiB + 70 * KiB + 3, 5);
      data.fill(0, 900 * KiB, 1100 * KiB); // zero chunks inside and across the first run's end
      await put('big', data);
      const ranges = [[0, data.length - 1], [1024 * KiB - 1, 1024 * KiB], [64 * KiB + 5, 2 * 1024 * KiB + 10], [2 * 1024 * KiB, data.length - 1]] as const;
      for (const [first, last] of ranges) {
        const result = await model.getObject({ bucket: 'photos', key: 'big', range: { first, last } });
        if (result.outcome !== 'ok') throw new Error('unexpected');
        expectSameBytes(await collect(result.body()), data.subarray(first, last + 1));
      }
    });

    it('a key overwritten or deleted after a GET reads as it is now (manifests remembered for reads are by put id)', async () => {
      const { model, put, read } = await setup();
      const first = patternBytes(200 * KiB, 7);
      const second = patternBytes(300 * KiB, 8);
      await put('m', first);
      expectSameBytes(await read('m'), first);
      expectSameBytes(await read('m'), first);
      await put('m', second);
      expectSameBytes(await read('m'), second);
      await model.deleteObject({ bucket: 'photos', key: 'm', owner: OWNER });
      await expectS3Error(model.getObject({ bucket: 'photos', key: 'm' }), 'NoSuchKey');
    });

    it('a bucket deleted and made again reads as itself, not as the one remembered for reads', async () => {
      const { model, put, read } = await setup();
      await put('k', patternBytes(10, 1));
      expectSameBytes(await read('k'), patternBytes(10, 1));
      await model.deleteObject({ bucket: 'photos', key: 'k', owner: OWNER });
      await model.deleteBucket('photos');
      await expectS3Error(model.getObject({ bucket: 'photos', key: 'k' }), 'NoSuchBucket');
      await model.createBucket({ name: 'photos', owner: OWNER, pool: 'pool-a' });
      await expectS3Error(model.getObject({ bucket: 'photos', key: 'k' }), 'NoSuchKey');
      await put('k', patternBytes(20, 2));
      expectSameBytes(await read('k'), patternBytes(20, 2));
      await model.deleteObject({ bucket: 'photos', key: 'k', owner: OWNER });
      await model.deleteBucket('photos');
      await model.createBucket({ name: 'photos', owner: OWNER, pool: 'pool-a' });
      await put('k', patternBytes(30, 3));
      expectSameBytes(await read('k'), patternBytes(30, 3));
    });

    it('empty objects, overwrites, NoSuchKey and NoSuchBucket', async () => {
      const { model, put, read, catalog } = await setup();
      await put('empty', new Uint8Array(0));
      expect((await read('empty')).length).toBe(0);
      await put('k', patternBytes(70 * KiB, 4));
      // 20 KiB: above the inline size, so the new version holds one chunk (objects-inline.test.ts covers smaller ones).
      await put('k', patternBytes(20 * KiB, 5));
      expectSameBytes(await read('k'), patternBytes(20 * KiB, 5));
      // The overwritten null version gave its two chunks back.
      expect(await totalReferences(catalog, 'pool-a')).toBe(1);
      await expectS3Error(model.getObject({ bucket: 'photos', key: 'missing' }), 'NoSuchKey');
      await expectS3Error(model.getObject({ bucket: 'nope', key: 'k' }), 'NoSuchBucket');
      await model.deleteObject({ bucket: 'photos', key: 'k', owner: OWNER });
      await expectS3Error(model.getObject({ bucket: 'photos', key: 'k' }), 'NoSuchKey');
      await model.deleteObject({ bucket: 'photos', key: 'k', owner: OWNER }); // deleting nothing succeeds
      expect(await totalReferences(catalog, 'pool-a')).toBe(0);
    });

    it('refuses a body whose MD5, checksum or length is not what the client claimed, and keeps nothing', async () => {
      const { model, put, catalog } = await setup();
      const data = patternBytes(150 * KiB, 6);
      await expectS3Error(put('k', data, { claims: { contentMd5: Buffer.alloc(16).toString('base64') } }), 'BadDigest');
      await expectS3Error(put('k', data, { claims: { checksumAlgorithm: 'SHA256', expectedChecksum: () => Buffer.alloc(32).toString('base64') } }), 'BadDigest');
      await expectS3Error(put('k', data, { claims: { payloadSha256Hex: createHash('sha256').update('other').digest('hex') } }), 'XAmzContentSHA256Mismatch');
      // The signed payload's SHA-256 and an x-amz-checksum-sha256 are one digest of one pass: either wrong is refused.
      const sha256 = createHash('sha256').update(data).digest();
      await expectS3Error(put('k', data, { claims: { payloadSha256Hex: sha256.toString('hex'), checksumAlgorithm: 'SHA256', expectedChecksum: () => Buffer.alloc(32).toString('base64') } }), 'BadDigest');
      await expectS3Error(put('k', data, { claims: { payloadSha256Hex: '00'.repeat(32), checksumAlgorithm: 'SHA256', expectedChecksum: () => sha256.toString('base64') } }), 'XAmzContentSHA256Mismatch');
      await expectS3Error(put('k', data, { claims: { sizeBytes: data.length + 1 } }), 'IncompleteBody');
      await expectS3Error(put('k', data, { claims: { sizeBytes: data.length - 1 } }), 'IncompleteBody');
    await expectS3Error(put('k', data, { claims: { sizeBytes: 6 * 1024 * 1024 * 1024 } }), 'EntityTooLarge');
      await expectS3Error(model.getObject({ bucket: 'photos', key: 'k' }), 'NoSuchKey');
      expect(await totalReferences(catalog, 'pool-a')).toBe(0);
      expect((await catalog.list('s3-put')).entries).toEqual([]);
    });

    it('a body that fails or is aborted mid-way leaves no object and no reference', async () => {
      const { model, catalog } = await setup();
      const data = patternBytes(3 * CHUNKS_PER_STEP * 64 * KiB, 7); // three steps' worth
      async function* failing(): AsyncGenerator<Uint8Array> {
        yield* streamOf(data.subarray(0, 2 * CHUNKS_PER_STEP * 64 * KiB + 1000), 64 * KiB);
        throw new Error('the client went away');
      }
      await expect(model.putObject({ bucket: 'photos', key: 'f', owner: OWNER, body: failing() })).rejects.toThrow(/went away/);
      const controller = new AbortController();
      async function* aborted(): AsyncGenerator<Uint8Array> {
        for await (const piece of streamOf(data, 64 * KiB)) {
          yield piece;
          if (piece.byteOffset >= CHUNKS_PER_STEP * 64 * KiB) controller.abort();
        }
      }
      await expect(model.putObject({ bucket: 'photos', key: 'f', owner: OWNER, body: aborted(), signal: controller.signal })).rejects.toMatchObject({ code: 'CANCELLED' });
      await expectS3Error(model.getObject({ bucket: 'photos', key: 'f' }), 'NoSuchKey');
      expect(await totalReferences(catalog, 'pool-a')).toBe(0);
      expect((await catalog.list('s3-put')).entries).toEqual([]);
    });

    it('objects with the same bytes share their chunks', async () => {
      const { put, catalog, repositories, read } = await setup();
      const data = patternBytes(256 * KiB, 8);
      await put('one', data);
      await put('two', data);
      const repository = repositories.get('pool-a')!;
      expect(await repository.referenceCount(repository.hash(data.subarray(0, 64 * KiB)))).toBe(2);
      expect(await totalReferences(catalog, 'pool-a')).toBe(8);
      const chunkEntries = (await catalog.list('chunk-pool-a/')).entries.filter((e) => (e.value as { refs: number }).refs > 0);
      expect(chunkEntries).toHaveLength(4); // 4 distinct chunks stored once
      expectSameBytes(await read('two'), data);
    });

    it('conditional puts: If-None-Match * and If-Match', async () => {
      const { put, model } = await setup();
      const first = await put('c', Buffer.from('one'), { conditions: { ifNoneMatch: '*' } });
      await expectS3Error(put('c', Buffer.from('two'), { conditions: { ifNoneMatch: '*' } }), 'PreconditionFailed');
      await expectS3Error(put('c', Buffer.from('two'), { conditions: { ifMatch: '"0000"' } }), 'PreconditionFailed');
      await expectS3Error(put('missing', Buffer.from('two'), { conditions: { ifMatch: `"${first.etag}"` } }), 'NoSuchKey');
      await put('c', Buffer.from('three'), { conditions: { ifMatch: `"${first.etag}"` } });
      const got = await model.getObject({ bucket: 'photos', key: 'c', conditions: { ifNoneMatch: `"${createHash('md5').update('three').digest('hex')}"` } });
      expect(got.outcome).toBe('not-modified');
      await expectS3Error(model.getObject({ bucket: 'photos', key: 'c', conditions: { ifMatch: '"nope"' } }), 'PreconditionFailed');
    });

    it('concurrent If-None-Match * puts of one key: exactly one wins', async () => {
      const { put, catalog } = await setup();
      const results = await Promise.allSettled([1, 2, 3].map((seed) => put('once', patternBytes(100 * KiB, seed), { conditions: { ifNoneMatch: '*' } })));
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
      for (const r of results) if (r.status === 'rejected') expect(isObjectError(r.reason, 'PreconditionFailed')).toBe(true);
      expect(await totalReferences(catalog, 'pool-a')).toBe(2);
    });
  });

  describe('versioning', () => {
    it('keeps every version, hides a key behind a delete marker, and removing the marker brings it back', async () => {
      const { model, put, read } = await setup('enabled');
      const v1 = await put('doc', Buffer.from('first'));
      const v2 = await put('doc', Buffer.from('second'));
      expect(v1.versionId).not.toBe(v2.versionId);
      expect((await read('doc')).toString()).toBe('second');
      expect((await read('doc', v1.versionId)).toString()).toBe('first');
      const marker = await model.deleteObject({ bucket: 'photos', key: 'doc', owner: OWNER });
      expect(marker.deleteMarker).toBe(true);
      const err = await expectS3Error(model.getObject({ bucket: 'photos', key: 'doc' }), 'NoSuchKey');
      expect((err as { details: object }).details).toMatchObject({ deleteMarker: true, versionId: marker.versionId });
      await expectS3Error(model.getObject({ bucket: 'photos', key: 'doc', versionId: marker.versionId! }), 'MethodNotAllowed');
      expect((await model.listObjectsV2({ bucket: 'photos' })).objects).toEqual([]);
      const listed = await model.listObjectVersions({ bucket: 'photos' });
      expect(listed.versions.map((v) => [v.version.versionId, v.version.isDeleteMarker, v.isLatest])).toEqual([
        [marker.versionId, true, true],
        [v2.versionId, false, false],
        [v1.versionId, false, false],
      ]);
      await model.deleteObject({ bucket: 'photos', key: 'doc', owner: OWNER, versionId: marker.versionId! });
      expect((await read('doc')).toString()).toBe('second');
      await model.deleteObject({ bucket: 'photos', key: 'doc', owner: OWNER, versionId: v2.versionId });
      expect((await read('doc')).toString()).toBe('first');
      await expectS3Error(model.getObject({ bucket: 'photos', key: 'doc', versionId: v2.versionId }), 'NoSuchVersion');
    });

    it('suspended: writes replace the null version, other versions stay', async () => {
      const { model, put, read, catalog } = await setup('enabled');
      // 20 KiB bodies: above the inline size, so each version holds one chunk reference.
      const kept = await put('s', patternBytes(20 * KiB, 1));
      await model.putBucketVersioning('photos', 'suspended');
      const n1 = await put('s', patternBytes(20 * KiB, 2));
      expect(n1.versionId).toBe('null');
      await put('s', patternBytes(20 * KiB, 3));
      expectSameBytes(await read('s'), patternBytes(20 * KiB, 3));
      expectSameBytes(await read('s', 'null'), patternBytes(20 * KiB, 3));
      expectSameBytes(await read('s', kept.versionId), patternBytes(20 * KiB, 1));
      expect(await totalReferences(catalog, 'pool-a')).toBe(2);
      const marker = await model.deleteObject({ bucket: 'photos', key: 's', owner: OWNER });
      expect(marker).toEqual({ versionId: 'null', deleteMarker: true }); // the null marker replaced the null version
      expect(await totalReferences(catalog, 'pool-a')).toBe(1);
      const versions = await model.listObjectVersions({ bucket: 'photos' });
      expect(versions.versions.map((v) => [v.version.versionId, v.version.isDeleteMarker])).toEqual([
        ['null', true],
        [kept.versionId, false],
      ]);
    });

    it('ListObjectVersions works on an unversioned bucket (null versions)', async () => {
      const { model, put } = await setup();
      await put('a', Buffer.from('1'));
      await put('b', Buffer.from('2'));
      const listed = await model.listObjectVersions({ bucket: 'photos' });
      expect(listed.versions.map((v) => [v.version.key, v.version.versionId, v.isLatest])).toEqual([
        ['a', 'null', true],
        ['b', 'null', true],
      ]);
    });
  });

  describe('copy and batch delete', () => {
    it('CopyObject shares every chunk (no byte written), with COPY or REPLACE metadata, from a given version', async () => {
      const { model, put, read, repositories, chunkStore } = await setup('enabled');
      const data = patternBytes(200 * KiB, 9);
      const v1 = await put('src', data, { headers: { contentType: 'text/plain' }, userMetadata: { a: '1' } });
      await put('src', Buffer.from('newer'));
      const packsBefore = (await chunkStore.list('packs/')).keys.length;
      const copy = await model.copyObject({ source: { bucket: 'photos', key: 'src', versionId: v1.versionId }, bucket: 'photos', key: 'dst', owner: OWNER });
      expect(copy.etag).toBe(v1.etag);
      expect(copy.sourceVersionId).toBe(v1.versionId);
      expectSameBytes(await read('dst'), data);
      const head = await model.getObject({ bucket: 'photos', key: 'dst' });
      expect(head.version.data).toMatchObject({ headers: { contentType: 'text/plain' }, userMetadata: { a: '1' } });
      const repository = repositories.get('pool-a')!;
      expect(await repository.referenceCount(repository.hash(data.subarray(0, 64 * KiB)))).toBe(2);
      // Only the markers' tiny pack was written: no chunk of the data again.
      const newPacks = (await chunkStore.list('packs/')).keys.length - packsBefore;
      expect(newPacks).toBeLessThanOrEqual(1);
      await model.copyObject({ source: { bucket: 'photos', key: 'dst' }, bucket: 'photos', key: 'dst', owner: OWNER, metadataDirective: 'REPLACE', userMetadata: { b: '2' } });
      expect((await model.getObject({ bucket: 'photos', key: 'dst' })).version.data?.userMetadata).toEqual({ b: '2' });
      await expectS3Error(model.copyObject({ source: { bucket: 'photos', key: 'dst' }, bucket: 'photos', key: 'dst', owner: OWNER }), 'InvalidRequest');
    });

    it('CopyObject across pools copies the bytes into the other pool', async () => {
      const { model, put, catalog } = await setup();
      await model.createBucket({ name: 'other', owner: OWNER, pool: 'pool-b' });
      const data = patternBytes(130 * KiB, 10);
      await put('x', data);
      await model.copyObject({ source: { bucket: 'photos', key: 'x' }, bucket: 'other', key: 'y', owner: OWNER });
      const got = await model.getObject({ bucket: 'other', key: 'y' });
      if (got.outcome !== 'ok') throw new Error('unexpected');
      expectSameBytes(await collect(got.body()), data);
      expect(await totalReferences(catalog, 'pool-b')).toBe(3);
    });

    it('DeleteObjects deletes each key and reports per key', async () => {
      const { model, put } = await setup();
      await put('a', Buffer.from('1'));
      await put('b', Buffer.from('2'));
      const result = await model.deleteObjects({ bucket: 'photos', owner: OWNER, objects: [{ key: 'a' }, { key: 'b' }, { key: 'never' }, { key: '' }] });
      expect(result.deleted.map((d) => d.key)).toEqual(['a', 'b', 'never']);
      expect(result.errors).toMatchObject([{ key: '', code: 'InvalidArgument' }]);
      expect((await model.listObjectsV2({ bucket: 'photos' })).objects).toEqual([]);
    });
  });
});
