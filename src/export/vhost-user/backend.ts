/**
 * VhostUserBlkBackend: one vhost-user front-end connection (QEMU, cloud-hypervisor) driving a
 * virtio-blk device over a BlockDevice. This file is the control channel; the state the messages
 * change lives in the modules it hands them to:
 *  - memory-table.ts: SET_MEM_TABLE, ADD_MEM_REG, REM_MEM_REG (guest memory, memory.ts);
 *  - rings.ts: SET_VRING_*, GET_VRING_BASE, ring start and stop, and the request path;
 *  - inflight.ts: GET_INFLIGHT_FD, SET_INFLIGHT_FD and resubmission after a back-end crash.
 *
 * Everything runs on the Node event loop; nothing blocks it. The control socket is read when libuv
 * says it is readable (koffi.node.poll). Messages are framed (MessageFramer), validated
 * (validateMessage) and handled strictly one after another: a handler may wait (GET_VRING_BASE waits
 * for the ring's requests in flight, a memory-table change, a new inflight region and RESET_DEVICE
 * wait for all of them), and later messages queue behind it, as the protocol expects (at most
 * MAX_PENDING_MESSAGES).
 *
 * Here: feature and protocol-feature negotiation, replies (REPLY_ACK), the config space and its
 * changes (an online grow: backend-channel.ts tells the front-end), and the connection's end
 * (shutdown, close, release).
 *
 * Descriptors: every descriptor received with a message is closed by dispatch after its handler
 * returns or throws, unless the handler took it (takeFd: eventfds, the backend channel; each
 * re-sent one replaces and closes the old). Descriptors of a half-read or queued message are closed
 * at disconnect.
 *
 * Memory safety: guest memory and the inflight region are unmapped (SET_MEM_TABLE replacing it,
 * REM_MEM_REG, SET_INFLIGHT_FD, RESET_DEVICE, disconnect) only after every request in flight has
 * completed, since device I/O on the thread pool may still be writing into a view of it. While such
 * a change waits, no new chains are popped.
 *
 * Errors: a malformed message is logged in one line and answered with a failure when the front-end
 * asked for a reply (NEED_REPLY); otherwise the connection is closed, as the spec allows. A malformed
 * descriptor chain stops only that ring (rings.ts). Nothing escapes to the event loop.
 */
import type { BlockDevice } from '../../core/block-device.js';
import { closeFds } from '../../sys/fd.js';
import type { UnixStream } from '../../sys/unix-socket.js';
import { isPeerHangUp, type ExportLog, type ExportLogLevel } from '../log.js';
import { BackendChannel } from './backend-channel.js';
import { BlkRequestHandler, blkFeatures, encodeBlkConfig } from './blk.js';
import { InflightTracker } from './inflight.js';
import { GuestMemory, MAX_MEMORY_REGIONS } from './memory.js';
import { MemoryTable } from './memory-table.js';
import * as M from './messages.js';
import { DeclinedError, describeError, ProtocolError, takeFd } from './protocol-errors.js';
import { RingSet, type RingPollOptions } from './rings.js';
import { sameBytes } from '../../sys/same-bytes.js';
import { DEFAULT_NO_SPACE_POLICY, type NoSpacePolicy } from './space-wait.js';

/** Messages waiting behind a slow handler before the front-end is considered abusive. */
const MAX_PENDING_MESSAGES = 1024;
/** Why a connection closed when the front-end went away (end of file, EPIPE, ECONNRESET). */
const FRONT_END_GONE = 'front-end disconnected';
/** queueCount limit (the 1..16). */
export const MAX_QUEUES = 16;

export const PROTOCOL_FEATURES_OFFERED =
  M.bit(M.ProtocolFeature.MQ) |
  M.bit(M.ProtocolFeature.REPLY_ACK) |
  // With CONFIG: how the front-end learns that the volume grew (CONFIG_CHANGE_MSG).
  M.bit(M.ProtocolFeature.BACKEND_REQ) |
  M.bit(M.ProtocolFeature.CONFIG) |
  M.bit(M.ProtocolFeature.INFLIGHT_SHMFD) |
  M.bit(M.ProtocolFeature.RESET_DEVICE) |
  M.bit(M.ProtocolFeature.CONFIGURE_MEM_SLOTS);

/** Config space offsets at or above this are taken relative to it (cloud-hypervisor asks at 0x100). */
const CONFIG_ALIAS_OFFSET = 0x100;

