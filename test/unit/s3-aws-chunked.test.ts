/**
 * The aws-chunked decoder and the payload checks in every x-amz-content-sha256 mode: the bodies
 * clients send (the SDK's unsigned trailer body, AWS's published signed-chunk example, a signed
 * trailer), split at every byte, and hostile framing, each refused with a clear S3Error and
 * without holding more than a line.
 */
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { AwsChunkedDecoder, MAX_CHUNK_LINE_BYTES } from '../../src/api/s3/aws-chunked.js';
import { S3Error } from '../../src/api/s3/errors.js';
import { openPayload, PayloadVerifier, type PayloadExpectations } from '../../src/api/s3/payload.js';
import { chunkSignature, signingKey, trailerSignature, type ChunkSigningContext, type VerifiedRequest } from '../../src/api/s3/sigv4.js';

const NO_CHECKS: PayloadExpectations = { sha256Hex: undefined, contentMd5: undefined, headerChecksum: undefined, trailerChecksum: undefined, lengthBytes: undefined };

/** AWS's aws-chunked example: key, time, scope and seed signature. */
const EXAMPLE: ChunkSigningContext = {
  signingKey: signingKey('wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY', '20130524', 'us-east-1'),
  amzDate: '20130524T000000Z',
  scope: '20130524/us-east-1/s3/aws4_request',
  seedSignature: '4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9',
};

interface Outcome {
  data: Buffer;
  error: S3Error | undefined;
}

async function run(stream: Readable): Promise<Outcome> {
  const parts: Buffer[] = [];
  try {
    for await (const part of stream) parts.push(part as Buffer);
    return { data: Buffer.concat(parts), error: undefined };
  } catch (err) {
    if (!(err instanceof S3Error)) throw err;
    return { data: Buffer.concat(parts), error: err };
  }
}

function decode(body: Buffer | Buffer[], options: { signing?: ChunkSigningContext; trailers: boolean; expect?: Partial<PayloadExpectations> }): Promise<Outcome> {
  const verifier = new PayloadVerifier({ ...NO_CHECKS, ...options.expect });
  const decoder = new AwsChunkedDecoder({ verifier, signing: options.signing, trailers: options.trailers });
  return run(Readable.from(Array.isArray(body) ? body : [body], { objectMode: false }).pipe(decoder));
}

function bytewise(body: Buffer): Buffer[] {
  return Array.from(body, (byte) => Buffer.from([byte]));
}

const SDK_BODY = Buffer.from('c\r\nhello stream\r\n0\r\nx-amz-checksum-crc32:gtnkmQ==\r\n\r\n');

/** AWS's example body: 65536 and 1024 bytes of 'a', signed. */
function exampleSignedBody(): Buffer {
  return Buffer.concat([
    Buffer.from('10000;chunk-signature=ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648\r\n'),
    Buffer.alloc(65536, 'a'),
    Buffer.from('\r\n400;chunk-signature=0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497\r\n'),
    Buffer.alloc(1024, 'a'),
    Buffer.from('\r\n0;chunk-signature=b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9\r\n\r\n'),
  ]);
}

/** A signed body with a checksum trailer, signed here with the example's key. */
function signedTrailerBody(data: Buffer, crc32: string, ctx = EXAMPLE): Buffer {
  const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
  const first = chunkSignature(ctx, ctx.seedSignature, sha(data));
  const last = chunkSignature(ctx, first, sha(Buffer.alloc(0)));
  const trailers = `x-amz-checksum-crc32:${crc32}\n`;
  const sig = trailerSignature(ctx, last, trailers);
  return Buffer.concat([
    Buffer.from(`${data.length.toString(16)};chunk-signature=${first}\r\n`),
    data,
    Buffer.from(`\r\n0;chunk-signature=${last}\r\nx-amz-checksum-crc32:${crc32}\r\nx-amz-trailer-signature:${sig}\r\n\r\n`),
  ]);
}

