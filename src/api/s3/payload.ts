/**
 * What a request body must prove, checked as it streams: its SHA-256 (x-amz-content-sha256 as a
 * hex hash), its Content-MD5, an x-amz-checksum-* header or trailer, and its length. Handlers
 * read the body from `openPayload`: the bytes as they arrive (aws-chunked framing removed), and an
 * 'error' instead of 'end' when any check fails, so nothing that fails a check is ever seen whole.
 */
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { AwsChunkedDecoder } from './aws-chunked.js';
import { CHECKSUM_DIGEST_BYTES, isChecksumAlgorithm, runningChecksum, type ChecksumAlgorithm, type RunningChecksum } from '../../objects/checksums.js';
import { deferredDigests, type DeferredAlgorithm, type DeferredDigests } from '../../objects/hash-workers.js';
import { S3Error } from './errors.js';
import { headerValues, type VerifiedRequest } from './sigv4.js';

/** The checks one body must pass, from its request's headers. */
export interface PayloadExpectations {
  /** x-amz-content-sha256 as a hex hash (only for bodies sent as they are). */
  readonly sha256Hex: string | undefined;
  /** Content-MD5 (base64 of 16 bytes). */
  readonly contentMd5: string | undefined;
  /** An x-amz-checksum-<alg> header's algorithm and value. */
  readonly headerChecksum: { readonly algorithm: ChecksumAlgorithm; readonly value: string } | undefined;
  /** The checksum x-amz-trailer announces (its value comes in the trailer). */
  readonly trailerChecksum: ChecksumAlgorithm | undefined;
  /** The decoded length the body must have (Content-Length, or x-amz-decoded-content-length for aws-chunked). */
  readonly lengthBytes: number | undefined;
}

const CHECKSUM_HEADER_PREFIX = 'x-amz-checksum-';

function nameOf(algorithm: ChecksumAlgorithm | 'MD5'): string {
  return algorithm === 'MD5' ? 'Content-MD5' : algorithm;
}

/** A checksum algorithm as headers spell it (x-amz-checksum-crc32c), or undefined. */
function algorithmNamed(headerSuffix: string): ChecksumAlgorithm | undefined {
  const upper = headerSuffix.toUpperCase();
  return isChecksumAlgorithm(upper) ? upper : undefined;
}

function checkDigestText(algorithm: ChecksumAlgorithm | 'MD5', value: string, where: string): void {
  const bytes = /^[A-Za-z0-9+/]*={0,2}$/.test(value) ? Buffer.from(value, 'base64') : undefined;
  if (bytes === undefined || bytes.length !== CHECKSUM_DIGEST_BYTES[algorithm] || bytes.toString('base64') !== value) {
    const code = algorithm === 'MD5' ? 'InvalidDigest' : 'InvalidRequest';
    throw new S3Error(code, `${where} is not the base64 of a ${CHECKSUM_DIGEST_BYTES[algorithm]}-byte ${nameOf(algorithm)} value: '${value.slice(0, 100)}'`);
  }
}

function parseLength(text: string | undefined, name: string): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d{1,15}$/.test(text.trim())) throw new S3Error('InvalidArgument', `${name} must be a byte count, not '${text.slice(0, 40)}'`);
  return Number(text.trim());
}

