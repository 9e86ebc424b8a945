/**
 * NbdTransmission: the transmission phase of an NBD connection, between NbdReplies (replies.ts)
 * below and Connection (connection.ts, negotiation and the socket's life) above. It parses
 * requests (header, then the WRITE payload: large ones straight into a pooled buffer), validates
 * each against the export before the device sees it (so the device only gets in-range requests,
 * BlockDevice's contract), dispatches to the BlockDevice, bounds the bytes in flight (over the cap
 * the socket stops being read until replies drain), and busy-polls the socket of an idle
 * connection for its next request (idle-poll.ts).
 *
 * This is the latency-critical path (queue depth 1): no awaits, closures or allocations here that
 * a request does not need; the flag table is built once.
 */
import type net from 'node:net';
import { performance } from 'node:perf_hooks';
import type { BlockDevice, Extent } from '../../core/block-device.js';
import { isStorageError, type StorageErrorCode } from '../../core/errors.js';
import { RequestGate } from '../../core/request-gate.js';
import type { BufferPool, PooledBuffer } from '../../sys/buffer-pool.js';
import { POOL_MIN_BYTES } from '../../sys/buffer-pool.js';
import { DeviceErrorReport } from '../error-report.js';
import type { ExportLog } from '../log.js';
import { ByteQueue } from './byte-queue.js';
import type { IdlePoller } from './idle-poll.js';
import { PollWindow } from '../poll-window.js';
import * as P from './protocol.js';
import { NbdReplies, type ReadRun } from './replies.js';
import { readAvailable, socketFd, socketSys } from './socket-fd.js';

export interface NbdExportEntry {
  device: BlockDevice;
  readOnly: boolean;
  description?: string;
  /** Called for every request the device failed (the export counts them for its metrics). */
  onDeviceError?: () => void;
}

/** What a connection needs of its server (NbdServer). */
export interface NbdConnectionHost {
  readonly maxInFlightBytes: number;
  readonly maxPayloadBytes: number;
  readonly handshakeTimeoutMs: number;
  /** Busy-polls idle connections; undefined when turned off or unavailable on this platform. */
  readonly idlePoller: IdlePoller | undefined;
  readonly idlePollMaxUs: number;
  readonly bufferPool: BufferPool;
  /** The sockets of every other connection in transmission (watched while one connection polls). */
  pollFdsExcept(conn: NbdTransmission): number[];
}

/** The export a connection selected (NBD_OPT_GO or NBD_OPT_EXPORT_NAME). */
export interface ActiveExport {
  name: string;
  entry: NbdExportEntry;
  sizeBytes: number;
  readOnly: boolean;
  /** The device's capabilities.unallocatedReadsZero: 'unallocated' extents are holes. */
  unallocatedReadsZero: boolean;
}

/** Bound on one BLOCK_STATUS reply: range queried and descriptors returned. */
const BLOCK_STATUS_MAX_QUERY_BYTES = 1024 * 1024 * 1024;
const BLOCK_STATUS_MAX_DESCRIPTORS = 16384;
export const BASE_ALLOCATION_CONTEXT_ID = 1;

/** Command flags each command accepts (a table, not built per request: this is the hot path). */
const ALLOWED_FLAGS_SIMPLE: readonly (number | undefined)[] = allowedFlags(false);
const ALLOWED_FLAGS_STRUCTURED: readonly (number | undefined)[] = allowedFlags(true);

function allowedFlags(structured: boolean): (number | undefined)[] {
  const table: (number | undefined)[] = [];
  table[P.NBD_CMD_READ] = structured ? P.NBD_CMD_FLAG_DF : 0;
  table[P.NBD_CMD_WRITE] = P.NBD_CMD_FLAG_FUA;
  table[P.NBD_CMD_FLUSH] = 0;
  table[P.NBD_CMD_TRIM] = P.NBD_CMD_FLAG_FUA;
  table[P.NBD_CMD_CACHE] = 0;
  table[P.NBD_CMD_WRITE_ZEROES] = P.NBD_CMD_FLAG_FUA | P.NBD_CMD_FLAG_NO_HOLE | P.NBD_CMD_FLAG_FAST_ZERO;
  table[P.NBD_CMD_BLOCK_STATUS] = P.NBD_CMD_FLAG_REQ_ONE;
  return table;
}

