/**
 * QosThrottle: the per-volume limiter (issue 15). Requests ask `admit(op, bytes)` before they go
 * to the device; under the limits the answer is `undefined` (go now: no timer, no promise, no
 * added wait), over them a promise that resolves when the request's turn and tokens have come.
 * Requests are delayed, never failed.
 *
 * Two FIFO lanes, as QEMU's throttle groups have: reads, and writes with everything ordered
 * against them (write zeroes, discard, flush). A flush costs nothing but waits in the write lane
 * behind every write that arrived before it, so it is never reordered ahead of writes it covers.
 * A read limit never holds writes back, nor a write limit reads. When a total (read + write)
 * limit exists, the lanes share its buckets: a younger request never takes total tokens an older
 * one is waiting for.
 *
 * Each limited dimension is a TokenBucket at the sustained rate; without a burst it holds a tenth
 * of a second of tokens (QEMU's default slack), with a burst B for S seconds it also holds
 * (B - rate) * S more, and a second bucket at rate B caps the pace while the burst lasts, so an
 * idle volume runs at B for about S seconds and then at the rate (docs/qos.md).
 *
 * Time comes from a QosClock (tests inject a virtual one). The queues are bounded by what the
 * exports keep in flight (NBD's and the virtqueues' depths): nothing here adds requests.
 */
import { QOS_FIELDS, QOS_RATES, DEFAULT_BURST_SECONDS, isUnlimited, type QosLimits, type QosRate } from './limits.js';
import { TokenBucket } from './token-bucket.js';

export type QosOp = 'read' | 'write' | 'flush';

export interface QosClock {
  nowMs(): number;
  /** Calls fn once after delayMs; the returned function cancels it. */
  schedule(delayMs: number, fn: () => void): () => void;
}

export const systemQosClock: QosClock = {
  nowMs: () => performance.now(),
  schedule: (delayMs, fn) => {
    const timer = setTimeout(fn, delayMs);
    return () => clearTimeout(timer);
  },
};

/** Seconds of tokens a bucket holds beyond a burst's: QEMU's avg/10. */
const SLACK_SECONDS = 0.1;

export interface QosThrottleStats {
  /** Requests waiting now. */
  queued: number;
  /** Requests that had to wait, since the throttle was made. */
  throttledRequests: number;
  /** The time they waited, summed (ms). */
  throttledMs: number;
}

interface Pending {
  op: QosOp;
  bytes: number;
  sinceMs: number;
  /** Arrival order across both lanes (several requests arrive within one millisecond). */
  seq: number;
  resolve: () => void;
}

/** A FIFO over an array (shift() is O(n)); compacted as its head advances. */
class Fifo<T> {
  private items: T[] = [];
  private head = 0;

  get size(): number {
    return this.items.length - this.head;
  }

  peek(): T | undefined {
    return this.items[this.head];
  }

  push(item: T): void {
    this.items.push(item);
  }

  shift(): T | undefined {
    const item = this.items[this.head];
    if (item === undefined) return undefined;
    this.head++;
    if (this.head >= 1024 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }
}

type Side = 'read' | 'write' | 'total';

/** The buckets of one dimension: the sustained one, and the burst's pace cap when there is one. */
interface Dimension {
  side: Side;
  unit: 'iops' | 'bps';
  buckets: TokenBucket[];
}

function sideOf(rate: QosRate): Side {
  return rate.startsWith('read') ? 'read' : rate.startsWith('write') ? 'write' : 'total';
}

function buildDimensions(limits: QosLimits, nowMs: number): Dimension[] {
  const seconds = limits.burstSeconds ?? DEFAULT_BURST_SECONDS;
  const out: Dimension[] = [];
  for (const rate of QOS_RATES) {
    const sustained = limits[rate];
    if (sustained === undefined) continue;
    const burst = limits[`${rate}Burst`];
    const slack = sustained * SLACK_SECONDS;
    const buckets =
      burst === undefined
        ? [new TokenBucket(sustained, slack, nowMs)]
        : [new TokenBucket(sustained, slack + (burst - sustained) * seconds, nowMs), new TokenBucket(burst, burst * SLACK_SECONDS, nowMs)];
    out.push({ side: sideOf(rate), unit: rate.endsWith('Iops') ? 'iops' : 'bps', buckets });
  }
  return out;
}

/** A bucket and what a request pays into it: one per operation, or its bytes. */
interface Charged {
  bucket: TokenBucket;
  unit: 'iops' | 'bps';
}

const NO_BUCKETS: readonly Charged[] = [];

export class QosThrottle {
  private dimensions: Dimension[] = [];
  /** What a read and what a write (write zeroes, discard) pay into, computed when limits change. */
  private readBuckets: readonly Charged[] = NO_BUCKETS;
  private writeBuckets: readonly Charged[] = NO_BUCKETS;
  /** The total limits' buckets, which both lanes pay into. */
  private totalBuckets: readonly Charged[] = NO_BUCKETS;
  private sharesTotal = false;
  private readonly reads = new Fifo<Pending>();
  private readonly writes = new Fifo<Pending>();
  private cancelTimer: (() => void) | undefined;
  private throttledRequests = 0;
  private throttledMs = 0;
  private arrivals = 0;
  /** The limits in force, as JSON: setting the same ones again keeps the buckets' levels. */
  private limitsKey = '';