export interface VhostUserBlkBackendOptions {
  device: BlockDevice;
  queueCount: number;
  readOnly: boolean;
  serial: string;
  /** One line per event worth a human's attention, at its level (a protocol error: warn). */
  log: ExportLog;
  /** Also log every message received (debugging interop). */
  trace?: boolean;
  /** Polling of drained rings (RingSetOptions.poll; default: none). */
  poll?: RingPollOptions;
  /** Writes refused for want of space (space-wait.ts): 'wait' (default) or 'error' (IOERR at once). */
  noSpace?: NoSpacePolicy;
  /** What log lines about them name ('volume pool/vol'), and its pool. */
  subject?: string;
  pool?: string;
}

interface Reply {
  payload: Uint8Array;
  /** Sent with the reply and then closed here. */
  fds?: number[];
}

export class VhostUserBlkBackend {
  readonly closed: Promise<void>;
  private resolveClosed!: () => void;
  private readonly sock: UnixStream;
  private readonly opts: VhostUserBlkBackendOptions;
  private readonly memoryTable: MemoryTable;
  private readonly inflight: InflightTracker;
  private readonly rings: RingSet;
  private readonly framer: M.MessageFramer;
  private readonly featuresOffered: bigint;
  /** The config space as GET_CONFIG answers it now (re-encoded when the device grows). */
  private config: Uint8Array;
  private protocolFeatures = 0n;
  private backendChannel: BackendChannel | undefined;
  /** GET_CONFIG was answered on this connection (the front-end holds this connection's config). */
  private configRead = false;
  /** A config change had no channel to go by: logged once per connection. */
  private changeUnannouncedLogged = false;
  private pending: M.Message[] = [];
  private dispatching = false;
  private readonly handler: BlkRequestHandler;

  constructor(sock: UnixStream, opts: VhostUserBlkBackendOptions) {
    this.sock = sock;
    this.opts = opts;
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
    const device = opts.device;
    const readOnly = opts.readOnly || device.capabilities.readOnly;
    const memory = new GuestMemory();
    this.inflight = new InflightTracker(opts.queueCount, opts.log);
    this.handler = new BlkRequestHandler(device, { readOnly, serial: opts.serial, log: opts.log });
    this.rings = new RingSet({
      queueCount: opts.queueCount,
      memory,
      handler: this.handler,
      inflight: this.inflight,
      log: opts.log,
      noSpace: opts.noSpace ?? DEFAULT_NO_SPACE_POLICY,
      names: { ...(opts.subject === undefined ? {} : { subject: opts.subject }), ...(opts.pool === undefined ? {} : { pool: opts.pool }) },
      ...(opts.poll === undefined ? {} : { poll: opts.poll }),
    });
    this.memoryTable = new MemoryTable(memory, this.rings);
    this.featuresOffered =
      blkFeatures({ readOnly, discard: device.capabilities.discard }) | M.bit(M.VHOST_USER_F_PROTOCOL_FEATURES);
    this.config = this.encodeConfig();
    this.framer = new M.MessageFramer((maxBytes, maxFds) => this.sock.recvMessage(maxBytes, maxFds));
    sock.onReadable(() => this.onSocketReadable());
  }

  /** Requests completed or in flight since the connection started. */
  get requests(): number {
    return this.rings.requests;
  }

  /** Requests the device failed since the connection started (the guest got IOERR). */
  get deviceErrors(): number {
    return this.handler.deviceErrors;
  }

  /** Requests waiting for space (the pool is full) now. */
  get waitingForSpace(): number {
    return this.rings.waitingForSpace.waiting;
  }

  /** Space may have been freed: requests waiting for it are run again now. */
  retryWaitingForSpace(): void {
    this.rings.waitingForSpace.retryNow();
  }

  /** The rings' polls of a drained ring and their hits (RingPollOptions). */
  get ringPolls(): { polls: number; hits: number } {
    return { polls: this.rings.polls, hits: this.rings.pollHits };
  }

  /** Negotiated feature bits (for diagnostics and tests). */
  get negotiated(): { features: bigint; protocolFeatures: bigint } {
    return { features: this.rings.features, protocolFeatures: this.protocolFeatures };
  }

  get isClosing(): boolean {
    return this.closing;
  }

  /** The connection is going away (the rings hold the flag: the request path checks it). */
  private get closing(): boolean {
    return this.rings.closing;
  }

