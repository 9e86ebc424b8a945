/**
 * `strata bucket delete [--purge]`, `strata bucket chown` and the orphan marker of `strata bucket
 * list` against `strata serve`, buckets filled with @aws-sdk/client-s3: an empty bucket goes, a
 * full one is refused naming what it holds and --purge (CLI and REST bodies); a purge of a
 * versioned bucket with delete markers and an unfinished upload runs as a job, drops every chunk
 * reference (the pool's GC then reclaims every pack; scrub is clean) and S3 gets NoSuchBucket; a
 * chowned bucket is the new owner's to read and write and refused to the old owner, its ACLs name
 * the new owner; `strata user delete` refuses an owner of buckets naming both commands; a bucket
 * whose owner's record is gone (as a release before that refusal left them) is marked until it is
 * given to a user.
 */
import {
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetBucketAclCommand,
  GetObjectAclCommand,
  GetObjectCommand,
  HeadBucketCommand,
  ListBucketsCommand,
  ListObjectsV2Command,
  PutBucketVersioningCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { BucketDeletedJson, BucketJson } from '../../src/api/rest/bucket-schemas.js';
import type { JobJson, PoolDfJson, PoolGcJson } from '../../src/api/rest/schemas.js';
import { LevelCatalogStore } from '../../src/meta/level-catalog.js';
import { s3Failure as failure } from '../support/s3-failure.js';
import { makeTempDir } from '../support/tmp.js';
import { assertBuilt, patternBytes, startDaemon, useDaemon, type Daemon } from './harness.js';

assertBuilt();

const KiB = 1024;
const MiB = 1024 * KiB;
const DENIED = { name: 'AccessDenied', status: 403 };
const NO_SUCH_BUCKET = { name: 'NoSuchBucket', status: 404 };

function s3Client(d: Daemon, key: { id: string; secret: string }): S3Client {
  return new S3Client({ endpoint: d.s3Url as string, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: key.id, secretAccessKey: key.secret } });
}

/** A new user with a key, and an S3 client signing with it. */
function newUser(d: Daemon, user: string): S3Client {
  d.cliOk(['user', 'create', user]);
  return s3Client(d, d.json<{ id: string; secret: string }>(['user', 'key', 'create', user]));
}

async function text(s3: S3Client, bucket: string, key: string): Promise<string> {
  return (await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }))).Body!.transformToString();
}

async function errorBody(res: Response): Promise<{ status: number; error: { code: string; message: string; hint?: string; fix?: unknown } }> {
  return { status: res.status, ...((await res.json()) as { error: { code: string; message: string; hint?: string } }) };
}

