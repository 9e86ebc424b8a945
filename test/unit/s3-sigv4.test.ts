/**
 * The SigV4 verifier against the examples AWS publishes (written out by hand from the
 * documentation: the "get-vanilla" request of the SigV4 test suite, and the S3 examples of
 * "Signature Calculations for the Authorization Header", "Query String Authentication" and
 * "Transferring Payload in Multiple Chunks"), and its refusals.
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { S3Error } from '../../src/api/s3/errors.js';
import {
  canonicalRequest,
  chunkSignature,
  hmacHex,
  parseAmzDate,
  signingKey,
  stringToSign,
  verifySigV4,
  type ChunkSigningContext,
  type SecretLookup,
  type SignedRequestView,
} from '../../src/api/s3/sigv4.js';
import { canonicalPath, canonicalQuery, parseQuery, s3UriEncode } from '../../src/api/s3/uri.js';

/** The S3 examples' key pair and time. */
const S3_ACCESS_KEY = 'AKIAIOSFODNN7EXAMPLE';
const S3_SECRET = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';
const S3_EXAMPLE_TIME = parseAmzDate('20130524T000000Z');
const EMPTY_SHA = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

const lookup: SecretLookup = async (id) => (id === S3_ACCESS_KEY ? { secret: S3_SECRET, owner: 'example' } : undefined);

function authorization(signedHeaders: string, signature: string): string {
  return `AWS4-HMAC-SHA256 Credential=${S3_ACCESS_KEY}/20130524/us-east-1/s3/aws4_request,SignedHeaders=${signedHeaders},Signature=${signature}`;
}

async function refusal(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof S3Error) return err.code;
    throw err;
  }
  throw new Error('expected a refusal');
}

describe('SigV4 test suite: get-vanilla (service "service")', () => {
  it('signs to the published signature', () => {
    const view: SignedRequestView = { method: 'GET', url: '/', rawHeaders: ['Host', 'example.amazonaws.com', 'X-Amz-Date', '20150830T123600Z'] };
    const canonical = canonicalRequest(view, 'host;x-amz-date', EMPTY_SHA);
    expect(canonical).toBe(`GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n${EMPTY_SHA}`);
    const toSign = stringToSign('20150830T123600Z', '20150830/us-east-1/service/aws4_request', canonical);
    expect(toSign.split('\n')[3]).toBe('bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63');
    const key = signingKey('wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY', '20150830', 'us-east-1', 'service');
    expect(hmacHex(key, toSign)).toBe('5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31');
  });
});

