/**
 * A vhost-user-blk front-end in TypeScript: it plays QEMU's role without a VM, for tests (hostile
 * guests, malformed messages) and benchmarks. Shared by bench/vhost-bench.ts and the tests
 * (test/vhost-user/frontend.ts re-exports it).
 *
 * - Connects to a back-end's unix socket and replays the message sequence QEMU 7.2 sends
 *   (GET_FEATURES, GET/SET_PROTOCOL_FEATURES, GET_QUEUE_NUM, GET_MAX_MEM_SLOTS, SET_OWNER,
 *   SET_VRING_CALL, GET_CONFIG; on start SET_FEATURES, ADD_MEM_REG or SET_MEM_TABLE, per queue
 *   SET_VRING_NUM/BASE/ADDR/KICK/CALL, then SET_VRING_ENABLE; on stop SET_VRING_ENABLE 0 and
 *   GET_VRING_BASE).
 * - "Guest" memory is a memfd mapped MAP_SHARED here, split into one or more regions; guest
 *   addresses (`guestAddr`) start at 0 with a gap between regions, front-end addresses
 *   (`frontendAddr`, what QEMU calls user addresses) are this process's mapping addresses.
 * - Split rings laid out like Linux lays them out (desc table, avail ring, used ring aligned to
 *   4 KiB), with or without EVENT_IDX and INDIRECT_DESC.
 * - The wire encoding is written here on purpose, independently of src/export/vhost-user/messages.ts:
 *   an independent encoder is the better test of the back-end.
 */
import { EventFd } from '../../../src/sys/eventfd.js';
import { closeFd } from '../../../src/sys/fd.js';
import { UnixStream } from '../../../src/sys/unix-socket.js';
import { BlkConfig, BlkFeature, BlkStatus, BlkStatusError, BlkType, ConnectionClosedError, DescFlag, FLAG_NEED_REPLY, FLAG_REPLY, FLAG_VERSION, HEADER_BYTES, MemRegionDesc, MessageHeader, PAGE, ProtocolFeature, REPLYING, ReceivedMessage, VHOST_USER_F_PROTOCOL_FEATURES, VhostUserRequest, bit, configPayload, decodeBlkConfig, encodeMessage, memTablePayload, singleRegionPayload, u64Payload, vringAddrPayload, vringStatePayload } from './wire.js';
import { DEFAULT_PROTOCOL_MASK, FrontendOptions, StartOptions, WANTED_BLK_FEATURES } from './options.js';
import { GuestBuffer, GuestMemoryImage } from './guest-memory.js';
import { ChainCompletion, DriverQueue, META_HEADER, META_INDIRECT, META_STATUS, RawDescriptor, SubmitChainOptions, dvOf } from './driver-queue.js';
// ---------------------------------------------------------------------------------------------
// The front-end

export interface IoResult {
  status: number;
  /** used.len as reported by the back-end */
  writtenBytes: number;
}

export interface SectorRange {
  sector: bigint | number;
  sectors: number;
}

export class VhostUserFrontend {
  readonly socketPath: string;
  private readonly opts: Required<Omit<FrontendOptions, 'segmentBytes'>> & { segmentBytes: number };
  private stream: UnixStream | undefined;
  private inbuf = new Uint8Array(0);
  private inFds: number[] = [];
  private readonly replies: ReceivedMessage[] = [];
  private replyWaiters: { resolve: (m: ReceivedMessage) => void; reject: (e: Error) => void }[] = [];
  private closedError: Error | undefined;
  private mem: GuestMemoryImage | undefined;
  private scratch: GuestBuffer | undefined;
  private scratchUsed = 0;
  private queues: DriverQueue[] = [];
  private nextQueue = 0;
  private readonly closeListeners: (() => void)[] = [];

  backendFeatures = 0n;
  backendProtocolFeatures = 0n;
  protocolFeatures = 0n;
  features = 0n;
  backendQueueCount = 1;
  maxMemSlots = 0;
  config: BlkConfig | undefined;
  /** Log of requests sent (ids), for tests that check the sequence. */
  readonly sent: number[] = [];
  started = false;