  /**
   * The device's config changed (its size grew): GET_CONFIG answers the new config from now on, and
   * the front-end is told to read it again so the guest sees it. Requests already validated keep
   * the bounds they were checked against; the guest addresses the new space only once it has read
   * the new capacity.
   */
  configChanged(): void {
    if (this.closing) return;
    const config = this.encodeConfig();
    if (sameBytes(config, this.config)) return;
    this.config = config;
    if (this.announceConfigChange()) return;
    // A channel that failed logged why itself; say once what no channel means for the guest.
    if (this.changeUnannouncedLogged || this.backendChannel?.isOpen === false) return;
    this.changeUnannouncedLogged = true;
    this.opts.log('the device config changed and the front-end gave no back-end request channel (BACKEND_REQ): the guest sees the new capacity only when its front-end next reads the config', 'info');
  }

  private encodeConfig(): Uint8Array {
    const device = this.opts.device;
    return encodeBlkConfig({
      capacityBytes: device.sizeBytes,
      queueCount: this.opts.queueCount,
      writeZeroesMayUnmap: device.capabilities.discard,
    });
  }

  /** CONFIG_CHANGE_MSG on the back-end channel, if BACKEND_REQ was negotiated and one was given. True if sent. */
  private announceConfigChange(): boolean {
    if ((this.protocolFeatures & M.bit(M.ProtocolFeature.BACKEND_REQ)) === 0n) return false;
    return this.backendChannel?.notifyConfigChange() === true;
  }

  /** Graceful stop: no new requests; those in flight complete (and reach the guest); then close. */
  shutdown(): void {
    if (this.closing || this.rings.draining) return;
    void this.rings.drain().then(() => this.close('export shut down', 'info'));
  }

  /**
   * Drops the connection. Requests in flight finish (their buffers may be written by device I/O) but
   * are not pushed to the rings: the front-end owns the rings again once the socket is gone, and with
   * INFLIGHT_SHMFD the next back-end resubmits them. Memory and descriptors are released after that.
   */
  close(reason: string, level: ExportLogLevel): void {
    if (this.closing) return;
    const idle = this.rings.close();
    this.opts.log(`connection closed: ${reason}`, level);
    this.sock.close();
    closeFds(this.framer.dispose());
    for (const m of this.pending) closeFds(m.fds);
    this.pending = [];
    void idle.then(() => {
      // After every handler waiting on the same condition has seen `closing` and returned.
      setImmediate(() => this.release());
    });
  }

  private release(): void {
    try {
      this.dropDeviceState();
      this.backendChannel?.close();
      this.backendChannel = undefined;
    } catch (err) {
      this.opts.log(`releasing connection resources failed: ${describeError(err)}`, 'warn');
    }
    this.resolveClosed();
  }

  /** Unmaps guest memory and the inflight region, closes the rings' descriptors; nothing may be in flight. */
  private dropDeviceState(): void {
    this.memoryTable.clear();
    this.inflight.unmap();
    this.rings.resetAll();
  }

  // --- control socket ------------------------------------------------------------------------------

  /**
   * Reads what the socket holds now, outside the poll callback: the export calls it when a new
   * front-end connects, so a hang-up not yet seen by the event loop is noticed first.
   */
  pollSocket(): void {
    this.onSocketReadable();
  }

  private onSocketReadable(): void {
    if (this.closing) return;
    try {
      for (;;) {
        const { messages, eof } = this.framer.read();
        for (const m of messages) this.pending.push(m);
        if (this.pending.length > MAX_PENDING_MESSAGES) {
          this.close(`protocol error: more than ${MAX_PENDING_MESSAGES} messages queued behind a pending request`, 'warn');
          return;
        }
        if (eof) {
          this.close(FRONT_END_GONE, 'info');
          return;
        }
        if (messages.length === 0) break;
      }
    } catch (err) {
      if (this.closedByHangUp(err)) return;
      this.close(`protocol error: ${describeError(err)}`, 'warn');
      return;
    }
    void this.dispatchPending();
  }

  private async dispatchPending(): Promise<void> {
    if (this.dispatching) return;
    this.dispatching = true;
    try {
      while (!this.closing) {
        const m = this.pending.shift();
        if (m === undefined) break;
        await this.dispatch(m);
      }
    } catch (err) {
      this.close(`internal error handling a message: ${describeError(err)}`, 'warn');
    } finally {
      this.dispatching = false;
    }
  }