describe('bodies clients send', () => {
  it("STREAMING-UNSIGNED-PAYLOAD-TRAILER: the SDK's body, whole and one byte at a time", async () => {
    for (const body of [SDK_BODY, bytewise(SDK_BODY)]) {
      const out = await decode(body, { trailers: true, expect: { trailerChecksum: 'CRC32', lengthBytes: 12 } });
      expect(out.error).toBeUndefined();
      expect(out.data.toString()).toBe('hello stream');
    }
  });

  it('a wrong trailer checksum is BadDigest, a missing one InvalidRequest', async () => {
    const wrong = Buffer.from(SDK_BODY.toString().replace('gtnkmQ==', 'AAAAAA=='));
    expect((await decode(wrong, { trailers: true, expect: { trailerChecksum: 'CRC32' } })).error?.code).toBe('BadDigest');
    expect((await decode(SDK_BODY, { trailers: true, expect: { trailerChecksum: 'CRC32C' } })).error?.code).toBe('InvalidRequest');
  });

  it("STREAMING-AWS4-HMAC-SHA256-PAYLOAD: AWS's example, whole and in odd pieces", async () => {
    const body = exampleSignedBody();
    const pieces: Buffer[] = [];
    for (let at = 0; at < body.length; at += 997) pieces.push(body.subarray(at, at + 997));
    for (const input of [body, pieces]) {
      const out = await decode(input, { signing: EXAMPLE, trailers: false, expect: { lengthBytes: 66560 } });
      expect(out.error).toBeUndefined();
      expect(out.data.equals(Buffer.alloc(66560, 'a'))).toBe(true);
    }
  });

  it('a changed byte or a reordered chunk breaks the signature chain', async () => {
    const body = exampleSignedBody();
    const tampered = Buffer.from(body);
    tampered[200] = 'b'.charCodeAt(0);
    expect((await decode(tampered, { signing: EXAMPLE, trailers: false })).error?.code).toBe('SignatureDoesNotMatch');
    const otherSeed = { ...EXAMPLE, seedSignature: '0'.repeat(64) };
    expect((await decode(body, { signing: otherSeed, trailers: false })).error?.code).toBe('SignatureDoesNotMatch');
  });

  it('STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER: checked chunks, signed trailer, checksum', async () => {
    const body = signedTrailerBody(Buffer.from('hello stream'), 'gtnkmQ==');
    const out = await decode(body, { signing: EXAMPLE, trailers: true, expect: { trailerChecksum: 'CRC32' } });
    expect(out.error).toBeUndefined();
    expect(out.data.toString()).toBe('hello stream');
    const forged = Buffer.from(body.toString('latin1').replace('x-amz-checksum-crc32:gtnkmQ==', 'x-amz-checksum-crc32:AAAAAA=='), 'latin1');
    expect((await decode(forged, { signing: EXAMPLE, trailers: true, expect: { trailerChecksum: 'CRC32' } })).error?.code).toBe('SignatureDoesNotMatch');
    const unsignedTrailer = Buffer.from(body.toString('latin1').replace(/x-amz-trailer-signature:[0-9a-f]+\r\n/, ''), 'latin1');
    expect((await decode(unsignedTrailer, { signing: EXAMPLE, trailers: true })).error?.message).toMatch(/no x-amz-trailer-signature/);
  });
});

