/**
 * The back-end request channel of one vhost-user connection: the socket the front-end hands over
 * with SET_BACKEND_REQ_FD (protocol feature BACKEND_REQ), on which the back-end sends requests of
 * its own. Here only CONFIG_CHANGE_MSG: the config space changed (the volume grew), so the
 * front-end reads it again (GET_CONFIG on the main socket) and, when the capacity differs from what
 * it holds, raises the guest's config interrupt (QEMU's vhost-user-blk does both).
 *
 * The front-end is not trusted with it: the descriptor may not be a socket, its other end may be
 * closed, or never read. None of that may block the event loop or reach the connection's I/O: a
 * send never waits for buffer space, and the first failure is logged once and closes the channel
 * (from then on the guest learns of a change as without a channel: when its front-end next reads
 * the config).
 *
 * With REPLY_ACK negotiated a request asks for a reply (NEED_REPLY), so that a front-end that could
 * not apply the change is logged. Replies are read as they arrive and never waited for: QEMU answers
 * only after its GET_CONFIG on the main socket has been answered, which must stay free meanwhile.
 */
import { UnixStream } from '../../sys/unix-socket.js';
import type { ExportLog, ExportLogLevel } from '../log.js';
import * as M from './messages.js';
import { describeError } from './protocol-errors.js';

export interface BackendChannelOptions {
  /** REPLY_ACK was negotiated: requests carry NEED_REPLY and the replies are read. */
  replyAck: boolean;
  log: ExportLog;
}

export class BackendChannel {
  private readonly stream: UnixStream;
  private readonly opts: BackendChannelOptions;
  /** Bytes of replies received and not yet complete (a reply may arrive in pieces). */
  private received = new Uint8Array(0);
  private repliesOwed = 0;
  private watching = false;

  /** Takes ownership of fd (closed by close(), or at the first failure). */
  constructor(fd: number, opts: BackendChannelOptions) {
    this.stream = new UnixStream(fd);
    this.opts = opts;
  }

  get isOpen(): boolean {
    return !this.stream.isClosed;
  }

  /**
   * Sends CONFIG_CHANGE_MSG without waiting. Returns false when it could not be sent (the channel
   * is then closed and the reason logged once).
   */
  notifyConfigChange(): boolean {
    if (!this.isOpen) return false;
    const flags = M.VHOST_USER_VERSION | (this.opts.replyAck ? M.FLAG_NEED_REPLY : 0);
    try {
      // 0 ms: a front-end that does not read its channel must not stall the event loop.
      this.stream.sendMessage(M.encodeMessage(M.BackendRequest.CONFIG_CHANGE_MSG, flags), [], 0);
      if (this.opts.replyAck) {
        this.repliesOwed++;
        if (!this.watching) {
          this.watching = true;
          this.stream.onReadable(() => this.readReplies());
        }
      }
    } catch (err) {
      this.fail(`cannot send CONFIG_CHANGE_MSG: ${describeError(err)}`, 'warn');
      return false;
    }
    return true;
  }

  /** Idempotent. */
  close(): void {
    this.stream.close();
  }

  private readReplies(): void {
    try {
      for (;;) {
        // No descriptor belongs in a reply: one attached makes recvMessage throw (and close it).
        const r = this.stream.recvMessage(M.BACKEND_REPLY_BYTES, 0);
        if (r === 'again') return;
        if (r === 'eof') {
          this.fail('the front-end closed it', this.repliesOwed > 0 ? 'warn' : 'info');
          return;
        }
        const merged = new Uint8Array(this.received.length + r.data.length);
        merged.set(this.received);
        merged.set(r.data, this.received.length);
        this.received = merged;
        while (this.received.length >= M.BACKEND_REPLY_BYTES) {
          if (!this.takeReply(this.received.subarray(0, M.BACKEND_REPLY_BYTES))) return;
          this.received = this.received.slice(M.BACKEND_REPLY_BYTES);
        }
      }
    } catch (err) {
      this.fail(`cannot read it: ${describeError(err)}`, 'warn');
    }
  }

  /** One complete reply; false when it is not one we asked for (the channel is then closed). */
  private takeReply(bytes: Uint8Array): boolean {
    const h = M.decodeHeader(bytes);
    const wellFormed =
      h.request === M.BackendRequest.CONFIG_CHANGE_MSG &&
      (h.flags & M.FLAG_VERSION_MASK) === M.VHOST_USER_VERSION &&
      (h.flags & M.FLAG_REPLY) !== 0 &&
      h.sizeBytes === M.BACKEND_REPLY_BYTES - M.HEADER_BYTES;
    if (!wellFormed || this.repliesOwed === 0) {
      this.fail(`unexpected message from the front-end (${M.requestName(h.request)} flags 0x${h.flags.toString(16)} size ${h.sizeBytes})`, 'warn');
      return false;
    }
    this.repliesOwed--;
    const status = M.decodeU64(bytes.subarray(M.HEADER_BYTES));
    if (status !== 0n) this.opts.log(`the front-end could not apply a config change (status ${status})`, 'warn');
    return true;
  }

  private fail(reason: string, level: ExportLogLevel): void {
    if (!this.isOpen) return;
    this.stream.close();
    this.opts.log(`back-end request channel closed: ${reason}; the guest learns of config changes (a grown volume) only when its front-end next reads the config`, level);
  }
}
