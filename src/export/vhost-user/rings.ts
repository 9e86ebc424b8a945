/**
 * RingSet: the virtqueues of one vhost-user connection, their life cycle (SET_VRING_NUM / BASE /
 * ADDR / KICK / CALL / ERR / ENABLE, GET_VRING_BASE) and the request path that runs on them.
 *
 * Life cycle (several per connection: firmware, then the OS driver, then resets): a ring starts when
 * its kick fd arrives (SET_VRING_KICK) and it is enabled (SET_VRING_ENABLE 1, or implicitly when
 * VHOST_USER_F_PROTOCOL_FEATURES was not negotiated). GET_VRING_BASE stops it: no more pops, wait for
 * its requests in flight to complete and be pushed, then answer with the next avail index. The same
 * SET_VRING_* messages later restart it. A kick, call or err descriptor re-sent for the same ring
 * replaces and closes the old one. With an inflight region (inflight.ts), a starting ring resubmits
 * the requests a previous back-end left in flight before popping new ones.
 *
 * Request path: each ring's kick eventfd is watched with koffi.node.poll. A kick drains the eventfd
 * and pops chains until the ring is empty, re-enabling notifications and re-checking before stopping
 * (no lost wakeup), yielding to the event loop after QUEUE_BATCH chains so that one busy ring cannot
 * starve the others or the control socket. Each chain goes to BlkRequestHandler.start() without
 * waiting for the previous one: requests of a ring run concurrently (bounded by the ring size) and
 * complete in any order. A completion pushes the used element and schedules one call-eventfd check
 * per microtask turn, so a burst of completions costs one notification.
 *
 * Waiting for quiet: requests in flight are counted by RequestGates (src/core/request-gate.ts), one
 * per ring and one for the connection. The connection's gate is closed while nothing may be popped:
 * quiesce(fn) closes it and runs fn once no request of any ring is in flight (memory-table changes,
 * a new inflight region, RESET_DEVICE: fn unmaps memory that device I/O may still be writing into),
 * then opens it again; shutdown (drain) and close close it for good. GET_VRING_BASE waits for one
 * ring's gate to drain.
 *
 * Errors: a malformed descriptor chain (VirtqueueError) stops only that ring (and signals its error
 * eventfd, which QEMU logs) until the front-end restarts it. A bad SET_VRING_* message throws
 * ProtocolError for the control channel to refuse.
 */
import { EventFd } from '../../sys/eventfd.js';
import { CpuContention } from '../../sys/cpu-contention.js';
import { RequestGate } from '../../core/request-gate.js';
import type { ExportLog } from '../log.js';
import { VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC, type BlkRequestHandler, type BlkRequestPark } from './blk.js';
import { clearAfterPush, linkBeforePush, type InflightTracker } from './inflight.js';
import type { GuestMemory } from './memory.js';
import * as M from './messages.js';
import { describeError, ProtocolError, takeFd } from './protocol-errors.js';
import { SpaceWait, type NoSpacePolicy, type ParkedRequest, type SpaceWaitOptions } from './space-wait.js';
import { POLL_CONTENDED_WAIT_SHARE, POLL_REQUEST_BYTES_MAX, Queue, type RingViews } from './ring-queue.js';
import { MAX_QUEUE_SIZE, splitRingSizes, SplitVirtqueue, VirtqueueError, type DescriptorChain } from './virtqueue.js';

/** Chains popped from one ring before yielding to the event loop. */
export const QUEUE_BATCH = 256;

export interface RingSetOptions {
  queueCount: number;
  /** The connection's guest memory: ring addresses and descriptors are translated through it. */
  memory: GuestMemory;
  handler: BlkRequestHandler;
  inflight: InflightTracker;
  log: ExportLog;
  /** Polling of drained rings (default: none). */
  poll?: RingPollOptions;
  /** Writes refused for want of space: 'wait' parks them (space-wait.ts); default 'error' (IOERR). */
  noSpace?: NoSpacePolicy;
  /** What the space-wait log lines name (the volume, its pool). */
  names?: Pick<SpaceWaitOptions, 'subject' | 'pool'>;
}

export interface RingPollOptions {
  /**
   * How long a ring that has just been drained keeps being checked for the guest's next request,
   * with its kicks still suppressed, before it asks for a kick again (microseconds; 0: never).
   */
  windowUs: number;
  /** The event loop's wait for a CPU (default: this thread's, from schedstat); no polling at POLL_CONTENDED_WAIT_SHARE or more. */
  contention?: { waitShare(): number };
}