/** StorageError codes -> NBD errors, the one mapping at this edge. */
const ERRNO_BY_CODE: Record<StorageErrorCode, number> = {
  INVALID_ARGUMENT: P.NBD_EINVAL,
  NOT_FOUND: P.NBD_EIO,
  ALREADY_EXISTS: P.NBD_EIO,
  READ_ONLY: P.NBD_EPERM,
  NO_SPACE: P.NBD_ENOSPC,
  IO_ERROR: P.NBD_EIO,
  // NBD has no "try again" errno (EAGAIN is not among its errors): a guest sees the failed read.
  UNAVAILABLE: P.NBD_EIO,
  CORRUPT: P.NBD_EIO,
  UNSUPPORTED: P.NBD_ENOTSUP,
  BUSY: P.NBD_EIO,
  CANCELLED: P.NBD_ESHUTDOWN,
  LIMIT_EXCEEDED: P.NBD_ENOSPC,
};

export function nbdErrnoFor(err: unknown): number {
  return isStorageError(err) ? ERRNO_BY_CODE[err.code] : P.NBD_EIO;
}

/** An error the server decided on before or instead of calling the device. */
class RequestError extends Error {
  constructor(readonly errno: number, message: string) {
    super(message);
  }
}

/** Reads into a reply buffer; on failure the buffer goes back to its pool before the error propagates. */
async function readOrRelease(device: BlockDevice, guestOffset: number, data: Buffer, release: (() => void) | undefined): Promise<void> {
  try {
    await device.read(guestOffset, data);
  } catch (err) {
    release?.();
    throw err;
  }
}

export abstract class NbdTransmission extends NbdReplies {
  /** Bytes received and not yet consumed (options during negotiation, requests after). */
  protected readonly queue = new ByteQueue();
  /** The export being served; set as transmission begins. */
  protected active: ActiveExport | undefined;
  /** base:allocation was selected for the active export: BLOCK_STATUS may be sent. */
  protected metaContext = false;
  /** The socket is paused: too many bytes in flight. */
  protected paused = false;
  /**
   * The requests in flight. Closed (for good) once DISC is received, the client half-closes or the
   * server shuts down: no new request is parsed, and the socket ends when the last one is answered.
   */
  protected readonly requests = new RequestGate();
  /** The socket's descriptor, for idle polling and direct payload reads (-1: neither; TLS). */
  protected fd: number;
  /** When the connection last went idle (no request in flight or buffered), for the poll window. */
  protected idleSinceMs: number | undefined;
  private inFlightBytes = 0;
  private header: P.RequestHeader | undefined;
  /** A large WRITE payload being received into its pooled buffer. */
  private inbound: { pooled: PooledBuffer; filled: number } | undefined;
  private readonly pollWindow: PollWindow;
  /** This connection's device errors (created with the first one: it names the export). */
  private deviceErrorReport: DeviceErrorReport | undefined;

  constructor(
    protected readonly server: NbdConnectionHost,
    socket: net.Socket,
    protected readonly log: ExportLog,
  ) {
    super(socket, server.bufferPool);
    this.fd = socketSys() !== null ? socketFd(socket) : -1;
    this.pollWindow = new PollWindow(server.idlePollMaxUs);
  }

  /** No new requests (the gate is closed): DISC, the client's half-close, shutdown or a fatal error. */
  protected get draining(): boolean {
    return !this.requests.isOpen;
  }

  /** Consumes input while it can (both phases): implemented by the connection. */
  protected abstract pump(): void;
  /** Protocol violation: log, send what is queued, and close. */
  protected abstract fatal(reason: string): void;
  /** No new requests; close once the in-flight ones are answered. */
  protected abstract startDraining(): void;
  /** Closes our side of the socket. */
  protected abstract endSocket(): void;

  /**
   * The descriptor other connections' polls watch: only while this one is serving requests (an
   * export is active from the start of transmission; leaving it means draining or closed).
   */
  get pollFd(): number {
    return this.server.idlePoller !== undefined && this.active !== undefined && !this.isClosed && !this.draining ? this.fd : -1;
  }

  /**
   * Whether bytes may be read from the descriptor directly: only when Node's stream holds none it
   * has not delivered yet (a paused or just-resumed socket buffers what libuv read), or the bytes
   * read directly would overtake them.
   */
  protected directReadSafe(): boolean {
    return this.socket.readableLength === 0;
  }

  /** Drops buffered input, including a payload being received. */
  protected clearInput(): void {
    this.queue.clear();
    this.inbound?.pooled.release();
    this.inbound = undefined;
  }

  // --- request parsing ---------------------------------------------------------------------------

