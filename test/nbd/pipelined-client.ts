/**
 * An NBD client for tests that keeps many requests in flight on one connection (what qemu and
 * nbdkit clients do): negotiation through RawClient (structured replies), then every request gets
 * its own cookie and one reader matches reply chunks to cookies, in whatever order they come.
 * A request whose reply is an error rejects with NbdReplyError(errno); every request still waiting
 * when the server closes the connection rejects with NbdConnectionClosedError.
 */
import * as P from '../../src/export/nbd/protocol.js';
import { RawClient } from './raw-client.js';

export class NbdReplyError extends Error {
  constructor(
    readonly errno: number,
    what: string,
  ) {
    super(`${what}: NBD error ${errno}`);
    this.name = 'NbdReplyError';
  }
}

export class NbdConnectionClosedError extends Error {
  constructor() {
    super('the NBD server closed the connection');
    this.name = 'NbdConnectionClosedError';
  }
}

interface Pending {
  what: string;
  /** The read's buffer and offset (data and hole chunks fill it). */
  readBuffer?: Buffer;
  readOffset: number;
  errno: number;
  resolve: (data: Buffer | undefined) => void;
  reject: (err: Error) => void;
}

/** Reply chunk types with this bit set are errors (the NBD spec's NBD_REPLY_TYPE_IS_ERR). */
const REPLY_TYPE_ERROR_BIT = 1 << 15;

/** The reader waits this long per poll of RawClient; it polls again until the connection ends. */
const READ_POLL_MS = 60_000;

export class NbdPipelinedClient {
  private readonly pending = new Map<number, Pending>();
  private nextCookie = 1;
  private closed = false;
  readonly sizeBytes: number;
  private readonly reader: Promise<void>;

  private constructor(
    private readonly raw: RawClient,
    sizeBytes: number,
  ) {
    this.sizeBytes = sizeBytes;
    this.reader = this.readReplies();
  }

  /** Connects to a unix socket and selects `exportName` (rejects when the server refuses it). */
  static async connect(socketPath: string, exportName: string): Promise<NbdPipelinedClient> {
    const raw = await RawClient.connect(socketPath);
    try {
      const { sizeBytes } = await raw.negotiate(exportName, true);
      return new NbdPipelinedClient(raw, sizeBytes);
    } catch (err) {
      raw.destroy();
      throw err;
    }
  }

  async read(guestOffset: number, lengthBytes: number): Promise<Buffer> {
    const data = await this.send(P.NBD_CMD_READ, guestOffset, lengthBytes, `read ${guestOffset}+${lengthBytes}`, Buffer.alloc(lengthBytes));
    return data!;
  }

  async write(guestOffset: number, data: Uint8Array, flags = 0): Promise<void> {
    await this.send(P.NBD_CMD_WRITE, guestOffset, data.length, `write ${guestOffset}+${data.length}`, undefined, data, flags);
  }

  async writeZeroes(guestOffset: number, lengthBytes: number, flags = 0): Promise<void> {
    await this.send(P.NBD_CMD_WRITE_ZEROES, guestOffset, lengthBytes, `write zeroes ${guestOffset}+${lengthBytes}`, undefined, undefined, flags);
  }

  async flush(): Promise<void> {
    await this.send(P.NBD_CMD_FLUSH, 0, 0, 'flush');
  }

  /** NBD_CMD_DISC, then waits for the server to close the connection. */
  async disconnect(): Promise<void> {
    if (!this.closed) this.raw.request(P.NBD_CMD_DISC, 0, 0, 0);
    await this.reader;
    this.raw.destroy();
  }

  /** Drops the connection without DISC. */
  destroy(): void {
    this.raw.destroy();
  }

  private send(type: number, guestOffset: number, lengthBytes: number, what: string, readBuffer?: Buffer, payload?: Uint8Array, flags = 0): Promise<Buffer | undefined> {
    if (this.closed) return Promise.reject(new NbdConnectionClosedError());
    const cookie = this.nextCookie++;
    return new Promise((resolve, reject) => {
      this.pending.set(cookie, { what, readOffset: guestOffset, errno: 0, resolve, reject, ...(readBuffer ? { readBuffer } : {}) });
      this.raw.request(type, cookie, guestOffset, lengthBytes, flags, payload);
    });
  }