export class RingSet {
  /** Negotiated virtio features (SET_FEATURES); rings built from now on use them. */
  features = 0n;
  /** requestShutdown: no new chains, finish what is in flight (drain()). */
  private drainRequested = false;
  /** The connection is going away: nothing is popped or pushed any more (close()). */
  private connectionClosing = false;
  private readonly queues: Queue[];
  private readonly memory: GuestMemory;
  private readonly handler: BlkRequestHandler;
  private readonly inflight: InflightTracker;
  private readonly log: ExportLog;
  /**
   * Every ring's requests in flight; nothing is popped while it is closed (quiesce, for a while;
   * drain and close, for good).
   */
  private readonly gate = new RequestGate();
  private requestCount = 0;
  /** The event loop's wait for a CPU: no polling while it is short of one. */
  private readonly contention: { waitShare(): number };
  /** Polls of a drained ring, and those that found the guest's next request (tests, metrics). */
  polls = 0;
  pollHits = 0;
  /** Requests refused for want of space, waiting (NoSpacePolicy 'wait'). */
  private readonly spaceWait: SpaceWait;
  /** Per ring: where such a request goes (undefined: policy 'error', it completes with IOERR). */
  private readonly parkers: (BlkRequestPark | undefined)[];
  /** Parked requests taken back while the memory table changes: submitted again from their heads after. */
  private setAside: Array<{ q: Queue; epoch: number; head: number }> = [];

  constructor(opts: RingSetOptions) {
    this.queues = Array.from({ length: opts.queueCount }, (_, i) => new Queue(i, opts.poll?.windowUs ?? 0));
    this.contention = opts.poll?.contention ?? new CpuContention();
    this.memory = opts.memory;
    this.handler = opts.handler;
    this.inflight = opts.inflight;
    this.log = opts.log;
    this.spaceWait = new SpaceWait({
      host: {
        retry: (r, done, park) => this.handler.start(r.chain, done, park),
        refusedAgain: (r) => this.parkOrGiveUp(this.queues[r.queue]!, r, true),
      },
      log: opts.log,
      ...opts.names,
    });
    this.parkers = this.queues.map((q) =>
      opts.noSpace === 'wait' ? (chain, done, err) => this.parkOrGiveUp(q, { queue: q.index, chain, done }, false, err) : undefined,
    );
  }

  /** Requests waiting for space now; retryNow() when space may have been freed. */
  get waitingForSpace(): Pick<SpaceWait, 'waiting' | 'retryNow'> {
    return this.spaceWait;
  }

  get draining(): boolean {
    return this.drainRequested;
  }

  get closing(): boolean {
    return this.connectionClosing;
  }

  /** Requests completed or in flight since the connection started. */
  get requests(): number {
    return this.requestCount;
  }

  get queueCount(): number {
    return this.queues.length;
  }

  /** Graceful stop: no new requests; resolves once those in flight have completed (and reached the guest). */
  drain(): Promise<void> {
    this.drainRequested = true;
    for (const q of this.queues) q.kick?.stopWatching();
    this.giveUpParked(this.spaceWait.take());
    return this.gate.closeAndDrain();
  }

  /**
   * The connection is closing: no more pops, and completions are no longer pushed (the front-end owns
   * the rings again). Resolves once no request is in flight; then release() may run.
   */
  close(): Promise<void> {
    this.connectionClosing = true;
    for (const q of this.queues) q.kick?.stopWatching();
    this.spaceWait.dispose();
    this.giveUpParked(this.spaceWait.take());
    return this.gate.closeAndDrain();
  }

  /** Closes every ring's descriptors and forgets its state (RESET_DEVICE, end of connection). */
  resetAll(): void {
    for (const q of this.queues) this.resetQueue(q);
  }

  /** SET_INFLIGHT_FD replaced the region: running rings stop tracking until they restart. */
  forgetInflightViews(): void {
    for (const q of this.queues) q.inflightView = undefined;
  }

  // --- SET_VRING_* / GET_VRING_BASE ----------------------------------------------------------------

  private queue(index: number): Queue {
    const q = this.queues[index];
    if (q === undefined) throw new ProtocolError(`vring index ${index} is out of range (${this.queues.length} queues)`);
    return q;
  }

  private requireStopped(q: Queue, what: string): void {
    if (q.vq !== undefined) throw new ProtocolError(`${what} for vring ${q.index} while it is running`);
  }

  setVringNum(s: M.VringState): void {
    const q = this.queue(s.index);
    this.requireStopped(q, 'SET_VRING_NUM');
    if (s.num === 0 || s.num > MAX_QUEUE_SIZE || (s.num & (s.num - 1)) !== 0) {
      throw new ProtocolError(`vring ${q.index} size ${s.num} is not a power of two in 1..${MAX_QUEUE_SIZE}`);
    }
    q.size = s.num;
  }