  /** Handles one request (header and payload); false when more bytes are needed. */
  protected stepTransmission(): boolean {
    const q = this.queue;
    let h = this.header;
    if (h === undefined) {
      if (q.length < P.NBD_REQUEST_HEADER_BYTES) return false;
      h = P.decodeRequestHeader(q.take(P.NBD_REQUEST_HEADER_BYTES));
      if (h.magic !== P.NBD_REQUEST_MAGIC) {
        this.fatal(`bad request magic 0x${h.magic.toString(16)}`);
        return false;
      }
      if (h.type === P.NBD_CMD_WRITE && h.lengthBytes > this.server.maxPayloadBytes) {
        // The payload cannot be skipped without reading it all: answer, then hang up.
        this.replyError(h, P.NBD_EOVERFLOW, `write of ${h.lengthBytes} bytes exceeds the maximum ${this.server.maxPayloadBytes}`);
        this.fatal('oversized write payload');
        return false;
      }
      this.header = h;
    }
    if (h.type === P.NBD_CMD_WRITE && h.lengthBytes >= POOL_MIN_BYTES) return this.stepLargePayload(h);
    let payload: Buffer | undefined;
    if (h.type === P.NBD_CMD_WRITE) {
      if (q.length < h.lengthBytes) return false;
      payload = q.take(h.lengthBytes);
    }
    this.header = undefined;
    this.dispatch(h, payload, undefined);
    return true;
  }

  /**
   * A large WRITE payload goes into a pooled, aligned buffer: first what is queued, then straight
   * from the socket (socket-fd.ts) rather than as 64 KiB chunks allocated, queued and copied
   * again; the rest arrives through later 'data' events.
   */
  private stepLargePayload(h: P.RequestHeader): boolean {
    let inbound = this.inbound;
    if (inbound === undefined) {
      inbound = { pooled: this.server.bufferPool.acquire(h.lengthBytes), filled: 0 };
      this.inbound = inbound;
    }
    const data = inbound.pooled.data;
    if (this.queue.length > 0) inbound.filled += this.queue.takeInto(data.subarray(inbound.filled));
    const sys = socketSys();
    if (inbound.filled < data.length && this.fd >= 0 && sys !== null && this.directReadSafe()) {
      inbound.filled += readAvailable(sys, this.fd, data.subarray(inbound.filled));
    }
    if (inbound.filled < data.length) return false;
    this.inbound = undefined;
    this.header = undefined;
    this.dispatch(h, data, inbound.pooled);
    return true;
  }

  // --- in-flight cap -----------------------------------------------------------------------------

  protected overLimit(): boolean {
    const cap = this.server.maxInFlightBytes;
    return (this.requests.inFlight > 0 && this.inFlightBytes >= cap) || this.socket.writableLength >= cap;
  }

  protected maybeResume(): void {
    if (this.paused && !this.overLimit() && !this.isClosed) {
      this.paused = false;
      this.socket.resume();
      this.pump();
    }
  }

  // --- dispatch ----------------------------------------------------------------------------------

  /** Validates a request; returns the error to reply with, or undefined when it may run. */
  private validate(h: P.RequestHeader, active: ActiveExport): RequestError | undefined {
    const mask = this.structured ? ALLOWED_FLAGS_STRUCTURED[h.type] : ALLOWED_FLAGS_SIMPLE[h.type];
    if (mask === undefined) return new RequestError(P.NBD_EINVAL, `unknown command ${h.type}`);
    // FUA is harmless on any command; clients (qemu) may set it on more than we list.
    if ((h.flags & ~(mask | P.NBD_CMD_FLAG_FUA)) !== 0) {
      return new RequestError(P.NBD_EINVAL, `flags 0x${h.flags.toString(16)} not valid for command ${h.type}`);
    }
    if (h.type === P.NBD_CMD_FLUSH) return undefined;
    const writes = h.type === P.NBD_CMD_WRITE || h.type === P.NBD_CMD_WRITE_ZEROES || h.type === P.NBD_CMD_TRIM;
    if (writes && active.readOnly) return new RequestError(P.NBD_EPERM, 'export is read-only');
    if (h.lengthBytes === 0) return new RequestError(P.NBD_EINVAL, 'zero-length request');
    if (h.type === P.NBD_CMD_READ && h.lengthBytes > this.server.maxPayloadBytes) {
      return new RequestError(P.NBD_EOVERFLOW, `read of ${h.lengthBytes} bytes exceeds the maximum ${this.server.maxPayloadBytes}`);
    }
    if (h.offset > active.sizeBytes || h.lengthBytes > active.sizeBytes - h.offset) {
      const errno = h.type === P.NBD_CMD_WRITE || h.type === P.NBD_CMD_WRITE_ZEROES ? P.NBD_ENOSPC : P.NBD_EINVAL;
      return new RequestError(errno, `range ${h.offset}+${h.lengthBytes} beyond the export size ${active.sizeBytes}`);
    }
    if (h.type === P.NBD_CMD_BLOCK_STATUS && !this.metaContext) {
      return new RequestError(P.NBD_EINVAL, 'no metadata context negotiated');
    }
    return undefined;
  }