/** Reads the expectations from the headers (malformed values are refused here, before the body). */
export function payloadExpectations(rawHeaders: readonly string[], verified: VerifiedRequest): PayloadExpectations {
  const headers = headerValues(rawHeaders);
  const one = (name: string): string | undefined => headers.get(name)?.[0];
  const contentMd5 = one('content-md5');
  if (contentMd5 !== undefined) checkDigestText('MD5', contentMd5, 'Content-MD5');
  const checksumHeaders = [...headers.keys()].filter((n) => n.startsWith(CHECKSUM_HEADER_PREFIX) && n !== 'x-amz-checksum-mode' && n !== 'x-amz-checksum-type');
  if (checksumHeaders.length > 1) throw new S3Error('InvalidRequest', `send one x-amz-checksum-* header, not ${checksumHeaders.length} (${checksumHeaders.join(', ')})`);
  let headerChecksum: PayloadExpectations['headerChecksum'];
  const checksumHeader = checksumHeaders[0];
  if (checksumHeader !== undefined) {
    const algorithm = algorithmNamed(checksumHeader.slice(CHECKSUM_HEADER_PREFIX.length));
    if (algorithm === undefined) throw new S3Error('InvalidRequest', `unknown checksum header ${checksumHeader} (known: crc32, crc32c, crc64nvme, sha1, sha256)`);
    const value = one(checksumHeader) as string;
    checkDigestText(algorithm, value, checksumHeader);
    headerChecksum = { algorithm, value };
  }
  let trailerChecksum: ChecksumAlgorithm | undefined;
  const trailer = one('x-amz-trailer');
  const chunked = verified.payload.kind === 'streaming-signed' || verified.payload.kind === 'streaming-unsigned-trailer';
  if (trailer !== undefined) {
    const name = trailer.trim().toLowerCase();
    const algorithm = name.startsWith(CHECKSUM_HEADER_PREFIX) ? algorithmNamed(name.slice(CHECKSUM_HEADER_PREFIX.length)) : undefined;
    if (algorithm === undefined) throw new S3Error('InvalidRequest', `x-amz-trailer must name one x-amz-checksum-* trailer, not '${trailer.slice(0, 80)}'`);
    const trailerAllowed = verified.payload.kind === 'streaming-unsigned-trailer' || (verified.payload.kind === 'streaming-signed' && verified.payload.trailer);
    if (!trailerAllowed) throw new S3Error('InvalidRequest', 'x-amz-trailer needs x-amz-content-sha256 STREAMING-UNSIGNED-PAYLOAD-TRAILER or STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER');
    if (headerChecksum !== undefined) throw new S3Error('InvalidRequest', 'send a checksum either as a header or as a trailer, not both');
    trailerChecksum = algorithm;
  }
  const lengthBytes = chunked ? parseLength(one('x-amz-decoded-content-length'), 'x-amz-decoded-content-length') : parseLength(one('content-length'), 'Content-Length');
  return { sha256Hex: verified.payload.kind === 'sha256' ? verified.payload.sha256Hex : undefined, contentMd5, headerChecksum, trailerChecksum, lengthBytes };
}

/**
 * Hashes decoded body bytes and checks them against the expectations at the end. The payload's
 * SHA-256 and Content-MD5 are computed on a hashing worker thread (hash-workers.ts), so `finish`
 * resolves once the worker has answered; the checks are as strict as ever.
 */
export class PayloadVerifier {
  /** SHA-256 and/or MD5, in the order of `offloadedNames`. */
  private readonly offloaded: DeferredDigests | undefined;
  private readonly offloadedNames: DeferredAlgorithm[] = [];
  private readonly checksum: RunningChecksum | undefined;
  private receivedBytes = 0;
  /** The x-amz-checksum value the client sent (header, or trailer once the body ended). */
  claimedChecksum: string | undefined;

  /**
   * `checksumByConsumer`: the consumer computes the body's x-amz-checksum, MD5 and SHA-256 itself
   * (the object model stores the first two, and hashes all three in one session) and compares
   * them with `claimedChecksum`, the Content-MD5 and x-amz-content-sha256, so none is computed
   * twice; their presence and form are still checked here.
   */
  constructor(
    private readonly expect: PayloadExpectations,
    options: { checksumByConsumer?: boolean } = {},
  ) {
    if (expect.sha256Hex !== undefined && options.checksumByConsumer !== true) this.offloadedNames.push('sha256');
    if (expect.contentMd5 !== undefined && options.checksumByConsumer !== true) this.offloadedNames.push('md5');
    this.offloaded = this.offloadedNames.length === 0 ? undefined : deferredDigests(this.offloadedNames, expect.lengthBytes);
    const algorithm = expect.headerChecksum?.algorithm ?? expect.trailerChecksum;
    this.checksum = algorithm === undefined || options.checksumByConsumer === true ? undefined : runningChecksum(algorithm);
    this.claimedChecksum = expect.headerChecksum?.value;
  }

  /** Bytes so far; more than the declared length is refused at once (never buffered). */
  update(data: Uint8Array): void {
    this.receivedBytes += data.length;
    if (this.expect.lengthBytes !== undefined && this.receivedBytes > this.expect.lengthBytes) {
      throw new S3Error('IncompleteBody', `the body is longer than its declared length of ${this.expect.lengthBytes} bytes`);
    }
    this.offloaded?.update(data);
    this.checksum?.update(data);
  }

