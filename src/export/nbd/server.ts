/**
 * NbdServer: serves named BlockDevices over NBD (fixed newstyle negotiation) on a unix socket and/or
 * TCP. One Connection per client socket: negotiation, then transmission with pipelined requests
 * handled concurrently; replies may go out of order (the protocol allows it) and are batched per
 * event-loop turn (cork/uncork -> one writev). Bytes in flight per connection are bounded: over the
 * cap the socket stops being read until replies drain.
 *
 * Every request is validated here (magic, command, flags, bounds, length) before the device sees
 * it, so the device only gets in-range requests (BlockDevice's contract).
 */
import net from 'node:net';
import tls from 'node:tls';
import { performance } from 'node:perf_hooks';
import { rmSync } from 'node:fs';
import type { BlockDevice, Extent } from '../../core/block-device.js';
import { isStorageError, StorageError, type StorageErrorCode } from '../../core/errors.js';
import * as P from './protocol.js';
import { BufferPool, POOL_MIN_BYTES, type PooledBuffer } from '../../sys/buffer-pool.js';
import { type IdlePoller, createIdlePoller, PollWindow } from './idle-poll.js';
import { readAvailable, socketFd, socketSys } from './socket-fd.js';
import { isPeerHangUp, type ExportLog } from '../log.js';
import { HeldConnections } from './held.js';
import { ByteQueue } from './byte-queue.js';

export interface NbdExportEntry {
  device: BlockDevice;
  readOnly: boolean;
  description?: string;
  /**
   * Whether ranges the device reports 'unallocated' read as zeroes (no backing layer below).
   * Default: true unless the device has a `backing` image.
   */
  unallocatedReadsZero?: boolean;
}

export interface NbdServerOptions {
  /** Initial exports; more can be added and removed while serving (addExport/removeExport). */
  exports?: ReadonlyMap<string, NbdExportEntry>;
  /** Stop reading a connection's socket while more than this many bytes are in flight (default 64 MiB). */
  maxInFlightBytes?: number;
  /** Largest READ/WRITE payload accepted (default 32 MiB); a larger WRITE closes the connection. */
  maxPayloadBytes?: number;
  /** Close connections that have not finished negotiating after this long (default 30 s). */
  handshakeTimeoutMs?: number;
  /** Refuse connections beyond this many at once (default 256). */
  maxConnections?: number;
  /**
   * Busy-poll an idle connection's socket for up to this many microseconds after its last reply
   * (adaptive per connection, see idle-poll.ts); 0 turns it off. Default 100.
   */
  idlePollMaxUs?: number;
  /**
   * Accept connections but greet none until open(): whoever binds the listeners before the
   * exports are in place (the daemon restoring its exports after a restart) makes early clients
   * wait instead of answering them that an export does not exist. Default false (greet at once).
   */
  holdUntilOpen?: boolean;
  /**
   * Called with connection-level events: problems (bad magic, device failures) at 'warn', a
   * client hanging up mid-conversation (EPIPE, ECONNRESET) at 'debug'.
   */
  log?: ExportLog;
}

/** TLS (NBD_OPT_STARTTLS) for a listener. */
export interface NbdTlsOptions {
  /** The server's certificate and key (tls.createSecureContext). */
  secureContext: tls.SecureContext;
  /** Refuse to serve before STARTTLS (NBD_REP_ERR_TLS_REQD); else TLS is offered, not forced. */
  required: boolean;
}

export interface NbdListenOptions {
  unixPath?: string;
  tcp?: { host?: string; port: number };
  /** TLS on the TCP listener (the unix socket is local, guarded by its file mode: no TLS there). */
  tcpTls?: NbdTlsOptions;
}