  private dispatch(h: P.RequestHeader, payload: Buffer | undefined, pooled: PooledBuffer | undefined): void {
    const active = this.active;
    if (active === undefined) {
      pooled?.release();
      return this.fatal('transmission without an export');
    }
    if (h.type === P.NBD_CMD_DISC) {
      this.startDraining();
      return;
    }
    const invalid = this.validate(h, active);
    if (invalid !== undefined) {
      pooled?.release();
      this.replyError(h, invalid.errno, invalid.message);
      return;
    }
    const cost = h.type === P.NBD_CMD_READ ? h.lengthBytes : (payload?.length ?? 0);
    this.inFlightBytes += cost;
    this.requests.enter(); // parsed before any close: it is answered
    this.execute(h, payload, active).then(
      () => {
        pooled?.release(); // the device is done with the payload
        this.finish(cost);
      },
      (err: unknown) => {
        pooled?.release();
        const errno = err instanceof RequestError ? err.errno : nbdErrnoFor(err);
        if (!(err instanceof RequestError)) this.noteDeviceError(err, errno, active);
        this.replyError(h, errno, err instanceof Error ? err.message : 'error');
        this.finish(cost);
      },
    );
  }

  /**
   * A failed device call: logged the way vhost-user logs a guest's (the first at once, then at
   * most a line a minute with the count: a client writing into a full pool must show in the log)
   * and counted for the export's metrics.
   */
  private noteDeviceError(err: unknown, errno: number, active: ActiveExport): void {
    this.deviceErrorReport ??= new DeviceErrorReport({ log: this.log, subject: `nbd export '${active.name}'`, peer: 'client' });
    this.deviceErrorReport.note(err, P.NBD_ERRNO_NAMES[errno] ?? `error ${errno}`);
    active.entry.onDeviceError?.();
  }

  private finish(cost: number): void {
    this.inFlightBytes -= cost;
    this.requests.leave();
    const idle = this.requests.inFlight === 0;
    // Nothing else pending: send now rather than at the end of the turn (latency at queue depth 1).
    if (idle && this.corked && this.queue.length < P.NBD_REQUEST_HEADER_BYTES) this.uncork();
    // Draining: the connection ends the socket once the gate reports the drain (stopAccepting).
    if (this.draining) return;
    this.maybeResume();
    if (idle) this.pollWhileIdle();
  }

  private async execute(h: P.RequestHeader, payload: Buffer | undefined, active: ActiveExport): Promise<void> {
    const device = active.entry.device;
    const fua = (h.flags & P.NBD_CMD_FLAG_FUA) !== 0;
    switch (h.type) {
      case P.NBD_CMD_READ:
        return this.read(h, active);
      case P.NBD_CMD_WRITE:
        await device.write(h.offset, payload ?? Buffer.alloc(0), { fua });
        return this.replyOk(h);
      case P.NBD_CMD_FLUSH:
        await device.flush();
        return this.replyOk(h);
      case P.NBD_CMD_TRIM:
        await device.discard(h.offset, h.lengthBytes);
        if (fua) await device.flush();
        return this.replyOk(h);
      case P.NBD_CMD_CACHE:
        return this.replyOk(h);
      case P.NBD_CMD_WRITE_ZEROES: {
        if ((h.flags & P.NBD_CMD_FLAG_FAST_ZERO) !== 0 && !device.capabilities.efficientZeroes) {
          throw new RequestError(P.NBD_ENOTSUP, 'fast zero not supported by this device');
        }
        const mayUnmap = (h.flags & P.NBD_CMD_FLAG_NO_HOLE) === 0;
        await device.writeZeroes(h.offset, h.lengthBytes, { fua, mayUnmap });
        return this.replyOk(h);
      }
      case P.NBD_CMD_BLOCK_STATUS:
        return this.blockStatus(h, active);
      default:
        throw new RequestError(P.NBD_EINVAL, `unknown command ${h.type}`);
    }
  }

  private isZero(kind: Extent['kind'], active: ActiveExport): boolean {
    return kind === 'zero' || (kind === 'unallocated' && active.unallocatedReadsZero);
  }

