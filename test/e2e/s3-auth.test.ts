/**
 * The daemon's S3 endpoint (`strata serve`, its own process) with real clients, each in its own
 * process or library: users and keys made with the strata CLI; @aws-sdk/client-s3 with default
 * settings; curl with URLs presigned by the SDK's signer and by botocore (python3 boto3); the aws
 * CLI. That a request gets past authentication is what these tests check (the objects
 * themselves: s3-objects.test.ts), and each refusal must be the S3 error a client expects.
 */
import { HeadBucketCommand, ListBucketsCommand, CreateBucketCommand, DeleteBucketCommand, S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import { run } from '../support/tools.js';
import { sdkSigner } from '../support/sdk-signer.js';
import { assertBuilt, useDaemon } from './harness.js';
import { s3Failure as failure } from '../support/s3-failure.js';

assertBuilt();

interface Key {
  id: string;
  secret: string;
}


/**
 * A presigned GET of /bucket/key from the SDK's signer, set up the way @aws-sdk/s3-request-presigner
 * does (not installed here): the payload is UNSIGNED-PAYLOAD, named by a header that the signer
 * uses for the payload hash and leaves out of the signed headers.
 */
async function presign(s3Url: string, key: Key, options: { expiresIn?: number; signingDate?: Date } = {}): Promise<string> {
  const url = new URL(s3Url);
  const request = await sdkSigner(key).presign(
    { method: 'GET', protocol: 'http:', hostname: url.hostname, port: Number(url.port), path: '/bucket/some%20key.txt', query: {}, headers: { host: url.host, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' } },
    { expiresIn: options.expiresIn ?? 600, unsignableHeaders: new Set(['x-amz-content-sha256']), ...(options.signingDate ? { signingDate: options.signingDate } : {}) },
  );
  const query = Object.entries(request.query ?? {})
    .map(([name, value]) => `${encodeURIComponent(name)}=${encodeURIComponent(String(value))}`)
    .join('&');
  return `${s3Url}${request.path}?${query}`;
}

function curl(url: string): { status: number; body: string } {
  const r = run('curl', ['-s', '-w', '\n%{http_code}', url], { timeoutMs: 30_000 });
  expect(r.code).toBe(0);
  const at = r.stdout.lastIndexOf('\n');
  return { status: Number(r.stdout.slice(at + 1)), body: r.stdout.slice(0, at) };
}

function python(script: string, env: Record<string, string>): { code: number | null; stdout: string; stderr: string } {
  return run('python3', ['-c', script], { timeoutMs: 60_000, env });
}

describe('S3 endpoint of strata serve', () => {
  const suite = useDaemon();
  let alice: Key;

  function client(key: Key, extra: Partial<S3ClientConfig> = {}): S3Client {
    return new S3Client({ endpoint: suite.d.s3Url as string, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: key.id, secretAccessKey: key.secret }, ...extra });
  }

  it('listens on its own address; users and keys come from the CLI, the secret shown once', () => {
    const d = suite.d;
    expect(d.s3Url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(d.s3Url).not.toBe(d.url);
    expect(d.cliOk(['user', 'create', 'alice']).stdout).toBe("User 'alice' created.\n");
    const created = d.json<{ id: string; secret: string; owner: string; status: string }>(['user', 'key', 'create', 'alice']);
    expect(created).toMatchObject({ owner: 'alice', status: 'active' });
    alice = { id: created.id, secret: created.secret };
    const info = d.json<{ name: string; keys: { id: string }[] }>(['user', 'info', 'alice']);
    expect(info.keys.map((k) => k.id)).toEqual([alice.id]);
    expect(JSON.stringify(info)).not.toContain(alice.secret);
    expect(d.cliOk(['user', 'key', 'list', 'alice']).stdout).toContain(alice.id);
    expect(d.json<{ name: string }[]>(['user', 'list']).map((u) => u.name)).toEqual(['alice']);
    d.cliFails(['user', 'create', 'alice'], 4, /already exists/);
    d.cliFails(['user', 'key', 'create', 'nobody'], 3, /does not exist/);
  });

  it('@aws-sdk/client-s3: the right key passes authentication', async () => {
    expect((await client(alice).send(new ListBucketsCommand({}))).Buckets ?? []).toEqual([]);
    await client(alice).send(new CreateBucketCommand({ Bucket: 'photos' }));
    expect((await client(alice).send(new HeadBucketCommand({ Bucket: 'photos' })))).toBeDefined();
  });

  it('@aws-sdk/client-s3: wrong secret, unknown key, skewed clock', async () => {
    expect(await failure(client({ id: alice.id, secret: `${alice.secret}x` }).send(new ListBucketsCommand({})))).toEqual({ name: 'SignatureDoesNotMatch', status: 403 });
    expect(await failure(client({ id: 'STRAUNKNOWNKEY000000', secret: alice.secret }).send(new ListBucketsCommand({})))).toEqual({ name: 'InvalidAccessKeyId', status: 403 });
    expect(await failure(client(alice, { systemClockOffset: 20 * 60_000, maxAttempts: 1 }).send(new ListBucketsCommand({})))).toEqual({ name: 'RequestTimeTooSkewed', status: 403 });
    expect((await failure(client({ id: alice.id, secret: 'wrong' }).send(new HeadBucketCommand({ Bucket: 'photos' })))).status).toBe(403);
    expect((await failure(client({ id: alice.id, secret: 'wrong' }).send(new CreateBucketCommand({ Bucket: 'photos' })))).name).toBe('SignatureDoesNotMatch');
  });

  it('curl with a URL presigned by the SDK signer: accepted, tampered, expired', async () => {
    const s3Url = suite.d.s3Url as string;
    const good = curl(await presign(s3Url, alice));
    expect(good.status).toBe(404);
    expect(good.body).toContain('<Code>NoSuchBucket</Code>');
    const tampered = curl((await presign(s3Url, alice)).replace('some%20key', 'other%20key'));
    expect(tampered.status).toBe(403);
    expect(tampered.body).toContain('<Code>SignatureDoesNotMatch</Code>');
    const expired = curl(await presign(s3Url, alice, { expiresIn: 60, signingDate: new Date(Date.now() - 3600_000) }));
    expect(expired.status).toBe(403);
    expect(expired.body).toMatch(/<Code>AccessDenied<\/Code><Message>request has expired/);
  });

  it('botocore (python3 boto3) presigns and signs; the aws CLI signs', () => {
    const s3Url = suite.d.s3Url as string;
    const env = { AWS_ACCESS_KEY_ID: alice.id, AWS_SECRET_ACCESS_KEY: alice.secret, AWS_DEFAULT_REGION: 'us-east-1', S3_URL: s3Url, AWS_CONFIG_FILE: '/dev/null', AWS_SHARED_CREDENTIALS_FILE: '/dev/null' };
    const presigned = python(
      [
        'import os, boto3',
        "from botocore.config import Config",
        "s3 = boto3.client('s3', endpoint_url=os.environ['S3_URL'], config=Config(signature_version='s3v4', s3={'addressing_style': 'path'}))",
        "print(s3.generate_presigned_url('get_object', Params={'Bucket': 'bucket', 'Key': 'a key/with+plus.txt'}, ExpiresIn=300))",
      ].join('\n'),
      env,
    );
    expect(presigned.code, presigned.stderr).toBe(0);
    const url = presigned.stdout.trim();
    expect(url).toContain('X-Amz-Signature=');
    expect(curl(url)).toMatchObject({ status: 404 });
    const signed = python(
      [
        'import os, boto3, botocore',
        "from botocore.config import Config",
        "def code(secret):",
        "    s3 = boto3.client('s3', endpoint_url=os.environ['S3_URL'], aws_access_key_id=os.environ['AWS_ACCESS_KEY_ID'], aws_secret_access_key=secret, config=Config(s3={'addressing_style': 'path'}, retries={'max_attempts': 1}))",
        "    try:",
        "        s3.list_buckets()",
        "        return 'OK'",
        "    except botocore.exceptions.ClientError as e:",
        "        return e.response['Error']['Code']",
        "print(code(os.environ['AWS_SECRET_ACCESS_KEY']), code('wrong'))",
      ].join('\n'),
      env,
    );
    expect(signed.code, signed.stderr).toBe(0);
    expect(signed.stdout.trim()).toBe('OK SignatureDoesNotMatch');
    const cli = run('aws', ['s3api', 'list-buckets', '--endpoint-url', s3Url], { timeoutMs: 60_000, env });
    expect(cli.code, cli.stderr).toBe(0);
    expect(cli.stdout).toContain('photos');
  });

  it('a deleted key is refused; a kept one survives a restart (its secret decrypts again)', async () => {
    const d = suite.d;
    const second = d.json<{ id: string; secret: string }>(['user', 'key', 'create', 'alice']);
    d.cliOk(['user', 'key', 'delete', 'alice', second.id]);
    expect(await failure(client({ id: second.id, secret: second.secret }).send(new ListBucketsCommand({})))).toEqual({ name: 'InvalidAccessKeyId', status: 403 });
    await d.stop();
    const { startDaemon } = await import('./harness.js');
    suite.d = await startDaemon(d.dataDir, { args: ['--data-dir', d.dataDir, '--listen', '127.0.0.1:0'], replaceArgs: true });
    expect((await client(alice).send(new ListBucketsCommand({}))).Buckets?.map((b) => b.Name)).toEqual(['photos']);
    // A user who owns a bucket stays (s3-owners.test.ts); without it, the user and its keys go.
    suite.d.cliFails(['user', 'delete', 'alice'], 4, /still owns buckets \('photos'\)/);
    await client(alice).send(new DeleteBucketCommand({ Bucket: 'photos' }));
    suite.d.cliOk(['user', 'delete', 'alice']);
    expect(await failure(client(alice).send(new ListBucketsCommand({})))).toEqual({ name: 'InvalidAccessKeyId', status: 403 });
  });

  it('--s3-listen off: no S3 listener, users still managed over REST', async () => {
    const d = suite.d;
    await d.stop();
    const { startDaemon } = await import('./harness.js');
    suite.d = await startDaemon(d.dataDir, { args: ['--data-dir', d.dataDir, '--listen', '127.0.0.1:0', '--s3-listen', 'off'], replaceArgs: true });
    expect(suite.d.s3Url).toBeUndefined();
    expect(suite.d.cliOk(['user', 'create', 'carol']).stdout).toBe("User 'carol' created.\n");
  });
});