const DEFAULT_MAX_IN_FLIGHT_BYTES = 64 * 1024 * 1024;
const DEFAULT_MAX_PAYLOAD_BYTES = 32 * 1024 * 1024;
const DEFAULT_HANDSHAKE_TIMEOUT_MS = 30_000;
const DEFAULT_MAX_CONNECTIONS = 256;
const DEFAULT_IDLE_POLL_MAX_US = 100;
const PREFERRED_BLOCK_BYTES = 4096;
/** Option data larger than this is not buffered: the connection is closed (denial of service). */
const MAX_OPTION_BYTES = 64 * 1024;
/** Options per connection before we decide the client is looping. */
const MAX_OPTIONS = 1024;
/** Bound on one BLOCK_STATUS reply: range queried and descriptors returned. */
const BLOCK_STATUS_MAX_QUERY_BYTES = 1024 * 1024 * 1024;
const BLOCK_STATUS_MAX_DESCRIPTORS = 16384;
const BASE_ALLOCATION_CONTEXT_ID = 1;

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

export class NbdServer {
  private readonly exports = new Map<string, NbdExportEntry>();
  readonly maxInFlightBytes: number;
  readonly maxPayloadBytes: number;
  readonly handshakeTimeoutMs: number;
  private readonly maxConnections: number;
  private readonly log: ExportLog;
  private readonly servers: net.Server[] = [];
  /** Connections accepted before open() (holdUntilOpen); undefined once open. */
  private held: HeldConnections<NbdTlsOptions | undefined> | undefined;
  private readonly connections = new Set<Connection>();
  private unixPath: string | undefined;
  private shuttingDown = false;
  /** Busy-polls idle connections; undefined when turned off or unavailable on this platform. */
  readonly idlePoller: IdlePoller | undefined;
  readonly idlePollMaxUs: number;
  /** Aligned buffers for large replies and payloads, shared by the connections (buffer-pool.ts). */
  readonly bufferPool = new BufferPool({ headroomBytes: Math.max(P.OFFSET_DATA_HEADER_BYTES, P.NBD_SIMPLE_REPLY_BYTES) });

  constructor(options: NbdServerOptions) {
    this.idlePollMaxUs = options.idlePollMaxUs ?? DEFAULT_IDLE_POLL_MAX_US;
    this.idlePoller = this.idlePollMaxUs > 0 ? createIdlePoller() : undefined;
    for (const [name, entry] of options.exports ?? []) this.addExport(name, entry);
    this.handshakeTimeoutMs = options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
    this.maxConnections = options.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
    this.maxInFlightBytes = options.maxInFlightBytes ?? DEFAULT_MAX_IN_FLIGHT_BYTES;
    this.maxPayloadBytes = options.maxPayloadBytes ?? DEFAULT_MAX_PAYLOAD_BYTES;
    this.log = options.log ?? (() => {});
    if (options.holdUntilOpen === true) this.held = new HeldConnections(this.log);
  }

  /** Greets the connections held since the listeners were bound (holdUntilOpen); idempotent. */
  open(): void {
    const held = this.held;
    this.held = undefined;
    held?.release((socket, tlsOptions) => this.startConnection(socket, tlsOptions));
  }

  /** Makes an export available to new connections. */
  addExport(name: string, entry: NbdExportEntry): void {
    if (Buffer.byteLength(name, 'utf8') > P.NBD_STRING_MAX_BYTES || name.includes('\0')) {
      throw new StorageError('INVALID_ARGUMENT', `invalid NBD export name "${name}"`);
    }
    if (this.exports.has(name)) throw new StorageError('ALREADY_EXISTS', `NBD export "${name}" already exists`);
    this.exports.set(name, entry);
  }

  /**
   * Withdraws an export: new connections can no longer select it; connections using it finish
   * their in-flight requests and are closed. Resolves once they are gone (the device is then free).
   */
  async removeExport(name: string): Promise<void> {
    const entry = this.exports.get(name);
    if (entry === undefined) return;
    this.exports.delete(name);
    const users = [...this.connections].filter((c) => c.serves(entry));
    for (const c of users) c.shutdown();
    await Promise.all(users.map((c) => c.closed));
  }

  exportNames(): string[] {
    return [...this.exports.keys()];
  }