describe('S3 header-signed examples', () => {
  it('GET Object with a Range header', async () => {
    const signature = 'f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41';
    const view: SignedRequestView = {
      method: 'GET',
      url: '/test.txt',
      rawHeaders: [
        'Host', 'examplebucket.s3.amazonaws.com',
        'Authorization', authorization('host;range;x-amz-content-sha256;x-amz-date', signature),
        'Range', 'bytes=0-9',
        'x-amz-content-sha256', EMPTY_SHA,
        'x-amz-date', '20130524T000000Z',
      ],
    };
    const verified = await verifySigV4(view, lookup, { now: () => S3_EXAMPLE_TIME });
    expect(verified).toMatchObject({ accessKeyId: S3_ACCESS_KEY, owner: 'example', presigned: false, payload: { kind: 'sha256', sha256Hex: EMPTY_SHA } });
  });

  it('PUT Object with a "$" in the key, a Date header and x-amz-storage-class', async () => {
    const signature = '98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd';
    const view: SignedRequestView = {
      method: 'PUT',
      url: '/test%24file.text',
      rawHeaders: [
        'Host', 'examplebucket.s3.amazonaws.com',
        'Date', 'Fri, 24 May 2013 00:00:00 GMT',
        'Authorization', authorization('date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class', signature),
        'x-amz-date', '20130524T000000Z',
        'x-amz-storage-class', 'REDUCED_REDUNDANCY',
        'x-amz-content-sha256', '44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072',
      ],
    };
    await expect(verifySigV4(view, lookup, { now: () => S3_EXAMPLE_TIME })).resolves.toBeDefined();
    // The same key sent unencoded canonicalizes alike: the path is encoded once, never twice.
    await expect(verifySigV4({ ...view, url: '/test$file.text' }, lookup, { now: () => S3_EXAMPLE_TIME })).resolves.toBeDefined();
  });

  it('GET Bucket lifecycle (a query name without a value) and list objects (sorted query)', async () => {
    const base = ['Host', 'examplebucket.s3.amazonaws.com', 'x-amz-date', '20130524T000000Z', 'x-amz-content-sha256', EMPTY_SHA];
    const signed = 'host;x-amz-content-sha256;x-amz-date';
    const lifecycle: SignedRequestView = { method: 'GET', url: '/?lifecycle', rawHeaders: [...base, 'Authorization', authorization(signed, 'fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543')] };
    await expect(verifySigV4(lifecycle, lookup, { now: () => S3_EXAMPLE_TIME })).resolves.toBeDefined();
    const list: SignedRequestView = { method: 'GET', url: '/?prefix=J&max-keys=2', rawHeaders: [...base, 'Authorization', authorization(signed, '34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7')] };
    await expect(verifySigV4(list, lookup, { now: () => S3_EXAMPLE_TIME })).resolves.toBeDefined();
  });

  it('refuses a wrong secret, an unknown key, a skewed clock, an unsigned x-amz header and a tampered path', async () => {
    const signature = 'f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41';
    const headers = ['Host', 'examplebucket.s3.amazonaws.com', 'Range', 'bytes=0-9', 'x-amz-content-sha256', EMPTY_SHA, 'x-amz-date', '20130524T000000Z'];
    const view: SignedRequestView = { method: 'GET', url: '/test.txt', rawHeaders: [...headers, 'Authorization', authorization('host;range;x-amz-content-sha256;x-amz-date', signature)] };
    const now = () => S3_EXAMPLE_TIME;
    expect(await refusal(verifySigV4(view, async () => ({ secret: 'not-the-secret', owner: 'x' }), { now }))).toBe('SignatureDoesNotMatch');
    expect(await refusal(verifySigV4(view, async () => undefined, { now }))).toBe('InvalidAccessKeyId');
    expect(await refusal(verifySigV4(view, lookup, { now: () => S3_EXAMPLE_TIME + 16 * 60_000 }))).toBe('RequestTimeTooSkewed');
    expect(await refusal(verifySigV4(view, lookup, { now: () => S3_EXAMPLE_TIME - 16 * 60_000 }))).toBe('RequestTimeTooSkewed');
    await expect(verifySigV4(view, lookup, { now: () => S3_EXAMPLE_TIME + 14 * 60_000 })).resolves.toBeDefined();
    expect(await refusal(verifySigV4({ ...view, url: '/test.txu' }, lookup, { now }))).toBe('SignatureDoesNotMatch');
    expect(await refusal(verifySigV4({ ...view, rawHeaders: [...view.rawHeaders, 'x-amz-meta-extra', '1'] }, lookup, { now }))).toBe('AccessDenied');
    expect(await refusal(verifySigV4({ ...view, rawHeaders: [...view.rawHeaders.slice(0, -2), 'Authorization', 'AWS AKIAIOSFODNN7EXAMPLE:abc'] }, lookup, { now }))).toBe('InvalidRequest');
    expect(await refusal(verifySigV4({ ...view, rawHeaders: [...view.rawHeaders.slice(0, -2), 'Authorization', 'AWS4-HMAC-SHA256 Credential=x'] }, lookup, { now }))).toBe('AuthorizationHeaderMalformed');
  });

  it('answers undefined for an anonymous request', async () => {
    await expect(verifySigV4({ method: 'GET', url: '/', rawHeaders: ['Host', 'h'] }, lookup)).resolves.toBeUndefined();
  });

  it('refuses a Signature Version 2 presigned query by name (it is not anonymous)', async () => {
    const url = '/b/k?AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&Signature=scNH2oincLPt2pS4%2FPqReBQzgU8%3D&Expires=1796307111';
    expect(await refusal(verifySigV4({ method: 'GET', url, rawHeaders: ['Host', 'h'] }, lookup))).toBe('InvalidRequest');
  });
});

