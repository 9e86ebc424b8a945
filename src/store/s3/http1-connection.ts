/**
 * One kept-alive HTTP/1.1 connection that reads a response body straight into the caller's array.
 *
 * Why not Node's HTTP client: it allocates a new buffer for every socket read (64 KiB each), so a
 * GiB of ranged GETs is 16k buffers, a copy out of each, and full GCs (about 1.3 CPU s per GiB for
 * a bare client). Here the socket is opened with `onread`: the head of a response is read into one
 * scratch array the connection keeps, and a 2xx body with a Content-Length that fits the caller's
 * array is read by the kernel straight into that array, where it is wanted (no copy, no garbage).
 * Every other body (errors, chunked, a server that ignored Range) is collected in arrays of its own.
 *
 * One exchange at a time; the request is sent already signed (the SDK's handler chain signs it).
 * A response that breaks off is an error here, never data: a short body rejects with
 * TruncatedBodyError, a connection lost before the answer with ECONNRESET (both retried by the
 * store's retry loop), an aborted exchange destroys the socket at once (nothing more is written
 * into the caller's array).
 */
import { connect, type Socket } from 'node:net';
import { TruncatedBodyError } from './failure.js';

/** The scratch array a connection reads response heads (and collected bodies) into. */
const SCRATCH_BYTES = 64 * 1024;
/** A response head larger than this is not an S3 server's answer. */
const HEAD_BYTES_MAX = 64 * 1024;
const HEAD_END = Buffer.from('\r\n\r\n');
const CRLF = Buffer.from('\r\n');

/** What one exchange answered. `body` is undefined when the body was written into the caller's array. */
export interface Http1Response {
  readonly statusCode: number;
  readonly reason: string;
  /** Lower-case names; a repeated header's values joined with ', '. */
  readonly headers: Record<string, string>;
  readonly body: Buffer | undefined;
  /** Bytes written into the caller's array (0 when `body` is set). */
  readonly intoBytes: number;
}

/** An error with a Node-style code, so the retry loop sorts it as a connection failure. */
function connectionError(message: string, code: string, cause?: unknown): Error {
  return Object.assign(new Error(message, cause === undefined ? undefined : { cause }), { code });
}

function abortError(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  return Object.assign(new Error(`the request was aborted${reason instanceof Error ? `: ${reason.message}` : ''}`), { name: 'AbortError' });
}

interface Exchange {
  readonly into: Uint8Array | undefined;
  readonly resolve: (response: Http1Response) => void;
  readonly reject: (err: unknown) => void;
  readonly signal: AbortSignal | undefined;
  readonly onAbort: () => void;
  /** Head bytes gathered so far (a head that spans several reads). */
  headParts: Buffer[];
  head: { statusCode: number; reason: string; headers: Record<string, string>; keepAlive: boolean } | undefined;
  /** 'into': Content-Length bytes into `into`; 'length': collect Content-Length bytes; 'chunked'; 'close': until the server closes. */
  mode: 'into' | 'length' | 'chunked' | 'close' | undefined;
  expectedBytes: number;
  receivedBytes: number;
  collected: Buffer[];
  chunked: ChunkedDecoder | undefined;
}

/** Decodes a chunked body incrementally: `push` answers true once the last chunk and trailers are in. */
class ChunkedDecoder {
  private pending = Buffer.alloc(0);
  private remaining = 0;
  private state: 'size' | 'data' | 'data-end' | 'trailer' = 'size';
  readonly parts: Buffer[] = [];

  push(bytes: Buffer): boolean {
    let buf = this.pending.length === 0 ? bytes : Buffer.concat([this.pending, bytes]);
    for (;;) {
      if (this.state === 'data') {
        const take = Math.min(this.remaining, buf.length);
        if (take > 0) this.parts.push(Buffer.from(buf.subarray(0, take)));
        this.remaining -= take;
        buf = buf.subarray(take);
        if (this.remaining > 0) break;
        this.state = 'data-end';
        continue;
      }
      const eol = buf.indexOf(CRLF);
      if (eol < 0) break;
      const line = buf.subarray(0, eol).toString('latin1');
      buf = buf.subarray(eol + 2);
      if (this.state === 'data-end') {
        if (line !== '') throw connectionError('chunked body: a chunk did not end with CRLF', 'HPE_INVALID_CHUNK_SIZE');
        this.state = 'size';
      } else if (this.state === 'size') {
        const size = Number.parseInt(line.split(';')[0]!.trim(), 16);
        if (!Number.isSafeInteger(size) || size < 0) throw connectionError(`chunked body: bad chunk size ${JSON.stringify(line)}`, 'HPE_INVALID_CHUNK_SIZE');
        this.remaining = size;
        this.state = size === 0 ? 'trailer' : 'data';
      } else if (line === '') {
        this.pending = Buffer.alloc(0);
        return true; // the empty line after the trailers
      }
    }
    this.pending = Buffer.from(buf);
    return false;
  }
}