  /** Starts listening; resolves once every requested listener is bound. */
  async listen(options: NbdListenOptions): Promise<void> {
    if (options.unixPath !== undefined) {
      rmSync(options.unixPath, { force: true });
      await this.bind((s, done) => s.listen(options.unixPath, done), undefined);
      this.unixPath = options.unixPath;
    }
    if (options.tcp !== undefined) {
      const { host, port } = options.tcp;
      await this.bind((s, done) => s.listen(port, host ?? '127.0.0.1', done), options.tcpTls);
    }
  }

  /** The TCP port actually bound (for port 0), if listening on TCP. */
  get tcpPort(): number | undefined {
    for (const s of this.servers) {
      const a = s.address();
      if (a !== null && typeof a === 'object') return a.port;
    }
    return undefined;
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  /** The sockets of every other connection in transmission (watched while one connection polls). */
  pollFdsExcept(conn: Connection): number[] {
    const fds: number[] = [];
    for (const c of this.connections) if (c !== conn && c.pollFd >= 0) fds.push(c.pollFd);
    return fds;
  }

  private bind(start: (server: net.Server, done: () => void) => void, tlsOptions: NbdTlsOptions | undefined): Promise<void> {
    const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => this.accept(socket, tlsOptions));
    this.servers.push(server);
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      start(server, () => {
        server.off('error', reject);
        server.on('error', (err) => this.log(`nbd listener error: ${err.message}`, 'warn'));
        resolve();
      });
    });
  }

  private accept(socket: net.Socket, tlsOptions: NbdTlsOptions | undefined): void {
    if (this.shuttingDown || this.connections.size + (this.held?.size ?? 0) >= this.maxConnections) {
      this.log(`nbd: refusing a connection (${this.shuttingDown ? 'shutting down' : 'too many connections'})`, this.shuttingDown ? 'debug' : 'warn');
      socket.destroy();
      return;
    }
    if (this.held !== undefined) this.held.add(socket, tlsOptions);
    else this.startConnection(socket, tlsOptions);
  }

  private startConnection(socket: net.Socket, tlsOptions: NbdTlsOptions | undefined): void {
    const conn = new Connection(this, socket, this.exports, this.log, tlsOptions);
    this.connections.add(conn);
    void conn.closed.then(() => this.connections.delete(conn));
  }

  /** Stops listening, lets in-flight requests finish, closes every connection. */
  async close(): Promise<void> {
    this.shuttingDown = true;
    const listeners = this.servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve())));
    this.held?.destroyAll();
    for (const c of this.connections) c.shutdown();
    await Promise.all([...listeners, ...[...this.connections].map((c) => c.closed)]);
    if (this.unixPath !== undefined) rmSync(this.unixPath, { force: true });
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

type Phase = 'clientFlags' | 'optionHeader' | 'optionData' | 'transmission' | 'closing';

interface Active {
  name: string;
  entry: NbdExportEntry;
  sizeBytes: number;
  readOnly: boolean;
  unallocatedReadsZero: boolean;
}

class Connection {
  readonly closed: Promise<void>;
  private resolveClosed!: () => void;
  private readonly queue = new ByteQueue();
  private phase: Phase = 'clientFlags';
  private isClosed = false;
  private noZeroes = false;
  private structured = false;
  /** The export base:allocation was selected for (NBD_OPT_SET_META_CONTEXT), if any. */
  private metaContextExport: string | undefined;
  private metaContext = false;
  private optionCount = 0;
  private option: P.OptionHeader | undefined;
  private active: Active | undefined;
  private header: P.RequestHeader | undefined;
  private inFlightBytes = 0;
  private inFlightCount = 0;
  private paused = false;
  private corked = false;
  /** DISC received, the client half-closed, or the server is shutting down: no new requests. */
  private draining = false;
  private handshakeTimer: NodeJS.Timeout | undefined;
  /** endSocket ran: our side is closing. */
  private ending = false;
  /** The socket's descriptor, for idle polling and direct payload reads (-1: neither; TLS). */
  private fd: number;
  /** NBD_OPT_STARTTLS done: the socket is a TLSSocket over the client's connection. */
  private tlsActive = false;
  /** A large WRITE payload being received into its pooled buffer. */
  private inbound: { pooled: PooledBuffer; filled: number } | undefined;
  private readonly pollWindow: PollWindow;
  /** When the connection last went idle (no request in flight or buffered), for the poll window. */
  private idleSinceMs: number | undefined;

