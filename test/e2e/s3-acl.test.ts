/**
 * Canned ACLs and anonymous reads through `strata serve` (its own process), with real clients:
 * @aws-sdk/client-s3 signed and unsigned (a signer that signs nothing), curl without any
 * signature, and the aws CLI with and without `--no-sign-request`. A bucket is private unless made
 * public-read (x-amz-acl on CreateBucket or PutBucketAcl); anonymous requests then read its
 * objects and list its keys, and are refused every write.
 */
import {
  CreateBucketCommand,
  DeleteObjectCommand,
  GetBucketAclCommand,
  GetObjectAclCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListBucketsCommand,
  ListObjectsCommand,
  ListObjectsV2Command,
  PutBucketAclCommand,
  PutObjectAclCommand,
  PutObjectCommand,
  S3Client,
  CreateMultipartUploadCommand,
  ListObjectVersionsCommand,
} from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import { run } from '../support/tools.js';
import { s3Failure as failure } from '../support/s3-failure.js';
import { assertBuilt, useDaemon } from './harness.js';

assertBuilt();

const ALL_USERS = 'http://acs.amazonaws.com/groups/global/AllUsers';

function curl(args: string[]): { status: number; body: string } {
  const r = run('curl', ['-s', '-w', '\n%{http_code}', ...args], { timeoutMs: 30_000 });
  expect(r.code, r.stderr).toBe(0);
  const at = r.stdout.lastIndexOf('\n');
  return { status: Number(r.stdout.slice(at + 1)), body: r.stdout.slice(0, at) };
}