function parseHead(text: string): { statusCode: number; reason: string; headers: Record<string, string>; keepAlive: boolean } {
  const lines = text.split('\r\n');
  const status = /^HTTP\/1\.([01]) (\d{3})(?: (.*))?$/.exec(lines[0] ?? '');
  if (status === null) throw connectionError(`not an HTTP/1.x status line: ${JSON.stringify((lines[0] ?? '').slice(0, 80))}`, 'HPE_INVALID_CONSTANT');
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`;
  }
  const connection = (headers.connection ?? '').toLowerCase();
  const keepAlive = status[1] === '1' ? !connection.includes('close') : connection.includes('keep-alive');
  return { statusCode: Number(status[2]), reason: status[3] ?? '', headers, keepAlive };
}

export class Http1Connection {
  private readonly socket: Socket;
  private readonly scratch = new Uint8Array(SCRATCH_BYTES);
  private exchange: Exchange | undefined;
  private connected = false;
  /** The server ended its side, or the socket closed: no request may start on it. */
  private closed = false;
  /** Called once the connection can take another request (its last response was read whole). */
  onIdle: ((connection: Http1Connection) => void) | undefined;
  /** Called once, when the socket closed (idle connections leave the pool). */
  onClose: ((connection: Http1Connection) => void) | undefined;

  constructor(host: string, port: number, connectTimeoutMs: number) {
    this.socket = connect({
      host,
      port,
      noDelay: true,
      onread: { buffer: () => this.readTarget(), callback: (bytes: number, buffer: Uint8Array) => this.onRead(bytes, buffer) },
    });
    const timer = setTimeout(() => this.socket.destroy(connectionError(`no TCP connection to ${host}:${port} within ${connectTimeoutMs} ms`, 'ETIMEDOUT')), connectTimeoutMs);
    this.socket.once('connect', () => {
      this.connected = true;
      clearTimeout(timer);
    });
    this.socket.on('error', (err) => this.fail(err));
    this.socket.on('end', () => {
      this.closed = true;
      this.fail(undefined);
    });
    this.socket.once('close', () => {
      clearTimeout(timer);
      this.closed = true;
      this.fail(undefined);
      this.onClose?.(this);
    });
  }

  /** Whether the socket can carry a request (an idle kept-alive socket the server has not closed). */
  get usable(): boolean {
    return !this.closed && this.exchange === undefined && !this.socket.destroyed;
  }

  destroy(): void {
    this.socket.destroy();
  }

  /**
   * Sends `requestHead` (the request line and headers, CRLF-terminated, no body) and reads the
   * response. A 2xx body with a Content-Length of at most `into.length` is written into `into`.
   */
  request(requestHead: string, into: Uint8Array | undefined, signal: AbortSignal | undefined): Promise<Http1Response> {
    if (!this.usable) return Promise.reject(connectionError('the connection is closed', 'ECONNRESET'));
    if (signal?.aborted) return Promise.reject(abortError(signal));
    return new Promise<Http1Response>((resolve, reject) => {
      const onAbort = (): void => {
        this.fail(abortError(signal!));
        this.socket.destroy();
      };
      this.exchange = { into, resolve, reject, signal, onAbort, headParts: [], head: undefined, mode: undefined, expectedBytes: 0, receivedBytes: 0, collected: [], chunked: undefined };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.socket.ref();
      this.socket.write(requestHead, 'latin1');
    });
  }

  /** Where the next socket read goes: the rest of the caller's array while its body comes, else the scratch array. */
  private readTarget(): Uint8Array {
    const exchange = this.exchange;
    if (exchange?.mode === 'into') return exchange.into!.subarray(exchange.receivedBytes, exchange.expectedBytes);
    return this.scratch;
  }

  /** The socket's read callback; always true (keep reading: every byte has a place). */
  private onRead(bytes: number, buffer: Uint8Array): boolean {
    const exchange = this.exchange;
    if (exchange === undefined) {
      // Bytes nobody asked for: the server is confused; this connection cannot be trusted.
      this.socket.destroy();
      return true;
    }
    try {
      if (exchange.mode === 'into') {
        exchange.receivedBytes += bytes; // already where it belongs
        if (exchange.receivedBytes === exchange.expectedBytes) this.finish(exchange);
      } else {
        this.consume(exchange, Buffer.from(buffer.buffer, buffer.byteOffset, bytes));
      }
    } catch (err) {
      this.fail(err);
      this.socket.destroy();
    }
    return true;
  }

  /** Bytes read into the scratch array: the head, then (when not read into the caller's array) the body. */
  private consume(exchange: Exchange, bytes: Buffer): void {
    let rest = bytes;
    if (exchange.head === undefined) {
      exchange.headParts.push(Buffer.from(rest)); // scratch is reused: keep a copy
      const gathered = exchange.headParts.length === 1 ? exchange.headParts[0]! : Buffer.concat(exchange.headParts);
      exchange.headParts = [gathered];
      const end = gathered.indexOf(HEAD_END);
      if (end < 0) {
        if (gathered.length > HEAD_BYTES_MAX) throw connectionError(`the response head is longer than ${HEAD_BYTES_MAX} bytes`, 'HPE_HEADER_OVERFLOW');
        return;
      }
      exchange.head = parseHead(gathered.subarray(0, end).toString('latin1'));
      exchange.headParts = [];
      rest = gathered.subarray(end + HEAD_END.length);
      this.startBody(exchange);
      if (exchange.mode === undefined) {
        if (rest.length > 0) throw connectionError('bytes after a response without a body', 'HPE_INVALID_CONSTANT');
        this.finish(exchange);
        return;
      }
    }
    if (rest.length === 0) return;
    switch (exchange.mode) {
      case 'into':
      case 'length': {
        if (exchange.receivedBytes + rest.length > exchange.expectedBytes) throw connectionError('the response body is longer than its Content-Length', 'HPE_INVALID_CONTENT_LENGTH');
        if (exchange.mode === 'into') exchange.into!.set(rest, exchange.receivedBytes);
        else exchange.collected.push(Buffer.from(rest));
        exchange.receivedBytes += rest.length;
        if (exchange.receivedBytes === exchange.expectedBytes) this.finish(exchange);
        return;
      }
      case 'chunked':
        if (exchange.chunked!.push(rest)) this.finish(exchange);
        return;
      case 'close':
        exchange.collected.push(Buffer.from(rest));
        exchange.receivedBytes += rest.length;
        return;
      default:
        throw connectionError('bytes after a response without a body', 'HPE_INVALID_CONSTANT');
    }
  }

  private startBody(exchange: Exchange): void {
    const { statusCode, headers } = exchange.head!;
    if (statusCode === 204 || statusCode === 304 || (statusCode >= 100 && statusCode < 200)) return;
    const lengthHeader = headers['content-length'];
    if ((headers['transfer-encoding'] ?? '').toLowerCase().includes('chunked')) {
      exchange.mode = 'chunked';
      exchange.chunked = new ChunkedDecoder();
      return;
    }
    if (lengthHeader === undefined) {
      exchange.mode = 'close';
      return;
    }
    const length = Number(lengthHeader);
    if (!Number.isSafeInteger(length) || length < 0) throw connectionError(`bad Content-Length ${JSON.stringify(lengthHeader)}`, 'HPE_INVALID_CONTENT_LENGTH');
    exchange.expectedBytes = length;
    if (length === 0) return;
    const fits = exchange.into !== undefined && statusCode >= 200 && statusCode < 300 && length <= exchange.into.length;
    exchange.mode = fits ? 'into' : 'length';
  }

  private finish(exchange: Exchange): void {
    if (this.exchange !== exchange) return;
    this.exchange = undefined;
    exchange.signal?.removeEventListener('abort', exchange.onAbort);
    const head = exchange.head!;
    const into = exchange.mode === 'into';
    const parts = exchange.mode === 'chunked' ? exchange.chunked!.parts : exchange.collected;
    exchange.resolve({
      statusCode: head.statusCode,
      reason: head.reason,
      headers: head.headers,
      body: into ? undefined : Buffer.concat(parts),
      intoBytes: into ? exchange.receivedBytes : 0,
    });
    if (head.keepAlive && exchange.mode !== 'close') {
      // An idle connection does not keep the process alive (as Node's agent does with its free sockets).
      this.socket.unref();
      this.onIdle?.(this);
    } else {
      this.socket.destroy();
    }
  }

  /** Ends the exchange in flight: with `err`, or (undefined) as the server closing the connection. */
  private fail(err: unknown): void {
    const exchange = this.exchange;
    if (exchange === undefined) return;
    if (err === undefined && exchange.mode === 'close') {
      this.finish(exchange); // a body delimited by the connection's end
      return;
    }
    this.exchange = undefined;
    exchange.signal?.removeEventListener('abort', exchange.onAbort);
    if (err !== undefined) exchange.reject(err);
    else if (exchange.head === undefined) exchange.reject(connectionError(this.connected ? 'socket hang up: the server closed the connection before answering' : 'socket hang up', 'ECONNRESET'));
    else exchange.reject(new TruncatedBodyError(`the response body broke off after ${exchange.receivedBytes} of ${exchange.expectedBytes} bytes`));
    this.socket.destroy();
  }
}
