/**
 * The aws-chunked body decoder, a streaming Transform: `hex-size[;chunk-signature=sig]\r\n`
 * `data\r\n` ... `0[;chunk-signature=sig]\r\n` then trailer lines (`name:value\r\n`, and
 * `x-amz-trailer-signature:sig\r\n` when signed) and an empty line. Data passes through as it
 * arrives (never buffered whole); only a header or trailer line is held, and it is bounded.
 * Signed chunks chain: each signature covers the previous one and the chunk's SHA-256, starting
 * from the request's seed signature. Anything that does not follow the framing (a bad size, a
 * missing CRLF, an oversize line, bytes after the end, a body cut short) is a clear S3Error,
 * raised at once: the stream errors instead of ending, so a consumer never takes it as whole.
 */
import { createHash, timingSafeEqual, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { S3Error } from './errors.js';
import { EMPTY_SHA256_HEX, chunkSignature, trailerSignature, type ChunkSigningContext } from './sigv4.js';

/** A chunk header or trailer line longer than this is refused (a real one is under 100 bytes). */
export const MAX_CHUNK_LINE_BYTES = 1024;
/** At most this many trailer lines (clients send one checksum and a signature). */
export const MAX_TRAILERS = 8;
/** A single chunk larger than S3's largest single upload is refused. */
export const MAX_CHUNK_BYTES = 5 * 1024 ** 3;
const TRAILER_SIGNATURE = 'x-amz-trailer-signature';
const CR = 0x0d;
const LF = 0x0a;

/** What the decoded bytes are fed to, and checked by at the end (payload.ts PayloadVerifier). */
export interface DecodedBodySink {
  update(data: Uint8Array): void;
  /** A promise while the sink has too much queued (the decoder takes no more input until it resolves). */
  whenDrained?(): Promise<void> | undefined;
  /** Every check at the end (a promise when the sink's digests come from a worker thread). */
  finish(trailers: ReadonlyMap<string, string>): Promise<void> | void;
  /** The body failed before its end. */
  abandon?(): void;
}

export interface AwsChunkedOptions {
  readonly verifier: DecodedBodySink;
  /** Chunk signatures are required and checked (STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]). */
  readonly signing: ChunkSigningContext | undefined;
  /** Trailer lines may follow the final chunk (the -TRAILER modes). */
  readonly trailers: boolean;
}

type State = 'size-line' | 'data' | 'data-cr' | 'data-lf' | 'trailer-line' | 'done';

function malformed(why: string): S3Error {
  return new S3Error('IncompleteBody', `the aws-chunked body is malformed: ${why}`);
}

export class AwsChunkedDecoder extends Transform {
  private state: State = 'size-line';
  private readonly lineParts: Buffer[] = [];
  private lineBytes = 0;
  private remainingBytes = 0;
  private chunkBytes = 0;
  private chunkHash: Hash | undefined;
  private chunkSignatureText = '';
  private previousSignature: string;
  private readonly trailers = new Map<string, string>();
  private canonicalTrailers = '';
  private trailerSignatureText: string | undefined;
  private chunkCount = 0;
  /** The sink's verdict once the trailers ended (awaited before this stream takes more or ends). */
  private verdict: Promise<void> | void = undefined;

  constructor(private readonly options: AwsChunkedOptions) {
    super();
    this.previousSignature = options.signing?.seedSignature ?? '';
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    try {
      this.consume(chunk);
    } catch (err) {
      // A verdict reached before the error (bytes after the end) is not needed any more.
      if (this.verdict instanceof Promise) this.verdict.catch(() => undefined);
      callback(err as Error);
      return;
    }
    const waiting = this.verdict ?? this.options.verifier.whenDrained?.();
    this.verdict = undefined;
    if (waiting === undefined) callback();
    else waiting.then(() => callback(), callback);
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    if (this.state !== 'done') this.options.verifier.abandon?.();
    callback(err);
  }

  override _flush(callback: TransformCallback): void {
    if (this.state === 'done') callback();
    else callback(new S3Error('IncompleteBody', `the aws-chunked body ended before its final chunk (after ${this.chunkCount} chunks${this.state === 'data' ? `, ${this.remainingBytes} bytes short of the current one` : ''})`));
  }

  private consume(input: Buffer): void {
    let pos = 0;
    while (pos < input.length) {
      switch (this.state) {
        case 'size-line':
        case 'trailer-line': {
          const end = input.indexOf(LF, pos);
          const piece = input.subarray(pos, end < 0 ? input.length : end + 1);
          this.lineBytes += piece.length;
          if (this.lineBytes > MAX_CHUNK_LINE_BYTES) {
            throw malformed(`a ${this.state === 'size-line' ? 'chunk header' : 'trailer'} line is longer than ${MAX_CHUNK_LINE_BYTES} bytes (a missing CRLF?)`);
          }
          this.lineParts.push(piece);
          pos += piece.length;
          if (end < 0) break;
          const line = Buffer.concat(this.lineParts);
          this.lineParts.length = 0;
          this.lineBytes = 0;
          if (line.length < 2 || line[line.length - 2] !== CR) throw malformed('a line must end with CRLF, not a bare LF');
          const text = line.subarray(0, line.length - 2).toString('latin1');
          if (this.state === 'size-line') this.startChunk(text);
          else this.trailerLine(text);
          break;
        }
        case 'data': {
          const take = Math.min(this.remainingBytes, input.length - pos);
          const data = input.subarray(pos, pos + take);
          this.options.verifier.update(data);
          this.chunkHash?.update(data);
          this.push(data);
          this.remainingBytes -= take;
          pos += take;
          if (this.remainingBytes === 0) this.state = 'data-cr';
          break;
        }
        case 'data-cr':
        case 'data-lf': {
          const expected = this.state === 'data-cr' ? CR : LF;
          if (input[pos] !== expected) throw malformed(`a chunk of ${this.chunkBytes} bytes must be followed by CRLF (its size does not match its data)`);
          pos++;
          if (this.state === 'data-cr') this.state = 'data-lf';
          else {
            this.endChunk(this.chunkHash?.digest('hex') ?? '');
            this.state = 'size-line';
          }
          break;
        }
        case 'done':
          throw malformed(`${input.length - pos} bytes follow the end of the body`);
      }
    }
  }

  private startChunk(line: string): void {
    const m = /^([0-9a-fA-F]{1,16})(?:;(.*))?$/.exec(line);
    if (!m) throw malformed(`'${line.slice(0, 80)}' is not a chunk size in hex`);
    const size = parseInt(m[1] as string, 16);
    if (!(size <= MAX_CHUNK_BYTES)) throw malformed(`a chunk of ${m[1]} (hex) bytes is larger than ${MAX_CHUNK_BYTES}`);
    const extension = m[2];
    if (this.options.signing !== undefined) {
      const sig = extension === undefined ? undefined : /^chunk-signature=([0-9a-f]{64})$/.exec(extension);
      if (!sig) throw malformed(`chunk ${this.chunkCount + 1} has no ';chunk-signature=<64 hex digits>' (x-amz-content-sha256 says the chunks are signed)`);
      this.chunkSignatureText = sig[1] as string;
    } else if (extension !== undefined) {
      throw malformed(`unexpected chunk extension ';${extension.slice(0, 80)}' (x-amz-content-sha256 says the chunks are not signed)`);
    }
    this.chunkCount++;
    this.chunkBytes = size;
    if (size === 0) {
      this.endChunk(EMPTY_SHA256_HEX);
      this.state = 'trailer-line';
      return;
    }
    this.remainingBytes = size;
    this.chunkHash = this.options.signing === undefined ? undefined : createHash('sha256');
    this.state = 'data';
  }

  private endChunk(sha256HexOfData: string): void {
    const signing = this.options.signing;
    if (signing === undefined) return;
    const expected = chunkSignature(signing, this.previousSignature, sha256HexOfData);
    if (!timingSafeEqual(Buffer.from(expected), Buffer.from(this.chunkSignatureText))) {
      throw new S3Error('SignatureDoesNotMatch', `the signature of chunk ${this.chunkCount} (${this.chunkBytes} bytes) does not match its data`);
    }
    this.previousSignature = expected;
  }

  private trailerLine(line: string): void {
    if (line === '') {
      this.finishTrailers();
      return;
    }
    if (!this.options.trailers) throw malformed('trailer lines follow the final chunk, but x-amz-content-sha256 names no -TRAILER mode');
    if (this.trailerSignatureText !== undefined) throw malformed(`${TRAILER_SIGNATURE} must be the last trailer`);
    const colon = line.indexOf(':');
    if (colon <= 0) throw malformed(`the trailer '${line.slice(0, 80)}' is not name:value`);
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    if (name === TRAILER_SIGNATURE && this.options.signing !== undefined) {
      this.trailerSignatureText = value;
      return;
    }
    if (this.trailers.has(name)) throw malformed(`the trailer ${name} appears twice`);
    if (this.trailers.size >= MAX_TRAILERS) throw malformed(`more than ${MAX_TRAILERS} trailers`);
    this.trailers.set(name, value);
    this.canonicalTrailers += `${name}:${value}\n`;
  }

  private finishTrailers(): void {
    const signing = this.options.signing;
    if (signing !== undefined && this.options.trailers) {
      if (this.trailerSignatureText === undefined) throw malformed(`the trailers have no ${TRAILER_SIGNATURE} (x-amz-content-sha256 says they are signed)`);
      const expected = trailerSignature(signing, this.previousSignature, this.canonicalTrailers);
      if (!/^[0-9a-f]{64}$/.test(this.trailerSignatureText) || !timingSafeEqual(Buffer.from(expected), Buffer.from(this.trailerSignatureText))) {
        throw new S3Error('SignatureDoesNotMatch', 'the trailer signature does not match the trailers');
      }
    }
    this.verdict = this.options.verifier.finish(this.trailers);
    this.state = 'done';
  }
}
