/**
 * NbdServer: serves named BlockDevices over NBD (fixed newstyle negotiation) on a unix socket and/or
 * TCP. It owns the listeners, the export table and the set of connections; one Connection per
 * client socket (connection.ts: negotiation, then transmission.ts: pipelined requests handled
 * concurrently, validated before the device sees them; replies.ts: replies, possibly out of order
 * as the protocol allows, batched per event-loop turn into one writev).
 */
import net from 'node:net';
import { rmSync } from 'node:fs';
import { removeStaleSocket } from '../../sys/unix-socket.js';
import { StorageError } from '../../core/errors.js';
import * as P from './protocol.js';
import { BufferPool } from '../../sys/buffer-pool.js';
import { type IdlePoller, createIdlePoller } from './idle-poll.js';
import type { ExportLog } from '../log.js';
import { HeldConnections } from './held.js';
import { Connection, type NbdTlsOptions } from './connection.js';
import type { NbdConnectionHost, NbdExportEntry, NbdTransmission } from './transmission.js';

export type { NbdTlsOptions } from './connection.js';
export type { NbdExportEntry } from './transmission.js';
export { nbdErrnoFor } from './transmission.js';

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

export class NbdServer implements NbdConnectionHost {
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

  /** Connections in transmission on this export now (a client counts once it has selected it). */
  clientsOf(entry: NbdExportEntry): number {
    let count = 0;
    for (const c of this.connections) if (c.serves(entry)) count++;
    return count;
  }

  exportNames(): string[] {
    return [...this.exports.keys()];
  }

  /** Starts listening; resolves once every requested listener is bound. */
  async listen(options: NbdListenOptions): Promise<void> {
    if (options.unixPath !== undefined) {
      // A stale file goes; one some process still listens on (another daemon) is EADDRINUSE.
      removeStaleSocket(options.unixPath, 'listen');
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
  pollFdsExcept(conn: NbdTransmission): number[] {
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
