/**
 * The ObjectService conformance suite: the bucket operations the S3 endpoint's bucket handlers
 * rely on, and (for an implementation that stores objects, `objects`) a round trip through the
 * object operations, which are ObjectModel's own (its tests cover them in depth). Every
 * implementation runs it (object-service.test.ts).
 */
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import type { ObjectService, S3Principal } from '../../src/objects/object-service.js';
import { expectCode } from '../support/expect-error.js';

const ALICE: S3Principal = { owner: 'alice', accessKeyId: 'STRAALICE' };
const BOB: S3Principal = { owner: 'bob', accessKeyId: 'STRABOB' };

export function objectServiceConformance(name: string, open: () => Promise<ObjectService>, options: { objects: boolean }): void {
  describe(`ObjectService conformance (buckets): ${name}`, () => {
    it('creates a bucket owned by its creator, unversioned, with its creation time', async () => {
      const service = await open();
      const before = Date.now();
      const info = await service.createBucket(ALICE, 'photos');
      expect(info).toMatchObject({ name: 'photos', owner: 'alice', versioning: 'Unversioned', acl: 'private' });
      expect(Date.parse(info.createdAt)).toBeGreaterThanOrEqual(before - 1000);
      expect(await service.bucketInfo(ALICE, 'photos')).toEqual(info);
    });

    it('a taken name is ALREADY_EXISTS for anyone; of racing creators exactly one wins', async () => {
      const service = await open();
      await service.createBucket(ALICE, 'taken');
      await expectCode(service.createBucket(ALICE, 'taken'), 'ALREADY_EXISTS');
      await expectCode(service.createBucket(BOB, 'taken'), 'ALREADY_EXISTS');
      const outcomes = await Promise.allSettled(Array.from({ length: 6 }, (_, i) => service.createBucket(i % 2 ? ALICE : BOB, 'raced')));
      expect(outcomes.filter((o) => o.status === 'fulfilled')).toHaveLength(1);
    });

    it("lists a principal's own buckets by name", async () => {
      const service = await open();
      await service.createBucket(ALICE, 'b-two');
      await service.createBucket(BOB, 'b-bob');
      await service.createBucket(ALICE, 'b-one');
      expect((await service.listBuckets(ALICE)).map((b) => b.name).filter((n) => n.startsWith('b-'))).toEqual(['b-one', 'b-two']);
      expect((await service.listBuckets(BOB)).map((b) => b.name).filter((n) => n.startsWith('b-'))).toEqual(['b-bob']);
    });

    it('versioning: Enabled, then Suspended; a missing bucket is NOT_FOUND', async () => {
      const service = await open();
      await service.createBucket(ALICE, 'versioned');
      await service.setBucketVersioning(ALICE, 'versioned', 'Enabled');
      expect((await service.bucketInfo(ALICE, 'versioned')).versioning).toBe('Enabled');
      await service.setBucketVersioning(ALICE, 'versioned', 'Suspended');
      expect((await service.bucketInfo(ALICE, 'versioned')).versioning).toBe('Suspended');
      await expectCode(service.setBucketVersioning(ALICE, 'missing', 'Enabled'), 'NOT_FOUND');
    });

    it('canned ACL: private by default, public-read at creation or later, back to private; a missing bucket is NOT_FOUND', async () => {
      const service = await open();
      expect((await service.createBucket(ALICE, 'acl-default')).acl).toBe('private');
      expect((await service.createBucket(ALICE, 'acl-public', { acl: 'public-read' })).acl).toBe('public-read');
      expect((await service.bucketInfo(BOB, 'acl-public')).acl).toBe('public-read');
      await service.setBucketAcl(ALICE, 'acl-default', 'public-read');
      expect((await service.bucketInfo(ALICE, 'acl-default')).acl).toBe('public-read');
      await service.setBucketAcl(ALICE, 'acl-default', 'private');
      expect((await service.bucketInfo(ALICE, 'acl-default')).acl).toBe('private');
      await expectCode(service.setBucketAcl(ALICE, 'missing', 'public-read'), 'NOT_FOUND');
    });

    it('deletes an empty bucket; a missing one is NOT_FOUND', async () => {
      const service = await open();
      await service.createBucket(ALICE, 'gone');
      await service.deleteBucket(ALICE, 'gone');
      await expectCode(service.bucketInfo(ALICE, 'gone'), 'NOT_FOUND');
      await expectCode(service.deleteBucket(ALICE, 'gone'), 'NOT_FOUND');
      await service.createBucket(BOB, 'gone');
    });

    it.skipIf(!options.objects)('an object put in a bucket of the principal is read, listed and deleted', async () => {
      const service = await open();
      await service.createBucket(ALICE, 'round');
      const put = await service.putObject({ bucket: 'round', key: 'dir/k', owner: ALICE.owner, body: Readable.from([Buffer.from('hello '), Buffer.from('world')]), claims: { sizeBytes: 11, checksumAlgorithm: 'CRC32' } });
      expect(put.etag).toBe('5eb63bbbe01eeed093cb22bb8f5acdc3');
      const got = await service.getObject({ bucket: 'round', key: 'dir/k' });
      if (got.outcome !== 'ok') throw new Error('expected the object');
      const pieces: Uint8Array[] = [];
      for await (const piece of got.body()) pieces.push(piece);
      expect(Buffer.concat(pieces).toString()).toBe('hello world');
      expect(got.version.data?.checksum).toEqual(put.checksum);
      const listed = await service.listObjectsV2({ bucket: 'round', prefix: '', delimiter: '/' });
      expect(listed.commonPrefixes).toEqual(['dir/']);
      await service.deleteObject({ bucket: 'round', key: 'dir/k', owner: ALICE.owner });
      await expectCode(service.getObject({ bucket: 'round', key: 'dir/k' }), 'NOT_FOUND');
    });

    it.skipIf(!options.objects)('a bucket that holds an object is BUSY to delete', async () => {
      const service = await open();
      await service.createBucket(ALICE, 'full');
      const body = Readable.from([Buffer.from('hello')]);
      await service.putObject({ bucket: 'full', key: 'k', owner: ALICE.owner, body, claims: { sizeBytes: 5 } });
      await expectCode(service.deleteBucket(ALICE, 'full'), 'BUSY');
      await service.deleteObject({ bucket: 'full', key: 'k', owner: ALICE.owner });
      await service.deleteBucket(ALICE, 'full');
    });
  });
}
