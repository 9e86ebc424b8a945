/**
 * The S3 plugin in this process, driven by real clients over HTTP: @aws-sdk/client-s3 with its
 * default settings (signing, checksums, virtual-host addressing through a resolver), and raw
 * requests signed by the SDK's own signer (@smithy/signature-v4) where the SDK would not send what
 * a test needs (malformed XML, unsigned requests). Users and keys are the real UserStore over a
 * memory catalog. The object model is not built yet (another branch): the bucket operations run
 * against a stand-in ObjectService (test/support/s3-bucket-stand-in.ts, a map of buckets that runs
 * the ObjectService conformance suite); everything else must answer NotImplemented after
 * authentication.
 */
import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo, LookupFunction } from 'node:net';
import {
  CreateBucketCommand,
  DeleteBucketCommand,
  GetBucketLocationCommand,
  GetBucketVersioningCommand,
  HeadBucketCommand,
  ListBucketsCommand,
  PutBucketVersioningCommand,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildS3Api } from '../../src/api/s3/index.js';
import { MemoryCatalogStore } from '../../src/meta/memory-catalog.js';
import { SecretBox } from '../../src/objects/users/secret-box.js';
import { UserStore } from '../../src/objects/users/user-store.js';
import { bucketStandIn } from '../support/s3-bucket-stand-in.js';
import { sdkSigner } from '../support/sdk-signer.js';

let app: FastifyInstance;
let endpoint: string;
let port: number;
let alice: { id: string; secret: string };
let bob: { id: string; secret: string };

beforeAll(async () => {
  const users = new UserStore(new MemoryCatalogStore(), SecretBox.withKey(Buffer.alloc(32, 3)));
  await users.createUser('alice');
  await users.createUser('bob');
  alice = await users.createKey('alice');
  bob = await users.createKey('bob');
  app = await buildS3Api({ keys: (id) => users.secretFor(id), objects: bucketStandIn(), domains: ['s3.test'], logger: pino({ level: 'silent' }) });
  await app.listen({ host: '127.0.0.1', port: 0 });
  port = (app.server.address() as AddressInfo).port;
  endpoint = `http://127.0.0.1:${port}`;
});

afterAll(async () => {
  await app?.close();
});

function client(key: { id: string; secret: string }, extra: Partial<S3ClientConfig> = {}): S3Client {
  return new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: key.id, secretAccessKey: key.secret }, ...extra });
}

async function failure(promise: Promise<unknown>): Promise<{ name: string; status: number | undefined; message: string }> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof S3ServiceException) return { name: err.name, status: err.$metadata.httpStatusCode, message: err.message };
    throw err;
  }
  throw new Error('expected the request to fail');
}

/** A request signed by the SDK's signer, sent as it is. */
async function signedRequest(method: string, path: string, options: { body?: string; headers?: Record<string, string>; query?: Record<string, string>; key?: { id: string; secret: string } } = {}): Promise<{ status: number; headers: Headers; text: string }> {
  const key = options.key ?? alice;
  const signer = sdkSigner(key);
  const body = options.body ?? '';
  const signed = await signer.sign({
    method,
    protocol: 'http:',
    hostname: '127.0.0.1',
    port,
    path,
    query: options.query ?? {},
    headers: { host: `127.0.0.1:${port}`, 'x-amz-content-sha256': createHash('sha256').update(body).digest('hex'), ...options.headers },
    body,
  });
  const query = new URLSearchParams(options.query ?? {}).toString();
  const res = await fetch(`${endpoint}${path}${query === '' ? '' : `?${query}`}`, { method, headers: signed.headers, ...(body === '' ? {} : { body }) });
  return { status: res.status, headers: res.headers, text: await res.text() };
}

