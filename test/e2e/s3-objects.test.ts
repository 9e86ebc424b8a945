/**
 * Objects through the S3 endpoint of `strata serve` (its own process, defaults: buckets in the
 * default local pool), with real clients: @aws-sdk/client-s3 with default settings (flexible
 * checksums, aws-chunked streams), the aws CLI and boto3 in their own processes, and curl with a
 * presigned GET URL. Keys are made with `strata user key create`.
 */
import { Readable } from 'node:stream';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsCommand,
  ListObjectsV2Command,
  ListObjectVersionsCommand,
  PutBucketVersioningCommand,
  ListPartsCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  UploadPartCopyCommand,
} from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import { sdkSigner } from '../support/sdk-signer.js';
import { run } from '../support/tools.js';
import { useTempDir } from '../support/tmp.js';
import { assertBuilt, useDaemon } from './harness.js';
import { s3Failure as failure } from '../support/s3-failure.js';
import type { PoolDfJson } from '../../src/api/rest/schemas.js';

assertBuilt();

const MiB = 1024 * 1024;


function md5Hex(data: Uint8Array): string {
  return createHash('md5').update(data).digest('hex');
}

describe('S3 objects through strata serve', () => {
  const suite = useDaemon();
  const tmp = useTempDir();
  let key: { id: string; secret: string };
  let s3: S3Client;

  function awsEnv(): Record<string, string> {
    return { AWS_ACCESS_KEY_ID: key.id, AWS_SECRET_ACCESS_KEY: key.secret, AWS_DEFAULT_REGION: 'us-east-1', AWS_CONFIG_FILE: '/dev/null', AWS_SHARED_CREDENTIALS_FILE: '/dev/null', S3_URL: suite.d.s3Url as string };
  }

  it('a key from the CLI; a bucket in the default pool out of the box', async () => {
    suite.d.cliOk(['user', 'create', 'alice']);
    const created = suite.d.json<{ id: string; secret: string }>(['user', 'key', 'create', 'alice']);
    key = { id: created.id, secret: created.secret };
    s3 = new S3Client({ endpoint: suite.d.s3Url as string, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: key.id, secretAccessKey: key.secret } });
    await s3.send(new CreateBucketCommand({ Bucket: 'photos' }));
  });

  it('@aws-sdk/client-s3: put a buffer and a stream, get, range get, head, conditional put', async () => {
    const small = Buffer.from('hello, strata');
    const put = await s3.send(new PutObjectCommand({ Bucket: 'photos', Key: 'docs/hello.txt', Body: small, ContentType: 'text/plain', Metadata: { colour: 'blue' } }));
    expect(put.ETag).toBe(`"${md5Hex(small)}"`);
    const big = randomBytes(3 * MiB + 12_345);
    const streamed = await s3.send(new PutObjectCommand({ Bucket: 'photos', Key: 'big.bin', Body: Readable.from([big.subarray(0, MiB), big.subarray(MiB)]), ContentLength: big.length }));
    expect(streamed.ETag).toBe(`"${md5Hex(big)}"`);

    const got = await s3.send(new GetObjectCommand({ Bucket: 'photos', Key: 'docs/hello.txt' }));
    expect(Buffer.from(await got.Body!.transformToByteArray())).toEqual(small);
    expect(got).toMatchObject({ ContentType: 'text/plain', Metadata: { colour: 'blue' }, ContentLength: small.length, ETag: put.ETag });
    const whole = await s3.send(new GetObjectCommand({ Bucket: 'photos', Key: 'big.bin', ChecksumMode: 'ENABLED' }));
    expect(md5Hex(await whole.Body!.transformToByteArray())).toBe(md5Hex(big));
    expect(whole.ChecksumCRC32 ?? whole.ChecksumCRC64NVME).toBeDefined();
    const ranged = await s3.send(new GetObjectCommand({ Bucket: 'photos', Key: 'big.bin', Range: 'bytes=100000-200000' }));
    expect(ranged.ContentRange).toBe(`bytes 100000-200000/${big.length}`);
    expect(Buffer.from(await ranged.Body!.transformToByteArray())).toEqual(big.subarray(100_000, 200_001));

    const head = await s3.send(new HeadObjectCommand({ Bucket: 'photos', Key: 'big.bin' }));
    expect(head).toMatchObject({ ContentLength: big.length, ETag: streamed.ETag });
    expect(await failure(s3.send(new HeadObjectCommand({ Bucket: 'photos', Key: 'missing' })))).toMatchObject({ status: 404 });
    expect(await failure(s3.send(new GetObjectCommand({ Bucket: 'photos', Key: 'missing' })))).toEqual({ name: 'NoSuchKey', status: 404 });
    expect(await failure(s3.send(new PutObjectCommand({ Bucket: 'photos', Key: 'docs/hello.txt', Body: 'again', IfNoneMatch: '*' })))).toEqual({ name: 'PreconditionFailed', status: 412 });
    await s3.send(new PutObjectCommand({ Bucket: 'photos', Key: 'docs/new.txt', Body: 'first', IfNoneMatch: '*' }));
    // A checksum that does not match the body: BadDigest, and nothing is stored.
    expect(await failure(s3.send(new PutObjectCommand({ Bucket: 'photos', Key: 'bad.txt', Body: 'some bytes', ChecksumCRC32: 'AAAAAA==' })))).toEqual({ name: 'BadDigest', status: 400 });
    expect(await failure(s3.send(new HeadObjectCommand({ Bucket: 'photos', Key: 'bad.txt' })))).toMatchObject({ status: 404 });
    // A wrong Content-MD5 on a body large enough for the hashing worker threads (the ETag's MD5
    // checks it, once): BadDigest, nothing stored; the daemon keeps serving.
    const large = randomBytes(6 * 1024 * 1024);
    const wrongMd5 = createHash('md5').update('other').digest('base64');
    expect(await failure(s3.send(new PutObjectCommand({ Bucket: 'photos', Key: 'bad-md5.bin', Body: large, ContentMD5: wrongMd5 })))).toEqual({ name: 'BadDigest', status: 400 });
    expect(await failure(s3.send(new HeadObjectCommand({ Bucket: 'photos', Key: 'bad-md5.bin' })))).toMatchObject({ status: 404 });
    const rightMd5 = createHash('md5').update(large).digest();
    const good = await s3.send(new PutObjectCommand({ Bucket: 'photos', Key: 'good-md5.bin', Body: large, ContentMD5: rightMd5.toString('base64') }));
    expect(good.ETag).toBe(`"${rightMd5.toString('hex')}"`);
    await s3.send(new DeleteObjectCommand({ Bucket: 'photos', Key: 'good-md5.bin' }));
    const sha = await s3.send(new PutObjectCommand({ Bucket: 'photos', Key: 'sha.txt', Body: 'sha bytes', ChecksumAlgorithm: 'SHA256' }));
    expect(sha.ChecksumSHA256).toBe(createHash('sha256').update('sha bytes').digest('base64'));
    await s3.send(new DeleteObjectCommand({ Bucket: 'photos', Key: 'sha.txt' }));
  });

  it('@aws-sdk/client-s3: list v2 with prefix and delimiter, list v1, copy, delete', async () => {
    for (const k of ['docs/a.txt', 'docs/sub/b.txt', 'docs/sub/c.txt', 'top.txt']) await s3.send(new PutObjectCommand({ Bucket: 'photos', Key: k, Body: k }));
    const listed = await s3.send(new ListObjectsV2Command({ Bucket: 'photos', Prefix: 'docs/', Delimiter: '/' }));
    expect(listed.Contents?.map((c) => c.Key)).toEqual(['docs/a.txt', 'docs/hello.txt', 'docs/new.txt']);
    expect(listed.CommonPrefixes?.map((p) => p.Prefix)).toEqual(['docs/sub/']);
    const paged = await s3.send(new ListObjectsV2Command({ Bucket: 'photos', MaxKeys: 2 }));
    expect(paged.IsTruncated).toBe(true);
    const rest = await s3.send(new ListObjectsV2Command({ Bucket: 'photos', ContinuationToken: paged.NextContinuationToken }));
    expect([...(paged.Contents ?? []), ...(rest.Contents ?? [])].map((c) => c.Key)).toEqual(['big.bin', 'docs/a.txt', 'docs/hello.txt', 'docs/new.txt', 'docs/sub/b.txt', 'docs/sub/c.txt', 'top.txt']);
    const v1 = await s3.send(new ListObjectsCommand({ Bucket: 'photos', Delimiter: '/' }));
    expect(v1.CommonPrefixes?.map((p) => p.Prefix)).toEqual(['docs/']);

    const copied = await s3.send(new CopyObjectCommand({ Bucket: 'photos', Key: 'copy of hello.txt', CopySource: 'photos/docs/hello.txt' }));
    expect(copied.CopyObjectResult?.ETag).toBe(`"${md5Hex(Buffer.from('hello, strata'))}"`);
    const copy = await s3.send(new GetObjectCommand({ Bucket: 'photos', Key: 'copy of hello.txt' }));
    expect(await copy.Body!.transformToString()).toBe('hello, strata');
    expect(copy.Metadata).toEqual({ colour: 'blue' });

    await s3.send(new DeleteObjectCommand({ Bucket: 'photos', Key: 'top.txt' }));
    await s3.send(new DeleteObjectCommand({ Bucket: 'photos', Key: 'top.txt' })); // a missing key is fine
    const many = await s3.send(new DeleteObjectsCommand({ Bucket: 'photos', Delete: { Objects: [{ Key: 'docs/sub/b.txt' }, { Key: 'docs/sub/c.txt' }] } }));
    expect(many.Deleted?.map((d) => d.Key).sort()).toEqual(['docs/sub/b.txt', 'docs/sub/c.txt']);
    const after = await s3.send(new ListObjectsV2Command({ Bucket: 'photos' }));
    expect(after.Contents?.map((c) => c.Key)).toEqual(['big.bin', 'copy of hello.txt', 'docs/a.txt', 'docs/hello.txt', 'docs/new.txt']);
  });

  it('@aws-sdk/client-s3: multipart upload of 5 MiB + 5 MiB + a small last part; copy part; abort', async () => {
    const parts = [randomBytes(5 * MiB), randomBytes(5 * MiB), randomBytes(1000)];
    const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket: 'photos', Key: 'multi.bin', ContentType: 'application/x-test' }));
    const etags: string[] = [];
    for (const [i, body] of parts.entries()) {
      const part = await s3.send(new UploadPartCommand({ Bucket: 'photos', Key: 'multi.bin', UploadId, PartNumber: i + 1, Body: body }));
      expect(part.ETag).toBe(`"${md5Hex(body)}"`);
      etags.push(part.ETag!);
    }
    const listedParts = await s3.send(new ListPartsCommand({ Bucket: 'photos', Key: 'multi.bin', UploadId }));
    expect(listedParts.Parts?.map((p) => [p.PartNumber, p.Size])).toEqual([[1, 5 * MiB], [2, 5 * MiB], [3, 1000]]);
    expect((await s3.send(new ListMultipartUploadsCommand({ Bucket: 'photos' }))).Uploads?.map((u) => u.UploadId)).toEqual([UploadId]);
    const done = await s3.send(new CompleteMultipartUploadCommand({ Bucket: 'photos', Key: 'multi.bin', UploadId, MultipartUpload: { Parts: etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })) } }));
    const expectedEtag = `"${md5Hex(Buffer.concat(parts.map((p) => createHash('md5').update(p).digest())))}-3"`;
    expect(done.ETag).toBe(expectedEtag);
    const got = await s3.send(new GetObjectCommand({ Bucket: 'photos', Key: 'multi.bin' }));
    expect(got.ContentType).toBe('application/x-test');
    expect(md5Hex(await got.Body!.transformToByteArray())).toBe(md5Hex(Buffer.concat(parts)));

    const second = await s3.send(new CreateMultipartUploadCommand({ Bucket: 'photos', Key: 'from-copy.bin' }));
    const copiedPart = await s3.send(new UploadPartCopyCommand({ Bucket: 'photos', Key: 'from-copy.bin', UploadId: second.UploadId, PartNumber: 1, CopySource: 'photos/multi.bin', CopySourceRange: `bytes=0-${5 * MiB - 1}` }));
    expect(copiedPart.CopyPartResult?.ETag).toBe(etags[0]);
    await s3.send(new AbortMultipartUploadCommand({ Bucket: 'photos', Key: 'from-copy.bin', UploadId: second.UploadId }));
    expect(await failure(s3.send(new ListPartsCommand({ Bucket: 'photos', Key: 'from-copy.bin', UploadId: second.UploadId })))).toEqual({ name: 'NoSuchUpload', status: 404 });
  });

  it('@aws-sdk/client-s3: 304, 416, versions and delete markers, NoSuchUpload; objects survive a restart', async () => {
    const head = await s3.send(new HeadObjectCommand({ Bucket: 'photos', Key: 'docs/hello.txt' }));
    expect(await failure(s3.send(new GetObjectCommand({ Bucket: 'photos', Key: 'docs/hello.txt', IfNoneMatch: head.ETag })))).toMatchObject({ status: 304 });
    expect(await failure(s3.send(new GetObjectCommand({ Bucket: 'photos', Key: 'docs/hello.txt', IfMatch: '"0000"' })))).toEqual({ name: 'PreconditionFailed', status: 412 });
    expect(await failure(s3.send(new GetObjectCommand({ Bucket: 'photos', Key: 'docs/hello.txt', Range: 'bytes=5000-6000' })))).toEqual({ name: 'InvalidRange', status: 416 });
    expect(await failure(s3.send(new UploadPartCommand({ Bucket: 'photos', Key: 'x', UploadId: 'nope', PartNumber: 1, Body: 'x' })))).toEqual({ name: 'NoSuchUpload', status: 404 });
    expect(await failure(s3.send(new GetObjectCommand({ Bucket: 'nobucket', Key: 'x' })))).toEqual({ name: 'NoSuchBucket', status: 404 });

    await s3.send(new CreateBucketCommand({ Bucket: 'versioned' }));
    await s3.send(new PutBucketVersioningCommand({ Bucket: 'versioned', VersioningConfiguration: { Status: 'Enabled' } }));
    const first = await s3.send(new PutObjectCommand({ Bucket: 'versioned', Key: 'k', Body: 'one' }));
    const second = await s3.send(new PutObjectCommand({ Bucket: 'versioned', Key: 'k', Body: 'two' }));
    expect(first.VersionId).toBeDefined();
    expect(second.VersionId).not.toBe(first.VersionId);
    const marker = await s3.send(new DeleteObjectCommand({ Bucket: 'versioned', Key: 'k' }));
    expect(marker.DeleteMarker).toBe(true);
    expect(await failure(s3.send(new GetObjectCommand({ Bucket: 'versioned', Key: 'k' })))).toEqual({ name: 'NoSuchKey', status: 404 });
    const old = await s3.send(new GetObjectCommand({ Bucket: 'versioned', Key: 'k', VersionId: first.VersionId }));
    expect(await old.Body!.transformToString()).toBe('one');
    const versions = await s3.send(new ListObjectVersionsCommand({ Bucket: 'versioned' }));
    expect(versions.Versions?.map((v) => v.VersionId)).toEqual([second.VersionId, first.VersionId]);
    expect(versions.DeleteMarkers?.map((m) => [m.VersionId, m.IsLatest])).toEqual([[marker.VersionId, true]]);

    const d = suite.d;
    await d.stop();
    const { startDaemon } = await import('./harness.js');
    suite.d = await startDaemon(d.dataDir, { args: ['--data-dir', d.dataDir, '--listen', '127.0.0.1:0'], replaceArgs: true });
    s3 = new S3Client({ endpoint: suite.d.s3Url as string, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: key.id, secretAccessKey: key.secret } });
    const again = await s3.send(new GetObjectCommand({ Bucket: 'photos', Key: 'multi.bin' }));
    expect(again.ContentLength).toBe(10 * MiB + 1000);
    expect((await again.Body!.transformToByteArray()).length).toBe(10 * MiB + 1000);
  });

  it('a put cut by SIGKILL leaves nothing visible; the restarted daemon recovers before serving', async () => {
    const piece = randomBytes(MiB);
    const piecesBeforeKill = 24;
    let fed = 0;
    let fedEnough!: () => void;
    const enough = new Promise<void>((resolve) => (fedEnough = resolve));
    // 24 MiB of a declared 64 MiB, then nothing: the daemon is killed mid-body.
    const body = new Readable({
      read() {
        if (fed < piecesBeforeKill) {
          fed++;
          this.push(piece);
          if (fed === piecesBeforeKill) fedEnough();
        }
      },
    });
    const referencedBytes = async (): Promise<number> => (await suite.d.apiJson<PoolDfJson>('GET', '/v1/pools/default/df')).referencedChunkBytes;
    const referencedBefore = await referencedBytes();
    const put = s3.send(new PutObjectCommand({ Bucket: 'photos', Key: 'cut.bin', Body: body, ContentLength: 64 * MiB })).then(() => 'stored', () => 'failed');
    await enough;
    // Killed only once the put's first step has committed (its references, and with them its
    // journal record, counted in the pool): fed bytes alone say nothing of how far the daemon got.
    for (let attempt = 0; (await referencedBytes()) === referencedBefore; attempt++) {
      if (attempt === 600) throw new Error(`the cut put's first step never committed (${referencedBefore} referenced bytes throughout)`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const d = suite.d;
    await d.kill();
    expect(await put).toBe('failed');
    const { startDaemon } = await import('./harness.js');
    suite.d = await startDaemon(d.dataDir, { args: ['--data-dir', d.dataDir, '--listen', '127.0.0.1:0'], replaceArgs: true });
    s3 = new S3Client({ endpoint: suite.d.s3Url as string, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: key.id, secretAccessKey: key.secret } });
    const recoveries = suite.d.logs().split('\n').filter((line) => line.includes('recovered the S3 objects'));
    // The put's journal, begun before its first chunk, was found and abandoned before the listener opened.
    expect(recoveries.at(-1)).toMatch(/putsAbandoned\D{1,4}1\b/);
    expect(await failure(s3.send(new HeadObjectCommand({ Bucket: 'photos', Key: 'cut.bin' })))).toMatchObject({ status: 404 });
    await s3.send(new PutObjectCommand({ Bucket: 'photos', Key: 'cut.bin', Body: piece }));
    expect(Buffer.from(await (await s3.send(new GetObjectCommand({ Bucket: 'photos', Key: 'cut.bin' }))).Body!.transformToByteArray())).toEqual(piece);
  });

  it('curl with a presigned GET URL reads the object', async () => {
    const url = new URL(suite.d.s3Url as string);
    const signed = await sdkSigner(key).presign(
      { method: 'GET', protocol: 'http:', hostname: url.hostname, port: Number(url.port), path: '/photos/docs/hello.txt', query: {}, headers: { host: url.host, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' } },
      { expiresIn: 300, unsignableHeaders: new Set(['x-amz-content-sha256']) },
    );
    const query = Object.entries(signed.query ?? {}).map(([n, v]) => `${encodeURIComponent(n)}=${encodeURIComponent(String(v))}`).join('&');
    const r = run('curl', ['-s', '-f', `${suite.d.s3Url}${signed.path}?${query}`], { timeoutMs: 30_000 });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('hello, strata');
  });

  it('a PUT or part whose body is not its signed x-amz-content-sha256 is refused and leaves nothing', async () => {
    const url = new URL(suite.d.s3Url as string);
    const put = async (path: string, query: Record<string, string>, body: Buffer, signedSha256: string): Promise<{ status: number; text: string }> => {
      const signed = await sdkSigner(key).sign({
        method: 'PUT', protocol: 'http:', hostname: url.hostname, port: Number(url.port), path, query,
        headers: { host: url.host, 'x-amz-content-sha256': signedSha256, 'content-length': String(body.length) },
      });
      const search = new URLSearchParams(query).toString();
      const res = await fetch(`${suite.d.s3Url}${path}${search === '' ? '' : `?${search}`}`, { method: 'PUT', headers: signed.headers, body });
      return { status: res.status, text: await res.text() };
    };
    const sha256Hex = (data: Uint8Array): string => createHash('sha256').update(data).digest('hex');
    // One size hashed on the event loop, one on a hashing worker (over 4 MiB).
    for (const sizeBytes of [MiB, 5 * MiB + 17]) {
      const body = randomBytes(sizeBytes);
      const other = Buffer.from(body);
      other[sizeBytes >> 1]! ^= 1;
      const refused = await put('/photos/signed.bin', {}, body, sha256Hex(other));
      expect(refused.status).toBe(400);
      expect(refused.text).toContain('<Code>XAmzContentSHA256Mismatch</Code>');
      expect(await failure(s3.send(new HeadObjectCommand({ Bucket: 'photos', Key: 'signed.bin' })))).toMatchObject({ status: 404 });
      expect((await put('/photos/signed.bin', {}, body, sha256Hex(body))).status).toBe(200);
      const head = await s3.send(new HeadObjectCommand({ Bucket: 'photos', Key: 'signed.bin' }));
      expect(head.ETag).toBe(`"${md5Hex(body)}"`);
      await s3.send(new DeleteObjectCommand({ Bucket: 'photos', Key: 'signed.bin' }));
    }
    const upload = await s3.send(new CreateMultipartUploadCommand({ Bucket: 'photos', Key: 'signed-parts.bin' }));
    const part = randomBytes(5 * MiB);
    const query = { partNumber: '1', uploadId: upload.UploadId! };
    const refusedPart = await put('/photos/signed-parts.bin', query, part, sha256Hex(Buffer.alloc(1)));
    expect(refusedPart.status).toBe(400);
    expect(refusedPart.text).toContain('<Code>XAmzContentSHA256Mismatch</Code>');
    expect((await s3.send(new ListPartsCommand({ Bucket: 'photos', Key: 'signed-parts.bin', UploadId: upload.UploadId! }))).Parts ?? []).toEqual([]);
    expect((await put('/photos/signed-parts.bin', query, part, sha256Hex(part))).status).toBe(200);
    expect((await s3.send(new ListPartsCommand({ Bucket: 'photos', Key: 'signed-parts.bin', UploadId: upload.UploadId! }))).Parts?.map((p) => p.ETag)).toEqual([`"${md5Hex(part)}"`]);
    await s3.send(new AbortMultipartUploadCommand({ Bucket: 'photos', Key: 'signed-parts.bin', UploadId: upload.UploadId! }));
  });

  it('the aws CLI: s3 cp, ls, sync of a folder, rm', async () => {
    const env = awsEnv();
    const aws = (args: string[]) => {
      const r = run('aws', [...args, '--endpoint-url', suite.d.s3Url as string], { timeoutMs: 60_000, env });
      expect(r.code, r.stderr).toBe(0);
      return r.stdout;
    };
    const folder = path.join(tmp.path, 'sync');
    mkdirSync(path.join(folder, 'inner'), { recursive: true });
    writeFileSync(path.join(folder, 'one.txt'), 'one');
    writeFileSync(path.join(folder, 'inner', 'two.txt'), 'two');
    const single = path.join(tmp.path, 'single.bin');
    writeFileSync(single, randomBytes(200_000));
    aws(['s3', 'cp', single, 's3://photos/cli/single.bin']);
    aws(['s3', 'cp', 's3://photos/cli/single.bin', `${single}.back`]);
    expect(readFileSync(`${single}.back`)).toEqual(readFileSync(single));
    aws(['s3', 'sync', folder, 's3://photos/synced']);
    const listing = aws(['s3', 'ls', 's3://photos/synced/', '--recursive']);
    expect(listing).toContain('synced/one.txt');
    expect(listing).toContain('synced/inner/two.txt');
    expect(aws(['s3', 'ls', 's3://photos/'])).toContain('PRE synced/');
    aws(['s3', 'rm', 's3://photos/synced', '--recursive']);
    aws(['s3', 'rm', 's3://photos/cli/single.bin']);
    // (`aws s3 ls` of nothing exits 1: ask the SDK.)
    expect((await s3.send(new ListObjectsV2Command({ Bucket: 'photos', Prefix: 'synced/' }))).KeyCount).toBe(0);
    expect((await s3.send(new ListObjectsV2Command({ Bucket: 'photos', Prefix: 'cli/' }))).KeyCount).toBe(0);
  });

  it('boto3: put, get, list', () => {
    const r = run(
      'python3',
      [
        '-c',
        [
          'import os, boto3',
          'from botocore.config import Config',
          "s3 = boto3.client('s3', endpoint_url=os.environ['S3_URL'], config=Config(s3={'addressing_style': 'path'}))",
          "s3.put_object(Bucket='photos', Key='boto/x.txt', Body=b'from boto3')",
          "body = s3.get_object(Bucket='photos', Key='boto/x.txt')['Body'].read().decode()",
          "keys = [o['Key'] for o in s3.list_objects_v2(Bucket='photos', Prefix='boto/')['Contents']]",
          'print(body, keys)',
        ].join('\n'),
      ],
      { timeoutMs: 60_000, env: awsEnv() },
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe("from boto3 ['boto/x.txt']");
  });
});