  private constructor(socketPath: string, opts: FrontendOptions) {
    this.socketPath = socketPath;
    this.opts = {
      queueCount: opts.queueCount ?? 1,
      queueSize: opts.queueSize ?? 256,
      queueDepth: opts.queueDepth ?? 64,
      maxRequestBytes: opts.maxRequestBytes ?? 128 * 1024,
      segmentBytes: opts.segmentBytes ?? 0,
      eventIdx: opts.eventIdx ?? true,
      indirect: opts.indirect ?? false,
      regionCount: opts.regionCount ?? 1,
      scratchBytes: opts.scratchBytes ?? 1024 * 1024,
      protocolFeatureMask: opts.protocolFeatureMask ?? DEFAULT_PROTOCOL_MASK,
      addMemReg: opts.addMemReg ?? true,
      ackAll: opts.ackAll ?? true,
      configBytes: opts.configBytes ?? 60,
      replyTimeoutMs: opts.replyTimeoutMs ?? 10_000,
      alwaysKick: opts.alwaysKick ?? false,
      start: opts.start ?? true,
      inflight: opts.inflight ?? false,
    };
    if (this.opts.inflight) this.opts.protocolFeatureMask |= bit(ProtocolFeature.INFLIGHT_SHMFD);
  }

  /** Connects only: no message sent (for malformed-message tests). Guest memory is set up. */
  static connectRaw(socketPath: string, opts: FrontendOptions = {}): VhostUserFrontend {
    const fe = new VhostUserFrontend(socketPath, opts);
    fe.open();
    return fe;
  }

  /** Connects and runs QEMU's init sequence, then (unless `start: false`) starts the rings. */
  static async connect(socketPath: string, opts: FrontendOptions = {}): Promise<VhostUserFrontend> {
    const fe = VhostUserFrontend.connectRaw(socketPath, opts);
    try {
      await fe.init();
      if (fe.opts.start) await fe.start();
      return fe;
    } catch (e) {
      fe.close();
      throw e;
    }
  }

  private open(): void {
    const o = this.opts;
    const maxSegments = o.segmentBytes > 0 ? Math.ceil(o.maxRequestBytes / o.segmentBytes) + 1 : 1;
    const metaBytes = META_INDIRECT + 16 * (maxSegments + 2);
    const perQueue =
      3 * PAGE + 16 * o.queueSize + 8 * o.queueSize + o.queueDepth * (Math.ceil(metaBytes / 64) * 64 + o.maxRequestBytes + PAGE);
    const total = o.queueCount * perQueue + o.scratchBytes + PAGE * 4 * o.regionCount;
    this.mem = new GuestMemoryImage(total, o.regionCount);
    try {
      for (let q = 0; q < o.queueCount; q++) {
        const dq = new DriverQueue(q, this.mem, o.queueSize, o.queueDepth, o.maxRequestBytes, maxSegments);
        dq.alwaysKick = o.alwaysKick;
        this.queues.push(dq);
      }
      this.scratch = this.mem.alloc(o.scratchBytes, PAGE, 0);
      this.stream = UnixStream.connect(this.socketPath);
    } catch (e) {
      this.close();
      throw e;
    }
    this.stream.onReadable(() => this.onReadable());
  }

  // ------------------------------------------------------------------ messages

  get connected(): boolean {
    return this.closedError === undefined && this.stream !== undefined;
  }

  /** Resolves when the back-end closes the connection (or we do). */
  whenClosed(): Promise<void> {
    if (!this.connected) return Promise.resolve();
    return new Promise((r) => this.closeListeners.push(r));
  }

  private onReadable(): void {
    const s = this.stream;
    if (!s) return;
    for (;;) {
      let got: ReturnType<UnixStream['recvMessage']>;
      try {
        got = s.recvMessage(65536, 16);
      } catch (e) {
        // ECONNRESET: the back-end closed with data unread; a close like any other
        const reset = (e as { errno?: number }).errno === 104;
        this.fail(reset ? new ConnectionClosedError('vhost-user connection reset by the back-end') : e instanceof Error ? e : new Error(String(e)));
        return;
      }
      if (got === 'again') break;
      if (got === 'eof') {
        this.fail(new ConnectionClosedError());
        return;
      }
      const merged = new Uint8Array(this.inbuf.length + got.data.length);
      merged.set(this.inbuf);
      merged.set(got.data, this.inbuf.length);
      this.inbuf = merged;
      this.inFds.push(...got.fds);
    }
    while (this.inbuf.length >= HEADER_BYTES) {
      const dv = new DataView(this.inbuf.buffer, this.inbuf.byteOffset, this.inbuf.length);
      const size = dv.getUint32(8, true);
      if (size > 4096) {
        this.fail(new Error(`back-end sent a message of ${size} bytes`));
        return;
      }
      if (this.inbuf.length < HEADER_BYTES + size) break;
      const msg: ReceivedMessage = {
        request: dv.getUint32(0, true),
        flags: dv.getUint32(4, true),
        size,
        payload: this.inbuf.slice(HEADER_BYTES, HEADER_BYTES + size),
        fds: this.inFds,
      };
      this.inFds = [];
      this.inbuf = this.inbuf.slice(HEADER_BYTES + size);
      const w = this.replyWaiters.shift();
      if (w) w.resolve(msg);
      else this.replies.push(msg);
    }
  }