  constructor(
    limits: QosLimits | undefined,
    private readonly clock: QosClock = systemQosClock,
  ) {
    this.setLimits(limits);
  }

  /** True while some limit applies. */
  get limited(): boolean {
    return this.dimensions.length > 0;
  }

  /**
   * Replaces the limits at once (new buckets start full); waiting requests are reconsidered under
   * the new ones (all go at once when the limits are removed).
   */
  setLimits(limits: QosLimits | undefined): void {
    const key = isUnlimited(limits) ? '' : JSON.stringify(QOS_FIELDS.map((field) => limits![field] ?? null));
    if (key === this.limitsKey) return;
    this.limitsKey = key;
    const now = this.clock.nowMs();
    this.dimensions = isUnlimited(limits) ? [] : buildDimensions(limits!, now);
    this.sharesTotal = this.dimensions.some((d) => d.side === 'total');
    const charged = (side: Side) => this.dimensions.filter((d) => d.side === side || d.side === 'total').flatMap((d) => d.buckets.map((bucket) => ({ bucket, unit: d.unit })));
    this.readBuckets = charged('read');
    this.writeBuckets = charged('write');
    this.totalBuckets = charged('total');
    this.cancelTimer?.();
    this.cancelTimer = undefined;
    this.pump();
  }

  /**
   * Asks to send a request: undefined when it may go now (its tokens are taken), else a promise
   * that resolves when it may. `bytes`: data moved (0 for flush, write zeroes and discard).
   */
  admit(op: QosOp, bytes: number): Promise<void> | undefined {
    if (this.dimensions.length === 0) return undefined;
    const lane = op === 'read' ? this.reads : this.writes;
    const other = op === 'read' ? this.writes : this.reads;
    const now = this.clock.nowMs();
    if (lane.size === 0 && (!this.sharesTotal || other.size === 0) && this.waitMs(op, bytes, now) === 0) {
      this.take(op, bytes, now);
      return undefined;
    }
    return new Promise<void>((resolve) => {
      const head = lane.size === 0;
      lane.push({ op, bytes, sinceMs: now, seq: this.arrivals++, resolve });
      // A new head may go before the time the timer was set for (the other lane's head waits on
      // a limit this one does not have): look again. Behind a head, it waits for that head.
      if (head || this.cancelTimer === undefined) {
        this.cancelTimer?.();
        this.cancelTimer = undefined;
        this.pump();
      }
    });
  }

  stats(): QosThrottleStats {
    return { queued: this.reads.size + this.writes.size, throttledRequests: this.throttledRequests, throttledMs: this.throttledMs };
  }

  /** The buckets a request draws on (none for a flush). */
  private bucketsOf(op: QosOp): readonly Charged[] {
    return op === 'read' ? this.readBuckets : op === 'write' ? this.writeBuckets : NO_BUCKETS;
  }

  private waitMs(op: QosOp, bytes: number, nowMs: number, buckets: readonly Charged[] = this.bucketsOf(op)): number {
    let wait = 0;
    for (const { bucket, unit } of buckets) {
      const cost = unit === 'iops' ? 1 : bytes;
      if (cost > 0) wait = Math.max(wait, bucket.waitMs(cost, nowMs));
    }
    return wait;
  }

  private take(op: QosOp, bytes: number, nowMs: number): void {
    for (const { bucket, unit } of this.bucketsOf(op)) bucket.take(unit === 'iops' ? 1 : bytes, nowMs);
  }

  /** Lets through every head of lane that may go now, oldest first; then sets one timer for the next. */
  private pump(): void {
    const now = this.clock.nowMs();
    let nextMs = Infinity;
    for (;;) {
      const heads = [this.reads, this.writes].filter((lane) => lane.size > 0).sort((a, b) => a.peek()!.seq - b.peek()!.seq);
      let admitted = false;
      for (const lane of heads) {
        const head = lane.peek()!;
        const wait = this.waitMs(head.op, head.bytes, now);
        if (wait > 0) {
          nextMs = Math.min(nextMs, wait);
          // A younger request must not take the total tokens an older one waits for.
          if (this.waitMs(head.op, head.bytes, now, this.totalBuckets) > 0) break;
          continue;
        }
        lane.shift();
        this.take(head.op, head.bytes, now);
        this.throttledRequests++;
        this.throttledMs += now - head.sinceMs;
        head.resolve();
        admitted = true;
        break;
      }
      if (!admitted) break;
      nextMs = Infinity;
    }
    if (nextMs === Infinity) return;
    this.cancelTimer = this.clock.schedule(Math.max(1, Math.ceil(nextMs)), () => {
      this.cancelTimer = undefined;
      this.pump();
    });
  }
}