  private socket: net.Socket;

  constructor(
    private readonly server: NbdServer,
    socket: net.Socket,
    private readonly exportsByName: ReadonlyMap<string, NbdExportEntry>,
    private readonly log: ExportLog,
    private readonly tls: NbdTlsOptions | undefined,
  ) {
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
    this.socket = socket;
    this.fd = socketSys() !== null ? socketFd(socket) : -1;
    this.pollWindow = new PollWindow(server.idlePollMaxUs);
    this.listen(socket);
    this.handshakeTimer = setTimeout(() => this.fatal('handshake timed out'), server.handshakeTimeoutMs);
    this.handshakeTimer.unref();
    this.send(P.encodeServerGreeting(P.NBD_FLAG_FIXED_NEWSTYLE | P.NBD_FLAG_NO_ZEROES));
  }

  private listen(socket: net.Socket): void {
    socket.on('data', (chunk: Buffer) => {
      if (this.isClosed || this.draining) return;
      this.idleSinceMs = undefined;
      this.queue.push(chunk);
      this.pump();
    });
    socket.on('end', () => this.startDraining());
    socket.on('error', (err) => {
      this.logSocketError('nbd connection error', err);
      this.destroy();
    });
    socket.on('close', () => this.destroy());
    socket.on('drain', () => this.maybeResume());
  }

  /**
   * NBD_OPT_STARTTLS: acknowledge in the clear, then carry on over TLS on the same connection.
   * The client sends nothing until it has the ACK, so no plaintext is left unread behind it.
   */
  private startTls(tlsOptions: NbdTlsOptions): void {
    const raw = this.socket;
    this.optionReply(P.NBD_OPT_STARTTLS, P.NBD_REP_ACK);
    this.uncork();
    raw.removeAllListeners('data');
    raw.removeAllListeners('end');
    raw.removeAllListeners('drain');
    // Bytes on the raw socket now belong to TLS: no idle polling or direct reads from here on.
    this.fd = -1;
    const secure = new tls.TLSSocket(raw, { isServer: true, secureContext: tlsOptions.secureContext });
    secure.on('error', (err) => {
      this.logSocketError('nbd TLS error', err);
      this.destroy();
    });
    this.socket = secure;
    this.tlsActive = true;
    this.listen(secure);
  }

  /** A client that hangs up while we still write (EPIPE) or read (ECONNRESET) is no problem of ours. */
  private logSocketError(what: string, err: Error): void {
    this.log(`${what}: ${err.message}`, isPeerHangUp(err) ? 'debug' : 'warn');
  }

  /**
   * Whether bytes may be read from the descriptor directly: only when Node's stream holds none it
   * has not delivered yet (a paused or just-resumed socket buffers what libuv read), or the bytes
   * read directly would overtake them.
   */
  private directReadSafe(): boolean {
    return this.socket.readableLength === 0;
  }

  /** The descriptor other connections' polls watch: only while this one is serving requests. */
  get pollFd(): number {
    return this.server.idlePoller !== undefined && this.phase === 'transmission' && !this.isClosed && !this.draining ? this.fd : -1;
  }

  serves(entry: NbdExportEntry): boolean {
    return this.active?.entry === entry;
  }

  shutdown(): void {
    if (this.phase !== 'transmission') {
      this.destroy();
      return;
    }
    this.startDraining();
  }

  // --- input -----------------------------------------------------------------------------------

  private pump(): void {
    while (!this.isClosed && !this.draining) {
      if (this.overLimit()) {
        if (!this.paused) {
          this.paused = true;
          this.socket.pause();
        }
        return;
      }
      if (!this.step()) return;
    }
  }

