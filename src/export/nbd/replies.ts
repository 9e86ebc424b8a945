/**
 * NbdReplies: the output side of an NBD connection, the base of NbdTransmission and Connection
 * (transmission.ts, connection.ts). It encodes simple and structured replies, batches everything
 * sent in one event-loop turn into one writev (cork, uncork on setImmediate), and hands out reply
 * buffers: pooled and aligned for large data, plain allocations otherwise (buffer-pool.ts).
 *
 * One object per connection carries all three layers: a subclass rather than a member object, so
 * the request path calls these methods on `this` with no extra indirection per request.
 */
import type net from 'node:net';
import { BufferPool, POOL_MIN_BYTES } from '../../sys/buffer-pool.js';
import * as P from './protocol.js';

/** A run of a READ reply: data to send, or a hole (structured replies). */
export interface ReadRun {
  offset: number;
  lengthBytes: number;
  zero: boolean;
}

/** A reply header of some bytes followed by its data: `out` holds both, `data` is the tail. */
export interface ReplyBuffer {
  out: Buffer;
  data: Buffer;
  /** Returns a pooled buffer once its bytes are written; undefined for a plain allocation. */
  release: (() => void) | undefined;
}

export abstract class NbdReplies {
  /** The socket replies go to: the client's, or the TLSSocket over it after NBD_OPT_STARTTLS. */
  protected socket: net.Socket;
  /** The connection is gone: replies are dropped (their buffers released). */
  protected isClosed = false;
  /** NBD_OPT_STRUCTURED_REPLY negotiated: READ and BLOCK_STATUS answer in chunks. */
  protected structured = false;
  /** The socket is corked until the end of this event-loop turn (or until nothing is pending). */
  protected corked = false;

  constructor(
    socket: net.Socket,
    private readonly bufferPool: BufferPool,
  ) {
    this.socket = socket;
  }

  protected replyOk(h: P.RequestHeader): void {
    this.send(P.encodeSimpleReply(0, h.cookieHi, h.cookieLo));
  }

  protected replyError(h: P.RequestHeader, errno: number, message: string): void {
    if (this.structured && (h.type === P.NBD_CMD_READ || h.type === P.NBD_CMD_BLOCK_STATUS)) {
      this.send(P.encodeErrorChunk(P.NBD_REPLY_FLAG_DONE, h.cookieHi, h.cookieLo, errno, message));
    } else {
      this.send(P.encodeSimpleReply(errno, h.cookieHi, h.cookieLo));
    }
  }

  /**
   * A structured READ reply: `runs` cover the request in order and `data` holds the request's
   * bytes (empty when every run is a hole), with OFFSET_DATA_HEADER_BYTES of headroom in `out`.
   */
  protected replyStructuredRead(h: P.RequestHeader, runs: readonly ReadRun[], buffer: ReplyBuffer): void {
    const { out, data, release } = buffer;
    const first = runs[0];
    if (runs.length === 1 && first !== undefined && !first.zero) {
      this.send(P.encodeOffsetDataHeader(out, P.NBD_REPLY_FLAG_DONE, h.cookieHi, h.cookieLo, h.offset, h.lengthBytes), release);
      return;
    }
    runs.forEach((r, i) => {
      const last = i === runs.length - 1;
      const flags = last ? P.NBD_REPLY_FLAG_DONE : 0;
      // Writes complete in order: the buffer is free once the last chunk is out.
      const onWritten = last ? release : undefined;
      if (r.zero) {
        this.send(P.encodeOffsetHole(flags, h.cookieHi, h.cookieLo, r.offset, r.lengthBytes), onWritten);
      } else {
        const at = r.offset - h.offset;
        const hdr = Buffer.allocUnsafe(P.OFFSET_DATA_HEADER_BYTES);
        this.send(P.encodeOffsetDataHeader(hdr, flags, h.cookieHi, h.cookieLo, r.offset, r.lengthBytes));
        this.send(data.subarray(at, at + r.lengthBytes), onWritten);
      }
    });
  }

  /**
   * A buffer for a reply header of headerBytes followed by dataBytes of data: pooled and aligned
   * for large data (release it once written), a plain allocation otherwise.
   */
  protected replyBuffer(headerBytes: number, dataBytes: number): ReplyBuffer {
    if (dataBytes >= POOL_MIN_BYTES) {
      const pooled = this.bufferPool.acquire(dataBytes);
      return { out: pooled.withHeader(headerBytes), data: pooled.data, release: pooled.release };
    }
    const out = Buffer.allocUnsafe(headerBytes + dataBytes);
    return { out, data: out.subarray(headerBytes), release: undefined };
  }

  /**
   * Queues bytes for the socket; everything sent in one event-loop turn goes out in one writev.
   * onWritten (if any) runs once the bytes are out of our hands, or right away when they are
   * dropped because the connection is gone (it returns pooled buffers).
   */
  protected send(b: Buffer, onWritten?: () => void): void {
    if (this.isClosed || this.socket.destroyed || this.socket.writableEnded) {
      onWritten?.();
      return;
    }
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      setImmediate(this.uncorkLater);
    }
    if (onWritten === undefined) this.socket.write(b);
    else this.socket.write(b, () => onWritten());
  }

  private readonly uncorkLater = (): void => this.uncork();

  protected uncork(): void {
    if (!this.corked) return;
    this.corked = false;
    if (!this.socket.destroyed) this.socket.uncork();
  }
}