describe('strata bucket delete and chown', () => {
  const suite = useDaemon();

  it('deletes an empty bucket; refuses a full one naming what it holds and --purge, and leaves it serving', async () => {
    const d = suite.d;
    const erin = newUser(d, 'erin');
    for (const bucket of ['erin-empty', 'erin-empty2', 'erin-full']) await erin.send(new CreateBucketCommand({ Bucket: bucket }));
    await erin.send(new PutObjectCommand({ Bucket: 'erin-full', Key: 'note.txt', Body: 'erin words' }));

    expect(d.cliOk(['bucket', 'delete', 'erin-empty']).stdout).toBe("Bucket 'erin-empty' of erin deleted.\n");
    expect(d.json<BucketDeletedJson>(['bucket', 'delete', 'erin-empty2'])).toEqual({
      bucket: 'erin-empty2', owner: 'erin', pool: 'default', versionCount: 0, versionBytes: 0, deleteMarkerCount: 0, uploadCount: 0, partCount: 0, partBytes: 0,
    });
    expect(await failure(erin.send(new HeadBucketCommand({ Bucket: 'erin-empty' })))).toMatchObject({ status: 404 });

    d.cliFails(
      ['bucket', 'delete', 'erin-full'],
      4,
      /cannot delete bucket 'erin-full': bucket 'erin-full' is not empty: it holds 1 object \(1 stored version\), 0 delete markers, 0 multipart uploads in progress \[BUSY\] \(pass --purge to delete all of it with the bucket\)/,
    );
    const busy = await errorBody(await d.api('DELETE', '/v1/buckets/erin-full'));
    expect(busy).toEqual({
      status: 409,
      error: {
        code: 'BUSY',
        message: "bucket 'erin-full' is not empty: it holds 1 object (1 stored version), 0 delete markers, 0 multipart uploads in progress",
        hint: 'pass ?purge=true to delete all of it with the bucket',
        fix: { option: 'purge', text: 'pass {} to delete all of it with the bucket' },
      },
    });
    // Refused before anything changed: the bucket serves as before.
    expect(await text(erin, 'erin-full', 'note.txt')).toBe('erin words');
    await erin.send(new PutObjectCommand({ Bucket: 'erin-full', Key: 'more.txt', Body: 'more' }));

    d.cliFails(['bucket', 'delete', 'no-such-bucket'], 3, /bucket no-such-bucket does not exist \[NOT_FOUND\] \(check the name; 'strata bucket list' lists the buckets\)/);
    expect(await errorBody(await d.api('DELETE', '/v1/buckets/no-such-bucket?purge=true'))).toMatchObject({
      status: 404,
      error: { code: 'NOT_FOUND', message: 'bucket no-such-bucket does not exist', hint: 'check the name; GET /v1/buckets lists the buckets' },
    });
    // No purge job is recorded for a bucket that does not exist.
    expect(d.json<JobJson[]>(['job', 'list']).filter((j) => j.kind === 'bucket-purge')).toEqual([]);
    d.cliFails(['bucket', 'delete', 'Bad_Name'], 2, /not a bucket name/);
  });

  it("--purge: every version, delete marker and upload goes as a job, the pool's references drop, GC reclaims every pack, S3 gets NoSuchBucket", async () => {
    const d = suite.d;
    d.cliOk(['pool', 'create', 'pp', '--dedup']);
    const frank = newUser(d, 'frank');
    const bucket = 'frank-archive';
    await frank.send(new CreateBucketCommand({ Bucket: bucket, CreateBucketConfiguration: { LocationConstraint: 'pp' as never } }));
    await frank.send(new PutBucketVersioningCommand({ Bucket: bucket, VersioningConfiguration: { Status: 'Enabled' } }));
    for (let v = 1; v <= 3; v++) await frank.send(new PutObjectCommand({ Bucket: bucket, Key: 'db.dump', Body: patternBytes(v * 300 * KiB, 70 + v) }));
    await frank.send(new PutObjectCommand({ Bucket: bucket, Key: 'gone', Body: patternBytes(100 * KiB, 80) }));
    await frank.send(new DeleteObjectCommand({ Bucket: bucket, Key: 'gone' }));
    const upload = await frank.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: 'big.iso' }));
    await frank.send(new UploadPartCommand({ Bucket: bucket, Key: 'big.iso', UploadId: upload.UploadId, PartNumber: 1, Body: patternBytes(5 * MiB, 81) }));
    const held = d.json<PoolDfJson>(['pool', 'df', 'pp']);
    expect(held.referencedChunkBytes).toBeGreaterThan(6 * MiB);

    const deleted = d.json<BucketDeletedJson>(['bucket', 'delete', bucket, '--purge']);
    expect(deleted).toMatchObject({ bucket, owner: 'frank', pool: 'pp', versionCount: 4, versionBytes: 1900 * KiB, deleteMarkerCount: 1, uploadCount: 1, partCount: 1, partBytes: 5 * MiB });
    const job = d.json<JobJson>(['job', 'info', deleted.jobId as string]);
    expect(job).toMatchObject({ kind: 'bucket-purge', target: bucket, state: 'succeeded', doneBytes: 1900 * KiB + 5 * MiB, totalBytes: 1900 * KiB + 5 * MiB });

    // Every reference is given back: nothing in the pool is referenced, GC takes every pack, scrub is clean.
    expect(d.json<PoolDfJson>(['pool', 'df', 'pp']).referencedChunkBytes).toBe(0);
    expect(d.json<PoolGcJson>(['pool', 'gc', 'pp', '--grace', '0']).bytesDeleted).toBeGreaterThan(5 * MiB);
    expect(d.json<PoolDfJson>(['pool', 'df', 'pp'])).toMatchObject({ packBytes: 0, uniqueChunkCount: 0, referencedChunkBytes: 0 });
    d.cliOk(['pool', 'scrub', 'pp', '--no-progress']);

    expect(await failure(frank.send(new GetObjectCommand({ Bucket: bucket, Key: 'db.dump' })))).toEqual(NO_SUCH_BUCKET);
    expect(await failure(frank.send(new ListObjectsV2Command({ Bucket: bucket })))).toEqual(NO_SUCH_BUCKET);
    expect((await frank.send(new ListBucketsCommand({}))).Buckets ?? []).toEqual([]);
    expect(d.json<BucketJson[]>(['bucket', 'list']).map((b) => b.name)).not.toContain(bucket);

    // The text output, with the bar drawn (-p) on stderr.
    await frank.send(new CreateBucketCommand({ Bucket: 'frank-small' }));
    await frank.send(new PutObjectCommand({ Bucket: 'frank-small', Key: 'x', Body: patternBytes(64 * KiB, 90) }));
    const r = d.cliOk(['bucket', 'delete', 'frank-small', '--purge', '-p']);
    expect(r.stdout).toMatch(/^Bucket 'frank-small' of frank deleted\. Purged 1 versions \(64 KiB\), 0 delete markers and 0 multipart uploads \(0 parts, 0 B\) \(job [0-9a-f]+\)\.$/m);
    expect(r.stderr).toMatch(/purging frank-small \[#+\] 100%/);
  });

  it("chown: the new owner's key reads and writes, the old owner's is refused, the ACLs name the new owner; user delete names the way out", async () => {
    const d = suite.d;
    const gina = newUser(d, 'gina');
    const hank = newUser(d, 'hank');
    await gina.send(new CreateBucketCommand({ Bucket: 'gina-docs' }));
    await gina.send(new PutObjectCommand({ Bucket: 'gina-docs', Key: 'a.txt', Body: 'gina words' }));
    expect(await failure(hank.send(new GetObjectCommand({ Bucket: 'gina-docs', Key: 'a.txt' })))).toEqual(DENIED);

    d.cliFails(['bucket', 'chown', 'gina-docs', 'nobody'], 3, /cannot give bucket 'gina-docs' to 'nobody': the user 'nobody' does not exist \[NOT_FOUND\] \(check the name; 'strata user list' lists the users\)/);
    d.cliFails(['bucket', 'chown', 'no-such-bucket', 'hank'], 3, /'strata bucket list'/);
    expect(d.cliOk(['bucket', 'chown', 'gina-docs', 'hank']).stdout).toBe("Bucket 'gina-docs' now belongs to hank.\n");
    expect(d.json<BucketJson>(['bucket', 'info', 'gina-docs'])).toMatchObject({ owner: 'hank', ownerMissing: false, objectCount: 1 });

    expect(await text(hank, 'gina-docs', 'a.txt')).toBe('gina words');
    await hank.send(new PutObjectCommand({ Bucket: 'gina-docs', Key: 'b.txt', Body: 'hank words' }));
    expect((await hank.send(new ListObjectsV2Command({ Bucket: 'gina-docs' }))).Contents?.map((c) => c.Key)).toEqual(['a.txt', 'b.txt']);
    expect((await hank.send(new ListBucketsCommand({}))).Buckets?.map((b) => b.Name)).toEqual(['gina-docs']);
    const acl = await hank.send(new GetBucketAclCommand({ Bucket: 'gina-docs' }));
    expect([acl.Owner?.ID, acl.Grants?.map((g) => [g.Grantee?.ID, g.Permission])]).toEqual(['hank', [['hank', 'FULL_CONTROL']]]);
    const objectAcl = await hank.send(new GetObjectAclCommand({ Bucket: 'gina-docs', Key: 'a.txt' }));
    expect(objectAcl.Grants?.map((g) => [g.Grantee?.ID, g.Permission])).toEqual([['hank', 'FULL_CONTROL']]);

    for (const attempt of [
      () => gina.send(new GetObjectCommand({ Bucket: 'gina-docs', Key: 'a.txt' })),
      () => gina.send(new PutObjectCommand({ Bucket: 'gina-docs', Key: 'c.txt', Body: 'no' })),
      () => gina.send(new GetBucketAclCommand({ Bucket: 'gina-docs' })),
    ]) {
      expect(await failure(attempt())).toEqual(DENIED);
    }
    expect((await gina.send(new ListBucketsCommand({}))).Buckets ?? []).toEqual([]);

    // REST: PATCH the owner back and forth; an unknown user and a body that is not one are refused.
    expect(await d.apiJson<BucketJson>('PATCH', '/v1/buckets/gina-docs', { owner: 'gina' }, 200)).toMatchObject({ name: 'gina-docs', owner: 'gina', ownerMissing: false });
    expect(await errorBody(await d.api('PATCH', '/v1/buckets/gina-docs', { body: { owner: 'nobody' } }))).toMatchObject({
      status: 404,
      error: { code: 'NOT_FOUND', message: "the user 'nobody' does not exist", hint: 'check the name; GET /v1/users lists the users' },
    });
    expect((await d.api('PATCH', '/v1/buckets/gina-docs', { body: { owner: 5 } })).status).toBe(400);
    expect(await text(gina, 'gina-docs', 'b.txt')).toBe('hank words');

    // gina owns it again: her delete is refused naming both ways out; following one, it goes through.
    d.cliFails(
      ['user', 'delete', 'gina'],
      4,
      /the user 'gina' still owns buckets \('gina-docs'\); a user made later under the same name would own them \[BUSY\] \(give each to another user or delete it, objects and all, first: 'strata bucket chown gina-docs USER' or 'strata bucket delete gina-docs --purge'\)/,
    );
    expect(await errorBody(await d.api('DELETE', '/v1/users/gina'))).toMatchObject({
      status: 409,
      error: { code: 'BUSY', hint: 'give each to another user or delete it, objects and all, first: PATCH /v1/buckets/gina-docs {"owner": "USER"} or DELETE /v1/buckets/gina-docs?purge=true' },
    });
    d.cliOk(['bucket', 'chown', 'gina-docs', 'hank']);
    d.cliOk(['user', 'delete', 'gina']);
    expect(await text(hank, 'gina-docs', 'a.txt')).toBe('gina words');

    const doc = (await (await d.api('GET', '/openapi.json', { token: null })).json()) as { paths: Record<string, Record<string, unknown>> };
    expect(Object.keys(doc.paths['/v1/buckets/{bucket}'] ?? {})).toEqual(expect.arrayContaining(['get', 'patch', 'delete']));
  });
});

