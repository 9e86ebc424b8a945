/**
 * Bucket records as last read (src/objects/bucket-cache.ts): served without a catalog read, never
 * trusted past a change. Two ObjectModels on one catalog stand for two daemons of a cluster: one
 * changes a bucket while the other holds its record.
 */
import { describe, expect, it } from 'vitest';
import { MemoryCatalogStore } from '../../src/meta/memory-catalog.js';
import { Table, TxnBuilder } from '../../src/meta/table.js';
import { BucketCache } from '../../src/objects/bucket-cache.js';
import { ObjectModel } from '../../src/objects/model.js';
import { isObjectError } from '../../src/objects/errors.js';
import { ObjectTables } from '../../src/objects/tables.js';
import type { BucketRecord } from '../../src/objects/records.js';
import { createTestObjectModel, patternBytes, streamOf } from '../support/object-model.js';

const OWNER = 'user-1';

function bucketTable(catalog: MemoryCatalogStore): Table<BucketRecord> {
  return new ObjectTables(catalog).buckets;
}

/** Lets the catalog's watch events (delivered on a later turn) arrive. */
const watchEventsDelivered = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('BucketCache', () => {
  it('serves a record it read, and reads again after a change committed by anyone', async () => {
    const catalog = new MemoryCatalogStore();
    const table = bucketTable(catalog);
    const record: BucketRecord = { name: 'b', id: 'id-1', owner: OWNER, pool: 'pool-a', createdAtMs: 1, versioning: 'unversioned', acl: 'private' };
    const create = new TxnBuilder();
    table.put(create, record);
    await create.commit(catalog);
    const cache = new BucketCache(catalog, table);
    const first = await cache.get('b');
    expect(cache.hits).toBe(0);
    expect(await cache.get('b')).toEqual(first);
    expect(cache.hits).toBe(1);
    expect(Object.isFrozen((await cache.get('b'))!.record)).toBe(true);

    // Another daemon's change: no forget() here, only the watch tells this cache.
    const change = new TxnBuilder();
    table.put(change, { ...record, acl: 'public-read' }, first);
    await change.commit(catalog);
    await watchEventsDelivered();
    const hits = cache.hits;
    expect((await cache.get('b'))!.record.acl).toBe('public-read');
    expect(cache.hits).toBe(hits);

    // A read that began before a change and ended after it is not kept.
    const racing = cache.get('b', { fresh: true });
    cache.forget();
    await racing;
    await cache.get('b');
    expect(cache.hits).toBe(hits);
    cache.close();
  });

  it('a missing bucket is never remembered as missing', async () => {
    const catalog = new MemoryCatalogStore();
    const table = bucketTable(catalog);
    const cache = new BucketCache(catalog, table);
    expect(await cache.get('later')).toBeUndefined();
    const create = new TxnBuilder();
    table.put(create, { name: 'later', id: 'id-2', owner: OWNER, pool: 'pool-a', createdAtMs: 1, versioning: 'unversioned', acl: 'private' });
    await create.commit(catalog);
    expect((await cache.get('later'))?.record.id).toBe('id-2');
    cache.close();
  });
});

describe('the object model with bucket records cached', () => {
  async function twoDaemons() {
    const test = await createTestObjectModel();
    const other = new ObjectModel({ catalog: test.catalog, manifestStore: test.chunkStore, repositoryOf: async (pool) => test.repositories.get(pool)! });
    await test.model.createBucket({ name: 'photos', owner: OWNER, pool: 'pool-a' });
    return { ...test, other };
  }
  const data = patternBytes(100 * 1024, 3);

  it('a put that read the bucket before another daemon enabled versioning lands as a new version, not the null one', async () => {
    const { model, other } = await twoDaemons();
    await model.putObject({ bucket: 'photos', key: 'k', owner: OWNER, body: streamOf(data), claims: { sizeBytes: data.length } });
    await other.putBucketVersioning('photos', 'enabled');
    // No turn of the event loop in between: the first model's watch has not told it yet, so its
    // put commits against the record it holds, loses, forgets it and reads the new one.
    const put = await model.putObject({ bucket: 'photos', key: 'k', owner: OWNER, body: streamOf(data), claims: { sizeBytes: data.length } });
    expect(put.versionId).not.toBe('null');
    const versions = await other.listObjectVersions({ bucket: 'photos' });
    expect(versions.versions.map((v) => v.version.versionId)).toContain('null');
    expect(versions.versions.map((v) => v.version.versionId)).toContain(put.versionId);
  });

  it('nothing lands in a bucket another daemon deleted while this one held its record', async () => {
    const { model, other } = await twoDaemons();
    await model.headBucket('photos');
    await other.deleteBucket('photos');
    await expect(model.putObject({ bucket: 'photos', key: 'k', owner: OWNER, body: streamOf(data), claims: { sizeBytes: data.length } })).rejects.toSatisfy(
      (err: unknown) => isObjectError(err, 'NoSuchBucket'),
    );
    await watchEventsDelivered();
    await expect(model.headBucket('photos')).rejects.toSatisfy((err: unknown) => isObjectError(err, 'NoSuchBucket'));
  });

  it('a read under a record another daemon made stale finds the bucket made again, not the old one', async () => {
    const { model, other } = await twoDaemons();
    await model.putObject({ bucket: 'photos', key: 'k', owner: OWNER, body: streamOf(data), claims: { sizeBytes: data.length } });
    const before = await model.getObject({ bucket: 'photos', key: 'k' });
    expect(before.outcome).toBe('ok');
    await other.deleteObject({ bucket: 'photos', key: 'k', owner: OWNER });
    await other.deleteBucket('photos');
    await other.createBucket({ name: 'photos', owner: OWNER, pool: 'pool-a' });
    const again = patternBytes(10 * 1024, 9);
    const put = await other.putObject({ bucket: 'photos', key: 'k', owner: OWNER, body: streamOf(again), claims: { sizeBytes: again.length } });
    // No turn of the event loop: the first model still holds the old bucket's record (and id).
    const after = await model.getObject({ bucket: 'photos', key: 'k' });
    expect(after.version.data?.etag).toBe(put.etag);
  });

  it('this daemon sees its own bucket changes at once', async () => {
    const { model } = await twoDaemons();
    expect((await model.headBucket('photos')).acl).toBe('private');
    await model.putBucketAcl('photos', 'public-read');
    expect((await model.headBucket('photos')).acl).toBe('public-read');
    await model.deleteBucket('photos');
    await expect(model.headBucket('photos')).rejects.toSatisfy((err: unknown) => isObjectError(err, 'NoSuchBucket'));
  });
});