  private fail(e: Error): void {
    if (this.closedError) return;
    this.closedError = e;
    for (const w of this.replyWaiters.splice(0)) w.reject(e);
    // What the back-end completed before it closed is in the used rings (guest memory, still
    // mapped): those requests succeeded, whether or not their interrupt arrived before the hang-up.
    // With an inflight region the others stay pending: the next back-end resubmits them (redial()).
    for (const q of this.queues) {
      q.reap();
      if (!this.inflightNegotiated) q.failAll(e);
    }
    for (const fd of this.inFds.splice(0)) closeFd(fd);
    for (const l of this.closeListeners.splice(0)) l();
  }

  /** Sends a message exactly as given (the header's size may lie). */
  sendRaw(header: MessageHeader, payload: Uint8Array = new Uint8Array(0), fds: readonly number[] = []): void {
    this.sendBytes(encodeMessage(header, payload), fds);
  }

  /** Sends arbitrary bytes (e.g. a truncated header). */
  sendBytes(bytes: Uint8Array, fds: readonly number[] = []): void {
    if (this.closedError) throw this.closedError;
    if (!this.stream) throw new ConnectionClosedError();
    if (bytes.length >= 4) this.sent.push(new DataView(bytes.buffer, bytes.byteOffset).getUint32(0, true));
    this.stream.sendMessage(bytes, fds);
  }