  /** Handles one unit of input; false when more bytes are needed. */
  private step(): boolean {
    const q = this.queue;
    switch (this.phase) {
      case 'clientFlags': {
        if (q.length < 4) return false;
        const flags = q.take(4).readUInt32BE(0);
        if ((flags & ~P.NBD_CLIENT_FLAGS_KNOWN) !== 0 || (flags & P.NBD_FLAG_C_FIXED_NEWSTYLE) === 0) {
          this.fatal(`unsupported client flags 0x${flags.toString(16)}`);
          return false;
        }
        this.noZeroes = (flags & P.NBD_FLAG_C_NO_ZEROES) !== 0;
        this.phase = 'optionHeader';
        return true;
      }
      case 'optionHeader': {
        if (q.length < P.OPTION_HEADER_BYTES) return false;
        const h = P.decodeOptionHeader(q.take(P.OPTION_HEADER_BYTES));
        if (h.magic !== P.NBD_IHAVEOPT) {
          this.fatal('bad option magic');
          return false;
        }
        if (++this.optionCount > MAX_OPTIONS) {
          this.fatal('too many options');
          return false;
        }
        if (h.lengthBytes > MAX_OPTION_BYTES) {
          this.fatal(`option ${h.option} data too large (${h.lengthBytes} bytes)`);
          return false;
        }
        this.option = h;
        this.phase = 'optionData';
        return true;
      }
      case 'optionData': {
        const h = this.option;
        if (h === undefined || q.length < h.lengthBytes) return false;
        const data = q.take(h.lengthBytes);
        this.option = undefined;
        this.phase = 'optionHeader';
        this.handleOption(h.option, data);
        return true;
      }
      case 'transmission':
        return this.stepTransmission();
      case 'closing':
        return false;
    }
  }