describe('a bucket whose owner is no user any more', () => {
  it('is marked by bucket list (table and ownerMissing) until it is given to a user', async () => {
    const tmp = makeTempDir();
    const dataDir = path.join(tmp.path, 'data');
    let d = await startDaemon(dataDir);
    try {
      const ivan = newUser(d, 'ivan');
      await ivan.send(new CreateBucketCommand({ Bucket: 'ivan-old' }));
      await ivan.send(new PutObjectCommand({ Bucket: 'ivan-old', Key: 'k', Body: 'ivan words' }));
      await d.stop();
      // What a release before `user delete` refused owners of buckets left: the user and its keys gone, its bucket kept.
      const catalog = await LevelCatalogStore.open(path.join(dataDir, 'catalog'));
      const keys = (await catalog.list('s3-key')).entries.map((e) => e.key);
      const done = await catalog.txn([], ['s3-user/ivan', ...keys].map((key) => ({ type: 'delete' as const, key })));
      expect(done.succeeded).toBe(true);
      await catalog.close();
      d = await startDaemon(dataDir);

      const listed = d.cliOk(['bucket', 'list']);
      expect(listed.stdout).toMatch(/^ivan-old\s+ivan \(no such user\)\s+default\s+/m);
      expect(listed.stderr).toBe("1 bucket belongs to no user: give each to a user ('strata bucket chown NAME USER') or delete it ('strata bucket delete NAME --purge').\n");
      expect(d.json<BucketJson[]>(['bucket', 'list']).map((b) => [b.name, b.owner, b.ownerMissing])).toEqual([['ivan-old', 'ivan', true]]);
      expect(d.cliOk(['bucket', 'info', 'ivan-old']).stdout).toMatch(/^owner\s+ivan \(no such user\)$/m);

      const jill = newUser(d, 'jill');
      d.cliOk(['bucket', 'chown', 'ivan-old', 'jill']);
      const after = d.cliOk(['bucket', 'list']);
      expect(after.stdout).toMatch(/^ivan-old\s+jill\s+default\s+/m);
      expect(after.stderr).toBe('');
      expect(d.json<BucketJson[]>(['bucket', 'list']).map((b) => b.ownerMissing)).toEqual([false]);
      expect(await text(jill, 'ivan-old', 'k')).toBe('ivan words');
    } finally {
      await d.stop();
      tmp.cleanup();
    }
  });
});
