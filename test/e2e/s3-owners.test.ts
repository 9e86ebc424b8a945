/**
 * Users and their buckets through `strata serve` (its own process), with real clients: a bucket
 * belongs to the user who created it; another user's signed requests (@aws-sdk/client-s3, the aws
 * CLI, a URL the aws CLI presigned, fetched with curl) may only read a public-read bucket's current
 * objects and list its keys, and copy from it; everything else is AccessDenied, and the owner's
 * buckets and objects stay as they were.
 */
import {
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteBucketCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListBucketsCommand,
  ListMultipartUploadsCommand,
  ListObjectVersionsCommand,
  ListObjectsV2Command,
  PutBucketVersioningCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCopyCommand,
} from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import { run } from '../support/tools.js';
import { s3Failure as failure } from '../support/s3-failure.js';
import { assertBuilt, useDaemon } from './harness.js';

assertBuilt();

interface Key {
  id: string;
  secret: string;
}

const DENIED = { name: 'AccessDenied', status: 403 };

describe("another user's buckets through strata serve", () => {
  const suite = useDaemon();
  const keys: Record<string, Key> = {};
  const clients: Record<string, S3Client> = {};
  let firstVersionId: string;

  function awsEnv(user: string): Record<string, string> {
    const key = keys[user]!;
    return { AWS_ACCESS_KEY_ID: key.id, AWS_SECRET_ACCESS_KEY: key.secret, AWS_DEFAULT_REGION: 'us-east-1', AWS_CONFIG_FILE: '/dev/null', AWS_SHARED_CREDENTIALS_FILE: '/dev/null' };
  }
  function aws(user: string, args: string[]): { code: number | null; stdout: string; stderr: string } {
    return run('aws', [...args, '--endpoint-url', suite.d.s3Url as string], { timeoutMs: 60_000, env: awsEnv(user) });
  }
  async function body(user: string, bucket: string, key: string): Promise<string> {
    const got = await clients[user]!.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    return got.Body!.transformToString();
  }

  it('alice keeps a private bucket and a public-read one; bob has his own', async () => {
    for (const user of ['alice', 'bob']) {
      suite.d.cliOk(['user', 'create', user]);
      keys[user] = suite.d.json<Key>(['user', 'key', 'create', user]);
      clients[user] = new S3Client({ endpoint: suite.d.s3Url as string, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: keys[user].id, secretAccessKey: keys[user].secret } });
    }
    const alice = clients.alice!;
    await alice.send(new CreateBucketCommand({ Bucket: 'alice-private' }));
    await alice.send(new CreateBucketCommand({ Bucket: 'alice-public', ACL: 'public-read' }));
    await alice.send(new CreateBucketCommand({ Bucket: 'alice-empty' }));
    await alice.send(new PutBucketVersioningCommand({ Bucket: 'alice-public', VersioningConfiguration: { Status: 'Enabled' } }));
    await alice.send(new PutObjectCommand({ Bucket: 'alice-private', Key: 'secret.txt', Body: 'private words' }));
    firstVersionId = (await alice.send(new PutObjectCommand({ Bucket: 'alice-public', Key: 'notes.txt', Body: 'first draft' }))).VersionId!;
    await alice.send(new PutObjectCommand({ Bucket: 'alice-public', Key: 'notes.txt', Body: 'public words' }));
    await clients.bob!.send(new CreateBucketCommand({ Bucket: 'bob-bucket' }));
  });

  it("bob is refused every request on alice's private bucket, with a message naming the rule", async () => {
    const bob = clients.bob!;
    const attempts: (() => Promise<unknown>)[] = [
      () => bob.send(new ListObjectsV2Command({ Bucket: 'alice-private' })),
      () => bob.send(new ListObjectVersionsCommand({ Bucket: 'alice-private' })),
      () => bob.send(new ListMultipartUploadsCommand({ Bucket: 'alice-private' })),
      () => bob.send(new GetObjectCommand({ Bucket: 'alice-private', Key: 'secret.txt' })),
      () => bob.send(new PutObjectCommand({ Bucket: 'alice-private', Key: 'planted.txt', Body: 'x' })),
      () => bob.send(new DeleteObjectCommand({ Bucket: 'alice-private', Key: 'secret.txt' })),
      () => bob.send(new DeleteObjectsCommand({ Bucket: 'alice-private', Delete: { Objects: [{ Key: 'secret.txt' }] } })),
      () => bob.send(new CreateMultipartUploadCommand({ Bucket: 'alice-private', Key: 'big' })),
      () => bob.send(new PutBucketVersioningCommand({ Bucket: 'alice-private', VersioningConfiguration: { Status: 'Enabled' } })),
      () => bob.send(new DeleteBucketCommand({ Bucket: 'alice-empty' })),
    ];
    for (const attempt of attempts) expect(await failure(attempt())).toEqual(DENIED);
    // HEAD answers have no body to name the error: the status says it (the CLI shows a GET's message).
    expect((await failure(bob.send(new HeadBucketCommand({ Bucket: 'alice-private' })))).status).toBe(403);
    expect((await failure(bob.send(new HeadObjectCommand({ Bucket: 'alice-private', Key: 'secret.txt' })))).status).toBe(403);
    const cli = aws('bob', ['s3api', 'get-object', '--bucket', 'alice-private', '--key', 'secret.txt', '/dev/null']);
    expect(cli.code).not.toBe(0);
    expect(cli.stderr).toMatch(/AccessDenied.*the bucket 'alice-private' belongs to another user \(it is private to its owner/);
    const ls = aws('bob', ['s3', 'ls', 's3://alice-private']);
    expect(ls.code).not.toBe(0);
    expect(ls.stderr).toMatch(/AccessDenied/);
    const rb = aws('bob', ['s3', 'rb', 's3://alice-empty']);
    expect(rb.code).not.toBe(0);

    // A URL bob presigned (botocore, Signature Version 4) is bob's request too.
    const presigned = run(
      'python3',
      [
        '-c',
        [
          'import boto3, os',
          'from botocore.config import Config',
          "s3 = boto3.client('s3', endpoint_url=os.environ['S3_URL'], config=Config(signature_version='s3v4', s3={'addressing_style': 'path'}))",
          "print(s3.generate_presigned_url('get_object', Params={'Bucket': 'alice-private', 'Key': 'secret.txt'}, ExpiresIn=600))",
        ].join('\n'),
      ],
      { timeoutMs: 60_000, env: { ...awsEnv('bob'), S3_URL: suite.d.s3Url as string } },
    );
    expect(presigned.code, presigned.stderr).toBe(0);
    const r = run('curl', ['-s', '-w', '\n%{http_code}', presigned.stdout.trim()], { timeoutMs: 30_000 });
    expect(r.stdout).toMatch(/<Code>AccessDenied<\/Code>[\s\S]*\n403$/);

    // A bucket that does not exist is NoSuchBucket for a signed request, as for its would-be owner.
    expect(await failure(bob.send(new ListObjectsV2Command({ Bucket: 'nobody-has-this' })))).toEqual({ name: 'NoSuchBucket', status: 404 });
  });

  it("bob reads alice's public-read bucket (current versions) and is refused its writes", async () => {
    const bob = clients.bob!;
    expect(await body('bob', 'alice-public', 'notes.txt')).toBe('public words');
    await bob.send(new HeadBucketCommand({ Bucket: 'alice-public' }));
    expect((await bob.send(new ListObjectsV2Command({ Bucket: 'alice-public' }))).Contents?.map((c) => c.Key)).toEqual(['notes.txt']);
    expect(await failure(bob.send(new GetObjectCommand({ Bucket: 'alice-public', Key: 'notes.txt', VersionId: firstVersionId })))).toEqual(DENIED);
    expect(await failure(bob.send(new ListObjectVersionsCommand({ Bucket: 'alice-public' })))).toEqual(DENIED);
    expect(await failure(bob.send(new PutObjectCommand({ Bucket: 'alice-public', Key: 'notes.txt', Body: 'defaced' })))).toEqual(DENIED);
    expect(await failure(bob.send(new DeleteObjectCommand({ Bucket: 'alice-public', Key: 'notes.txt' })))).toEqual(DENIED);
    expect(await failure(bob.send(new PutBucketVersioningCommand({ Bucket: 'alice-public', VersioningConfiguration: { Status: 'Suspended' } })))).toEqual(DENIED);
    const cli = aws('bob', ['s3', 'cp', '/etc/hostname', 's3://alice-public/planted']);
    expect(cli.code).not.toBe(0);
    expect(cli.stderr).toMatch(/it is public-read: other users may only read its current objects and list its keys/);
  });

  it("copies: bob may copy from a public-read bucket into his own, not from a private one, nor into alice's", async () => {
    const bob = clients.bob!;
    await bob.send(new CopyObjectCommand({ Bucket: 'bob-bucket', Key: 'copied.txt', CopySource: 'alice-public/notes.txt' }));
    expect(await body('bob', 'bob-bucket', 'copied.txt')).toBe('public words');
    expect(await failure(bob.send(new CopyObjectCommand({ Bucket: 'bob-bucket', Key: 'stolen.txt', CopySource: 'alice-private/secret.txt' })))).toEqual(DENIED);
    expect(await failure(bob.send(new CopyObjectCommand({ Bucket: 'bob-bucket', Key: 'old.txt', CopySource: `alice-public/notes.txt?versionId=${firstVersionId}` })))).toEqual(DENIED);
    expect(await failure(bob.send(new CopyObjectCommand({ Bucket: 'alice-private', Key: 'planted.txt', CopySource: 'bob-bucket/copied.txt' })))).toEqual(DENIED);

    const upload = await bob.send(new CreateMultipartUploadCommand({ Bucket: 'bob-bucket', Key: 'parts' }));
    expect(await failure(bob.send(new UploadPartCopyCommand({ Bucket: 'bob-bucket', Key: 'parts', UploadId: upload.UploadId, PartNumber: 1, CopySource: 'alice-private/secret.txt' })))).toEqual(DENIED);
    const part = await bob.send(new UploadPartCopyCommand({ Bucket: 'bob-bucket', Key: 'parts', UploadId: upload.UploadId, PartNumber: 1, CopySource: 'alice-public/notes.txt' }));
    await bob.send(new CompleteMultipartUploadCommand({ Bucket: 'bob-bucket', Key: 'parts', UploadId: upload.UploadId, MultipartUpload: { Parts: [{ PartNumber: 1, ETag: part.CopyPartResult!.ETag }] } }));
    expect(await body('bob', 'bob-bucket', 'parts')).toBe('public words');
  });

  it('a user who owns buckets is not deleted, so a new user of the same name inherits nothing', async () => {
    suite.d.cliOk(['user', 'create', 'carol']);
    keys.carol = suite.d.json<Key>(['user', 'key', 'create', 'carol']);
    const carol = new S3Client({ endpoint: suite.d.s3Url as string, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: keys.carol.id, secretAccessKey: keys.carol.secret } });
    await carol.send(new CreateBucketCommand({ Bucket: 'carol-files' }));
    await carol.send(new PutObjectCommand({ Bucket: 'carol-files', Key: 'secret.txt', Body: 'carol only' }));
    suite.d.cliFails(['user', 'delete', 'carol'], 4, /the user 'carol' still owns buckets \('carol-files'\); a user made later under the same name would own them \[BUSY\] \(.*'strata bucket delete carol-files --purge'\)/);
    expect(await body('alice', 'alice-private', 'secret.txt')).toBe('private words'); // nothing else moved
    expect(await failure(carol.send(new DeleteBucketCommand({ Bucket: 'carol-files' })))).toMatchObject({ name: 'BucketNotEmpty', status: 409 });
    await carol.send(new DeleteObjectCommand({ Bucket: 'carol-files', Key: 'secret.txt' }));
    await carol.send(new DeleteBucketCommand({ Bucket: 'carol-files' }));
    suite.d.cliOk(['user', 'delete', 'carol']);
    suite.d.cliOk(['user', 'create', 'carol']);
    const again = suite.d.json<Key>(['user', 'key', 'create', 'carol']);
    const newCarol = new S3Client({ endpoint: suite.d.s3Url as string, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: again.id, secretAccessKey: again.secret } });
    expect((await newCarol.send(new ListBucketsCommand({}))).Buckets ?? []).toEqual([]);
    expect(await failure(newCarol.send(new GetObjectCommand({ Bucket: 'carol-files', Key: 'secret.txt' })))).toMatchObject({ name: 'NoSuchBucket', status: 404 });
  });

  it("alice's buckets and objects are as she left them; her own requests all pass", async () => {
    const alice = clients.alice!;
    expect(await body('alice', 'alice-private', 'secret.txt')).toBe('private words');
    expect((await alice.send(new ListObjectsV2Command({ Bucket: 'alice-private' }))).Contents?.map((c) => c.Key)).toEqual(['secret.txt']);
    expect((await alice.send(new ListObjectVersionsCommand({ Bucket: 'alice-public' }))).Versions).toHaveLength(2);
    await alice.send(new HeadBucketCommand({ Bucket: 'alice-empty' }));
    const versioning = aws('alice', ['s3api', 'get-bucket-versioning', '--bucket', 'alice-private']);
    expect(versioning.code, versioning.stderr).toBe(0);
    expect(versioning.stdout.trim()).toBe(''); // never enabled: bob's attempt did nothing
    await alice.send(new DeleteBucketCommand({ Bucket: 'alice-empty' }));
  });
});