  private stepTransmission(): boolean {
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

  private overLimit(): boolean {
    const cap = this.server.maxInFlightBytes;
    return (this.inFlightCount > 0 && this.inFlightBytes >= cap) || this.socket.writableLength >= cap;
  }

  private maybeResume(): void {
    if (this.paused && !this.overLimit() && !this.isClosed) {
      this.paused = false;
      this.socket.resume();
      this.pump();
    }
  }

  // --- negotiation -----------------------------------------------------------------------------

  private optionReply(option: number, type: number, data?: Uint8Array): void {
    this.send(P.encodeOptionReply(option, type, data));
  }

  private optionError(option: number, type: number, message: string): void {
    this.optionReply(option, type, Buffer.from(message, 'utf8'));
  }

  /**
   * The export of that exact name. The empty name (what clients send when they name none:
   * nbd://host:port, qemu-nbd's and nbdkit's default) selects the export registered under the
   * empty name, if any: never an export that merely happens to be the only one (adding a second
   * would then silently change what such clients get).
   */
  private lookup(name: string): [string, NbdExportEntry] | undefined {
    const entry = this.exportsByName.get(name);
    return entry === undefined ? undefined : [name, entry];
  }

  private handleOption(option: number, data: Buffer): void {
    if (option === P.NBD_OPT_STARTTLS && this.tls !== undefined) {
      if (this.tlsActive) return this.optionError(option, P.NBD_REP_ERR_INVALID, 'TLS is already active');
      if (data.length !== 0) return this.optionError(option, P.NBD_REP_ERR_INVALID, 'NBD_OPT_STARTTLS takes no data');
      return this.startTls(this.tls);
    }
    if (this.tls?.required === true && !this.tlsActive && option !== P.NBD_OPT_ABORT) {
      if (option === P.NBD_OPT_EXPORT_NAME) {
        this.fatal('NBD_OPT_EXPORT_NAME before STARTTLS on a TLS-only listener');
        return;
      }
      return this.optionError(option, P.NBD_REP_ERR_TLS_REQD, 'this server requires TLS: send NBD_OPT_STARTTLS first');
    }
    switch (option) {
      case P.NBD_OPT_EXPORT_NAME: {
        const found = data.length <= P.NBD_STRING_MAX_BYTES ? this.lookup(data.toString('utf8')) : undefined;
        if (found === undefined) {
          this.fatal('NBD_OPT_EXPORT_NAME: no such export');
          return;
        }
        const active = this.activate(found[0], found[1]);
        this.send(P.encodeExportNameReply(active.sizeBytes, this.flagsFor(active.readOnly), this.noZeroes));
        this.enterTransmission();
        return;
      }
      case P.NBD_OPT_ABORT:
        this.optionReply(option, P.NBD_REP_ACK);
        this.phase = 'closing';
        this.endSocket();
        return;
      case P.NBD_OPT_LIST:
        if (data.length !== 0) return this.optionError(option, P.NBD_REP_ERR_INVALID, 'NBD_OPT_LIST takes no data');
        for (const [name, entry] of this.exportsByName) {
          this.optionReply(option, P.NBD_REP_SERVER, P.encodeRepServer(name, entry.description ?? ''));
        }
        this.optionReply(option, P.NBD_REP_ACK);
        return;
      case P.NBD_OPT_INFO:
      case P.NBD_OPT_GO:
        return this.handleInfoOrGo(option, data);
      case P.NBD_OPT_STRUCTURED_REPLY:
        if (data.length !== 0) return this.optionError(option, P.NBD_REP_ERR_INVALID, 'NBD_OPT_STRUCTURED_REPLY takes no data');
        this.structured = true;
        this.optionReply(option, P.NBD_REP_ACK);
        return;
      case P.NBD_OPT_LIST_META_CONTEXT:
      case P.NBD_OPT_SET_META_CONTEXT:
        return this.handleMetaContext(option, data);
      default:
        this.optionError(option, P.NBD_REP_ERR_UNSUP, `option ${option} not supported`);
    }
  }

  private handleInfoOrGo(option: number, data: Buffer): void {
    const r = new P.OptionReader(data);
    const name = r.string(r.u32());
    const count = r.u16();
    const requested: number[] = [];
    for (let i = 0; i < count && r.ok; i++) requested.push(r.u16());
    if (!r.ok || r.remaining !== 0) return this.optionError(option, P.NBD_REP_ERR_INVALID, 'malformed NBD_OPT_INFO/GO');
    const found = this.lookup(name);
    if (found === undefined) return this.optionError(option, P.NBD_REP_ERR_UNKNOWN, `no export named "${name}"`);
    const [exportName, entry] = found;
    const size = entry.device.sizeBytes;
    const readOnly = entry.readOnly || entry.device.capabilities.readOnly;
    this.optionReply(option, P.NBD_REP_INFO, P.encodeInfoExport(size, this.flagsFor(readOnly)));
    if (requested.includes(P.NBD_INFO_NAME)) {
      this.optionReply(option, P.NBD_REP_INFO, P.encodeInfoString(P.NBD_INFO_NAME, exportName));
    }
    if (requested.includes(P.NBD_INFO_DESCRIPTION) && entry.description !== undefined) {
      this.optionReply(option, P.NBD_REP_INFO, P.encodeInfoString(P.NBD_INFO_DESCRIPTION, entry.description));
    }
    this.optionReply(
      option,
      P.NBD_REP_INFO,
      P.encodeInfoBlockSize(1, PREFERRED_BLOCK_BYTES, this.server.maxPayloadBytes),
    );
    this.optionReply(option, P.NBD_REP_ACK);
    if (option === P.NBD_OPT_GO) {
      this.activate(exportName, entry);
      this.enterTransmission();
    }
  }

  private handleMetaContext(option: number, data: Buffer): void {
    const set = option === P.NBD_OPT_SET_META_CONTEXT;
    if (set && !this.structured) {
      return this.optionError(option, P.NBD_REP_ERR_INVALID, 'NBD_OPT_SET_META_CONTEXT needs structured replies');
    }
    const r = new P.OptionReader(data);
    const name = r.string(r.u32());
    const count = r.u32();
    const queries: string[] = [];
    for (let i = 0; i < count && r.ok; i++) queries.push(r.string(r.u32()));
    if (!r.ok || r.remaining !== 0) return this.optionError(option, P.NBD_REP_ERR_INVALID, 'malformed meta context option');
    const found = this.lookup(name);
    if (found === undefined) return this.optionError(option, P.NBD_REP_ERR_UNKNOWN, `no export named "${name}"`);
    const matches =
      (!set && queries.length === 0) ||
      queries.some((q) => q === P.NBD_META_BASE_ALLOCATION || q === P.NBD_META_NAMESPACE_BASE);
    if (set) this.metaContextExport = matches ? found[0] : undefined;
    if (matches) {
      this.optionReply(option, P.NBD_REP_META_CONTEXT, P.encodeRepMetaContext(BASE_ALLOCATION_CONTEXT_ID, P.NBD_META_BASE_ALLOCATION));
    }
    this.optionReply(option, P.NBD_REP_ACK);
  }

  private enterTransmission(): void {
    this.phase = 'transmission';
    // A context selected for another export does not carry over (the protocol ties it to the name).
    this.metaContext = this.metaContextExport !== undefined && this.metaContextExport === this.active?.name;
    clearTimeout(this.handshakeTimer);
  }

  private activate(name: string, entry: NbdExportEntry): Active {
    const device = entry.device;
    const hasBacking = (device as { backing?: unknown }).backing !== undefined;
    this.active = {
      name,
      entry,
      sizeBytes: device.sizeBytes,
      readOnly: entry.readOnly || device.capabilities.readOnly,
      unallocatedReadsZero: entry.unallocatedReadsZero ?? !hasBacking,
    };
    return this.active;
  }

  private flagsFor(readOnly: boolean): number {
    let f =
      P.NBD_FLAG_HAS_FLAGS |
      P.NBD_FLAG_SEND_FLUSH |
      P.NBD_FLAG_SEND_FUA |
      P.NBD_FLAG_CAN_MULTI_CONN |
      P.NBD_FLAG_SEND_CACHE;
    if (this.structured) f |= P.NBD_FLAG_SEND_DF;
    if (readOnly) f |= P.NBD_FLAG_READ_ONLY;
    else f |= P.NBD_FLAG_SEND_TRIM | P.NBD_FLAG_SEND_WRITE_ZEROES | P.NBD_FLAG_SEND_FAST_ZERO;
    return f;
  }

  // --- transmission ----------------------------------------------------------------------------

  /** Validates a request; returns the error to reply with, or undefined when it may run. */
  private validate(h: P.RequestHeader, active: Active): RequestError | undefined {
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
    this.inFlightCount++;
    this.execute(h, payload, active).then(
      () => {
        pooled?.release(); // the device is done with the payload
        this.finish(cost);
      },
      (err: unknown) => {
        pooled?.release();
        if (!isStorageError(err)) this.log(`nbd request ${h.type} failed: ${err instanceof Error ? err.message : String(err)}`, 'warn');
        this.replyError(h, err instanceof RequestError ? err.errno : nbdErrnoFor(err), err instanceof Error ? err.message : 'error');
        this.finish(cost);
      },
    );
  }

  private finish(cost: number): void {
    this.inFlightBytes -= cost;
    this.inFlightCount--;
    // Nothing else pending: send now rather than at the end of the turn (latency at queue depth 1).
    if (this.inFlightCount === 0 && this.corked && this.queue.length < P.NBD_REQUEST_HEADER_BYTES) this.uncork();
    if (this.draining && this.inFlightCount === 0) this.endSocket();
    else this.maybeResume();
    if (this.inFlightCount === 0) this.pollWhileIdle();
  }

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
    if (this.pollFd < 0 || this.paused || this.corked || this.inFlightCount !== 0 || !this.directReadSafe()) return false;
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

  private async execute(h: P.RequestHeader, payload: Buffer | undefined, active: Active): Promise<void> {
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

  private isZero(kind: Extent['kind'], active: Active): boolean {
    return kind === 'zero' || (kind === 'unallocated' && active.unallocatedReadsZero);
  }

  private async read(h: P.RequestHeader, active: Active): Promise<void> {
    const device = active.entry.device;
    const len = h.lengthBytes;
    if (!this.structured) {
      const { out, data, release } = this.replyBuffer(P.NBD_SIMPLE_REPLY_BYTES, len);
      await readOrRelease(device, h.offset, data, release);
      this.send(P.encodeSimpleReply(0, h.cookieHi, h.cookieLo, out), release);
      return;
    }
    // Runs of data / zero, merged.
    const runs: { offset: number; lengthBytes: number; zero: boolean }[] = [];
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
    const first = runs[0];
    const { out, data, release } = this.replyBuffer(P.OFFSET_DATA_HEADER_BYTES, runs.some((r) => !r.zero) ? len : 0);
    if (data.length > 0) await readOrRelease(device, h.offset, data, release);
    if (runs.length === 1 && first !== undefined && !first.zero) {
      this.send(P.encodeOffsetDataHeader(out, P.NBD_REPLY_FLAG_DONE, h.cookieHi, h.cookieLo, h.offset, len), release);
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
  private replyBuffer(headerBytes: number, dataBytes: number): { out: Buffer; data: Buffer; release: (() => void) | undefined } {
    if (dataBytes >= POOL_MIN_BYTES) {
      const pooled = this.server.bufferPool.acquire(dataBytes);
      return { out: pooled.withHeader(headerBytes), data: pooled.data, release: pooled.release };
    }
    const out = Buffer.allocUnsafe(headerBytes + dataBytes);
    return { out, data: out.subarray(headerBytes), release: undefined };
  }

  private async blockStatus(h: P.RequestHeader, active: Active): Promise<void> {
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

  // --- output ----------------------------------------------------------------------------------

  private replyOk(h: P.RequestHeader): void {
    this.send(P.encodeSimpleReply(0, h.cookieHi, h.cookieLo));
  }

  private replyError(h: P.RequestHeader, errno: number, message: string): void {
    if (this.structured && (h.type === P.NBD_CMD_READ || h.type === P.NBD_CMD_BLOCK_STATUS)) {
      this.send(P.encodeErrorChunk(P.NBD_REPLY_FLAG_DONE, h.cookieHi, h.cookieLo, errno, message));
    } else {
      this.send(P.encodeSimpleReply(errno, h.cookieHi, h.cookieLo));
    }
  }

  /**
   * Queues bytes for the socket; everything sent in one event-loop turn goes out in one writev.
   * onWritten (if any) runs once the bytes are out of our hands, or right away when they are
   * dropped because the connection is gone (it returns pooled buffers).
   */
  private send(b: Buffer, onWritten?: () => void): void {
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

  private uncork(): void {
    if (!this.corked) return;
    this.corked = false;
    if (!this.socket.destroyed) this.socket.uncork();
  }

  /** Drops buffered input, including a payload being received. */
  private clearInput(): void {
    this.queue.clear();
    this.inbound?.pooled.release();
    this.inbound = undefined;
  }

  // --- teardown --------------------------------------------------------------------------------

  private startDraining(): void {
    if (this.draining) return;
    this.draining = true;
    this.clearInput();
    if (this.inFlightCount === 0) this.endSocket();
  }

  /** Protocol violation: log, send what is queued, and close. */
  private fatal(reason: string): void {
    this.log(`nbd: closing connection: ${reason}`, 'warn');
    this.phase = 'closing';
    this.draining = true;
    this.clearInput();
    if (this.inFlightCount === 0) this.endSocket();
  }

  private endSocket(): void {
    if (this.isClosed || this.ending) return;
    this.ending = true;
    this.draining = true;
    this.clearInput();
    // Keep reading (and dropping) so the client's close is seen even if we had paused.
    this.socket.resume();
    this.uncork();
    if (!this.socket.writableEnded) this.socket.end();
    // A client that never reads could hold the socket open: destroy after a grace period.
    setTimeout(() => this.destroy(), 5000).unref();
    this.socket.once('finish', () => {
      if (this.socket.readableEnded) this.destroy();
    });
  }

  private destroy(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    clearTimeout(this.handshakeTimer);
    this.clearInput();
    this.socket.destroy();
    this.resolveClosed();
  }
}
