/**
 * SpaceWait: the requests of one vhost-user connection that wait for space.
 *
 * When the pool is full (the device fails a write with StorageError NO_SPACE), a guest that gets
 * IOERR sees a failing disk: ext4 remounts read-only, databases abort. QEMU's own default for
 * ENOSPC from an image (werror=enospc) pauses the VM until the operator frees space; Ceph RBD
 * holds the write until the cluster has room. With vhost-user-blk QEMU never sees the error (the
 * back-end answers the guest directly), so the back-end does it: with the policy 'wait' a
 * write-type request (write, write-zeroes, discard, flush) the device refused for want of space
 * is parked here, not completed, and run again, oldest first, every NO_SPACE_RETRY_INTERVAL_MS
 * and at once when retryNow() says space may have been freed. Reads and the other requests keep
 * being served meanwhile.
 *
 * A parked request stays in flight: it counts against its ring's in-flight requests (so a guest
 * cannot make the daemon hold more than its rings' sizes), stays marked in the inflight region
 * (inflight.ts), and holds views of guest memory that it may only use while the memory table
 * stays as it is. RingSet (rings.ts) takes them back (take()) when that changes:
 *  - a memory-table change (SET_MEM_TABLE, REM_MEM_REG): they leave the in-flight count while it
 *    waits for quiet, and run again afterwards from their heads, walked over the new mappings;
 *  - a ring stop (GET_VRING_BASE), a shutdown (detach, daemon stop) or a disconnect: they are not
 *    completed, and stay marked in the inflight region, so the front-end hands them back (the
 *    ring's restart resubmits them, as QEMU's reconnect after a daemon restart does) to be run
 *    again. A front-end without an inflight region could not: they get IOERR while the ring is
 *    still ours, and after a disconnect they are lost, as any request in flight then is.
 * Nothing parked reads guest memory after it was taken back.
 *
 * Flush: a flush completes covering the writes completed before it. A parked write has not
 * completed (the guest has no answer for it), so a flush that succeeds while writes are parked
 * promises nothing about them, which is what virtio-blk asks of it.
 *
 * Reporting: a warning when requests start to wait, naming the volume and the fixes, again at
 * most once a minute (DEVICE_ERROR_REPORT_INTERVAL_MS, as device errors) while they still wait,
 * and an info line when the last one completed.
 */
import { isStorageError } from '../../core/errors.js';
import { DEVICE_ERROR_REPORT_INTERVAL_MS } from '../error-report.js';
import type { ExportLog } from '../log.js';
import type { BlkRequestDone, BlkRequestPark } from './blk.js';
import type { DescriptorChain } from './virtqueue.js';

/**
 * How often parked requests are tried again. A try costs one failed write (a few syscalls) while
 * the pool stays full, so once a second is no load; and a guest resumes within a second of the
 * space coming back, well inside its block layer's patience (Linux waits on virtio-blk requests
 * without a timeout) and the operator's.
 */
export const NO_SPACE_RETRY_INTERVAL_MS = 1000;

/** What a vhost-user export does with a write refused for want of space. */
export type NoSpacePolicy = 'wait' | 'error';
export const NO_SPACE_POLICIES: readonly NoSpacePolicy[] = ['wait', 'error'];
export const DEFAULT_NO_SPACE_POLICY: NoSpacePolicy = 'wait';

/** A request that waits for space. */
export interface ParkedRequest {
  /** The ring that popped it. */
  queue: number;
  chain: DescriptorChain;
  /** Completes it on its ring. */
  done: BlkRequestDone;
}

export interface SpaceWaitHost {
  /** Runs a parked request again: its completion calls done, a refusal for want of space park. */
  retry(request: ParkedRequest, done: BlkRequestDone, park: BlkRequestPark): void;
  /** A retried request was refused for want of space again (the host parks it again or gives it up). */
  refusedAgain(request: ParkedRequest): void;
}

export interface SpaceWaitOptions {
  host: SpaceWaitHost;
  log: ExportLog;
  /** What the log lines name: 'volume pool/vol', default 'the volume'. */
  subject?: string;
  /** The volume's pool, for the fixes the warning names. */
  pool?: string;
  /** Milliseconds for the report interval (default Date.now; tests pass their own). */
  clock?: () => number;
  retryIntervalMs?: number;
}

export class SpaceWait {
  private readonly parked: ParkedRequest[] = [];
  /** The parked request being run again (one at a time, oldest first). */
  private retrying: ParkedRequest | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly clock: () => number;
  /** When requests started to wait (undefined: none waits). */
  private waitingSinceMs: number | undefined;
  private lastReportMs: number | undefined;
  /** The error that made requests wait (for the log). */
  private lastError: unknown;
  private disposed = false;

