/**
 * VhostUserBlkBackend: one vhost-user front-end connection (QEMU, cloud-hypervisor) driving a
 * virtio-blk device over a BlockDevice.
 *
 * Everything runs on the Node event loop; nothing blocks it:
 *  - The control socket is read when libuv says it is readable (koffi.node.poll). Messages are
 *    framed (MessageFramer), validated (validateMessage) and handled strictly one after another:
 *    a handler may wait (GET_VRING_BASE waits for the ring's requests in flight, a memory-table change
 *    waits for all of them), and later messages queue behind it, as the protocol expects.
 *  - Each ring's kick eventfd is watched the same way. A kick drains the eventfd and pops chains until
 *    the ring is empty, re-enabling notifications and re-checking before stopping (no lost wakeup),
 *    yielding to the event loop after QUEUE_BATCH chains so that one busy ring cannot starve the
 *    others or the control socket. Each chain goes to BlkRequestHandler.handle() without waiting for
 *    the previous one: requests of a ring run concurrently (bounded by the ring size) and complete in
 *    any order. A completion pushes the used element and schedules one call-eventfd check per
 *    microtask turn, so a burst of completions costs one notification.
 *
 * Ring life cycle (several per connection: firmware, then the OS driver, then resets): a ring starts
 * when its kick fd arrives (SET_VRING_KICK) and it is enabled (SET_VRING_ENABLE 1, or implicitly when
 * VHOST_USER_F_PROTOCOL_FEATURES was not negotiated). GET_VRING_BASE stops it: no more pops, wait for
 * its requests in flight to complete and be pushed, then answer with the next avail index. The same
 * SET_VRING_* messages later restart it. A descriptor re-sent for the same slot (kick, call, err,
 * backend channel, inflight region) replaces and closes the old one.
 *
 * Memory safety: guest memory is unmapped (SET_MEM_TABLE replacing it, REM_MEM_REG, RESET_DEVICE,
 * disconnect) only after every request in flight has completed, since device I/O on the thread pool
 * may still be writing into a view of it. While such a change waits, no new chains are popped.
 *
 * Inflight tracking (INFLIGHT_SHMFD): each popped head is recorded in the shared region the front-end
 * keeps across back-end restarts (the split-ring format of docs/interop/vhost-user.rst "Inflight I/O
 * tracking"), and cleared when completed. When a ring starts on an initialized region, heads still
 * marked inflight are resubmitted in the order they were popped, and the next avail index is derived
 * from the used ring (popped = completed + inflight), so a back-end killed with requests in flight
 * neither loses nor repeats a request.
 *
 * Errors: a malformed message is logged in one line and answered with a failure when the front-end
 * asked for a reply (NEED_REPLY); otherwise the connection is closed, as the spec allows. A malformed
 * descriptor chain (VirtqueueError) stops only that ring (and signals its error eventfd, which QEMU
 * logs) until the front-end restarts it. Nothing escapes to the event loop.
 */
import type { BlockDevice } from '../../core/block-device.js';
import { EventFd } from '../../sys/eventfd.js';
import { closeFd, closeFds } from '../../sys/fd.js';
import { memfdCreate } from '../../sys/memfd.js';
import { mapShared, MAX_MAPPING_BYTES, type MappedRegion } from '../../sys/mmap.js';
import type { UnixStream } from '../../sys/unix-socket.js';
import { isPeerHangUp, type ExportLog, type ExportLogLevel } from '../log.js';
import { BlkRequestHandler, blkFeatures, encodeBlkConfig, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC } from './blk.js';
import { GuestMemory, MAX_MEMORY_REGIONS } from './memory.js';
import * as M from './messages.js';
import { MAX_QUEUE_SIZE, splitRingSizes, SplitVirtqueue, VirtqueueError, type DescriptorChain } from './virtqueue.js';

/** Chains popped from one ring before yielding to the event loop. */
export const QUEUE_BATCH = 256;
/** Messages waiting behind a slow handler before the front-end is considered abusive. */
const MAX_PENDING_MESSAGES = 1024;
/** Why a connection closed when the front-end went away (end of file, EPIPE, ECONNRESET). */
const FRONT_END_GONE = 'front-end disconnected';
/** queueCount limit (the 1..16). */
export const MAX_QUEUES = 16;
/** Inflight region: per-queue header, per-descriptor state, each queue's region 64-byte aligned. */
const INFLIGHT_QUEUE_HEADER_BYTES = 16;
const INFLIGHT_DESC_BYTES = 16;
const INFLIGHT_ALIGN_BYTES = 64;
const INFLIGHT_VERSION = 1;

export const PROTOCOL_FEATURES_OFFERED =
  M.bit(M.ProtocolFeature.MQ) |
  M.bit(M.ProtocolFeature.REPLY_ACK) |
  M.bit(M.ProtocolFeature.CONFIG) |
  M.bit(M.ProtocolFeature.INFLIGHT_SHMFD) |
  M.bit(M.ProtocolFeature.RESET_DEVICE) |
  M.bit(M.ProtocolFeature.CONFIGURE_MEM_SLOTS);