describe('@aws-sdk/client-s3 with default settings', () => {
  it('creates, lists, heads, locates, versions and deletes buckets', async () => {
    const s3 = client(alice);
    await s3.send(new CreateBucketCommand({ Bucket: 'alpha' }));
    await s3.send(new CreateBucketCommand({ Bucket: 'beta', CreateBucketConfiguration: { LocationConstraint: 'us-east-1' as never } }));
    const listed = await s3.send(new ListBucketsCommand({}));
    expect(listed.Buckets?.map((b) => b.Name)).toEqual(['alpha', 'beta']);
    expect(listed.Owner?.ID).toBe('alice');
    expect((await s3.send(new HeadBucketCommand({ Bucket: 'alpha' }))).BucketRegion).toBe('us-east-1');
    expect((await s3.send(new GetBucketLocationCommand({ Bucket: 'alpha' }))).LocationConstraint).toBeUndefined();
    expect((await s3.send(new GetBucketVersioningCommand({ Bucket: 'alpha' }))).Status).toBeUndefined();
    await s3.send(new PutBucketVersioningCommand({ Bucket: 'alpha', VersioningConfiguration: { Status: 'Enabled' } }));
    expect((await s3.send(new GetBucketVersioningCommand({ Bucket: 'alpha' }))).Status).toBe('Enabled');
    await s3.send(new DeleteBucketCommand({ Bucket: 'beta' }));
    expect((await s3.send(new ListBucketsCommand({}))).Buckets?.map((b) => b.Name)).toEqual(['alpha']);
  });

  it('names the S3 errors: taken names, missing buckets, bad names (HEAD errors have no body)', async () => {
    const s3 = client(alice);
    await s3.send(new CreateBucketCommand({ Bucket: 'gamma' }));
    expect(await failure(s3.send(new CreateBucketCommand({ Bucket: 'gamma' })))).toMatchObject({ name: 'BucketAlreadyOwnedByYou', status: 409 });
    expect(await failure(client(bob).send(new CreateBucketCommand({ Bucket: 'gamma' })))).toMatchObject({ name: 'BucketAlreadyExists', status: 409 });
    expect(await failure(s3.send(new DeleteBucketCommand({ Bucket: 'nope' })))).toMatchObject({ name: 'NoSuchBucket', status: 404 });
    expect(await failure(s3.send(new HeadBucketCommand({ Bucket: 'nope' })))).toMatchObject({ name: 'NotFound', status: 404 });
    expect(await failure(s3.send(new CreateBucketCommand({ Bucket: 'Bad_Name' })))).toMatchObject({ name: 'InvalidBucketName', status: 400 });
  });

  it('refuses a wrong secret, an unknown key and a skewed clock; then the SDK corrects its clock', async () => {
    expect(await failure(client({ id: alice.id, secret: 'wrong' }).send(new ListBucketsCommand({})))).toMatchObject({ name: 'SignatureDoesNotMatch', status: 403 });
    expect(await failure(client({ id: 'STRANOSUCHKEY0000000', secret: 'x' }).send(new ListBucketsCommand({})))).toMatchObject({ name: 'InvalidAccessKeyId', status: 403 });
    expect(await failure(client({ id: alice.id, secret: 'wrong' }).send(new HeadBucketCommand({ Bucket: 'alpha' })))).toMatchObject({ status: 403 });
    const skewed = { systemClockOffset: -30 * 60_000 };
    expect(await failure(client(alice, { ...skewed, maxAttempts: 1 }).send(new ListBucketsCommand({})))).toMatchObject({ name: 'RequestTimeTooSkewed', status: 403 });
    // The SDK reads the server's Date header from the refusal and signs its next request right.
    const correcting = client(alice, skewed);
    await correcting.send(new ListBucketsCommand({})).catch(() => undefined);
    await expect(correcting.send(new ListBucketsCommand({}))).resolves.toBeDefined();
  });

  it('answers NotImplemented, after authentication, for operations not wired yet', async () => {
    expect(await failure(client(alice).send(new PutObjectCommand({ Bucket: 'alpha', Key: 'k', Body: 'hello' })))).toMatchObject({ name: 'NotImplemented', status: 501 });
    expect(await failure(client({ id: alice.id, secret: 'wrong' }).send(new PutObjectCommand({ Bucket: 'alpha', Key: 'k', Body: 'hello' })))).toMatchObject({ name: 'SignatureDoesNotMatch' });
  });

  it('addresses buckets virtual-host style under --s3-domain', async () => {
    const lookup = ((_host: string, options: { all?: boolean }, callback: (err: null, address: string | { address: string; family: number }[], family?: number) => void) => {
      if (options.all) callback(null, [{ address: '127.0.0.1', family: 4 }]);
      else callback(null, '127.0.0.1', 4);
    }) as unknown as LookupFunction;
    const s3 = new S3Client({
      endpoint: `http://s3.test:${port}`,
      region: 'us-east-1',
      credentials: { accessKeyId: alice.id, secretAccessKey: alice.secret },
      requestHandler: new NodeHttpHandler({ httpAgent: new http.Agent({ lookup } as http.AgentOptions) }),
    });
    await s3.send(new CreateBucketCommand({ Bucket: 'hosted' }));
    expect((await s3.send(new HeadBucketCommand({ Bucket: 'hosted' }))).$metadata.httpStatusCode).toBe(200);
    expect((await client(alice).send(new ListBucketsCommand({}))).Buckets?.map((b) => b.Name)).toContain('hosted');
  });
});

