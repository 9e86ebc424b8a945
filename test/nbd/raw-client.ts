/** A minimal NBD client over a raw socket for protocol-level tests: it sends whatever bytes it is told. */
import net from 'node:net';
import * as P from '../../src/export/nbd/protocol.js';

export class RawClient {
  private buf = Buffer.alloc(0);
  private ended = false;
  private waiter: (() => void) | undefined;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.wake();
    });
    const end = (): void => {
      this.ended = true;
      this.wake();
    };
    socket.on('end', end);
    socket.on('close', end);
    socket.on('error', end);
  }

  /**
   * `allowHalfOpen`: the client's side stays open after the server's FIN until destroy(), as a
   * client that does not notice the FIN (an idle qemu reads nothing) keeps it.
   */
  static connect(socketPath: string, options: { allowHalfOpen?: boolean } = {}): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = net.createConnection({ path: socketPath, allowHalfOpen: options.allowHalfOpen ?? false }, () => resolve(new RawClient(s)));
      s.once('error', reject);
    });
  }

  static connectTcp(port: number): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = net.createConnection({ host: '127.0.0.1', port }, () => resolve(new RawClient(s)));
      s.once('error', reject);
    });
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  get closed(): boolean {
    return this.ended;
  }

  /** Exactly n bytes, or 'closed' when the server closed first, or 'timeout'. */
  async read(n: number, timeoutMs = 5000): Promise<Buffer | 'closed' | 'timeout'> {
    const deadline = Date.now() + timeoutMs;
    while (this.buf.length < n) {
      if (this.ended) return 'closed';
      const left = deadline - Date.now();
      if (left <= 0) return 'timeout';
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  async mustRead(n: number): Promise<Buffer> {
    const r = await this.read(n);
    if (typeof r === 'string') throw new Error(`expected ${n} bytes, got ${r}`);
    return r;
  }

  /** Resolves true once the server has closed the connection (reading and dropping any bytes). */
  async waitClosed(timeoutMs = 5000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.ended && Date.now() < deadline) {
      this.buf = Buffer.alloc(0);
      await this.read(1, deadline - Date.now());
    }
    return this.ended;
  }

  write(b: Uint8Array): void {
    if (!this.socket.destroyed) this.socket.write(b);
  }

  destroy(): void {
    this.socket.destroy();
  }

  // --- protocol helpers ---

  async greeting(): Promise<void> {
    const g = await this.mustRead(18);
    if (g.readBigUInt64BE(0) !== P.NBD_MAGIC || g.readBigUInt64BE(8) !== P.NBD_IHAVEOPT) throw new Error('bad greeting');
  }

  sendClientFlags(flags = P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES): void {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(flags >>> 0);
    this.write(b);
  }

  sendOption(option: number, data: Uint8Array = new Uint8Array(0), lengthBytes = data.length): void {
    const b = Buffer.alloc(16);
    b.writeBigUInt64BE(P.NBD_IHAVEOPT, 0);
    b.writeUInt32BE(option >>> 0, 8);
    b.writeUInt32BE(lengthBytes >>> 0, 12);
    this.write(Buffer.concat([b, data]));
  }

  /** One option reply: [option, type, data]. */
  async optionReply(): Promise<{ option: number; type: number; data: Buffer }> {
    const h = await this.mustRead(20);
    if (h.readBigUInt64BE(0) !== P.NBD_OPTION_REPLY_MAGIC) throw new Error('bad option reply magic');
    const len = h.readUInt32BE(16);
    return { option: h.readUInt32BE(8), type: h.readUInt32BE(12), data: len > 0 ? await this.mustRead(len) : Buffer.alloc(0) };
  }

  /** Replies up to and including the final one (ACK or an error). */
  async optionReplies(): Promise<{ option: number; type: number; data: Buffer }[]> {
    const out = [];
    for (;;) {
      const r = await this.optionReply();
      out.push(r);
      if (r.type === P.NBD_REP_ACK || (r.type & 0x80000000) !== 0) return out;
    }
  }

  static goData(name: string): Buffer {
    const n = Buffer.from(name);
    const b = Buffer.alloc(4 + n.length + 2);
    b.writeUInt32BE(n.length, 0);
    n.copy(b, 4);
    return b;
  }

  static metaData(name: string, queries: string[]): Buffer {
    const parts: Buffer[] = [];
    const n = Buffer.from(name);
    const head = Buffer.alloc(4);
    head.writeUInt32BE(n.length);
    parts.push(head, n);
    const cnt = Buffer.alloc(4);
    cnt.writeUInt32BE(queries.length);
    parts.push(cnt);
    for (const q of queries) {
      const qb = Buffer.from(q);
      const l = Buffer.alloc(4);
      l.writeUInt32BE(qb.length);
      parts.push(l, qb);
    }
    return Buffer.concat(parts);
  }

  /** Full negotiation to transmission: structured replies, base:allocation, GO. Returns the export size. */
  async negotiate(name: string, structured = true): Promise<{ sizeBytes: number; flags: number }> {
    await this.greeting();
    this.sendClientFlags();
    if (structured) {
      this.sendOption(P.NBD_OPT_STRUCTURED_REPLY);
      await this.optionReplies();
      this.sendOption(P.NBD_OPT_SET_META_CONTEXT, RawClient.metaData(name, [P.NBD_META_BASE_ALLOCATION]));
      await this.optionReplies();
    }
    this.sendOption(P.NBD_OPT_GO, RawClient.goData(name));
    const replies = await this.optionReplies();
    const last = replies[replies.length - 1];
    if (last?.type !== P.NBD_REP_ACK) throw new Error(`GO failed: 0x${last?.type.toString(16)}`);
    const info = replies.find((r) => r.type === P.NBD_REP_INFO && r.data.readUInt16BE(0) === P.NBD_INFO_EXPORT);
    if (!info) throw new Error('no NBD_INFO_EXPORT');
    return { sizeBytes: Number(info.data.readBigUInt64BE(2)), flags: info.data.readUInt16BE(10) };
  }

  request(type: number, cookie: number, offset: number, lengthBytes: number, flags = 0, payload?: Uint8Array): void {
    const h = P.encodeRequestHeader({ flags, type, cookieHi: 0, cookieLo: cookie, offset, lengthBytes });
    this.write(payload ? Buffer.concat([h, payload]) : h);
  }

  /**
   * Reads one reply (simple, or a structured reply up to its DONE chunk). Returns the cookie, the
   * error (0 if none) and, for reads, the data assembled from data/hole chunks.
   */
  async reply(readLength = 0, readOffset = 0): Promise<{ cookie: number; error: number; data?: Buffer; chunks: number[] }> {
    const magic = (await this.mustRead(4)).readUInt32BE(0);
    if (magic === P.NBD_SIMPLE_REPLY_MAGIC) {
      const rest = await this.mustRead(12);
      const error = rest.readUInt32BE(0);
      const cookie = rest.readUInt32BE(8);
      const data = error === 0 && readLength > 0 ? await this.mustRead(readLength) : undefined;
      return { cookie, error, ...(data ? { data } : {}), chunks: [] };
    }
    if (magic !== P.NBD_STRUCTURED_REPLY_MAGIC) throw new Error(`bad reply magic 0x${magic.toString(16)}`);
    let error = 0;
    let cookie = 0;
    const data = Buffer.alloc(readLength);
    const chunks: number[] = [];
    let first = true;
    for (;;) {
      const h = first ? Buffer.concat([Buffer.from([0x66, 0x8e, 0x33, 0xef]), await this.mustRead(16)]) : await this.mustRead(20);
      first = false;
      if (h.readUInt32BE(0) !== P.NBD_STRUCTURED_REPLY_MAGIC) throw new Error('bad chunk magic');
      const flags = h.readUInt16BE(4);
      const type = h.readUInt16BE(6);
      cookie = h.readUInt32BE(12);
      const len = h.readUInt32BE(16);
      const payload = len > 0 ? await this.mustRead(len) : Buffer.alloc(0);
      chunks.push(type);
      if (type === P.NBD_REPLY_TYPE_ERROR) error = payload.readUInt32BE(0);
      if (type === P.NBD_REPLY_TYPE_OFFSET_DATA || type === P.NBD_REPLY_TYPE_OFFSET_HOLE) {
        const off = Number(payload.readBigUInt64BE(0));
        if (type === P.NBD_REPLY_TYPE_OFFSET_DATA) payload.copy(data, off - readOffset, 8);
      }
      if ((flags & P.NBD_REPLY_FLAG_DONE) !== 0) break;
      // A different cookie's chunks may interleave; this helper is used with one request at a time.
    }
    return { cookie, error, ...(readLength > 0 ? { data } : {}), chunks };
  }
}