  /** The next message from the back-end; rejects on timeout or when the connection closes. */
  nextMessage(timeoutMs = this.opts.replyTimeoutMs): Promise<ReceivedMessage> {
    const queued = this.replies.shift();
    if (queued) return Promise.resolve(queued);
    if (this.closedError) return Promise.reject(this.closedError);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.replyWaiters = this.replyWaiters.filter((w) => w !== waiter);
        reject(new Error(`no reply from the back-end within ${timeoutMs} ms`));
      }, timeoutMs);
      const waiter = {
        resolve: (m: ReceivedMessage) => {
          clearTimeout(timer);
          resolve(m);
        },
        reject: (e: Error) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      this.replyWaiters.push(waiter);
    });
  }

  /**
   * What the back-end did after a message: `{ reply }`, `'closed'` (it closed the connection) or
   * `'silent'` (nothing within timeoutMs).
   */
  async outcome(timeoutMs = 2000): Promise<{ reply: ReceivedMessage } | 'closed' | 'silent'> {
    try {
      return { reply: await this.nextMessage(timeoutMs) };
    } catch (e) {
      if (this.closedError) return 'closed';
      if (e instanceof Error && e.message.startsWith('no reply')) return 'silent';
      throw e;
    }
  }

  private get replyAck(): boolean {
    return (this.protocolFeatures & bit(ProtocolFeature.REPLY_ACK)) !== 0n;
  }

  /**
   * Sends a request; for requests with a reply returns it. With REPLY_ACK (and ackAll, or
   * needReply) waits for the ack and throws when it is non-zero.
   */
  async request(request: number, payload: Uint8Array = new Uint8Array(0), fds: readonly number[] = [], needReply?: boolean): Promise<ReceivedMessage | undefined> {
    const replies = REPLYING.has(request);
    const ack = !replies && this.replyAck && (needReply ?? this.opts.ackAll);
    this.sendRaw({ request, flags: FLAG_VERSION | (ack ? FLAG_NEED_REPLY : 0) }, payload, fds);
    if (!replies && !ack) return undefined;
    const m = await this.nextMessage();
    if (m.request !== request) throw new Error(`reply to request ${m.request}, expected ${request}`);
    if ((m.flags & FLAG_REPLY) === 0) throw new Error(`reply without the REPLY flag (flags 0x${m.flags.toString(16)})`);
    if (ack) {
      const status = m.payload.length >= 8 ? new DataView(m.payload.buffer, m.payload.byteOffset).getBigUint64(0, true) : -1n;
      if (status !== 0n) throw new Error(`back-end refused request ${request} (ack ${status})`);
      return undefined;
    }
    return m;
  }

  private async getU64(request: number): Promise<bigint> {
    const m = (await this.request(request))!;
    if (m.payload.length !== 8) throw new Error(`reply to ${request} has ${m.payload.length} bytes, expected 8`);
    return new DataView(m.payload.buffer, m.payload.byteOffset).getBigUint64(0, true);
  }

  // ------------------------------------------------------------------ QEMU's sequence

  /** vhost_dev_init: features, protocol features, queue count, memory slots, owner, call fds, config. */
  async init(): Promise<void> {
    this.backendFeatures = await this.getU64(VhostUserRequest.GET_FEATURES);
    if ((this.backendFeatures & bit(VHOST_USER_F_PROTOCOL_FEATURES)) !== 0n) {
      this.backendProtocolFeatures = await this.getU64(VhostUserRequest.GET_PROTOCOL_FEATURES);
      this.protocolFeatures = this.backendProtocolFeatures & this.opts.protocolFeatureMask;
      // protocol features are set before REPLY_ACK is in force: no NEED_REPLY on this one
      this.sendRaw({ request: VhostUserRequest.SET_PROTOCOL_FEATURES, flags: FLAG_VERSION }, u64Payload(this.protocolFeatures));
    }
    if ((this.protocolFeatures & bit(ProtocolFeature.MQ)) !== 0n) {
      this.backendQueueCount = Number(await this.getU64(VhostUserRequest.GET_QUEUE_NUM));
    }
    if (this.opts.queueCount > this.backendQueueCount) {
      throw new Error(`back-end has ${this.backendQueueCount} queue(s), ${this.opts.queueCount} wanted`);
    }
    if ((this.protocolFeatures & bit(ProtocolFeature.CONFIGURE_MEM_SLOTS)) !== 0n) {
      this.maxMemSlots = Number(await this.getU64(VhostUserRequest.GET_MAX_MEM_SLOTS));
    }
    await this.request(VhostUserRequest.SET_OWNER);
    for (const q of this.queues) await this.request(VhostUserRequest.SET_VRING_CALL, u64Payload(BigInt(q.index)), [q.call.fd]);
    if ((this.protocolFeatures & bit(ProtocolFeature.CONFIG)) !== 0n) {
      this.config = await this.getConfig();
    }
  }

  async getConfig(offset = 0, size = this.opts.configBytes): Promise<BlkConfig> {
    const m = (await this.request(VhostUserRequest.GET_CONFIG, configPayload(offset, size)))!;
    if (m.payload.length < 12) throw new Error(`GET_CONFIG reply of ${m.payload.length} bytes`);
    const got = new DataView(m.payload.buffer, m.payload.byteOffset).getUint32(4, true);
    if (got !== size || m.payload.length !== 12 + size) throw new Error(`GET_CONFIG reply: size ${got}, payload ${m.payload.length} (asked ${size})`);
    return decodeBlkConfig(m.payload.subarray(12));
  }

  /** The virtio features this front-end sends in SET_FEATURES for the given options. */
  featuresFor(o: { eventIdx: boolean; indirect: boolean }): bigint {
    let want = WANTED_BLK_FEATURES | bit(VHOST_USER_F_PROTOCOL_FEATURES);
    if (o.eventIdx) want |= bit(BlkFeature.EVENT_IDX);
    if (o.indirect) want |= bit(BlkFeature.INDIRECT_DESC);
    return this.backendFeatures & want;
  }

  get memoryRegions(): MemRegionDesc[] {
    return this.mem!.describe();
  }

  get memfd(): number {
    return this.mem!.fd;
  }

  get useMemSlots(): boolean {
    return this.opts.addMemReg && (this.protocolFeatures & bit(ProtocolFeature.CONFIGURE_MEM_SLOTS)) !== 0n;
  }

  /** The inflight region (GET_INFLIGHT_FD), kept for every later start and connection. */
  private inflightRegion: { fd: number; sizeBytes: bigint } | undefined;

  private get inflightNegotiated(): boolean {
    return this.opts.inflight && (this.protocolFeatures & bit(ProtocolFeature.INFLIGHT_SHMFD)) !== 0n;
  }

  /** vhost_user_blk_start: the inflight region is fetched once and handed to the back-end on every start. */
  private async setInflight(): Promise<void> {
    const describe = (sizeBytes: bigint): Uint8Array => {
      const p = new Uint8Array(24);
      const dv = new DataView(p.buffer);
      dv.setBigUint64(0, sizeBytes, true);
      dv.setBigUint64(8, 0n, true);
      dv.setUint16(16, this.queues.length, true);
      dv.setUint16(18, this.opts.queueSize, true);
      return p;
    };
    if (this.inflightRegion === undefined) {
      const m = (await this.request(VhostUserRequest.GET_INFLIGHT_FD, describe(0n)))!;
      const fd = m.fds[0];
      if (fd === undefined || m.payload.length < 24) throw new Error('GET_INFLIGHT_FD: no region');
      for (const extra of m.fds.slice(1)) closeFd(extra);
      this.inflightRegion = { fd, sizeBytes: new DataView(m.payload.buffer, m.payload.byteOffset).getBigUint64(0, true) };
    }
    await this.request(VhostUserRequest.SET_INFLIGHT_FD, describe(this.inflightRegion.sizeBytes), [this.inflightRegion.fd]);
  }

  /**
   * After the connection was lost (the back-end went away or disconnect()): dials the socket again
   * and starts over as QEMU's reconnect does: init, the same memory, rings continuing from their
   * used index, and the inflight region, from which the back-end resubmits what was in flight.
   */
  async redial(): Promise<void> {
    if (!this.opts.inflight) throw new Error('redial needs the inflight option');
    this.stream?.close();
    this.stream = undefined;
    this.closedError = undefined;
    this.inbuf = new Uint8Array(0);
    this.replies.length = 0;
    this.memSent = false;
    for (const q of this.queues) {
      q.call.stopWatching();
      q.reap();
      q.deviceBase = q.lastUsedIdx;
    }
    this.stream = UnixStream.connect(this.socketPath);
    this.stream.onReadable(() => this.onReadable());
    await this.init();
    await this.start();
  }

  /** Drops the connection as a front-end that dies would; requests in flight stay pending (inflight). */
  disconnect(): void {
    const s = this.stream;
    this.fail(new ConnectionClosedError('front-end disconnected'));
    this.stream = undefined;
    s?.close();
  }

  /** vhost_dev_start: features, memory, then every queue's NUM/BASE/ADDR/KICK/CALL, then ENABLE. */
  async start(so: StartOptions = {}): Promise<void> {
    if (this.inflightNegotiated) await this.setInflight();
    const eventIdx = so.eventIdx ?? this.opts.eventIdx;
    const indirect = so.indirect ?? this.opts.indirect;
    this.features = this.featuresFor({ eventIdx, indirect });
    await this.request(VhostUserRequest.SET_FEATURES, u64Payload(this.features));
    await this.sendMemTable();
    const negotiatedEventIdx = (this.features & bit(BlkFeature.EVENT_IDX)) !== 0n;
    this.useIndirect = (this.features & bit(BlkFeature.INDIRECT_DESC)) !== 0n && indirect;
    for (const q of this.queues) {
      if (so.fresh) q.reset(new Error('queue reset'));
      if (so.replaceFds) {
        const oldKick = q.kick;
        const oldCall = q.call;
        q.kick = EventFd.create({ nonBlocking: true });
        q.call = EventFd.create({ nonBlocking: true });
        oldCall.stopWatching();
        oldKick.close();
        oldCall.close();
      }
      q.eventIdx = negotiatedEventIdx;
      q.setInterrupts();
      await this.request(VhostUserRequest.SET_VRING_NUM, vringStatePayload(q.index, q.size));
      await this.request(VhostUserRequest.SET_VRING_BASE, vringStatePayload(q.index, q.deviceBase));
      await this.request(
        VhostUserRequest.SET_VRING_ADDR,
        vringAddrPayload({
          index: q.index,
          descFrontendAddr: q.desc.frontendAddr,
          usedFrontendAddr: q.used.frontendAddr,
          availFrontendAddr: q.avail.frontendAddr,
        }),
      );
      await this.request(VhostUserRequest.SET_VRING_KICK, u64Payload(BigInt(q.index)), [q.kick.fd]);
      await this.request(VhostUserRequest.SET_VRING_CALL, u64Payload(BigInt(q.index)), [q.call.fd]);
      q.call.onReadable(() => {
        q.interrupts += q.call.drain();
        q.reap();
      });
    }
    if ((this.features & bit(VHOST_USER_F_PROTOCOL_FEATURES)) !== 0n) {
      for (const q of this.queues) await this.request(VhostUserRequest.SET_VRING_ENABLE, vringStatePayload(q.index, 1));
    }
    for (const q of this.queues) {
      q.enabled = true;
      q.reap();
    }
    this.started = true;
  }

  private memSent = false;

  /** SET_MEM_TABLE or ADD_MEM_REG per region (once; SET_MEM_TABLE again on later starts). */
  async sendMemTable(): Promise<void> {
    if (this.memSent) {
      // QEMU re-sends the table on every start only when it changed; ADD_MEM_REG of an identical region is not repeated.
      if (!this.useMemSlots) await this.request(VhostUserRequest.SET_MEM_TABLE, memTablePayload(this.memoryRegions), [this.memfd], true);
      return;
    }
    const regions = this.memoryRegions;
    if (this.useMemSlots) {
      for (const r of regions) await this.request(VhostUserRequest.ADD_MEM_REG, singleRegionPayload(r), [this.memfd], true);
    } else {
      await this.request(VhostUserRequest.SET_MEM_TABLE, memTablePayload(regions), regions.map(() => this.memfd), true);
    }
    this.memSent = true;
  }

  /**
   * vhost_dev_stop: SET_VRING_ENABLE 0 then GET_VRING_BASE per queue. Returns each queue's base
   * (the back-end's last avail index). Requests still in flight stay pending.
   */
  async stop(): Promise<number[]> {
    const bases: number[] = [];
    if ((this.features & bit(VHOST_USER_F_PROTOCOL_FEATURES)) !== 0n) {
      for (const q of this.queues) await this.request(VhostUserRequest.SET_VRING_ENABLE, vringStatePayload(q.index, 0));
    }
    for (const q of this.queues) {
      const m = (await this.request(VhostUserRequest.GET_VRING_BASE, vringStatePayload(q.index, 0)))!;
      if (m.payload.length !== 8) throw new Error(`GET_VRING_BASE reply of ${m.payload.length} bytes`);
      const base = new DataView(m.payload.buffer, m.payload.byteOffset).getUint32(4, true);
      bases.push(base);
      q.deviceBase = base & 0xffff;
      q.enabled = false;
      q.call.stopWatching();
      q.reap();
    }
    this.started = false;
    return bases;
  }

  // ------------------------------------------------------------------ requests

  private useIndirect = false;

  get queueCount(): number {
    return this.queues.length;
  }

  queue(i: number): DriverQueue {
    const q = this.queues[i];
    if (!q) throw new Error(`no queue ${i}`);
    return q;
  }

  private pickQueue(queue: number | undefined): DriverQueue {
    if (queue !== undefined) return this.queue(queue);
    const q = this.queues[this.nextQueue]!;
    this.nextQueue = (this.nextQueue + 1) % this.queues.length;
    return q;
  }

  /**
   * One virtio-blk request through a slot: header, optional data (readable for writes, writable
   * for reads), status. `fill` writes the outgoing data into the slot's buffer; `take` reads the
   * incoming data before the slot is reused.
   */
  async io<T = undefined>(
    type: number,
    sector: bigint | number,
    dataBytes: number,
    opts: { queue?: number; dataWritable?: boolean; fill?: (buf: Uint8Array) => void; take?: (buf: Uint8Array) => T; sectorRaw?: bigint } = {},
  ): Promise<IoResult & { value: T | undefined }> {
    if (this.closedError) throw this.closedError;
    if (dataBytes > this.opts.maxRequestBytes) throw new Error(`request of ${dataBytes} bytes > maxRequestBytes ${this.opts.maxRequestBytes}`);
    const q = this.pickQueue(opts.queue);
    const slot = await q.acquireSlot();
    try {
      const meta = slot.meta.bytes;
      const mdv = dvOf(meta);
      mdv.setUint32(META_HEADER, type, true);
      mdv.setUint32(META_HEADER + 4, 0, true);
      mdv.setBigUint64(META_HEADER + 8, BigInt.asUintN(64, BigInt(sector)), true);
      meta[META_STATUS] = 0xff;
      const data = slot.data.bytes.subarray(0, dataBytes);
      if (opts.fill) opts.fill(data);
      const dataWritable = opts.dataWritable ?? type === BlkType.IN;
      const chain: RawDescriptor[] = [{ addr: slot.meta.guestAddr + BigInt(META_HEADER), len: 16, flags: DescFlag.NEXT }];
      if (dataBytes > 0) {
        const seg = this.opts.segmentBytes > 0 ? this.opts.segmentBytes : dataBytes;
        for (let off = 0; off < dataBytes; off += seg) {
          chain.push({ addr: slot.data.guestAddr + BigInt(off), len: Math.min(seg, dataBytes - off), flags: DescFlag.NEXT | (dataWritable ? DescFlag.WRITE : 0) });
        }
      }
      chain.push({ addr: slot.meta.guestAddr + BigInt(META_STATUS), len: 1, flags: DescFlag.WRITE });
      let done: Promise<ChainCompletion>;
      if (this.useIndirect && chain.length > 1) {
        const tableAt = META_INDIRECT;
        chain.forEach((d, k) => {
          const o = tableAt + 16 * k;
          mdv.setBigUint64(o, d.addr, true);
          mdv.setUint32(o + 8, d.len, true);
          mdv.setUint16(o + 12, d.flags, true);
          mdv.setUint16(o + 14, k + 1 < chain.length ? k + 1 : 0, true);
        });
        await q.waitForDescs(1);
        done = q.addChain([{ addr: slot.meta.guestAddr + BigInt(tableAt), len: 16 * chain.length, flags: DescFlag.INDIRECT }]).done;
      } else {
        await q.waitForDescs(chain.length);
        done = q.addChain(chain).done;
      }
      q.scheduleKick();
      const c = await done;
      const status = meta[META_STATUS]!;
      const value = opts.take ? opts.take(data) : undefined;
      return { status, writtenBytes: c.writtenBytes, value };
    } finally {
      q.releaseSlot(slot);
    }
  }

  async read(sector: bigint | number, lengthBytes: number, queue?: number): Promise<Uint8Array> {
    const r = await this.io(BlkType.IN, sector, lengthBytes, { queue, take: (b) => b.slice() });
    if (r.status !== BlkStatus.OK) throw new BlkStatusError(r.status, `read sector ${sector}`);
    return r.value!;
  }

  async write(sector: bigint | number, data: Uint8Array, queue?: number): Promise<void> {
    const r = await this.io(BlkType.OUT, sector, data.length, { queue, fill: (b) => b.set(data) });
    if (r.status !== BlkStatus.OK) throw new BlkStatusError(r.status, `write sector ${sector}`);
  }

  async flush(queue?: number): Promise<void> {
    const r = await this.io(BlkType.FLUSH, 0, 0, { queue });
    if (r.status !== BlkStatus.OK) throw new BlkStatusError(r.status, 'flush');
  }

  private async segments(type: number, ranges: readonly SectorRange[], unmap: boolean, queue?: number): Promise<IoResult> {
    const r = await this.io(type, 0, 16 * ranges.length, {
      queue,
      dataWritable: false,
      fill: (b) => {
        const dv = dvOf(b);
        ranges.forEach((s, i) => {
          dv.setBigUint64(16 * i, BigInt.asUintN(64, BigInt(s.sector)), true);
          dv.setUint32(16 * i + 8, s.sectors >>> 0, true);
          dv.setUint32(16 * i + 12, unmap ? 1 : 0, true);
        });
      },
    });
    return r;
  }

  async discard(ranges: readonly SectorRange[], queue?: number): Promise<void> {
    const r = await this.segments(BlkType.DISCARD, ranges, false, queue);
    if (r.status !== BlkStatus.OK) throw new BlkStatusError(r.status, 'discard');
  }

  async writeZeroes(ranges: readonly SectorRange[], unmap: boolean, queue?: number): Promise<void> {
    const r = await this.segments(BlkType.WRITE_ZEROES, ranges, unmap, queue);
    if (r.status !== BlkStatus.OK) throw new BlkStatusError(r.status, 'write zeroes');
  }

  /** Raw status of a discard / write-zeroes request (for tests expecting errors). */
  segmentsStatus(type: number, ranges: readonly SectorRange[], unmap = false, queue?: number): Promise<IoResult> {
    return this.segments(type, ranges, unmap, queue);
  }

  async getId(bufferBytes = 20, queue?: number): Promise<string> {
    // The id buffer is device-writable (virtio 1.2, 5.2.6: GET_ID writes its answer there).
    const r = await this.io(BlkType.GET_ID, 0, bufferBytes, { queue, dataWritable: true, take: (b) => b.slice() });
    if (r.status !== BlkStatus.OK) throw new BlkStatusError(r.status, 'get id');
    const b = r.value!;
    const end = b.indexOf(0);
    return Buffer.from(b.subarray(0, end < 0 ? b.length : end)).toString('latin1');
  }

  // ------------------------------------------------------------------ raw access (hostile tests)

  /** Allocates scratch guest memory (zeroed) for raw chains; reset with resetScratch(). */
  allocScratch(sizeBytes: number, align = 16): GuestBuffer {
    const s = this.scratch!;
    const start = Math.ceil(this.scratchUsed / align) * align;
    if (start + sizeBytes > s.bytes.length) throw new Error('scratch memory exhausted');
    this.scratchUsed = start + sizeBytes;
    const bytes = s.bytes.subarray(start, start + sizeBytes);
    bytes.fill(0);
    return { guestAddr: s.guestAddr + BigInt(start), frontendAddr: s.frontendAddr + BigInt(start), bytes, region: s.region };
  }

  resetScratch(): void {
    this.scratchUsed = 0;
  }

  /** A view of guest memory (undefined outside every region). */
  guestView(guestAddr: bigint, lengthBytes: number): Uint8Array | undefined {
    return this.mem!.view(guestAddr, lengthBytes);
  }

  /** The whole region i (to check that nothing outside the buffers changed). */
  regionBytes(i: number): Uint8Array {
    return this.mem!.regions[i]!.bytes;
  }

  /** Guest address one past the end of the last region. */
  get guestEnd(): bigint {
    const r = this.mem!.regions[this.mem!.regions.length - 1]!;
    return r.guestAddr + BigInt(r.sizeBytes);
  }

  /** Writes an out header {type, ioprio 0, sector} into a fresh scratch buffer; returns it. */
  scratchHeader(type: number, sector: bigint | number): GuestBuffer {
    const b = this.allocScratch(16);
    const dv = dvOf(b.bytes);
    dv.setUint32(0, type, true);
    dv.setBigUint64(8, BigInt.asUintN(64, BigInt(sector)), true);
    return b;
  }

  /** Writes an indirect table into scratch memory; returns its buffer (len = 16 * descs.length). */
  scratchIndirectTable(descs: readonly RawDescriptor[]): GuestBuffer {
    const b = this.allocScratch(16 * Math.max(1, descs.length), 16);
    const dv = dvOf(b.bytes);
    descs.forEach((d, k) => {
      dv.setBigUint64(16 * k, BigInt.asUintN(64, d.addr), true);
      dv.setUint32(16 * k + 8, d.len >>> 0, true);
      dv.setUint16(16 * k + 12, d.flags, true);
      dv.setUint16(16 * k + 14, d.next ?? (k + 1 < descs.length ? k + 1 : 0), true);
    });
    return b;
  }

  /** Publishes an arbitrary chain and kicks; the promise resolves when the back-end returns its head. */
  submitChain(descriptors: readonly RawDescriptor[], opts: SubmitChainOptions = {}): { head: number; done: Promise<ChainCompletion> } {
    if (this.closedError) throw this.closedError;
    const q = this.queue(opts.queue ?? 0);
    const r = q.addChain(descriptors, opts);
    r.done.catch(() => {}); // callers may never await a chain the device drops
    if (!opts.noKick) q.kickNow(true);
    return r;
  }

  /** Sets a queue's avail.idx to any value and kicks (avail idx jumping ahead). */
  setAvailIdx(queue: number, idx: number, kick = true): void {
    const q = this.queue(queue);
    q.setAvailIdxRaw(idx);
    if (kick) q.kickNow(true);
  }

  kick(queue: number): void {
    this.queue(queue).kickNow(true);
  }

  // ------------------------------------------------------------------ teardown

  /** Closes the socket, the eventfds and the guest memory. In-flight requests reject. */
  close(): void {
    const closing = new ConnectionClosedError('front-end closed');
    this.fail(closing);
    for (const q of this.queues) q.failAll(closing);
    if (this.inflightRegion !== undefined) closeFd(this.inflightRegion.fd);
    this.inflightRegion = undefined;
    const s = this.stream;
    this.stream = undefined;
    s?.close();
    for (const q of this.queues) {
      q.call.stopWatching();
      q.kick.close();
      q.call.close();
    }
    this.queues = [];
    this.mem?.close();
    this.mem = undefined;
  }
}