/** Config space offsets at or above this are taken relative to it (cloud-hypervisor asks at 0x100). */
const CONFIG_ALIAS_OFFSET = 0x100;

export function inflightQueueRegionBytes(queueSize: number): number {
  const raw = INFLIGHT_QUEUE_HEADER_BYTES + INFLIGHT_DESC_BYTES * queueSize;
  return Math.ceil(raw / INFLIGHT_ALIGN_BYTES) * INFLIGHT_ALIGN_BYTES;
}

export interface VhostUserBlkBackendOptions {
  device: BlockDevice;
  queueCount: number;
  readOnly: boolean;
  serial: string;
  /** One line per event worth a human's attention, at its level (a protocol error: warn). */
  log: ExportLog;
  /** Also log every message received (debugging interop). */
  trace?: boolean;
}

/** A request we refuse: answered with a failure if a reply is expected, else the connection closes. */
class ProtocolError extends Error {
  override readonly name = 'ProtocolError';
}

/** A request we decline without distrusting the front-end (e.g. SET_CONFIG): never closes the connection. */
class DeclinedError extends Error {
  override readonly name = 'DeclinedError';
}

interface Reply {
  payload: Uint8Array;
  /** Sent with the reply and then closed here. */
  fds?: number[];
}

class Queue {
  /** SET_VRING_NUM; 0 until set. */
  size = 0;
  /** SET_VRING_BASE, and where GET_VRING_BASE leaves the ring. */
  base = 0;
  addr: M.VringAddr | undefined;
  kick: EventFd | undefined;
  call: EventFd | undefined;
  err: EventFd | undefined;
  /** A kick fd arrived since the last stop. */
  started = false;
  enabled = false;
  vq: SplitVirtqueue | undefined;
  /** A guest error stopped the ring until it is restarted. */
  broken = false;
  inFlight = 0;
  /** processQueue is scheduled (setImmediate) or running. */
  scheduled = false;
  notifyScheduled = false;
  /** This ring's part of the inflight region while the ring runs with tracking. */
  inflightView: DataView | undefined;

  constructor(readonly index: number) {}
}

interface InflightRegion {
  mapping: MappedRegion;
  queueCount: number;
  queueSize: number;
  strideBytes: number;
}

export class VhostUserBlkBackend {
  readonly closed: Promise<void>;
  private resolveClosed!: () => void;
  private readonly sock: UnixStream;
  private readonly opts: VhostUserBlkBackendOptions;
  private readonly handler: BlkRequestHandler;
  private readonly memory = new GuestMemory();
  private readonly framer: M.MessageFramer;
  private readonly queues: Queue[];
  private readonly featuresOffered: bigint;
  private readonly config: Uint8Array;
  private features = 0n;
  private protocolFeatures = 0n;
  private backendReqFd = -1;
  private inflight: InflightRegion | undefined;
  /** Monotonic counter stamped on inflight entries (resubmission order). */
  private inflightCounter = 0;
  private pending: M.Message[] = [];
  private dispatching = false;
  /** >0 while a handler waits for requests in flight to finish: nothing is popped. */
  private paused = 0;
  /** requestShutdown: no new chains, finish what is in flight, then close. */
  private draining = false;
  private closing = false;
  private inFlightTotal = 0;
  private idleWaiters: Array<{ done: () => boolean; resolve: () => void }> = [];
  private requestCount = 0;

  constructor(sock: UnixStream, opts: VhostUserBlkBackendOptions) {
    this.sock = sock;
    this.opts = opts;
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
    const device = opts.device;
    const readOnly = opts.readOnly || device.capabilities.readOnly;
    this.handler = new BlkRequestHandler(device, { readOnly, serial: opts.serial, log: opts.log });
    this.featuresOffered =
      blkFeatures({ readOnly, discard: device.capabilities.discard }) | M.bit(M.VHOST_USER_F_PROTOCOL_FEATURES);
    this.config = encodeBlkConfig({
      capacityBytes: device.sizeBytes,
      queueCount: opts.queueCount,
      writeZeroesMayUnmap: device.capabilities.discard,
    });
    this.queues = Array.from({ length: opts.queueCount }, (_, i) => new Queue(i));
    this.framer = new M.MessageFramer((maxBytes, maxFds) => this.sock.recvMessage(maxBytes, maxFds));
    sock.onReadable(() => this.onSocketReadable());
  }

  /** Requests completed or in flight since the connection started. */
  get requests(): number {
    return this.requestCount;
  }

  /** Negotiated feature bits (for diagnostics and tests). */
  get negotiated(): { features: bigint; protocolFeatures: bigint } {
    return { features: this.features, protocolFeatures: this.protocolFeatures };
  }