  private async mustRead(n: number): Promise<Buffer | undefined> {
    for (;;) {
      const r = await this.raw.read(n, READ_POLL_MS);
      if (r === 'closed') return undefined;
      if (r !== 'timeout') return r;
    }
  }

  /**
   * Reads replies until the connection ends; settles each request at its simple reply or at its
   * structured reply's DONE chunk (a server may answer commands without data either way).
   */
  private async readReplies(): Promise<void> {
    try {
      for (;;) {
        const magicBytes = await this.mustRead(4);
        if (magicBytes === undefined) break;
        const magic = magicBytes.readUInt32BE(0);
        const settled = magic === P.NBD_SIMPLE_REPLY_MAGIC ? await this.takeSimpleReply() : magic === P.NBD_STRUCTURED_REPLY_MAGIC ? await this.takeChunk() : new Error(`bad reply magic 0x${magic.toString(16)}`);
        if (settled instanceof Error) throw settled;
        if (settled === 'closed') break;
      }
    } catch (err) {
      this.raw.destroy();
      this.failAll(err instanceof Error ? err : new Error(String(err)));
      return;
    }
    this.failAll(new NbdConnectionClosedError());
  }

  private take(cookie: number): Pending | Error {
    return this.pending.get(cookie) ?? new Error(`reply for unknown cookie ${cookie}`);
  }

  private settle(cookie: number, p: Pending): void {
    this.pending.delete(cookie);
    if (p.errno !== 0) p.reject(new NbdReplyError(p.errno, p.what));
    else p.resolve(p.readBuffer);
  }

  /** The rest of a simple reply: u32 error, u64 cookie, then a read's data when there is no error. */
  private async takeSimpleReply(): Promise<'closed' | Error | undefined> {
    const rest = await this.mustRead(12);
    if (rest === undefined) return 'closed';
    const cookie = rest.readUInt32BE(8);
    const p = this.take(cookie);
    if (p instanceof Error) return p;
    p.errno = rest.readUInt32BE(0);
    if (p.errno === 0 && p.readBuffer !== undefined) {
      const data = await this.mustRead(p.readBuffer.length);
      if (data === undefined) return 'closed';
      data.copy(p.readBuffer);
    }
    this.settle(cookie, p);
    return undefined;
  }

  /** The rest of a structured reply chunk: flags, type, cookie, length, payload. */
  private async takeChunk(): Promise<'closed' | Error | undefined> {
    const header = await this.mustRead(P.NBD_STRUCTURED_HEADER_BYTES - 4);
    if (header === undefined) return 'closed';
    const flags = header.readUInt16BE(0);
    const type = header.readUInt16BE(2);
    const cookie = header.readUInt32BE(8);
    const payloadBytes = header.readUInt32BE(12);
    const payload = payloadBytes > 0 ? await this.mustRead(payloadBytes) : Buffer.alloc(0);
    if (payload === undefined) return 'closed';
    const p = this.take(cookie);
    if (p instanceof Error) return p;
    this.takeChunkPayload(p, type, payload);
    if ((flags & P.NBD_REPLY_FLAG_DONE) !== 0) this.settle(cookie, p);
    return undefined;
  }

  private takeChunkPayload(p: Pending, type: number, payload: Buffer): void {
    if ((type & REPLY_TYPE_ERROR_BIT) !== 0) {
      p.errno = payload.readUInt32BE(0);
    } else if (type === P.NBD_REPLY_TYPE_OFFSET_DATA && p.readBuffer !== undefined) {
      payload.copy(p.readBuffer, Number(payload.readBigUInt64BE(0)) - p.readOffset, 8);
    } else if (type === P.NBD_REPLY_TYPE_OFFSET_HOLE && p.readBuffer !== undefined) {
      const at = Number(payload.readBigUInt64BE(0)) - p.readOffset;
      p.readBuffer.fill(0, at, at + payload.readUInt32BE(8));
    }
  }

  private failAll(err: Error): void {
    this.closed = true;
    const waiting = [...this.pending.values()];
    this.pending.clear();
    for (const p of waiting) p.reject(err);
  }
}
