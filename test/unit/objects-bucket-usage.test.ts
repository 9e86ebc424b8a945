/**
 * The operators' bucket questions of the object model (src/objects/bucket-usage.ts): every bucket
 * of every owner a page at a time, object counts with their cap, and usage a bounded page at a
 * time whose sums add up to the bucket's (objects, versions, delete markers, uploads in progress
 * and their parts) whatever the page size. The real model over the real DedupChunkRepository.
 */
import { describe, expect, it } from 'vitest';
import { OBJECT_COUNT_CAP, type BucketUsagePage } from '../../src/objects/bucket-usage.js';
import type { ObjectModel } from '../../src/objects/model.js';
import { expectCode } from '../support/expect-error.js';
import { createTestObjectModel, streamOf } from '../support/object-model.js';

const KiB = 1024;

type Sums = { -readonly [K in keyof Omit<BucketUsagePage, 'bucket' | 'next' | 'recordsRead'>]: number };

async function usage(model: ObjectModel, bucket: string, limit: number): Promise<{ sums: Sums; pages: number }> {
  const sums: Sums = { objectCount: 0, objectBytes: 0, versionCount: 0, versionBytes: 0, deleteMarkerCount: 0, uploadCount: 0, partCount: 0, partBytes: 0 };
  let after: string | undefined;
  let pages = 0;
  do {
    const page = await model.bucketUsagePage(bucket, { limit, ...(after === undefined ? {} : { after }) });
    pages++;
    for (const k of Object.keys(sums) as (keyof Sums)[]) sums[k] += page[k];
    expect(page.recordsRead).toBeLessThanOrEqual(limit + 2); // an upload's parts come with it
    after = page.next;
  } while (after !== undefined);
  return { sums, pages };
}

describe('bucket usage for operators', () => {
  it('adds up objects, versions, delete markers and uploads in progress, a bounded page at a time', async () => {
    const { model } = await createTestObjectModel();
    await model.createBucket({ name: 'plain', owner: 'alice', pool: 'pool-a' });
    await model.createBucket({ name: 'versioned', owner: 'bob', pool: 'pool-b' });
    await model.putBucketVersioning('versioned', 'enabled');
    for (let i = 0; i < 9; i++) await model.putObject({ bucket: 'plain', key: `k${i}`, owner: 'alice', body: streamOf(new Uint8Array((i + 1) * KiB).fill(i + 1)) });
    // Three versions of one key, then a delete marker on it; another key with one version.
    for (let v = 1; v <= 3; v++) await model.putObject({ bucket: 'versioned', key: 'doc', owner: 'bob', body: streamOf(new Uint8Array(v * 10 * KiB).fill(v)) });
    await model.putObject({ bucket: 'versioned', key: 'other', owner: 'bob', body: streamOf(new Uint8Array(5 * KiB).fill(9)) });
    await model.deleteObject({ bucket: 'versioned', key: 'doc', owner: 'bob' });
    const upload = await model.createMultipartUpload({ bucket: 'versioned', key: 'big', owner: 'bob' });
    for (const partNumber of [1, 2]) {
      await model.uploadPart({ bucket: 'versioned', key: 'big', uploadId: upload.uploadId, partNumber, body: streamOf(new Uint8Array(64 * KiB).fill(partNumber)) });
    }

    const plainBytes = 45 * KiB;
    for (const limit of [1, 3, 1000]) {
      const plain = await usage(model, 'plain', limit);
      expect(plain.sums).toEqual({ objectCount: 9, objectBytes: plainBytes, versionCount: 9, versionBytes: plainBytes, deleteMarkerCount: 0, uploadCount: 0, partCount: 0, partBytes: 0 });
      const versioned = await usage(model, 'versioned', limit);
      expect(versioned.sums).toEqual({ objectCount: 1, objectBytes: 5 * KiB, versionCount: 4, versionBytes: 65 * KiB, deleteMarkerCount: 1, uploadCount: 1, partCount: 2, partBytes: 128 * KiB });
      if (limit === 1) expect(plain.pages).toBeGreaterThan(9);
      if (limit === 1000) expect(plain.pages).toBe(3); // one per phase: objects, versions, uploads
    }

    await expectCode(model.bucketUsagePage('plain', { after: 'not-a-position' }), 'INVALID_ARGUMENT');
    await expectCode(model.bucketUsagePage('plain', { limit: 0 }), 'INVALID_ARGUMENT');
    await expectCode(model.bucketUsagePage('missing'), 'NOT_FOUND');
  });

  it('lists every owner\'s buckets a page at a time; object counts stop at the cap', async () => {
    const { model } = await createTestObjectModel();
    for (const [name, owner] of [['b-one', 'alice'], ['b-two', 'bob'], ['b-three', 'carol']] as const) await model.createBucket({ name, owner, pool: 'pool-a' });
    const names: string[] = [];
    let after: string | undefined;
    do {
      const page = await model.listAllBuckets({ limit: 2, ...(after === undefined ? {} : { after }) });
      expect(page.buckets.length).toBeLessThanOrEqual(2);
      names.push(...page.buckets.map((b) => `${b.name}:${b.owner}`));
      after = page.nextAfter;
    } while (after !== undefined);
    expect(names).toEqual(['b-one:alice', 'b-three:carol', 'b-two:bob']);

    const bucket = await model.headBucket('b-one');
    expect(await model.countObjects(bucket)).toEqual({ objectCount: 0, objectCountCapped: false });
    await model.putObject({ bucket: 'b-one', key: 'x', owner: 'alice', body: streamOf(new Uint8Array(10).fill(1)) });
    expect(await model.countObjects(bucket)).toEqual({ objectCount: 1, objectCountCapped: false });
    expect(OBJECT_COUNT_CAP).toBe(10_000);
  });
});