  private async dispatch(m: M.Message): Promise<void> {
    const request = m.header.request;
    const name = M.requestName(request);
    if (this.opts.trace === true) this.opts.log(`<- ${M.traceLine(m)}`, 'info');
    const bad = M.validateMessage(m);
    if (bad !== undefined) {
      closeFds(m.fds);
      this.refuse(m, `${name}: ${bad}`, false);
      return;
    }
    // Descriptors a handler keeps are set to -1 in fds; the rest are closed below whatever happens.
    const fds = m.fds;
    let reply: Reply | undefined;
    try {
      reply = await this.handle(request, m.payload, fds);
    } catch (err) {
      closeFds(fds);
      if (this.closing) return;
      if (err instanceof DeclinedError) this.refuse(m, `${name}: ${err.message}`, true);
      else if (err instanceof ProtocolError) this.refuse(m, `${name}: ${err.message}`, false);
      else this.refuse(m, `${name} failed: ${describeError(err)}`, false);
      return;
    }
    closeFds(fds.filter((fd) => fd >= 0));
    if (this.closing) {
      closeFds(reply?.fds ?? []);
      return;
    }
    if (M.REQUESTS_WITH_REPLY.has(request)) {
      this.send(request, reply?.payload ?? new Uint8Array(0), reply?.fds);
    } else if ((m.header.flags & M.FLAG_NEED_REPLY) !== 0) {
      this.send(request, M.encodeU64(0n));
    }
    closeFds(reply?.fds ?? []);
  }

  /** Logs a refused request and answers it with a failure where the protocol lets us, else hangs up. */
  private refuse(m: M.Message, reason: string, soft: boolean): void {
    const request = m.header.request;
    const needReply = (m.header.flags & M.FLAG_NEED_REPLY) !== 0;
    if (request === M.Request.GET_CONFIG) {
      // The spec's failure answer: an empty payload.
      this.opts.log(`refused ${reason}`, 'warn');
      this.send(request, new Uint8Array(0));
    } else if (M.REQUESTS_WITH_REPLY.has(request)) {
      this.close(`protocol error: ${reason}`, 'warn');
    } else if (needReply) {
      this.opts.log(`refused ${reason}`, 'warn');
      this.send(request, M.encodeU64(1n));
    } else if (soft) {
      this.opts.log(`ignored ${reason}`, 'info');
    } else {
      this.close(`protocol error: ${reason}`, 'warn');
    }
  }

  private send(request: number, payload: Uint8Array, fds?: number[]): void {
    if (this.closing) return;
    try {
      this.sock.sendMessage(M.encodeReply(request, payload), fds ?? []);
    } catch (err) {
      if (this.closedByHangUp(err)) return;
      this.close(`cannot reply to ${M.requestName(request)}: ${describeError(err)}`, 'warn');
    }
  }

  /** EPIPE on a reply, ECONNRESET on a read: the front-end went away, as at end of file. True if so. */
  private closedByHangUp(err: unknown): boolean {
    if (!isPeerHangUp(err)) return false;
    this.opts.log(`front-end hung up: ${describeError(err)}`, 'debug');
    this.close(FRONT_END_GONE, 'info');
    return true;
  }

  // --- requests ------------------------------------------------------------------------------------

