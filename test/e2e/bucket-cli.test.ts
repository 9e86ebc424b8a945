/**
 * `strata bucket list|info|du` and /v1/buckets against `strata serve`, buckets filled with
 * @aws-sdk/client-s3: every owner's buckets with pool, versioning and object count; one bucket;
 * its usage added up from bounded pages (objects, versions, delete markers, uploads in progress);
 * clear errors for a missing bucket, a bad name and a bad page position.
 */
import {
  CreateBucketCommand, CreateMultipartUploadCommand, DeleteObjectCommand, PutBucketVersioningCommand, PutObjectCommand, S3Client, UploadPartCommand,
} from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import type { BucketJson, BucketUsageJson } from '../../src/api/rest/bucket-schemas.js';
import { assertBuilt, patternBytes, useDaemon } from './harness.js';

assertBuilt();

const KiB = 1024;
const MiB = 1024 * KiB;

describe('strata bucket', () => {
  const suite = useDaemon();

  function client(user: string): S3Client {
    suite.d.cliOk(['user', 'create', user]);
    const key = suite.d.json<{ id: string; secret: string }>(['user', 'key', 'create', user]);
    return new S3Client({ endpoint: suite.d.s3Url as string, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: key.id, secretAccessKey: key.secret } });
  }

  it('list, info and du of buckets of two owners in two pools', async () => {
    const d = suite.d;
    d.cliOk(['pool', 'create', 'dd', '--dedup']);
    const alice = client('alice');
    const bob = client('bob');
    await alice.send(new CreateBucketCommand({ Bucket: 'alice-photos' }));
    await bob.send(new CreateBucketCommand({ Bucket: 'bob-archive', CreateBucketConfiguration: { LocationConstraint: 'dd' as never } }));
    await bob.send(new PutBucketVersioningCommand({ Bucket: 'bob-archive', VersioningConfiguration: { Status: 'Enabled' } }));
    for (let i = 0; i < 5; i++) await alice.send(new PutObjectCommand({ Bucket: 'alice-photos', Key: `p/${i}.jpg`, Body: patternBytes(100 * KiB, i + 1) }));
    for (let v = 1; v <= 3; v++) await bob.send(new PutObjectCommand({ Bucket: 'bob-archive', Key: 'db.dump', Body: patternBytes(v * 200 * KiB, 50 + v) }));
    await bob.send(new PutObjectCommand({ Bucket: 'bob-archive', Key: 'gone', Body: Buffer.from('x') }));
    await bob.send(new DeleteObjectCommand({ Bucket: 'bob-archive', Key: 'gone' }));
    const upload = await bob.send(new CreateMultipartUploadCommand({ Bucket: 'bob-archive', Key: 'big.iso' }));
    await bob.send(new UploadPartCommand({ Bucket: 'bob-archive', Key: 'big.iso', UploadId: upload.UploadId, PartNumber: 1, Body: patternBytes(5 * MiB, 9) }));

    const listed = d.json<BucketJson[]>(['bucket', 'list']);
    expect(listed.map((b) => [b.name, b.owner, b.pool, b.versioning, b.objectCount])).toEqual([
      ['alice-photos', 'alice', 'default', 'unversioned', 5],
      ['bob-archive', 'bob', 'dd', 'enabled', 1],
    ]);
    const text = d.cliOk(['bucket', 'list']).stdout;
    expect(text).toMatch(/^NAME\s+OWNER\s+POOL\s+VERSIONING\s+OBJECTS\s+CREATED$/m);
    expect(text).toMatch(/^bob-archive\s+bob\s+dd\s+enabled\s+1\s+/m);

    expect(d.json<BucketJson>(['bucket', 'info', 'alice-photos'])).toMatchObject({ name: 'alice-photos', owner: 'alice', pool: 'default', acl: 'private', objectCount: 5, objectCountCapped: false });
    expect(d.cliOk(['bucket', 'info', 'bob-archive']).stdout).toMatch(/^pool\s+dd$/m);

    // du: the same sums whatever the page size (one record per request here).
    const expected = {
      bucket: 'bob-archive',
      pool: 'dd',
      objectCount: 1,
      objectBytes: 600 * KiB,
      // db.dump's three versions and 'gone' (under its delete marker).
      versionCount: 4,
      versionBytes: 1200 * KiB + 1,
      deleteMarkerCount: 1,
      uploadCount: 1,
      partCount: 1,
      partBytes: 5 * MiB,
    };
    expect(d.json<BucketUsageJson>(['bucket', 'du', 'bob-archive'])).toMatchObject(expected);
    const paged = d.json<BucketUsageJson>(['bucket', 'du', 'bob-archive', '--page-records', '1']);
    expect(paged).toMatchObject(expected);
    expect(paged.next).toBeUndefined();
    const human = d.cliOk(['bucket', 'du', 'alice-photos', '--no-progress']).stdout;
    expect(human).toMatch(/^objects\s+5 \(500 KiB\)$/m);
    expect(human).toMatch(/^uploads in progress\s+0, 0 parts/m);

    // REST: a page at a time, with the position to continue from.
    const first = await d.apiJson<BucketUsageJson>('GET', '/v1/buckets/alice-photos/du?limit=2', undefined, 200);
    expect(first).toMatchObject({ objectCount: 2, recordsRead: 2 });
    expect(typeof first.next).toBe('string');
    const doc = (await (await d.api('GET', '/openapi.json', { token: null })).json()) as { paths: Record<string, unknown> };
    expect(Object.keys(doc.paths)).toEqual(expect.arrayContaining(['/v1/buckets', '/v1/buckets/{bucket}', '/v1/buckets/{bucket}/du']));
  });

  it('errors name the fix', async () => {
    const d = suite.d;
    d.cliFails(['bucket', 'info', 'no-such-bucket'], 3, /no-such-bucket/);
    d.cliFails(['bucket', 'du', 'Bad_Name'], 2, /not a bucket name/, /strata bucket list/);
    d.cliFails(['bucket', 'du', 'alice-photos', '--page-records', '0'], 2, /--page-records/);
    const bad = await d.api('GET', '/v1/buckets/alice-photos/du?after=nonsense');
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { message: string } }).error.message).toMatch(/not a usage position.*'next' of the previous page/);
  });
});
