/**
 * Connection: one client socket of an NbdServer, from greeting to close. It owns the socket's
 * life (events, handshake timeout, STARTTLS, draining and teardown) and the fixed newstyle
 * negotiation (client flags, then options: EXPORT_NAME, ABORT, LIST, INFO, GO, STRUCTURED_REPLY,
 * LIST/SET_META_CONTEXT, STARTTLS) that selects the export; then NbdTransmission (transmission.ts)
 * serves requests and NbdReplies (replies.ts) writes the answers, both on this same object.
 */
import type net from 'node:net';
import tls from 'node:tls';
import { isPeerHangUp, type ExportLog } from '../log.js';
import * as P from './protocol.js';
import { type ActiveExport, BASE_ALLOCATION_CONTEXT_ID, type NbdConnectionHost, type NbdExportEntry, NbdTransmission } from './transmission.js';

/** TLS (NBD_OPT_STARTTLS) for a listener. */
export interface NbdTlsOptions {
  /** The server's certificate and key (tls.createSecureContext). */
  secureContext: tls.SecureContext;
  /** Refuse to serve before STARTTLS (NBD_REP_ERR_TLS_REQD); else TLS is offered, not forced. */
  required: boolean;
}

const PREFERRED_BLOCK_BYTES = 4096;
/** Option data larger than this is not buffered: the connection is closed (denial of service). */
const MAX_OPTION_BYTES = 64 * 1024;
/** Options per connection before we decide the client is looping. */
const MAX_OPTIONS = 1024;
/**
 * After our last reply is handed to the kernel, how long to wait for the client's own close before
 * closing anyway. A client that read our FIN closes at once; an idle qemu (its NBD client reads
 * only while requests are in flight) never notices, and a daemon stopping or an export withdrawn
 * must not wait for it. The kernel still delivers what we sent after we close.
 */
const CLIENT_CLOSE_WAIT_MS = 200;
/** The most to wait for our replies to leave when the client stops reading them. */
const UNREAD_REPLIES_WAIT_MS = 5000;

type Phase = 'clientFlags' | 'optionHeader' | 'optionData' | 'transmission' | 'closing';

export class Connection extends NbdTransmission {
  readonly closed: Promise<void>;
  private resolveClosed!: () => void;
  private phase: Phase = 'clientFlags';
  private noZeroes = false;
  /** The export base:allocation was selected for (NBD_OPT_SET_META_CONTEXT), if any. */
  private metaContextExport: string | undefined;
  private optionCount = 0;
  private option: P.OptionHeader | undefined;
  private handshakeTimer: NodeJS.Timeout | undefined;
  /** endSocket ran: our side is closing. */
  private ending = false;
  /** NBD_OPT_STARTTLS done: the socket is a TLSSocket over the client's connection. */
  private tlsActive = false;

  constructor(
    server: NbdConnectionHost,
    socket: net.Socket,
    private readonly exportsByName: ReadonlyMap<string, NbdExportEntry>,
    log: ExportLog,
    private readonly tls: NbdTlsOptions | undefined,
  ) {
    super(server, socket, log);
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
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

  protected override pump(): void {
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

  private activate(name: string, entry: NbdExportEntry): ActiveExport {
    const device = entry.device;
    this.active = {
      name,
      entry,
      sizeBytes: device.sizeBytes,
      readOnly: entry.readOnly || device.capabilities.readOnly,
      unallocatedReadsZero: device.capabilities.unallocatedReadsZero === true,
    };
    return this.active;
  }

  /**
   * Transmission flags. A read-only export still offers FLUSH and FUA, as qemu-nbd --read-only
   * does (nbd/server.c sets SEND_FLUSH | SEND_FUA for every export, and only TRIM, WRITE_ZEROES
   * and FAST_ZERO for writable ones): the protocol allows them on a read-only export, a flush
   * there is a cheap no-op, and clients that flush unconditionally (qemu's block layer, nbdcopy)
   * keep working instead of failing or treating the export as a different kind of device.
   */
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

  // --- teardown --------------------------------------------------------------------------------

  protected override startDraining(): void {
    if (this.draining) return;
    this.stopAccepting();
  }

  protected override fatal(reason: string): void {
    this.log(`nbd: closing connection: ${reason}`, 'warn');
    this.phase = 'closing';
    this.stopAccepting();
  }

  /** Closes the request gate for good (once), drops buffered input, ends the socket after the drain. */
  private stopAccepting(): void {
    this.clearInput();
    if (this.draining) return;
    void this.requests.closeAndDrain().then(() => this.endSocket());
  }

  protected override endSocket(): void {
    if (this.isClosed || this.ending) return;
    this.ending = true;
    if (!this.draining) this.requests.close();
    this.clearInput();
    // Keep reading (and dropping) so the client's close is seen even if we had paused.
    this.socket.resume();
    this.uncork();
    if (!this.socket.writableEnded) this.socket.end();
    // A client that never reads could hold the socket open: destroy after a grace period.
    setTimeout(() => this.destroy(), UNREAD_REPLIES_WAIT_MS).unref();
    this.socket.once('finish', () => {
      if (this.socket.readableEnded) this.destroy();
      else setTimeout(() => this.destroy(), CLIENT_CLOSE_WAIT_MS).unref();
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