  get isClosing(): boolean {
    return this.closing;
  }

  /** Graceful stop: no new requests; those in flight complete (and reach the guest); then close. */
  shutdown(): void {
    if (this.closing || this.draining) return;
    this.draining = true;
    for (const q of this.queues) q.kick?.stopWatching();
    void this.whenIdle(() => this.inFlightTotal === 0).then(() => this.close('export shut down', 'info'));
  }

  /**
   * Drops the connection. Requests in flight finish (their buffers may be written by device I/O) but
   * are not pushed to the rings: the front-end owns the rings again once the socket is gone, and with
   * INFLIGHT_SHMFD the next back-end resubmits them. Memory and descriptors are released after that.
   */
  close(reason: string, level: ExportLogLevel): void {
    if (this.closing) return;
    this.closing = true;
    this.opts.log(`connection closed: ${reason}`, level);
    this.sock.close();
    for (const q of this.queues) q.kick?.stopWatching();
    closeFds(this.framer.dispose());
    for (const m of this.pending) closeFds(m.fds);
    this.pending = [];
    void this.whenIdle(() => this.inFlightTotal === 0).then(() => {
      // After every handler waiting on the same condition has seen `closing` and returned.
      setImmediate(() => this.release());
    });
  }

  private release(): void {
    try {
      this.memory.clear();
      this.inflight?.mapping.unmap();
      this.inflight = undefined;
      for (const q of this.queues) this.resetQueue(q);
      closeFd(this.backendReqFd);
      this.backendReqFd = -1;
    } catch (err) {
      this.opts.log(`releasing connection resources failed: ${describe(err)}`, 'warn');
    }
    this.resolveClosed();
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
      this.close(`protocol error: ${describe(err)}`, 'warn');
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
      this.close(`internal error handling a message: ${describe(err)}`, 'warn');
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
      else this.refuse(m, `${name} failed: ${describe(err)}`, false);
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
      this.close(`cannot reply to ${M.requestName(request)}: ${describe(err)}`, 'warn');
    }
  }

  /** EPIPE on a reply, ECONNRESET on a read: the front-end went away, as at end of file. True if so. */
  private closedByHangUp(err: unknown): boolean {
    if (!isPeerHangUp(err)) return false;
    this.opts.log(`front-end hung up: ${describe(err)}`, 'debug');
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
        this.features = features;
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
        for (const q of this.queues) await this.stopRing(q);
        return undefined;
      case R.RESET_DEVICE:
        await this.resetDevice();
        return undefined;
      case R.GET_QUEUE_NUM:
        return { payload: M.encodeU64(BigInt(this.queues.length)) };
      case R.GET_MAX_MEM_SLOTS:
        return { payload: M.encodeU64(BigInt(MAX_MEMORY_REGIONS)) };
      case R.SET_MEM_TABLE:
        await this.setMemTable(M.decodeMemoryTable(p), fds);
        return undefined;
      case R.ADD_MEM_REG:
        this.addRegion(M.decodeSingleRegion(p), fds, 0);
        this.refreshRings();
        return undefined;
      case R.REM_MEM_REG:
        await this.removeRegion(M.decodeSingleRegion(p));
        return undefined;
      case R.SET_VRING_NUM:
        this.setVringNum(M.decodeVringState(p));
        return undefined;
      case R.SET_VRING_ADDR:
        this.setVringAddr(M.decodeVringAddr(p));
        return undefined;
      case R.SET_VRING_BASE:
        this.setVringBase(M.decodeVringState(p));
        return undefined;
      case R.GET_VRING_BASE: {
        const q = this.queue(M.decodeVringState(p).index);
        const base = await this.stopRing(q);
        return { payload: M.encodeVringState({ index: q.index, num: base }) };
      }
      case R.SET_VRING_KICK:
      case R.SET_VRING_CALL:
      case R.SET_VRING_ERR:
        this.setVringFd(request, M.decodeU64(p), fds);
        return undefined;
      case R.SET_VRING_ENABLE:
        this.setVringEnable(M.decodeVringState(p));
        return undefined;
      case R.SET_BACKEND_REQ_FD:
        // Accepted and kept for the connection's lifetime; we send nothing on it (BACKEND_REQ is not offered).
        closeFd(this.backendReqFd);
        this.backendReqFd = take(fds, 0);
        return undefined;
      case R.GET_CONFIG:
        return { payload: this.getConfig(M.decodeConfig(p)) };
      case R.SET_CONFIG: {
        const c = M.decodeConfig(p);
        throw new DeclinedError(
          `${c.sizeBytes} bytes at offset ${c.offset} (flags ${c.flags}): the virtio-blk config space has no writable fields here`,
        );
      }
      case R.GET_INFLIGHT_FD:
        return this.getInflightFd(M.decodeInflight(p), p.length);
      case R.SET_INFLIGHT_FD:
        await this.setInflightFd(M.decodeInflight(p), fds);
        return undefined;
      default:
        // validateMessage only passes requests listed above.
        throw new ProtocolError('unsupported request');
    }
  }

  private queue(index: number): Queue {
    const q = this.queues[index];
    if (q === undefined) throw new ProtocolError(`vring index ${index} is out of range (${this.queues.length} queues)`);
    return q;
  }

  private getConfig(c: M.ConfigAccess): Uint8Array {
    const offset = c.offset >= CONFIG_ALIAS_OFFSET ? c.offset - CONFIG_ALIAS_OFFSET : c.offset;
    if (offset > this.config.length) throw new ProtocolError(`config offset 0x${c.offset.toString(16)} is beyond the ${this.config.length}-byte config space`);
    // Bytes past the end of struct virtio_blk_config read as zero, as on a PCI device.
    const data = new Uint8Array(c.sizeBytes);
    data.set(this.config.subarray(offset, offset + c.sizeBytes));
    return M.encodeConfig({ offset: c.offset, sizeBytes: c.sizeBytes, flags: c.flags, data });
  }

  // --- memory --------------------------------------------------------------------------------------

  private addRegion(r: M.MemoryRegion, fds: number[], fdIndex: number): void {
    if (r.sizeBytes === 0n || r.sizeBytes > BigInt(Number.MAX_SAFE_INTEGER) || r.mmapOffsetBytes > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new ProtocolError(`memory region of 0x${r.sizeBytes.toString(16)} bytes at mmap offset 0x${r.mmapOffsetBytes.toString(16)}`);
    }
    const fd = fds[fdIndex]!;
    // GuestMemory maps the region and leaves the descriptor to us: the mapping outlives it, so it is
    // closed right away (by dispatch, as it is not taken).
    this.memory.addRegion({
      guestAddr: r.guestAddr,
      sizeBytes: Number(r.sizeBytes),
      frontendAddr: r.frontendAddr,
      mmapOffsetBytes: Number(r.mmapOffsetBytes),
      fd,
    });
  }

  private async setMemTable(regions: M.MemoryRegion[], fds: number[]): Promise<void> {
    await this.quiesce(() => {
      this.memory.clear();
      try {
        regions.forEach((r, i) => this.addRegion(r, fds, i));
      } catch (err) {
        // A partial table would translate some addresses and not others: drop it all.
        this.memory.clear();
        throw err;
      }
      this.refreshRings();
    });
  }

  private async removeRegion(r: M.MemoryRegion): Promise<void> {
    await this.quiesce(() => {
      if (r.sizeBytes > BigInt(Number.MAX_SAFE_INTEGER) || !this.memory.removeRegion(r.guestAddr, Number(r.sizeBytes), r.frontendAddr)) {
        throw new ProtocolError(`no memory region at guest address 0x${r.guestAddr.toString(16)} of 0x${r.sizeBytes.toString(16)} bytes`);
      }
      this.refreshRings();
    });
  }

  /**
   * Runs fn once no request is in flight, popping nothing meanwhile (fn unmaps or replaces memory
   * that in-flight requests may still be using).
   */
  private async quiesce(fn: () => void): Promise<void> {
    this.paused++;
    try {
      await this.whenIdle(() => this.inFlightTotal === 0);
      if (this.closing) return;
      fn();
    } finally {
      this.paused--;
      if (this.paused === 0) for (const q of this.queues) this.scheduleQueue(q);
    }
  }

  // --- rings ---------------------------------------------------------------------------------------

  private requireStopped(q: Queue, what: string): void {
    if (q.vq !== undefined) throw new ProtocolError(`${what} for vring ${q.index} while it is running`);
  }

  private setVringNum(s: M.VringState): void {
    const q = this.queue(s.index);
    this.requireStopped(q, 'SET_VRING_NUM');
    if (s.num === 0 || s.num > MAX_QUEUE_SIZE || (s.num & (s.num - 1)) !== 0) {
      throw new ProtocolError(`vring ${q.index} size ${s.num} is not a power of two in 1..${MAX_QUEUE_SIZE}`);
    }
    q.size = s.num;
  }

  private setVringBase(s: M.VringState): void {
    const q = this.queue(s.index);
    this.requireStopped(q, 'SET_VRING_BASE');
    if (s.num > 0xffff) throw new ProtocolError(`vring ${q.index} base ${s.num} does not fit a split ring's 16-bit index`);
    q.base = s.num;
  }

  private setVringAddr(a: M.VringAddr): void {
    const q = this.queue(a.index);
    this.requireStopped(q, 'SET_VRING_ADDR');
    if (q.size > 0 && this.memory.regionCount > 0 && this.ringViews(q.size, a) === undefined) {
      throw new ProtocolError(
        `vring ${q.index} addresses (desc 0x${a.descFrontendAddr.toString(16)}, avail 0x${a.availFrontendAddr.toString(16)}, ` +
          `used 0x${a.usedFrontendAddr.toString(16)}) are not inside the memory table`,
      );
    }
    q.addr = a;
  }

  private ringViews(size: number, a: M.VringAddr): { desc: Uint8Array; avail: Uint8Array; used: Uint8Array } | undefined {
    // Sized for EVENT_IDX whatever was negotiated: the extra two bytes are part of the ring's allocation.
    const sizes = splitRingSizes(size, true);
    const desc = this.memory.frontendRange(a.descFrontendAddr, sizes.descBytes);
    const avail = this.memory.frontendRange(a.availFrontendAddr, sizes.availBytes);
    const used = this.memory.frontendRange(a.usedFrontendAddr, sizes.usedBytes);
    return desc && avail && used ? { desc, avail, used } : undefined;
  }

  private setVringFd(request: number, value: bigint, fds: number[]): void {
    const index = Number(value & M.VRING_INDEX_MASK);
    if ((value & ~(M.VRING_INDEX_MASK | M.VRING_NOFD_FLAG)) !== 0n) throw new ProtocolError(`reserved bits set in 0x${value.toString(16)}`);
    const q = this.queue(index);
    const noFd = (value & M.VRING_NOFD_FLAG) !== 0n;
    const ev = noFd ? undefined : EventFd.fromFd(fds[0]!);
    if (ev !== undefined) take(fds, 0);
    if (request === M.Request.SET_VRING_KICK) {
      q.kick?.close();
      q.kick = ev;
      if (ev === undefined) {
        // Polling a ring without a kick would need a busy loop; QEMU never asks for it for virtio-blk.
        throw new ProtocolError(`vring ${index}: polling mode (no kick fd) is not supported`);
      }
      q.started = true;
      if (!this.protocolFeaturesNegotiated()) q.enabled = true;
      this.startRing(q);
    } else if (request === M.Request.SET_VRING_CALL) {
      q.call?.close();
      q.call = ev;
    } else {
      q.err?.close();
      q.err = ev;
    }
  }

  private setVringEnable(s: M.VringState): void {
    const q = this.queue(s.index);
    if (s.num > 1) throw new ProtocolError(`vring ${q.index} enable value ${s.num}`);
    q.enabled = s.num === 1;
    if (q.enabled) this.startRing(q);
    // Disabled: processQueue pops nothing more; requests in flight still complete.
  }

  private protocolFeaturesNegotiated(): boolean {
    return (this.features & M.bit(M.VHOST_USER_F_PROTOCOL_FEATURES)) !== 0n;
  }

  /** Builds the ring and starts watching its kick once it is started, enabled and fully configured. */
  private startRing(q: Queue): void {
    if (!q.started || !q.enabled || q.broken || this.closing) return;
    if (q.vq === undefined) {
      if (q.size === 0 || q.addr === undefined) throw new ProtocolError(`vring ${q.index} started before SET_VRING_NUM/SET_VRING_ADDR`);
      const views = this.ringViews(q.size, q.addr);
      if (views === undefined) throw new ProtocolError(`vring ${q.index} addresses are not inside the memory table`);
      const usedIdx = new DataView(views.used.buffer, views.used.byteOffset, 4).getUint16(2, true);
      const recovery = this.recoverInflight(q, usedIdx);
      q.vq = this.makeVirtqueue(q, views, recovery?.lastAvailIdx ?? q.base, usedIdx);
      if (recovery !== undefined) this.resubmit(q, q.vq, recovery.heads);
    }
    const kick = q.kick;
    if (kick !== undefined && !this.draining) {
      kick.onReadable(() => {
        try {
          kick.drain();
        } catch (err) {
          this.breakQueue(q, `kick eventfd failed: ${describe(err)}`);
          return;
        }
        this.scheduleQueue(q, true);
      });
    }
    // The guest may have queued requests before the kick fd was watched.
    this.scheduleQueue(q, true);
  }

  private makeVirtqueue(
    q: Queue,
    views: { desc: Uint8Array; avail: Uint8Array; used: Uint8Array },
    lastAvailIdx: number,
    usedIdx: number,
  ): SplitVirtqueue {
    try {
      return new SplitVirtqueue({
        memory: this.memory,
        queueSize: q.size,
        ...views,
        eventIdx: (this.features & M.bit(VIRTIO_RING_F_EVENT_IDX)) !== 0n,
        indirectDesc: (this.features & M.bit(VIRTIO_RING_F_INDIRECT_DESC)) !== 0n,
        lastAvailIdx,
        usedIdx,
      });
    } catch (err) {
      if (err instanceof VirtqueueError) throw new ProtocolError(`vring ${q.index}: ${err.message}`);
      throw err;
    }
  }

  /** After the memory table changed: rebuild running rings' views over the new mappings. */
  private refreshRings(): void {
    for (const q of this.queues) {
      const old = q.vq;
      if (old === undefined || q.addr === undefined) continue;
      const views = this.ringViews(q.size, q.addr);
      if (views === undefined) {
        q.vq = undefined;
        this.breakQueue(q, 'its ring is no longer inside the memory table');
        continue;
      }
      q.vq = this.makeVirtqueue(q, views, old.lastAvailIdx, old.usedIdx);
    }
  }

  /** GET_VRING_BASE: stop popping, let requests in flight complete and reach the ring, report the base. */
  private async stopRing(q: Queue): Promise<number> {
    q.started = false;
    q.kick?.stopWatching();
    await this.whenIdle(() => q.inFlight === 0);
    if (q.vq !== undefined) q.base = q.vq.lastAvailIdx;
    q.vq = undefined;
    q.inflightView = undefined;
    q.broken = false;
    return q.base;
  }

  private async resetDevice(): Promise<void> {
    for (const q of this.queues) await this.stopRing(q);
    await this.quiesce(() => {
      this.memory.clear();
      this.inflight?.mapping.unmap();
      this.inflight = undefined;
      for (const q of this.queues) this.resetQueue(q);
      this.features = 0n;
    });
  }

  private resetQueue(q: Queue): void {
    q.kick?.close();
    q.call?.close();
    q.err?.close();
    q.kick = q.call = q.err = undefined;
    q.vq = undefined;
    q.inflightView = undefined;
    q.addr = undefined;
    q.size = 0;
    q.base = 0;
    q.started = q.enabled = q.broken = false;
  }

  /** Stops a ring after a guest error until the front-end restarts it; tells the front-end via the err fd. */
  private breakQueue(q: Queue, reason: string): void {
    if (q.broken) return;
    q.broken = true;
    q.kick?.stopWatching();
    this.opts.log(`vring ${q.index} stopped: ${reason}`, 'warn');
    try {
      q.err?.signal();
    } catch {
      // The front-end went away; the socket will tell.
    }
  }

  // --- request path --------------------------------------------------------------------------------

  private scheduleQueue(q: Queue, now = false): void {
    if (q.scheduled || q.vq === undefined) return;
    q.scheduled = true;
    if (now) this.processQueue(q);
    else setImmediate(() => this.processQueue(q));
  }

  private processQueue(q: Queue): void {
    q.scheduled = false;
    const vq = q.vq;
    if (vq === undefined || !q.started || !q.enabled || q.broken || this.paused > 0 || this.draining || this.closing) return;
    try {
      vq.disableNotify();
      let popped = 0;
      for (;;) {
        if (popped >= QUEUE_BATCH) {
          // Come back after other rings, the control socket and completions had their turn.
          this.scheduleQueue(q);
          return;
        }
        const chain = vq.pop();
        if (chain === undefined) {
          vq.enableNotify();
          // A chain published between the last pop and enableNotify() produced no kick.
          if (!vq.hasAvailable()) return;
          vq.disableNotify();
          continue;
        }
        popped++;
        this.submit(q, vq, chain);
      }
    } catch (err) {
      this.breakQueue(q, err instanceof VirtqueueError ? `guest driver error: ${err.message}` : `internal error: ${describe(err)}`);
    }
  }

  private submit(q: Queue, vq: SplitVirtqueue, chain: DescriptorChain): void {
    this.markInflight(q, chain.head);
    q.inFlight++;
    this.inFlightTotal++;
    this.requestCount++;
    this.handler.handle(chain).then(
      (writtenBytes) => this.complete(q, vq, chain.head, writtenBytes),
      (err: unknown) => {
        if (err instanceof VirtqueueError) {
          // No status byte to write: the chain cannot be completed; the ring is unusable.
          this.breakQueue(q, `guest driver error: ${err.message}`);
          this.finish(q);
        } else {
          this.opts.log(`vring ${q.index}: request ${chain.head} failed unexpectedly: ${describe(err)}`, 'warn');
          this.complete(q, vq, chain.head, 0);
        }
      },
    );
  }

  private complete(q: Queue, vq: SplitVirtqueue, head: number, writtenBytes: number): void {
    // Only the ring that popped the chain may take it back, and only while we still own the rings.
    if (!this.closing && q.vq === vq) {
      try {
        this.inflightBeforePush(q, head);
        vq.pushUsed(head, writtenBytes);
        this.inflightAfterPush(q, head, vq.usedIdx);
        this.scheduleNotify(q);
      } catch (err) {
        this.breakQueue(q, `completing request ${head} failed: ${describe(err)}`);
      }
    }
    this.finish(q);
  }

  private finish(q: Queue): void {
    q.inFlight--;
    this.inFlightTotal--;
    this.checkIdle();
  }

  /** One call-eventfd decision per burst of completions (EVENT_IDX or NO_INTERRUPT decides). */
  private scheduleNotify(q: Queue): void {
    if (q.notifyScheduled) return;
    q.notifyScheduled = true;
    queueMicrotask(() => {
      q.notifyScheduled = false;
      const vq = q.vq;
      if (vq === undefined || this.closing || q.call === undefined) return;
      try {
        if (vq.shouldNotify()) q.call.signal();
      } catch (err) {
        this.opts.log(`vring ${q.index}: cannot signal the call eventfd: ${describe(err)}`, 'warn');
      }
    });
  }

  private whenIdle(done: () => boolean): Promise<void> {
    if (done()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push({ done, resolve }));
  }

  private checkIdle(): void {
    if (this.idleWaiters.length === 0) return;
    const ready = this.idleWaiters.filter((w) => w.done());
    if (ready.length === 0) return;
    this.idleWaiters = this.idleWaiters.filter((w) => !ready.includes(w));
    for (const w of ready) w.resolve();
  }

  // --- inflight tracking ---------------------------------------------------------------------------

  private getInflightFd(d: M.InflightDescription, replyBytes: number): Reply {
    this.checkInflightShape(d);
    const sizeBytes = d.queueCount * inflightQueueRegionBytes(d.queueSize);
    // A fresh memfd reads as zeroes: every queue region starts uninitialized (version 0).
    const fd = memfdCreate('strata-vhost-inflight', sizeBytes);
    return {
      payload: M.encodeInflight({ mmapSizeBytes: BigInt(sizeBytes), mmapOffsetBytes: 0n, queueCount: d.queueCount, queueSize: d.queueSize }, replyBytes),
      fds: [fd],
    };
  }

  private checkInflightShape(d: M.InflightDescription): void {
    if (d.queueCount < 1 || d.queueCount > this.queues.length) {
      throw new ProtocolError(`inflight region for ${d.queueCount} queues (this device has ${this.queues.length})`);
    }
    if (d.queueSize < 1 || d.queueSize > MAX_QUEUE_SIZE || (d.queueSize & (d.queueSize - 1)) !== 0) {
      throw new ProtocolError(`inflight queue size ${d.queueSize} is not a power of two in 1..${MAX_QUEUE_SIZE}`);
    }
  }

  private async setInflightFd(d: M.InflightDescription, fds: number[]): Promise<void> {
    this.checkInflightShape(d);
    const strideBytes = inflightQueueRegionBytes(d.queueSize);
    const needBytes = d.queueCount * strideBytes;
    if (d.mmapSizeBytes < BigInt(needBytes) || d.mmapSizeBytes > BigInt(MAX_MAPPING_BYTES) || d.mmapOffsetBytes > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new ProtocolError(`inflight region of ${d.mmapSizeBytes} bytes (need ${needBytes} for ${d.queueCount} x ${d.queueSize})`);
    }
    const fd = fds[0]!;
    await this.quiesce(() => {
      const mapping = mapShared(fd, Number(d.mmapSizeBytes), Number(d.mmapOffsetBytes));
      // Running rings stop tracking rather than keep a view of the old mapping; they pick the new
      // region up when they restart.
      for (const q of this.queues) q.inflightView = undefined;
      this.inflight?.mapping.unmap();
      this.inflight = { mapping, queueCount: d.queueCount, queueSize: d.queueSize, strideBytes };
    });
  }

  /** The DataView over queue q's inflight region, when tracking applies to this ring. */
  private inflightRegionFor(q: Queue): DataView | undefined {
    const r = this.inflight;
    if (r === undefined || q.index >= r.queueCount || q.size > r.queueSize) return undefined;
    const b = r.mapping.bytes;
    return new DataView(b.buffer, b.byteOffset + q.index * r.strideBytes, r.strideBytes);
  }

  /**
   * When a ring starts: initializes its inflight region, or, if the region holds a previous back-end's
   * state, repairs the last completion batch and returns the heads to resubmit (oldest first) and the
   * avail index to continue from.
   */
  private recoverInflight(q: Queue, ringUsedIdx: number): { heads: number[]; lastAvailIdx: number } | undefined {
    const v = this.inflightRegionFor(q);
    const r = this.inflight;
    if (v === undefined || r === undefined) {
      if (r !== undefined) this.opts.log(`vring ${q.index}: not tracked in the inflight region (${r.queueCount} x ${r.queueSize} entries)`, 'warn');
      return undefined;
    }
    const descNum = r.queueSize;
    const initialize = (): undefined => {
      new Uint8Array(v.buffer, v.byteOffset, v.byteLength).fill(0);
      v.setUint16(8, INFLIGHT_VERSION, true);
      v.setUint16(10, descNum, true);
      v.setUint16(14, ringUsedIdx, true);
      q.inflightView = v;
      return undefined;
    };
    q.inflightView = v;
    if (v.getUint16(8, true) !== INFLIGHT_VERSION || v.getUint16(10, true) !== descNum) return initialize();
    const savedUsedIdx = v.getUint16(14, true);
    if (savedUsedIdx !== ringUsedIdx) {
      // The previous back-end died between pushing a batch to the used ring and clearing its entries.
      const batch = (ringUsedIdx - savedUsedIdx) & 0xffff;
      if (batch > q.size) {
        this.opts.log(`vring ${q.index}: inflight region does not match the used ring (used ${ringUsedIdx}, saved ${savedUsedIdx}); reinitialized`, 'warn');
        return initialize();
      }
      let head = v.getUint16(12, true);
      for (let i = 0; i < batch && head < descNum; i++) {
        v.setUint8(INFLIGHT_QUEUE_HEADER_BYTES + head * INFLIGHT_DESC_BYTES, 0);
        head = v.getUint16(INFLIGHT_QUEUE_HEADER_BYTES + head * INFLIGHT_DESC_BYTES + 6, true);
      }
      v.setUint16(14, ringUsedIdx, true);
    }
    const entries: Array<{ head: number; counter: number }> = [];
    for (let head = 0; head < descNum; head++) {
      const o = INFLIGHT_QUEUE_HEADER_BYTES + head * INFLIGHT_DESC_BYTES;
      if (v.getUint8(o) === 0) continue;
      const counter = v.getUint32(o + 8, true) + v.getUint32(o + 12, true) * 2 ** 32;
      if (head >= q.size) {
        v.setUint8(o, 0);
        continue;
      }
      entries.push({ head, counter });
      this.inflightCounter = Math.max(this.inflightCounter, counter + 1);
    }
    if (entries.length === 0) return undefined;
    entries.sort((a, b) => a.counter - b.counter);
    this.opts.log(`vring ${q.index}: resubmitting ${entries.length} request(s) left in flight by a previous back-end`, 'info');
    // Every chain the old back-end popped is either completed (counted in used.idx) or still inflight.
    return { heads: entries.map((e) => e.head), lastAvailIdx: (ringUsedIdx + entries.length) & 0xffff };
  }

  private resubmit(q: Queue, vq: SplitVirtqueue, heads: number[]): void {
    let chainAt = (vq as unknown as { chainAt?: (head: number) => DescriptorChain }).chainAt?.bind(vq);
    if (chainAt === undefined) {
      // Without a walk-from-head API, a throw-away ring over the real descriptor table and a private
      // avail ring listing exactly these heads yields the same validated chains through pop().
      const views = q.addr === undefined ? undefined : this.ringViews(q.size, q.addr);
      if (views === undefined) return;
      const sizes = splitRingSizes(q.size, false);
      const avail = new Uint16Array(sizes.availBytes / 2);
      avail[1] = heads.length;
      heads.forEach((h, i) => (avail[2 + i] = h));
      const replay = new SplitVirtqueue({
        memory: this.memory,
        queueSize: q.size,
        desc: views.desc,
        avail: new Uint8Array(avail.buffer),
        used: new Uint8Array(new Uint32Array(sizes.usedBytes / 4 + 1).buffer),
        eventIdx: false,
        indirectDesc: (this.features & M.bit(VIRTIO_RING_F_INDIRECT_DESC)) !== 0n,
      });
      chainAt = () => {
        const chain = replay.pop();
        if (chain === undefined) throw new VirtqueueError('inflight replay ran dry');
        return chain;
      };
    }
    for (const head of heads) {
      let chain: DescriptorChain;
      try {
        chain = chainAt(head);
      } catch (err) {
        this.breakQueue(q, `resubmitting request ${head}: ${describe(err)}`);
        return;
      }
      this.submit(q, vq, chain);
    }
  }

  private markInflight(q: Queue, head: number): void {
    const v = q.inflightView;
    if (v === undefined) return;
    const o = INFLIGHT_QUEUE_HEADER_BYTES + head * INFLIGHT_DESC_BYTES;
    const counter = this.inflightCounter++;
    v.setUint32(o + 8, counter >>> 0, true);
    v.setUint32(o + 12, Math.floor(counter / 2 ** 32), true);
    v.setUint8(o, 1);
  }

  /** Links head into the last-batch list before it becomes visible in the used ring. */
  private inflightBeforePush(q: Queue, head: number): void {
    const v = q.inflightView;
    if (v === undefined) return;
    v.setUint16(INFLIGHT_QUEUE_HEADER_BYTES + head * INFLIGHT_DESC_BYTES + 6, v.getUint16(12, true), true);
    v.setUint16(12, head, true);
  }

  private inflightAfterPush(q: Queue, head: number, usedIdx: number): void {
    const v = q.inflightView;
    if (v === undefined) return;
    v.setUint8(INFLIGHT_QUEUE_HEADER_BYTES + head * INFLIGHT_DESC_BYTES, 0);
    v.setUint16(14, usedIdx, true);
  }
}

/** Takes ownership of fds[i] (dispatch will not close it). */
function take(fds: number[], i: number): number {
  const fd = fds[i];
  if (fd === undefined || fd < 0) throw new ProtocolError('missing file descriptor');
  fds[i] = -1;
  return fd;
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