  constructor(private readonly opts: SpaceWaitOptions) {
    this.clock = opts.clock ?? Date.now;
  }

  /** Requests waiting for space now (parked or being tried again). */
  get waiting(): number {
    return this.parked.length + (this.retrying === undefined ? 0 : 1);
  }

  /** Parks a request refused for want of space; front: it was the oldest (a retry that failed again). */
  park(request: ParkedRequest, front: boolean, err?: unknown): void {
    if (err !== undefined) this.lastError = err;
    if (front) this.parked.unshift(request);
    else this.parked.push(request);
    const now = this.clock();
    if (this.waitingSinceMs === undefined) this.waitingSinceMs = now;
    if (this.lastReportMs === undefined || now - this.lastReportMs >= DEVICE_ERROR_REPORT_INTERVAL_MS) this.report(now);
    this.arm();
  }

  /**
   * Takes the parked requests (of one ring, or all) back, oldest first; the one being retried stays.
   * They did not complete: no 'resumed' line. Those that come back (after a memory-table change, a
   * ring's restart) wait on under the same report, without a second warning within the minute.
   */
  take(queue?: number): ParkedRequest[] {
    const taken: ParkedRequest[] = [];
    for (let i = 0; i < this.parked.length; ) {
      if (queue === undefined || this.parked[i]!.queue === queue) taken.push(...this.parked.splice(i, 1));
      else i++;
    }
    return taken;
  }

  /** Space may have been freed: run the parked requests again now. */
  retryNow(): void {
    if (this.retrying !== undefined || this.parked.length === 0 || this.disposed) return;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.next();
  }

  /** The connection is gone: no more retries (whatever is parked was taken back). */
  dispose(): void {
    this.disposed = true;
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private arm(): void {
    if (this.timer !== undefined || this.disposed || this.retrying !== undefined) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.retryNow();
    }, this.opts.retryIntervalMs ?? NO_SPACE_RETRY_INTERVAL_MS);
    // A connection that waits for space must not keep a process alive on its own.
    this.timer.unref();
  }

  /** Runs the oldest parked request again; on success the next one, until one is refused again. */
  private next(): void {
    const request = this.parked.shift();
    if (request === undefined) {
      this.settle();
      return;
    }
    const now = this.clock();
    if (this.lastReportMs !== undefined && now - this.lastReportMs >= DEVICE_ERROR_REPORT_INTERVAL_MS) this.report(now);
    this.retrying = request;
    let settled = false;
    const done: BlkRequestDone = (chain, usedBytes) => {
      if (settled) return;
      settled = true;
      this.retrying = undefined;
      request.done(chain, usedBytes);
      if (!this.disposed) this.next();
    };
    const park: BlkRequestPark = () => {
      if (settled) return;
      settled = true;
      this.retrying = undefined;
      this.opts.host.refusedAgain(request);
      this.arm();
    };
    this.opts.host.retry(request, done, park);
  }

  /** Logs that the guest's writes resumed once nothing waits any more. */
  private settle(): void {
    if (this.waiting > 0 || this.waitingSinceMs === undefined) return;
    const waitedS = Math.round((this.clock() - this.waitingSinceMs) / 1000);
    this.waitingSinceMs = undefined;
    this.lastReportMs = undefined;
    this.opts.log(`${this.opts.subject ?? 'the volume'}: the guest's writes resumed after waiting ${waitedS} s for space`, 'info');
  }

  private report(now: number): void {
    this.lastReportMs = now;
    const err = this.lastError;
    const why = err === undefined ? '' : ` (${isStorageError(err) ? `${err.code}: ` : ''}${err instanceof Error ? err.message : String(err)})`;
    const waitedS = this.waitingSinceMs === undefined ? 0 : Math.round((now - this.waitingSinceMs) / 1000);
    const pool = this.opts.pool;
    this.opts.log(
      `${this.opts.subject ?? 'the volume'}: no space for the guest's writes${why}; ${this.waiting} request(s) wait${waitedS > 0 ? ` (for ${waitedS} s)` : ''} ` +
        `and are retried every ${(this.opts.retryIntervalMs ?? NO_SPACE_RETRY_INTERVAL_MS) / 1000} s, the guest is not told of an error. ` +
        `Free space: delete snapshots or volumes of ${pool === undefined ? 'the pool' : `pool '${pool}'`}, 'strata pool gc${pool === undefined ? '' : ` ${pool}`}' (dedup pools), or grow the data folder's filesystem`,
      'warn',
    );
  }
}