describe('S3 presigned URL example', () => {
  const url =
    '/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request' +
    '&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host' +
    '&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404';
  const view: SignedRequestView = { method: 'GET', url, rawHeaders: ['Host', 'examplebucket.s3.amazonaws.com'] };

  it('is accepted until it expires, then refused', async () => {
    const verified = await verifySigV4(view, lookup, { now: () => S3_EXAMPLE_TIME + 3600_000 });
    expect(verified).toMatchObject({ presigned: true, payload: { kind: 'unsigned' } });
    expect(await refusal(verifySigV4(view, lookup, { now: () => S3_EXAMPLE_TIME + 86_401_000 }))).toBe('AccessDenied');
  });

  it('refuses a changed parameter and a malformed expiry', async () => {
    const now = () => S3_EXAMPLE_TIME;
    expect(await refusal(verifySigV4({ ...view, url: url.replace('Expires=86400', 'Expires=86401') }, lookup, { now }))).toBe('SignatureDoesNotMatch');
    expect(await refusal(verifySigV4({ ...view, url: url.replace('Expires=86400', 'Expires=604801') }, lookup, { now }))).toBe('AuthorizationQueryParametersError');
  });
});

describe('S3 aws-chunked example (STREAMING-AWS4-HMAC-SHA256-PAYLOAD)', () => {
  it('accepts the seed signature and chains the published chunk signatures', async () => {
    const seed = '4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9';
    const view: SignedRequestView = {
      method: 'PUT',
      url: '/examplebucket/chunkObject.txt',
      rawHeaders: [
        'Host', 's3.amazonaws.com',
        'x-amz-date', '20130524T000000Z',
        'x-amz-storage-class', 'REDUCED_REDUNDANCY',
        'Authorization', authorization('content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class', seed),
        'x-amz-content-sha256', 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD',
        'Content-Encoding', 'aws-chunked',
        'x-amz-decoded-content-length', '66560',
        'Content-Length', '66824',
      ],
    };
    const verified = await verifySigV4(view, lookup, { now: () => S3_EXAMPLE_TIME });
    expect(verified?.payload).toEqual({ kind: 'streaming-signed', trailer: false });
    const ctx = verified?.chunkSigning as ChunkSigningContext;
    const sha = (n: number): string => createHash('sha256').update(Buffer.alloc(n, 'a')).digest('hex');
    const first = chunkSignature(ctx, seed, sha(65536));
    expect(first).toBe('ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648');
    const second = chunkSignature(ctx, first, sha(1024));
    expect(second).toBe('0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497');
    expect(chunkSignature(ctx, second, EMPTY_SHA)).toBe('b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9');
  });
});

describe('S3 URI encoding', () => {
  it('encodes every byte but the unreserved ones, once', () => {
    expect(s3UriEncode('a b+c*~/é')).toBe('a%20b%2Bc%2A~%2F%C3%A9');
    expect(canonicalPath('/bucket/a%20b/c%2Fd/~x')).toBe('/bucket/a%20b/c%2Fd/~x');
    expect(canonicalPath('/bucket/a b(1)')).toBe('/bucket/a%20b%281%29');
    expect(canonicalQuery(parseQuery('b=2&a=&a=1&c'))).toBe('a=&a=1&b=2&c=');
  });

  it('refuses a stray percent sign', () => {
    expect(() => canonicalPath('/a%zz')).toThrow(/two hex digits/);
  });
});