describe('S3 error bodies and request bodies', () => {
  it('an unsigned request gets the XML error body with its request id; HEAD gets none', async () => {
    const res = await fetch(`${endpoint}/alpha`);
    expect(res.status).toBe(403);
    const text = await res.text();
    const requestId = res.headers.get('x-amz-request-id');
    expect(requestId).toMatch(/^[0-9A-F]{16}$/);
    expect(res.headers.get('x-amz-id-2')).toBeTruthy();
    expect(text).toMatch(/^<\?xml version="1.0" encoding="UTF-8"\?>\n<Error><Code>AccessDenied<\/Code><Message>[^<]+<\/Message><Resource>\/alpha<\/Resource><RequestId>([0-9A-F]{16})<\/RequestId><\/Error>$/);
    expect(text).toContain(`<RequestId>${requestId}</RequestId>`);
    const head = await fetch(`${endpoint}/alpha`, { method: 'HEAD' });
    expect(head.status).toBe(403);
    expect(await head.text()).toBe('');
  });

  it('a malformed URL, an empty bucket name and a method S3 lacks are S3 errors too', async () => {
    const badEscape = await fetch(`${endpoint}/b/%zz`);
    expect(badEscape.status).toBe(400);
    expect(badEscape.headers.get('x-amz-request-id')).toMatch(/^[0-9A-F]{16}$/);
    expect(await badEscape.text()).toContain('<Code>InvalidArgument</Code>');
    expect(await (await fetch(`${endpoint}//key`)).text()).toContain('<Code>InvalidBucketName</Code>');
    const options = await fetch(`${endpoint}/b/k`, { method: 'OPTIONS' });
    expect(options.status).toBe(405);
    expect(await options.text()).toContain('<Code>MethodNotAllowed</Code>');
  });

  it('malformed XML, a DOCTYPE and a wrong root are MalformedXML', async () => {
    await client(alice).send(new CreateBucketCommand({ Bucket: 'xml' })).catch(() => undefined);
    for (const body of ['<VersioningConfiguration><Status>Enabled</Status>', '<!DOCTYPE x [<!ENTITY a "b">]><VersioningConfiguration/>', '<Other/>', '<VersioningConfiguration><Status>Sometimes</Status></VersioningConfiguration>']) {
      const res = await signedRequest('PUT', '/xml', { body, query: { versioning: '' } });
      expect(res.status).toBe(400);
      expect(res.text).toContain('<Code>MalformedXML</Code>');
    }
  });

  it('a body that does not match its x-amz-content-sha256 is refused', async () => {
    const signer = sdkSigner(alice);
    const body = '<VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>';
    const signed = await signer.sign({
      method: 'PUT', protocol: 'http:', hostname: '127.0.0.1', port, path: '/xml', query: { versioning: '' },
      headers: { host: `127.0.0.1:${port}`, 'x-amz-content-sha256': createHash('sha256').update('something else').digest('hex') },
    });
    const res = await fetch(`${endpoint}/xml?versioning=`, { method: 'PUT', headers: signed.headers, body });
    expect(res.status).toBe(400);
    expect(await res.text()).toContain('<Code>XAmzContentSHA256Mismatch</Code>');
  });

  it('refuses operations S3 has and this endpoint does not, by name', async () => {
    const res = await signedRequest('GET', '/xml', { query: { policy: '' } });
    expect(res.status).toBe(501);
    expect(res.text).toMatch(/<Code>NotImplemented<\/Code><Message>bucket policies/);
  });
});