  /** A promise while too much is queued for the hashing worker (the stream waits before taking more). */
  whenDrained(): Promise<void> | undefined {
    return this.offloaded?.whenDrained();
  }

  /** The body failed before its end: its digests are never asked for. */
  abandon(): void {
    this.offloaded?.abandon();
  }

  /** At the end of the body: every check, with the trailers the body carried (aws-chunked). */
  async finish(trailers: ReadonlyMap<string, string>): Promise<void> {
    const { expect } = this;
    if (expect.lengthBytes !== undefined && this.receivedBytes !== expect.lengthBytes) {
      this.abandon();
      throw new S3Error('IncompleteBody', `the body ended after ${this.receivedBytes} of its declared ${expect.lengthBytes} bytes`);
    }
    const digests = this.offloaded === undefined ? [] : await this.offloaded.digests();
    const digestOf = (name: DeferredAlgorithm): Buffer | undefined => digests[this.offloadedNames.indexOf(name)];
    const sha256 = digestOf('sha256');
    if (sha256 !== undefined && sha256.toString('hex') !== expect.sha256Hex) {
      throw new S3Error('XAmzContentSHA256Mismatch', "the provided 'x-amz-content-sha256' header does not match what was computed");
    }
    const md5 = digestOf('md5');
    if (md5 !== undefined && md5.toString('base64') !== expect.contentMd5) {
      throw new S3Error('BadDigest', 'the Content-MD5 you specified did not match what we received');
    }
    const algorithm = expect.headerChecksum?.algorithm ?? expect.trailerChecksum;
    if (algorithm === undefined) return;
    let value = expect.headerChecksum?.value;
    if (value === undefined) {
      const name = `${CHECKSUM_HEADER_PREFIX}${algorithm.toLowerCase()}`;
      value = trailers.get(name);
      if (value === undefined) throw new S3Error('InvalidRequest', `x-amz-trailer announced ${name} but the body carried no such trailer`);
      checkDigestText(algorithm, value, `the ${name} trailer`);
      this.claimedChecksum = value;
    }
    if (this.checksum !== undefined && this.checksum.digest().toString('base64') !== value) {
      throw new S3Error('BadDigest', `the ${nameOf(algorithm)} you specified did not match the calculated checksum`);
    }
  }
}

/** A body sent as it is: each byte goes to the verifier, whose verdict comes before 'end'. */
class VerifyingPassThrough extends Transform {
  constructor(private readonly verifier: PayloadVerifier) {
    super();
  }
  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    try {
      this.verifier.update(chunk);
    } catch (err) {
      callback(err as Error);
      return;
    }
    const draining = this.verifier.whenDrained();
    if (draining === undefined) callback(null, chunk);
    else draining.then(() => callback(null, chunk), callback);
  }
  override _flush(callback: TransformCallback): void {
    this.verifier.finish(new Map()).then(() => callback(), callback);
  }
  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.verifier.abandon();
    callback(err);
  }
}

/** A checked body and the x-amz-checksum value its client sent (known once the body ended). */
export type PayloadStream = Readable & { claimedChecksum(): string | undefined };

/**
 * The body of a verified request as handlers read it: decoded from aws-chunked for the streaming
 * modes, and checked against every expectation; the raw stream's errors pass through.
 */
export function openPayload(raw: Readable & { readonly complete?: boolean }, rawHeaders: readonly string[], verified: VerifiedRequest, options: { checksumByConsumer?: boolean } = {}): PayloadStream {
  const expectations = payloadExpectations(rawHeaders, verified);
  const verifier = new PayloadVerifier(expectations, options);
  const { payload } = verified;
  const decoder =
    payload.kind === 'streaming-signed'
      ? new AwsChunkedDecoder({ verifier, signing: verified.chunkSigning, trailers: payload.trailer })
      : payload.kind === 'streaming-unsigned-trailer'
        ? new AwsChunkedDecoder({ verifier, signing: undefined, trailers: true })
        : new VerifyingPassThrough(verifier);
  raw.once('error', (err) => decoder.destroy(err));
  raw.once('close', () => {
    // An IncomingMessage that closes before its end: the client went away mid-body.
    if (raw.complete === false) decoder.destroy(new S3Error('IncompleteBody', 'the client closed the connection before the body was complete'));
  });
  return Object.assign(raw.pipe(decoder), { claimedChecksum: () => verifier.claimedChecksum });
}