  private async handle(request: number, p: Uint8Array, fds: number[]): Promise<Reply | undefined> {
    const R = M.Request;
    switch (request) {
      case R.GET_FEATURES:
        return { payload: M.encodeU64(this.featuresOffered) };
      case R.SET_FEATURES: {
        const features = M.decodeU64(p);
        const unknown = features & ~this.featuresOffered;
        if (unknown !== 0n) throw new ProtocolError(`features 0x${unknown.toString(16)} were not offered`);
        this.rings.features = features;
        return undefined;
      }
      case R.GET_PROTOCOL_FEATURES:
        return { payload: M.encodeU64(PROTOCOL_FEATURES_OFFERED) };
      case R.SET_PROTOCOL_FEATURES: {
        const features = M.decodeU64(p);
        const unknown = features & ~PROTOCOL_FEATURES_OFFERED;
        if (unknown !== 0n) throw new ProtocolError(`protocol features 0x${unknown.toString(16)} were not offered`);
        this.protocolFeatures = features;
        return undefined;
      }
      case R.SET_OWNER:
        return undefined;
      case R.RESET_OWNER:
        // Deprecated; the spec recommends treating it as "disable all rings".
        await this.rings.stopAll();
        return undefined;
      case R.RESET_DEVICE:
        await this.resetDevice();
        return undefined;
      case R.GET_QUEUE_NUM:
        return { payload: M.encodeU64(BigInt(this.rings.queueCount)) };
      case R.GET_MAX_MEM_SLOTS:
        return { payload: M.encodeU64(BigInt(MAX_MEMORY_REGIONS)) };
      case R.SET_MEM_TABLE:
        await this.memoryTable.set(M.decodeMemoryTable(p), fds);
        return undefined;
      case R.ADD_MEM_REG:
        this.memoryTable.add(M.decodeSingleRegion(p), fds);
        return undefined;
      case R.REM_MEM_REG:
        await this.memoryTable.remove(M.decodeSingleRegion(p));
        return undefined;
      case R.SET_VRING_NUM:
        this.rings.setVringNum(M.decodeVringState(p));
        return undefined;
      case R.SET_VRING_ADDR:
        this.rings.setVringAddr(M.decodeVringAddr(p));
        return undefined;
      case R.SET_VRING_BASE:
        this.rings.setVringBase(M.decodeVringState(p));
        return undefined;
      case R.GET_VRING_BASE: {
        const index = M.decodeVringState(p).index;
        const base = await this.rings.stopRing(index);
        return { payload: M.encodeVringState({ index, num: base }) };
      }
      case R.SET_VRING_KICK:
      case R.SET_VRING_CALL:
      case R.SET_VRING_ERR:
        this.rings.setVringFd(request, M.decodeU64(p), fds);
        return undefined;
      case R.SET_VRING_ENABLE: {
        const state = M.decodeVringState(p);
        this.rings.setVringEnable(state);
        // A front-end that reconnected (QEMU with reconnect=1, after a daemon restart) starts the
        // rings without reading the config again: it still holds the capacity of an earlier
        // connection, perhaps from before a grow. Have it read the config once now (QEMU acts on
        // it only once the device has started, which it has when it enables a ring).
        if (state.num !== 0 && !this.configRead) {
          this.configRead = true;
          this.announceConfigChange();
        }
        return undefined;
      }
      case R.SET_BACKEND_REQ_FD:
        // Kept for the connection's lifetime; a re-sent one replaces (and closes) the old.
        this.backendChannel?.close();
        this.backendChannel = new BackendChannel(takeFd(fds, 0), {
          replyAck: (this.protocolFeatures & M.bit(M.ProtocolFeature.REPLY_ACK)) !== 0n,
          log: this.opts.log,
        });
        return undefined;
      case R.GET_CONFIG:
        this.configRead = true;
        return { payload: this.getConfig(M.decodeConfig(p)) };
      case R.SET_CONFIG: {
        const c = M.decodeConfig(p);
        throw new DeclinedError(
          `${c.sizeBytes} bytes at offset ${c.offset} (flags ${c.flags}): the virtio-blk config space has no writable fields here`,
        );
      }
      case R.GET_INFLIGHT_FD: {
        const d = M.decodeInflight(p);
        const region = this.inflight.createRegionFd(d);
        const description = { mmapSizeBytes: BigInt(region.sizeBytes), mmapOffsetBytes: 0n, queueCount: d.queueCount, queueSize: d.queueSize };
        return { payload: M.encodeInflight(description, p.length), fds: [region.fd] };
      }
      case R.SET_INFLIGHT_FD:
        await this.setInflightFd(M.decodeInflight(p), fds[0]!);
        return undefined;
      default:
        // validateMessage only passes requests listed above.
        throw new ProtocolError('unsupported request');
    }
  }

  private getConfig(c: M.ConfigAccess): Uint8Array {
    const offset = c.offset >= CONFIG_ALIAS_OFFSET ? c.offset - CONFIG_ALIAS_OFFSET : c.offset;
    if (offset > this.config.length) throw new ProtocolError(`config offset 0x${c.offset.toString(16)} is beyond the ${this.config.length}-byte config space`);
    // Bytes past the end of struct virtio_blk_config read as zero, as on a PCI device.
    const data = new Uint8Array(c.sizeBytes);
    data.set(this.config.subarray(offset, offset + c.sizeBytes));
    return M.encodeConfig({ offset: c.offset, sizeBytes: c.sizeBytes, flags: c.flags, data });
  }

  /** SET_INFLIGHT_FD: maps the region (fd stays the dispatcher's to close) once no request is in flight. */
  private async setInflightFd(d: M.InflightDescription, fd: number): Promise<void> {
    this.inflight.checkRegion(d);
    await this.rings.quiesce(() => {
      this.inflight.replace(d, fd);
      // Running rings stop tracking rather than keep a view of the old mapping; they pick the new
      // region up when they restart.
      this.rings.forgetInflightViews();
    });
  }

  /** RESET_DEVICE: stops the rings, then drops memory, ring state, the inflight region and features. */
  private async resetDevice(): Promise<void> {
    await this.rings.stopAll();
    await this.rings.quiesce(() => {
      this.dropDeviceState();
      this.rings.features = 0n;
    });
  }
}
