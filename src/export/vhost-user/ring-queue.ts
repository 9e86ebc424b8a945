/**
 * One virtqueue's state in a RingSet (rings.ts), and the tuning of its polling of a drained ring.
 */
import { PollWindow } from '../poll-window.js';
import { RequestGate } from '../../core/request-gate.js';
import type { EventFd } from '../../sys/eventfd.js';
import type * as M from './messages.js';
import type { SplitVirtqueue } from './virtqueue.js';

/**
 * A drained ring is not polled while the event loop waited for a CPU this share of its runnable
 * time or more: spinning would take the core the guest's vCPUs and the host's other work are
 * queued for, and the loop's own turns come late anyway.
 */
export const POLL_CONTENDED_WAIT_SHARE = 0.3;
/**
 * A ring goes on polling while at least this share of its polls catch a request: a hit spares the
 * guest a VM exit and this thread a wake-up, a miss spends the window of one core (through the
 * test rig's guest, 4 KiB reads at QD 32 gained a third while the guest still kicked for half
 * its requests or more: polls that miss often still pay).
 */
export const POLL_WORTH_HIT_RATE = 0.25;
/**
 * A pass that served a request larger than this does not poll: a guest moving large blocks pays
 * one exit per many microseconds of copying, and the copies (on the thread pool or in io_uring's
 * workers) need the CPU a spin would take (bench/vhost-bench's 1 MiB reads lost 10% to it).
 */
export const POLL_REQUEST_BYTES_MAX = 256 * 1024;

export interface RingViews {
  desc: Uint8Array;
  avail: Uint8Array;
  used: Uint8Array;
}

export class Queue {
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
  /** This ring's requests in flight (GET_VRING_BASE waits for them); never closed: see RingSet.gate. */
  readonly requests = new RequestGate();
  /** processQueue is scheduled (setImmediate) or running. */
  scheduled = false;
  notifyScheduled = false;
  /** While the drained ring is polled (kicks still suppressed): until when (performance.now() ms). */
  pollUntilMs: number | undefined;
  /** Whether polling this ring pays (its guest's next request keeps coming within the window). */
  readonly pollWindow: PollWindow;
  /** This ring's part of the inflight region while the ring runs with tracking. */
  inflightView: DataView | undefined;
  /**
   * Which run of the ring a request belongs to: a stop or reset starts a new one, a new memory
   * table does not (the ring is rebuilt over the new mappings and goes on).
   */
  epoch = 0;

  constructor(
    readonly index: number,
    pollWindowUs: number,
  ) {
    this.pollWindow = new PollWindow(pollWindowUs, POLL_WORTH_HIT_RATE);
  }
}