describe('hostile framing', () => {
  const cases: [string, string, RegExp][] = [
    ['a size that is not hex', 'zz\r\nab\r\n0\r\n\r\n', /not a chunk size in hex/],
    ['an empty size line', '\r\n', /not a chunk size/],
    ['a bare LF', '2\nab\r\n0\r\n\r\n', /CRLF, not a bare LF/],
    ['data longer than its size', '2\r\nabc\r\n0\r\n\r\n', /must be followed by CRLF/],
    ['data shorter than its size', '4\r\nab\r\n0\r\n\r\n', /must be followed by CRLF/],
    ['a size over 5 GiB', 'ffffffffffff\r\n', /larger than/],
    ['a size of 17 hex digits', '00000000000000001\r\n', /not a chunk size/],
    ['bytes after the end', '2\r\nab\r\n0\r\n\r\nextra', /follow the end/],
    ['a chunk extension on an unsigned body', '2;chunk-signature=abc\r\nab\r\n0\r\n\r\n', /unexpected chunk extension/],
    ['a trailer with no colon', '2\r\nab\r\n0\r\nnocolon\r\n\r\n', /not name:value/],
    ['a truncated body (mid-chunk)', '10\r\nabc', /ended before its final chunk/],
    ['a truncated body (no final empty line)', '2\r\nab\r\n0\r\n', /ended before its final chunk/],
    ['a body with no final chunk', '2\r\nab\r\n', /ended before its final chunk/],
  ];
  it.each(cases)('%s', async (_name, body, message) => {
    for (const input of [Buffer.from(body), bytewise(Buffer.from(body))]) {
      const out = await decode(input, { trailers: true });
      expect(out.error?.code).toBe('IncompleteBody');
      expect(out.error?.message).toMatch(message);
    }
  });

  it('trailers are refused when the mode has none; signed chunks need their signature', async () => {
    expect((await decode(SDK_BODY, { trailers: false })).error?.message).toMatch(/no -TRAILER mode/);
    expect((await decode(Buffer.from('2\r\nab\r\n0\r\n\r\n'), { signing: EXAMPLE, trailers: false })).error?.message).toMatch(/no ';chunk-signature=/);
  });

  it('a line without CRLF is refused after MAX_CHUNK_LINE_BYTES, however much more would come', async () => {
    let produced = 0;
    const endless = new Readable({
      read() {
        produced += 4096;
        this.push(Buffer.alloc(4096, '1'));
      },
    });
    const out = await run(endless.pipe(new AwsChunkedDecoder({ verifier: new PayloadVerifier(NO_CHECKS), signing: undefined, trailers: false })));
    expect(out.error?.message).toMatch(new RegExp(`longer than ${MAX_CHUNK_LINE_BYTES} bytes`));
    expect(produced).toBeLessThan(1024 * 1024);
  });

  it('more decoded bytes than x-amz-decoded-content-length, or fewer, is IncompleteBody', async () => {
    expect((await decode(SDK_BODY, { trailers: true, expect: { lengthBytes: 5 } })).error?.message).toMatch(/longer than its declared length/);
    expect((await decode(SDK_BODY, { trailers: true, expect: { lengthBytes: 20 } })).error?.message).toMatch(/ended after 12 of its declared 20/);
  });
});

describe('openPayload: every x-amz-content-sha256 mode from the headers', () => {
  function verified(payload: VerifiedRequest['payload'], chunkSigning?: ChunkSigningContext): VerifiedRequest {
    return { accessKeyId: 'k', owner: 'o', presigned: false, payload, chunkSigning };
  }
  const hello = Buffer.from('hello');
  const helloSha = createHash('sha256').update(hello).digest('hex');
  const helloMd5 = createHash('md5').update(hello).digest('base64');

  it('a hex payload hash is checked against the body', async () => {
    const ok = await run(openPayload(Readable.from([hello]), ['Content-Length', '5'], verified({ kind: 'sha256', sha256Hex: helloSha })));
    expect(ok).toEqual({ data: hello, error: undefined });
    const bad = await run(openPayload(Readable.from([Buffer.from('hellO')]), [], verified({ kind: 'sha256', sha256Hex: helloSha })));
    expect(bad.error?.code).toBe('XAmzContentSHA256Mismatch');
  });

  it('UNSIGNED-PAYLOAD with Content-MD5 and an x-amz-checksum-sha256 header', async () => {
    const sha256 = createHash('sha256').update(hello).digest('base64');
    const headers = ['Content-MD5', helloMd5, 'x-amz-checksum-sha256', sha256];
    expect((await run(openPayload(Readable.from([hello]), headers, verified({ kind: 'unsigned' })))).error).toBeUndefined();
    const bad = await run(openPayload(Readable.from([Buffer.from('world')]), ['Content-MD5', helloMd5], verified({ kind: 'unsigned' })));
    expect(bad.error?.code).toBe('BadDigest');
    const badSum = await run(openPayload(Readable.from([Buffer.from('world')]), ['x-amz-checksum-sha256', sha256], verified({ kind: 'unsigned' })));
    expect(badSum.error?.code).toBe('BadDigest');
    expect(() => openPayload(Readable.from([hello]), ['Content-MD5', 'not-md5'], verified({ kind: 'unsigned' }))).toThrow(/Content-MD5 is not the base64/);
    expect(() => openPayload(Readable.from([hello]), ['x-amz-checksum-crc99', 'AAAAAA=='], verified({ kind: 'unsigned' }))).toThrow(/unknown checksum header/);
  });

  it('STREAMING-UNSIGNED-PAYLOAD-TRAILER through the headers the SDK sends', async () => {
    const headers = ['Content-Encoding', 'aws-chunked', 'x-amz-decoded-content-length', '12', 'x-amz-trailer', 'x-amz-checksum-crc32'];
    const out = await run(openPayload(Readable.from([SDK_BODY]), headers, verified({ kind: 'streaming-unsigned-trailer' })));
    expect(out).toEqual({ data: Buffer.from('hello stream'), error: undefined });
    expect(() => openPayload(Readable.from([SDK_BODY]), headers, verified({ kind: 'unsigned' }))).toThrow(/x-amz-trailer needs/);
  });

  it('STREAMING-AWS4-HMAC-SHA256-PAYLOAD(-TRAILER) through the headers', async () => {
    const out = await run(openPayload(Readable.from([exampleSignedBody()]), ['x-amz-decoded-content-length', '66560'], verified({ kind: 'streaming-signed', trailer: false }, EXAMPLE)));
    expect(out.error).toBeUndefined();
    expect(out.data.length).toBe(66560);
    const trailed = signedTrailerBody(Buffer.from('hello stream'), 'gtnkmQ==');
    const out2 = await run(openPayload(Readable.from([trailed]), ['x-amz-trailer', 'x-amz-checksum-crc32'], verified({ kind: 'streaming-signed', trailer: true }, EXAMPLE)));
    expect(out2).toEqual({ data: Buffer.from('hello stream'), error: undefined });
  });
});
