/**
 * Request bodies as real clients send them, through the protocol pipeline (verifySigV4, then
 * openPayload): @aws-sdk/client-s3 PutObject with buffers and streams (x-amz-checksum-* headers,
 * aws-chunked STREAMING-UNSIGNED-PAYLOAD-TRAILER with a checksum trailer) and boto3's put_object.
 * The object model's PutObject handler does not exist yet: a probe route stands in for it here,
 * reading the checked body and answering its MD5 as the ETag, so the clients' own ETag and
 * checksum checks pass only when the decoded bytes are the bytes sent.
 */
import { createHash } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { PutObjectCommand, S3Client, S3ServiceException, type ChecksumAlgorithm } from '@aws-sdk/client-s3';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiApp } from '../../src/api/app.js';
import { toS3Error } from '../../src/api/s3/errors.js';
import { openPayload } from '../../src/api/s3/payload.js';
import { verifySigV4 } from '../../src/api/s3/sigv4.js';
import { errorXml } from '../../src/api/s3/xml.js';
import { SeededRandom } from '../../src/store/seeded-random.js';
import { runAsync } from '../support/tools.js';

const KEY = { id: 'STRAPROBEKEY00000000', secret: 'probe-secret-0123456789abcdefghijklmnopq' };

interface Received {
  mode: string;
  encoding: string | undefined;
  bytes: number;
  md5: string;
}

let app: FastifyInstance;
let endpoint: string;
const received: Received[] = [];

beforeAll(async () => {
  app = createApiApp(pino({ level: 'silent' }));
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_req, _payload, done) => done(null, undefined));
  app.put('/*', async (req, reply) => {
    try {
      const verified = await verifySigV4({ method: req.method, url: req.raw.url ?? '/', rawHeaders: req.raw.rawHeaders }, async (id) => (id === KEY.id ? { secret: KEY.secret, owner: 'probe' } : undefined));
      if (verified === undefined) throw new Error('unsigned');
      const hash = createHash('md5');
      let bytes = 0;
      for await (const part of openPayload(req.raw, req.raw.rawHeaders, verified)) {
        hash.update(part as Buffer);
        bytes += (part as Buffer).length;
      }
      const md5 = hash.digest('hex');
      received.push({ mode: String(req.headers['x-amz-content-sha256']), encoding: req.headers['content-encoding'], bytes, md5 });
      return reply.header('etag', `"${md5}"`).send();
    } catch (err) {
      const { error } = toS3Error(err);
      return reply.code(error.status).type('application/xml').send(errorXml(error.code, error.message, req.url, 'PROBE', error.extra));
    }
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  endpoint = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await app?.close();
});

function sdk(): S3Client {
  return new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: KEY.id, secretAccessKey: KEY.secret } });
}

function md5(data: Uint8Array): string {
  return createHash('md5').update(data).digest('hex');
}

describe('@aws-sdk/client-s3 PutObject bodies', () => {
  const data = new SeededRandom(14).fill(Buffer.alloc(300_000));

  it.each(['CRC32', 'CRC32C', 'SHA1', 'SHA256'] as ChecksumAlgorithm[])('a buffer with an x-amz-checksum-%s header', async (algorithm) => {
    received.length = 0;
    const out = await sdk().send(new PutObjectCommand({ Bucket: 'b', Key: `buffer-${algorithm}`, Body: data, ChecksumAlgorithm: algorithm }));
    expect(out.ETag).toBe(`"${md5(data)}"`);
    expect(received).toEqual([{ mode: expect.any(String), encoding: undefined, bytes: data.length, md5: md5(data) }]);
  });

  it('a stream: aws-chunked, STREAMING-UNSIGNED-PAYLOAD-TRAILER, the CRC32 in a trailer', async () => {
    received.length = 0;
    const pieces = [data.subarray(0, 70_000), data.subarray(70_000, 70_001), data.subarray(70_001)];
    await sdk().send(new PutObjectCommand({ Bucket: 'b', Key: 'stream', Body: Readable.from(pieces), ContentLength: data.length }));
    expect(received).toEqual([{ mode: 'STREAMING-UNSIGNED-PAYLOAD-TRAILER', encoding: 'aws-chunked', bytes: data.length, md5: md5(data) }]);
  });

  it('a wrong Content-MD5 is BadDigest', async () => {
    try {
      await sdk().send(new PutObjectCommand({ Bucket: 'b', Key: 'md5', Body: data, ContentMD5: createHash('md5').update('other').digest('base64') }));
      throw new Error('expected BadDigest');
    } catch (err) {
      expect(err).toBeInstanceOf(S3ServiceException);
      expect((err as S3ServiceException).name).toBe('BadDigest');
    }
  });
});

describe('boto3 put_object', () => {
  it('is accepted with the bytes it sent (python3 in its own process; this one keeps serving)', async () => {
    received.length = 0;
    const script = [
      'import os, boto3, hashlib',
      'from botocore.config import Config',
      "s3 = boto3.client('s3', endpoint_url=os.environ['S3_URL'], aws_access_key_id=os.environ['KEY_ID'], aws_secret_access_key=os.environ['SECRET'], region_name='us-east-1', config=Config(s3={'addressing_style': 'path'}))",
      "body = bytes(range(256)) * 1000",
      "out = s3.put_object(Bucket='b', Key='boto', Body=body)",
      "print(out['ETag'] == '\"' + hashlib.md5(body).hexdigest() + '\"')",
    ].join('\n');
    const r = await runAsync('python3', ['-c', script], { timeoutMs: 60_000, env: { S3_URL: endpoint, KEY_ID: KEY.id, SECRET: KEY.secret, AWS_CONFIG_FILE: '/dev/null', AWS_SHARED_CREDENTIALS_FILE: '/dev/null' } });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe('True');
    expect(received).toHaveLength(1);
    expect(received[0]?.bytes).toBe(256_000);
  });
});