  private async read(h: P.RequestHeader, active: ActiveExport): Promise<void> {
    const device = active.entry.device;
    const len = h.lengthBytes;
    if (!this.structured) {
      const { out, data, release } = this.replyBuffer(P.NBD_SIMPLE_REPLY_BYTES, len);
      await readOrRelease(device, h.offset, data, release);
      this.send(P.encodeSimpleReply(0, h.cookieHi, h.cookieLo, out), release);
      return;
    }
    // Runs of data / zero, merged.
    const runs: ReadRun[] = [];
    if ((h.flags & P.NBD_CMD_FLAG_DF) === 0) {
      for (const e of await device.blockStatus(h.offset, len)) {
        const zero = this.isZero(e.kind, active);
        const last = runs[runs.length - 1];
        if (last !== undefined && last.zero === zero) last.lengthBytes += e.lengthBytes;
        else runs.push({ offset: e.guestOffset, lengthBytes: e.lengthBytes, zero });
      }
    }
    let covered = 0;
    for (const r of runs) covered += r.lengthBytes;
    if (covered !== len) {
      runs.length = 0;
      runs.push({ offset: h.offset, lengthBytes: len, zero: false });
    }
    const buffer = this.replyBuffer(P.OFFSET_DATA_HEADER_BYTES, runs.some((r) => !r.zero) ? len : 0);
    if (buffer.data.length > 0) await readOrRelease(device, h.offset, buffer.data, buffer.release);
    // A read answered from blockStatus alone is still a read of the guest's (QoS counts it).
    else if (device.readSkipped !== undefined) await device.readSkipped(h.offset, len);
    this.replyStructuredRead(h, runs, buffer);
  }

  private async blockStatus(h: P.RequestHeader, active: ActiveExport): Promise<void> {
    const len = Math.min(h.lengthBytes, BLOCK_STATUS_MAX_QUERY_BYTES);
    const extents = await active.entry.device.blockStatus(h.offset, len);
    const descriptors: { lengthBytes: number; status: number }[] = [];
    for (const e of extents) {
      const status = this.isZero(e.kind, active) ? P.NBD_STATE_HOLE | P.NBD_STATE_ZERO : 0;
      const last = descriptors[descriptors.length - 1];
      if (last !== undefined && last.status === status && last.lengthBytes + e.lengthBytes <= 0xffff_f000) {
        last.lengthBytes += e.lengthBytes;
      } else {
        if (descriptors.length >= BLOCK_STATUS_MAX_DESCRIPTORS) break;
        descriptors.push({ lengthBytes: e.lengthBytes, status });
      }
    }
    if (descriptors.length === 0) throw new RequestError(P.NBD_EIO, 'device returned no extents');
    if ((h.flags & P.NBD_CMD_FLAG_REQ_ONE) !== 0) descriptors.length = 1;
    this.send(P.encodeBlockStatus(P.NBD_REPLY_FLAG_DONE, h.cookieHi, h.cookieLo, BASE_ALLOCATION_CONTEXT_ID, descriptors));
  }

  // --- idle polling ------------------------------------------------------------------------------

  /**
   * The last reply is out and no request is buffered: wait a short, adaptive window for the next
   * request on the socket itself instead of sleeping in the event loop (see idle-poll.ts).
   */
  private pollWhileIdle(): void {
    const poller = this.server.idlePoller;
    if (poller === undefined || !this.mayPoll()) return;
    this.idleSinceMs = performance.now();
    this.pollFor(poller, this.pollWindow.next());
  }

  /** Idle, and nothing the event loop must do first for this connection. */
  private mayPoll(): boolean {
    if (this.pollFd < 0 || this.paused || this.corked || this.requests.inFlight !== 0 || !this.directReadSafe()) return false;
    if (this.queue.length >= P.NBD_REQUEST_HEADER_BYTES && this.header === undefined) return false;
    // A reply still partly queued in Node (socket buffer full) needs the event loop to go out;
    // the client waits for it, so polling would only delay both.
    return this.socket.writableLength === 0;
  }

  private pollFor(poller: IdlePoller, windowUs: number): void {
    if (windowUs <= 0) return;
    const got = poller.poll(this.fd, this.server.pollFdsExcept(this), windowUs, this.pollWindow);
    if (got === 'busy' || got === 'closed' || got === 'timeout') return;
    if (got === 'yield') {
      // Let the event loop run (it will not sleep: an immediate is pending), then poll on for
      // what is left of the window, unless a request came in through the loop meanwhile.
      setImmediate(() => {
        const since = this.idleSinceMs;
        if (since === undefined || !this.mayPoll()) return;
        this.pollFor(poller, windowUs - (performance.now() - since) * 1000);
      });
      return;
    }
    this.idleSinceMs = undefined;
    this.queue.push(got);
    this.pump();
  }
}