  setVringBase(s: M.VringState): void {
    const q = this.queue(s.index);
    this.requireStopped(q, 'SET_VRING_BASE');
    if (s.num > 0xffff) throw new ProtocolError(`vring ${q.index} base ${s.num} does not fit a split ring's 16-bit index`);
    q.base = s.num;
  }

  setVringAddr(a: M.VringAddr): void {
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

  private ringViews(size: number, a: M.VringAddr): RingViews | undefined {
    // Sized for EVENT_IDX whatever was negotiated: the extra two bytes are part of the ring's allocation.
    const sizes = splitRingSizes(size, true);
    const desc = this.memory.frontendRange(a.descFrontendAddr, sizes.descBytes);
    const avail = this.memory.frontendRange(a.availFrontendAddr, sizes.availBytes);
    const used = this.memory.frontendRange(a.usedFrontendAddr, sizes.usedBytes);
    return desc && avail && used ? { desc, avail, used } : undefined;
  }

  /** SET_VRING_KICK / CALL / ERR: takes the eventfd in fds[0] unless the no-fd flag is set. */
  setVringFd(request: number, value: bigint, fds: number[]): void {
    const index = Number(value & M.VRING_INDEX_MASK);
    if ((value & ~(M.VRING_INDEX_MASK | M.VRING_NOFD_FLAG)) !== 0n) throw new ProtocolError(`reserved bits set in 0x${value.toString(16)}`);
    const q = this.queue(index);
    const noFd = (value & M.VRING_NOFD_FLAG) !== 0n;
    const ev = noFd ? undefined : EventFd.fromFd(fds[0]!);
    if (ev !== undefined) takeFd(fds, 0);
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

  setVringEnable(s: M.VringState): void {
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
    if (!q.started || !q.enabled || q.broken || this.connectionClosing) return;
    if (q.vq === undefined) {
      if (q.size === 0 || q.addr === undefined) throw new ProtocolError(`vring ${q.index} started before SET_VRING_NUM/SET_VRING_ADDR`);
      const views = this.ringViews(q.size, q.addr);
      if (views === undefined) throw new ProtocolError(`vring ${q.index} addresses are not inside the memory table`);
      const usedIdx = new DataView(views.used.buffer, views.used.byteOffset, 4).getUint16(2, true);
      const tracked = this.inflight.startRing(q.index, q.size, usedIdx);
      if (tracked !== undefined) q.inflightView = tracked.view;
      const resubmit = tracked?.resubmit;
      q.vq = this.makeVirtqueue(q, views, resubmit?.lastAvailIdx ?? q.base, usedIdx);
      if (resubmit !== undefined) this.resubmit(q, q.vq, resubmit.heads);
    }
    const kick = q.kick;
    if (kick !== undefined && !this.drainRequested) {
      kick.onReadable(() => {
        try {
          kick.drain();
        } catch (err) {
          this.breakQueue(q, `kick eventfd failed: ${describeError(err)}`);
          return;
        }
        this.scheduleQueue(q, true);
      });
    }
    // The guest may have queued requests before the kick fd was watched.
    this.scheduleQueue(q, true);
  }

  private makeVirtqueue(q: Queue, views: RingViews, lastAvailIdx: number, usedIdx: number): SplitVirtqueue {
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

  /** Submits the heads a previous back-end left in flight, oldest first, walking each from its head. */
  private resubmit(q: Queue, vq: SplitVirtqueue, heads: number[]): void {
    for (const head of heads) {
      let chain: DescriptorChain;
      try {
        chain = vq.chainAt(head);
      } catch (err) {
        this.breakQueue(q, `resubmitting request ${head}: ${describeError(err)}`);
        return;
      }
      this.submit(q, vq, chain);
      if (q.broken) return;
    }
  }

  /** After the memory table changed: rebuild running rings' views over the new mappings. */
  refresh(): void {
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
  async stopRing(index: number): Promise<number> {
    return this.stopQueue(this.queue(index));
  }

  /** RESET_OWNER, RESET_DEVICE: stops every ring as GET_VRING_BASE would. */
  async stopAll(): Promise<void> {
    for (const q of this.queues) await this.stopQueue(q);
  }

  private async stopQueue(q: Queue): Promise<number> {
    q.started = false;
    q.kick?.stopWatching();
    this.giveUpParked(this.spaceWait.take(q.index));
    await q.requests.whenIdle();
    q.epoch++;
    if (q.vq !== undefined) q.base = q.vq.lastAvailIdx;
    q.vq = undefined;
    q.inflightView = undefined;
    q.broken = false;
    return q.base;
  }

  private resetQueue(q: Queue): void {
    q.kick?.close();
    q.call?.close();
    q.err?.close();
    q.kick = q.call = q.err = undefined;
    q.vq = undefined;
    q.epoch++;
    q.inflightView = undefined;
    q.pollUntilMs = undefined;
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
    this.log(`vring ${q.index} stopped: ${reason}`, 'warn');
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
    if (vq === undefined || !q.started || !q.enabled || q.broken || !this.gate.isOpen) return;
    try {
      vq.disableNotify();
      let popped = 0;
      let largestBytes = 0;
      for (;;) {
        if (popped >= QUEUE_BATCH) {
          // Come back after other rings, the control socket and completions had their turn.
          this.scheduleQueue(q);
          return;
        }
        const chain = vq.pop();
        if (chain === undefined) {
          if (this.keepPolling(q, vq, popped, largestBytes)) return;
          vq.enableNotify();
          // A chain published between the last pop and enableNotify() produced no kick.
          if (!vq.hasAvailable()) return;
          vq.disableNotify();
          continue;
        }
        if (q.pollUntilMs !== undefined) {
          q.pollUntilMs = undefined;
          q.pollWindow.hit();
          this.pollHits++;
        }
        popped++;
        largestBytes = Math.max(largestBytes, chain.readableBytes + chain.writableBytes);
        this.submit(q, vq, chain);
        if (q.broken) return;
      }
    } catch (err) {
      this.breakQueue(q, err instanceof VirtqueueError ? `guest driver error: ${err.message}` : `internal error: ${describeError(err)}`);
    }
  }

  /**
   * The ring is empty: whether to look again on the next event-loop turn, its kicks still
   * suppressed, rather than ask the guest for a kick now. A kick costs the guest an exit from
   * its vCPU (a VM exit, or leaving translated code under TCG) and wakes this thread from epoll;
   * a guest at queue depth 32 publishes its next request tens of microseconds after the last
   * completion, so a short poll catches it without either (QEMU's IOThreads poll for up to 32 us
   * for the same reason). A poll starts when a pass served requests (`popped`), none of them
   * large; it ends early when they are still in flight a turn later, lasts the ring's PollWindow
   * (off where polls keep missing) and is skipped while the loop waits for a CPU.
   */
  private keepPolling(q: Queue, vq: SplitVirtqueue, popped: number, largestBytes: number): boolean {
    if (q.pollWindow.maxUs === 0) return false;
    const nowMs = performance.now();
    if (q.pollUntilMs !== undefined && vq.inFlightCount > 0) {
      // Requests still in flight a turn later (a device on a disk, large requests through the pool
      // or io_uring; synchronous ones have completed by now): the guest's next requests come after
      // their completions, and a spin would take the CPU the completions need.
      q.pollUntilMs = undefined;
      return false;
    }
    if (q.pollUntilMs === undefined) {
      if (popped === 0 || largestBytes > POLL_REQUEST_BYTES_MAX) return false;
      const windowUs = q.pollWindow.next();
      if (windowUs === 0 || this.contention.waitShare() >= POLL_CONTENDED_WAIT_SHARE) return false;
      q.pollUntilMs = nowMs + windowUs / 1000;
      this.polls++;
    } else if (nowMs >= q.pollUntilMs) {
      q.pollUntilMs = undefined;
      q.pollWindow.miss();
      return false;
    }
    // setImmediate: libuv serves other descriptors on the turn between (polling them with a zero
    // timeout, without sleeping) and comes back here.
    this.scheduleQueue(q);
    return true;
  }

  private submit(q: Queue, vq: SplitVirtqueue, chain: DescriptorChain): void {
    const inflightView = q.inflightView;
    if (inflightView !== undefined) this.inflight.markInflight(inflightView, chain.head);
    // Counted whatever the gate says: popped before it closed, or resubmitted as the ring starts.
    q.requests.enter();
    this.gate.enter();
    this.requestCount++;
    const epoch = q.epoch;
    try {
      this.handler.start(chain, (done, usedBytes) => this.complete(q, epoch, done.head, usedBytes), this.parkers[q.index]);
    } catch (err) {
      // start() throws only before the request began (done never runs): no status byte to write
      // (VirtqueueError), so the chain cannot be completed and the ring is unusable.
      this.finish(q);
      this.breakQueue(q, err instanceof VirtqueueError ? `guest driver error: ${err.message}` : `internal error: ${describeError(err)}`);
    }
  }

  private complete(q: Queue, epoch: number, head: number, writtenBytes: number): void {
    // Only the run of the ring that popped the chain may take it back (over the mappings of now),
    // and only while we still own the rings.
    const vq = q.vq;
    if (!this.connectionClosing && q.epoch === epoch && vq !== undefined) {
      try {
        const inflightView = q.inflightView;
        if (inflightView !== undefined) linkBeforePush(inflightView, head);
        vq.pushUsed(head, writtenBytes);
        if (inflightView !== undefined) clearAfterPush(inflightView, head, vq.usedIdx);
        this.scheduleNotify(q);
      } catch (err) {
        this.breakQueue(q, `completing request ${head} failed: ${describeError(err)}`);
      }
    }
    this.finish(q);
  }

  private finish(q: Queue): void {
    q.requests.leave();
    this.gate.leave();
  }

  /** One call-eventfd decision per burst of completions (EVENT_IDX or NO_INTERRUPT decides). */
  private scheduleNotify(q: Queue): void {
    if (q.notifyScheduled) return;
    q.notifyScheduled = true;
    queueMicrotask(() => {
      q.notifyScheduled = false;
      const vq = q.vq;
      if (vq === undefined || this.connectionClosing || q.call === undefined) return;
      try {
        if (vq.shouldNotify()) q.call.signal();
      } catch (err) {
        this.log(`vring ${q.index}: cannot signal the call eventfd: ${describeError(err)}`, 'warn');
      }
    });
  }

  // --- waiting for requests in flight --------------------------------------------------------------

  /**
   * Runs fn once no request is in flight, popping nothing meanwhile (fn unmaps or replaces memory
   * that in-flight requests may still be using). Skips fn if the connection closed meanwhile.
   */
  async quiesce(fn: () => void): Promise<void> {
    try {
      // Parked requests hold views of the memory fn may unmap: they leave now and come back after.
      for (const r of this.spaceWait.take()) this.putAside(this.queues[r.queue]!, r);
      await this.gate.closeAndDrain();
      if (this.connectionClosing) return;
      fn();
    } finally {
      this.gate.open();
      if (this.gate.isOpen) {
        this.resubmitSetAside();
        for (const q of this.queues) this.scheduleQueue(q);
      }
    }
  }

  // --- requests waiting for space (space-wait.ts) ----------------------------------------------------

  /** A request refused for want of space: parked, unless its ring or the connection is going away. */
  private parkOrGiveUp(q: Queue, r: ParkedRequest, front: boolean, err?: unknown): void {
    if (this.connectionClosing || this.drainRequested || !q.started) this.giveUpParked([r]);
    else if (!this.gate.isOpen) this.putAside(q, r); // a memory-table change waits for it
    else this.spaceWait.park(r, front, err);
  }

  /** Parked requests whose ring stops or whose connection goes away (space-wait.ts says what becomes of them). */
  private giveUpParked(requests: ParkedRequest[]): void {
    const n = { kept: 0, failed: 0, lost: 0 };
    for (const r of requests) {
      const q = this.queues[r.queue]!;
      const tracked = q.inflightView !== undefined;
      if (tracked || this.connectionClosing) this.finish(q);
      else this.handler.fail(r.chain, r.done);
      n[tracked ? 'kept' : this.connectionClosing ? 'lost' : 'failed']++;
    }
    if (n.kept > 0) this.log(`${n.kept} request(s) waiting for space left in flight for the front-end to resubmit (inflight region)`, 'info');
    if (n.failed + n.lost > 0) {
      this.log(`${n.failed + n.lost} request(s) waiting for space ${n.lost > 0 ? 'lost with the connection' : 'completed with IOERR'}: the front-end keeps no inflight region to resubmit them from`, 'warn');
    }
  }

  private putAside(q: Queue, r: ParkedRequest): void {
    this.setAside.push({ q, epoch: q.epoch, head: r.chain.head });
    this.finish(q);
  }

  /** After a memory-table change: the requests put aside run again from their heads over the new mappings. */
  private resubmitSetAside(): void {
    const list = this.setAside;
    this.setAside = [];
    for (const { q, epoch, head } of list) {
      const vq = q.vq;
      if (vq === undefined || q.epoch !== epoch || q.broken) continue; // left marked in the inflight region
      try {
        this.submit(q, vq, vq.chainAt(head));
      } catch (err) {
        this.breakQueue(q, `resubmitting request ${head} after a memory table change: ${describeError(err)}`);
      }
    }
  }
}
