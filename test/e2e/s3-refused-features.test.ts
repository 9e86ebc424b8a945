/**
 * What the S3 endpoint does not do must be refused, never quietly ignored, where ignoring it would
 * lose or garble data (found by an operator walkthrough): a conditional delete that deleted
 * anyway, a read by part number answered with the whole object, a copied part's range past the
 * source's end cut short without a word. @aws-sdk/client-s3 against `strata serve`.
 */
import {
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCopyCommand,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import { s3Failure as failure } from '../support/s3-failure.js';
import { assertBuilt, useDaemon } from './harness.js';

assertBuilt();

const MiB = 1024 * 1024;

describe('S3 features refused rather than ignored', () => {
  const suite = useDaemon();
  let s3: S3Client;

  async function text(key: string): Promise<string> {
    return (await s3.send(new GetObjectCommand({ Bucket: 'refusals', Key: key }))).Body!.transformToString();
  }

  it('a conditional DeleteObject or DeleteObjects entry is refused and deletes nothing', async () => {
    suite.d.cliOk(['user', 'create', 'alice']);
    const key = suite.d.json<{ id: string; secret: string }>(['user', 'key', 'create', 'alice']);
    s3 = new S3Client({ endpoint: suite.d.s3Url as string, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: key.id, secretAccessKey: key.secret } });
    await s3.send(new CreateBucketCommand({ Bucket: 'refusals' }));
    for (const k of ['d1', 'd2', 'd3']) await s3.send(new PutObjectCommand({ Bucket: 'refusals', Key: k, Body: `keep ${k}` }));

    expect(await failure(s3.send(new DeleteObjectCommand({ Bucket: 'refusals', Key: 'd1', IfMatch: '"00000000000000000000000000000000"' })))).toEqual({ name: 'NotImplemented', status: 501 });
    expect(await text('d1')).toBe('keep d1');
    const batch = s3.send(new DeleteObjectsCommand({ Bucket: 'refusals', Delete: { Objects: [{ Key: 'd2' }, { Key: 'd3', ETag: '"00000000000000000000000000000000"' }] } }));
    expect(await failure(batch)).toEqual({ name: 'NotImplemented', status: 501 });
    expect([await text('d2'), await text('d3')]).toEqual(['keep d2', 'keep d3']);
    // Without a condition both work as before.
    await s3.send(new DeleteObjectCommand({ Bucket: 'refusals', Key: 'd1' }));
    const deleted = await s3.send(new DeleteObjectsCommand({ Bucket: 'refusals', Delete: { Objects: [{ Key: 'd2' }, { Key: 'd3' }] } }));
    expect(deleted.Deleted?.map((d) => d.Key).sort()).toEqual(['d2', 'd3']);
  });

  it('GetObject and HeadObject by part number are refused, not answered with the whole object', async () => {
    const upload = await s3.send(new CreateMultipartUploadCommand({ Bucket: 'refusals', Key: 'parts' }));
    const parts = [];
    for (const [number, fill] of [[1, 0x61], [2, 0x62]] as const) {
      const part = await s3.send(new UploadPartCommand({ Bucket: 'refusals', Key: 'parts', UploadId: upload.UploadId, PartNumber: number, Body: Buffer.alloc(5 * MiB, fill) }));
      parts.push({ PartNumber: number, ETag: part.ETag });
    }
    await s3.send(new CompleteMultipartUploadCommand({ Bucket: 'refusals', Key: 'parts', UploadId: upload.UploadId, MultipartUpload: { Parts: parts } }));
    expect(await failure(s3.send(new GetObjectCommand({ Bucket: 'refusals', Key: 'parts', PartNumber: 2 })))).toEqual({ name: 'NotImplemented', status: 501 });
    expect((await failure(s3.send(new HeadObjectCommand({ Bucket: 'refusals', Key: 'parts', PartNumber: 1 })))).status).toBe(501);
    // A byte range reads the second part.
    const second = await s3.send(new GetObjectCommand({ Bucket: 'refusals', Key: 'parts', Range: `bytes=${5 * MiB}-${5 * MiB + 3}` }));
    expect(await second.Body!.transformToString()).toBe('bbbb');
  });

  it("UploadPartCopy with a range past the source's end is refused, not cut short", async () => {
    await s3.send(new PutObjectCommand({ Bucket: 'refusals', Key: 'h.txt', Body: 'hello\n' }));
    const upload = await s3.send(new CreateMultipartUploadCommand({ Bucket: 'refusals', Key: 'copied' }));
    const past = s3.send(new UploadPartCopyCommand({ Bucket: 'refusals', Key: 'copied', UploadId: upload.UploadId, PartNumber: 1, CopySource: 'refusals/h.txt', CopySourceRange: 'bytes=2-100' }));
    expect(await failure(past)).toEqual({ name: 'InvalidArgument', status: 400 });
    const within = await s3.send(new UploadPartCopyCommand({ Bucket: 'refusals', Key: 'copied', UploadId: upload.UploadId, PartNumber: 1, CopySource: 'refusals/h.txt', CopySourceRange: 'bytes=2-5' }));
    await s3.send(new CompleteMultipartUploadCommand({ Bucket: 'refusals', Key: 'copied', UploadId: upload.UploadId, MultipartUpload: { Parts: [{ PartNumber: 1, ETag: within.CopyPartResult!.ETag }] } }));
    expect(await text('copied')).toBe('llo\n');
  });
});
