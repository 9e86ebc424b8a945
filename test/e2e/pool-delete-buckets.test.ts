/**
 * `strata pool delete` against `strata serve` while S3 buckets (made with @aws-sdk/client-s3)
 * name the pool: refused with BUSY (exit status 4) naming the buckets and the fix, also once the
 * bucket's objects are gone; allowed once the buckets are deleted, after which a CreateBucket
 * naming the deleted pool is refused instead of reusing what was opened for it.
 */
import { CreateBucketCommand, DeleteBucketCommand, DeleteObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import type { BucketJson } from '../../src/api/rest/bucket-schemas.js';
import { assertBuilt, patternBytes, useDaemon } from './harness.js';

assertBuilt();

describe('strata pool delete with S3 buckets in the pool', () => {
  const suite = useDaemon();

  function client(user: string): S3Client {
    suite.d.cliOk(['user', 'create', user]);
    const key = suite.d.json<{ id: string; secret: string }>(['user', 'key', 'create', user]);
    return new S3Client({ endpoint: suite.d.s3Url as string, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: key.id, secretAccessKey: key.secret } });
  }

  const inPool = (pool: string) => ({ CreateBucketConfiguration: { LocationConstraint: pool as never } });

  it('is refused while a bucket names the pool, and allowed once it is deleted', async () => {
    const d = suite.d;
    d.cliOk(['pool', 'create', 'yy']);
    const s3 = client('carol');
    await s3.send(new CreateBucketCommand({ Bucket: 'yyb', ...inPool('yy') }));
    await s3.send(new PutObjectCommand({ Bucket: 'yyb', Key: 'k', Body: patternBytes(200 * 1024, 3) }));
    await s3.send(new DeleteObjectCommand({ Bucket: 'yyb', Key: 'k' }));

    // The bucket is empty and its chunks are unreferenced: only the bucket keeps the pool.
    d.cliFails(['pool', 'delete', 'yy'], 4, /pool 'yy' holds 1 S3 bucket \(yyb\)/, /DeleteBucket/, /strata bucket list/);
    expect(d.json<{ name: string }[]>(['pool', 'list']).map((p) => p.name)).toContain('yy');
    // The refused delete left the bucket working.
    await s3.send(new PutObjectCommand({ Bucket: 'yyb', Key: 'again', Body: Buffer.from('still here') }));
    expect(d.json<BucketJson>(['bucket', 'info', 'yyb'])).toMatchObject({ pool: 'yy', objectCount: 1 });

    await s3.send(new DeleteObjectCommand({ Bucket: 'yyb', Key: 'again' }));
    await s3.send(new DeleteBucketCommand({ Bucket: 'yyb' }));
    expect(d.cliOk(['pool', 'delete', 'yy']).stdout).toBe("Pool 'yy' deleted.\n");
    expect(d.json<{ name: string }[]>(['pool', 'list']).map((p) => p.name)).not.toContain('yy');

    // The pool's chunk repository was open for yyb: a new bucket must not land in it.
    await expect(s3.send(new CreateBucketCommand({ Bucket: 'yyc', ...inPool('yy') }))).rejects.toMatchObject({ name: 'InvalidArgument' });
    expect(d.json<BucketJson[]>(['bucket', 'list']).map((b) => b.name)).not.toContain('yyc');
  });

  it('names the first buckets and counts the rest', async () => {
    const d = suite.d;
    d.cliOk(['pool', 'create', 'many']);
    const s3 = client('dave');
    const names = ['m-1', 'm-2', 'm-3', 'm-4', 'm-5', 'm-6', 'm-7'].map((n) => `bucket-${n}`);
    for (const name of names) await s3.send(new CreateBucketCommand({ Bucket: name, ...inPool('many') }));
    // A bucket in another pool is not counted.
    await s3.send(new CreateBucketCommand({ Bucket: 'bucket-elsewhere' }));
    d.cliFails(['pool', 'delete', 'many'], 4, /holds 7 S3 buckets \(bucket-m-1, bucket-m-2, bucket-m-3, bucket-m-4, bucket-m-5 and 2 more\)/);
  });
});