describe('canned ACLs and anonymous reads through strata serve', () => {
  const suite = useDaemon();
  let key: { id: string; secret: string };
  let s3: S3Client;
  let anonymous: S3Client;

  function awsEnv(): Record<string, string> {
    return { AWS_ACCESS_KEY_ID: key.id, AWS_SECRET_ACCESS_KEY: key.secret, AWS_DEFAULT_REGION: 'us-east-1', AWS_CONFIG_FILE: '/dev/null', AWS_SHARED_CREDENTIALS_FILE: '/dev/null' };
  }
  function aws(args: string[], env: Record<string, string> = awsEnv()): { code: number | null; stdout: string; stderr: string } {
    return run('aws', [...args, '--endpoint-url', suite.d.s3Url as string], { timeoutMs: 60_000, env });
  }

  it('a private bucket and a public-read one (x-amz-acl on CreateBucket); GetBucketAcl shows their grants', async () => {
    suite.d.cliOk(['user', 'create', 'alice']);
    key = suite.d.json<{ id: string; secret: string }>(['user', 'key', 'create', 'alice']);
    const endpoint = suite.d.s3Url as string;
    s3 = new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: key.id, secretAccessKey: key.secret } });
    // Unsigned, as a browser or `curl` would ask: the signer leaves the request as it is.
    anonymous = new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: '', secretAccessKey: '' }, signer: { sign: async (request) => request } });

    await s3.send(new CreateBucketCommand({ Bucket: 'closed' }));
    await s3.send(new CreateBucketCommand({ Bucket: 'open', ACL: 'public-read' }));
    for (const bucket of ['closed', 'open']) {
      await s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'docs/read me.txt', Body: `in ${bucket}`, ContentType: 'text/plain' }));
    }
    const closedAcl = await s3.send(new GetBucketAclCommand({ Bucket: 'closed' }));
    expect(closedAcl.Owner).toMatchObject({ ID: 'alice' });
    expect(closedAcl.Grants).toEqual([{ Grantee: { Type: 'CanonicalUser', ID: 'alice', DisplayName: 'alice' }, Permission: 'FULL_CONTROL' }]);
    const openAcl = await s3.send(new GetBucketAclCommand({ Bucket: 'open' }));
    expect(openAcl.Grants).toEqual([
      { Grantee: { Type: 'CanonicalUser', ID: 'alice', DisplayName: 'alice' }, Permission: 'FULL_CONTROL' },
      { Grantee: { Type: 'Group', URI: ALL_USERS }, Permission: 'READ' },
    ]);
  });

  it('@aws-sdk/client-s3 unsigned: reads and lists a public-read bucket; refused on a private one and on every write', async () => {
    const got = await anonymous.send(new GetObjectCommand({ Bucket: 'open', Key: 'docs/read me.txt' }));
    expect(await got.Body!.transformToString()).toBe('in open');
    expect((await anonymous.send(new HeadObjectCommand({ Bucket: 'open', Key: 'docs/read me.txt' }))).ContentType).toBe('text/plain');
    expect((await anonymous.send(new ListObjectsV2Command({ Bucket: 'open' }))).Contents?.map((c) => c.Key)).toEqual(['docs/read me.txt']);
    expect((await anonymous.send(new ListObjectsCommand({ Bucket: 'open', Delimiter: '/' }))).CommonPrefixes?.map((p) => p.Prefix)).toEqual(['docs/']);
    expect(await failure(anonymous.send(new GetObjectCommand({ Bucket: 'open', Key: 'missing' })))).toEqual({ name: 'NoSuchKey', status: 404 });

    expect(await failure(anonymous.send(new GetObjectCommand({ Bucket: 'closed', Key: 'docs/read me.txt' })))).toEqual({ name: 'AccessDenied', status: 403 });
    expect(await failure(anonymous.send(new ListObjectsV2Command({ Bucket: 'closed' })))).toEqual({ name: 'AccessDenied', status: 403 });
    // A missing bucket looks like a private one: anonymous requests learn nothing of names.
    expect(await failure(anonymous.send(new GetObjectCommand({ Bucket: 'nobody', Key: 'k' })))).toEqual({ name: 'AccessDenied', status: 403 });
    expect(await failure(anonymous.send(new ListBucketsCommand({})))).toEqual({ name: 'AccessDenied', status: 403 });
    for (const write of [
      () => anonymous.send(new PutObjectCommand({ Bucket: 'open', Key: 'new.txt', Body: 'no' })),
      () => anonymous.send(new DeleteObjectCommand({ Bucket: 'open', Key: 'docs/read me.txt' })),
      () => anonymous.send(new CreateMultipartUploadCommand({ Bucket: 'open', Key: 'multi' })),
      () => anonymous.send(new PutBucketAclCommand({ Bucket: 'open', ACL: 'private' })),
      () => anonymous.send(new GetBucketAclCommand({ Bucket: 'open' })),
      () => anonymous.send(new ListObjectVersionsCommand({ Bucket: 'open' })),
      () => anonymous.send(new CreateBucketCommand({ Bucket: 'anon-bucket' })),
    ]) {
      expect(await failure(write())).toEqual({ name: 'AccessDenied', status: 403 });
    }
    // Nothing changed.
    expect((await s3.send(new ListObjectsV2Command({ Bucket: 'open' }))).Contents?.map((c) => c.Key)).toEqual(['docs/read me.txt']);
    expect((await s3.send(new GetBucketAclCommand({ Bucket: 'open' }))).Grants).toHaveLength(2);
  });

  it('curl without a signature: GET, HEAD and list on public-read; 403 AccessDenied elsewhere and for writes', () => {
    const base = suite.d.s3Url as string;
    expect(curl([`${base}/open/docs/read%20me.txt`])).toEqual({ status: 200, body: 'in open' });
    expect(curl(['-I', `${base}/open/docs/read%20me.txt`]).body).toMatch(/content-length: 7/i);
    const listing = curl([`${base}/open?list-type=2&prefix=docs/`]);
    expect(listing.status).toBe(200);
    expect(listing.body).toContain('<Key>docs/read me.txt</Key>');
    const denied = curl([`${base}/closed/docs/read%20me.txt`]);
    expect(denied.status).toBe(403);
    expect(denied.body).toMatch(/<Code>AccessDenied<\/Code><Message>anonymous requests may not read the bucket (&apos;|')closed/);
    const put = curl(['-X', 'PUT', '--data-binary', 'sneaky', `${base}/open/sneaky.txt`]);
    expect(put.status).toBe(403);
    expect(put.body).toMatch(/<Code>AccessDenied<\/Code><Message>anonymous requests may only read objects and list keys of a public-read bucket, not PutObject/);
    expect(curl(['-X', 'DELETE', `${base}/open/docs/read%20me.txt`]).status).toBe(403);
    expect(curl(['-X', 'PUT', '-H', 'x-amz-acl: private', `${base}/open?acl`]).status).toBe(403);
    expect(curl([`${base}/open/docs/read%20me.txt?versionId=null`]).status).toBe(403);
  });

  it('the aws CLI: put-bucket-acl, get-bucket-acl; --no-sign-request reads public-read and is refused elsewhere', () => {
    expect(aws(['s3api', 'create-bucket', '--bucket', 'cli-made', '--acl', 'public-read']).code).toBe(0);
    const acl = aws(['s3api', 'get-bucket-acl', '--bucket', 'cli-made']);
    expect(acl.code, acl.stderr).toBe(0);
    expect(JSON.parse(acl.stdout).Grants).toContainEqual({ Grantee: { Type: 'Group', URI: ALL_USERS }, Permission: 'READ' });
    expect(aws(['s3api', 'put-bucket-acl', '--bucket', 'cli-made', '--acl', 'private']).code).toBe(0);
    expect(JSON.parse(aws(['s3api', 'get-bucket-acl', '--bucket', 'cli-made']).stdout).Grants).toHaveLength(1);

    const unsignedEnv = { AWS_DEFAULT_REGION: 'us-east-1', AWS_CONFIG_FILE: '/dev/null', AWS_SHARED_CREDENTIALS_FILE: '/dev/null' };
    const listed = aws(['s3', 'ls', 's3://open/docs/', '--no-sign-request'], unsignedEnv);
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout).toContain('read me.txt');
    const read = aws(['s3', 'cp', 's3://open/docs/read me.txt', '-', '--no-sign-request'], unsignedEnv);
    expect(read.code, read.stderr).toBe(0);
    expect(read.stdout).toBe('in open');
    const refused = aws(['s3', 'cp', 's3://closed/docs/read me.txt', '-', '--no-sign-request'], unsignedEnv);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/403|Forbidden|AccessDenied/);
    const write = aws(['s3api', 'put-object', '--bucket', 'open', '--key', 'cli.txt', '--no-sign-request'], unsignedEnv);
    expect(write.code).not.toBe(0);
    expect(write.stderr).toContain('AccessDenied');
  });

  it('PutBucketAcl: public-read and back to private by header or by the equivalent grants; other ACLs refused by name', async () => {
    await s3.send(new PutBucketAclCommand({ Bucket: 'closed', ACL: 'public-read' }));
    expect(await (await anonymous.send(new GetObjectCommand({ Bucket: 'closed', Key: 'docs/read me.txt' }))).Body!.transformToString()).toBe('in closed');
    const owner = { ID: 'alice', DisplayName: 'alice' };
    await s3.send(new PutBucketAclCommand({ Bucket: 'closed', AccessControlPolicy: { Owner: owner, Grants: [{ Grantee: { Type: 'CanonicalUser', ID: 'alice' }, Permission: 'FULL_CONTROL' }] } }));
    expect(await failure(anonymous.send(new GetObjectCommand({ Bucket: 'closed', Key: 'docs/read me.txt' })))).toEqual({ name: 'AccessDenied', status: 403 });
    await s3.send(new PutBucketAclCommand({ Bucket: 'closed', AccessControlPolicy: { Owner: owner, Grants: [{ Grantee: { Type: 'CanonicalUser', ID: 'alice' }, Permission: 'FULL_CONTROL' }, { Grantee: { Type: 'Group', URI: ALL_USERS }, Permission: 'READ' }] } }));
    expect((await s3.send(new GetBucketAclCommand({ Bucket: 'closed' }))).Grants).toHaveLength(2);
    await s3.send(new PutBucketAclCommand({ Bucket: 'closed', ACL: 'private' }));

    expect(await failure(s3.send(new PutBucketAclCommand({ Bucket: 'closed', ACL: 'public-read-write' })))).toEqual({ name: 'NotImplemented', status: 501 });
    expect(await failure(s3.send(new PutBucketAclCommand({ Bucket: 'closed', GrantRead: 'id=bob' })))).toEqual({ name: 'NotImplemented', status: 501 });
    expect(await failure(s3.send(new PutBucketAclCommand({ Bucket: 'closed', AccessControlPolicy: { Owner: owner, Grants: [{ Grantee: { Type: 'CanonicalUser', ID: 'bob' }, Permission: 'WRITE' }] } })))).toEqual({ name: 'NotImplemented', status: 501 });
    expect(await failure(s3.send(new CreateBucketCommand({ Bucket: 'rw-bucket', ACL: 'public-read-write' })))).toEqual({ name: 'NotImplemented', status: 501 });
    expect(await failure(s3.send(new PutBucketAclCommand({ Bucket: 'nobucket', ACL: 'private' })))).toEqual({ name: 'NoSuchBucket', status: 404 });

    // Another user may not read or change alice's ACLs.
    suite.d.cliOk(['user', 'create', 'bob']);
    const bobKey = suite.d.json<{ id: string; secret: string }>(['user', 'key', 'create', 'bob']);
    const bob = new S3Client({ endpoint: suite.d.s3Url as string, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: bobKey.id, secretAccessKey: bobKey.secret } });
    expect(await failure(bob.send(new PutBucketAclCommand({ Bucket: 'closed', ACL: 'public-read' })))).toEqual({ name: 'AccessDenied', status: 403 });
    expect(await failure(bob.send(new GetBucketAclCommand({ Bucket: 'closed' })))).toEqual({ name: 'AccessDenied', status: 403 });
  });

  it("object ACLs: GetObjectAcl is the owner's FULL_CONTROL; PutObjectAcl takes private, refuses public-read by name", async () => {
    const acl = await s3.send(new GetObjectAclCommand({ Bucket: 'open', Key: 'docs/read me.txt' }));
    expect(acl.Owner?.ID).toBe('alice');
    expect(acl.Grants).toEqual([{ Grantee: { Type: 'CanonicalUser', ID: 'alice', DisplayName: 'alice' }, Permission: 'FULL_CONTROL' }]);
    await s3.send(new PutObjectAclCommand({ Bucket: 'open', Key: 'docs/read me.txt', ACL: 'private' }));
    expect(await failure(s3.send(new PutObjectAclCommand({ Bucket: 'open', Key: 'docs/read me.txt', ACL: 'public-read' })))).toEqual({ name: 'NotImplemented', status: 501 });
    expect(await failure(s3.send(new GetObjectAclCommand({ Bucket: 'open', Key: 'missing' })))).toEqual({ name: 'NoSuchKey', status: 404 });
    const cli = aws(['s3api', 'get-object-acl', '--bucket', 'open', '--key', 'docs/read me.txt']);
    expect(cli.code, cli.stderr).toBe(0);
    expect(JSON.parse(cli.stdout).Grants[0].Permission).toBe('FULL_CONTROL');
  });

  it('the ACL survives a restart', async () => {
    const d = suite.d;
    await d.stop();
    const { startDaemon } = await import('./harness.js');
    suite.d = await startDaemon(d.dataDir, { args: ['--data-dir', d.dataDir, '--listen', '127.0.0.1:0'], replaceArgs: true });
    expect(curl([`${suite.d.s3Url}/open/docs/read%20me.txt`])).toEqual({ status: 200, body: 'in open' });
    expect(curl([`${suite.d.s3Url}/closed/docs/read%20me.txt`]).status).toBe(403);
  });
});
