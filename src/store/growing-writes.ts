/**
 * GrowingWrites: the writes that grow one file, a few at a time, and those that wait combined.
 *
 * Linux runs a buffered write to a file with the file's inode lock held for the whole copy
 * (tmpfs's shmem_file_write_iter, ext4 and XFS alike), so writes that grow a file go one at a time
 * however many pool threads carry them. At queue depth 32 the others spin on the lock: `perf
 * record` of 1 MiB allocating writes put 17.7% of all samples in rwsem_spin_on_owner (and 5% more in
 * the lock's slow path) against 12.9% in the copy itself (bench/RESULTS.md, issue 13). Here, on a
 * quiet machine, one such write goes to the pool at a time, and the writes that queue meanwhile
 * and lie back to back in the file go down together as one pwritev: one system call, one turn of
 * the lock, no thread spinning on it. (Two at a time, so that the next waits on the lock instead of
 * a hop back to the event loop, ran no faster and spent 15% more CPU: the second spins.)
 *
 * On a machine whose CPUs are taken by others it is the other way round: the chain of lock holders
 * goes as fast as it gets CPU, and Linux shares CPU between threads, so a few threads carrying it
 * get a few shares. When other processes leave this one less than CONTENDED_CORES_LEFT CPUs
 * (src/sys/others-cpu.ts) more writes go at once, in shorter runs (CONTENDED_LIMITS).
 * Measured with `strata img bench` (1 MiB allocating writes, QD 32, tmpfs, two CPUs), against the
 * pool carrying every write at once: quiet, one in flight in runs of up to 16 MiB ran 1.05x as fast
 * as qemu-img at 0.65x its CPU (the pool: 0.96x at 1.2x); beside two CPU-bound processes one in
 * flight fell to 0.76x of qemu-img, and 16 in flight in runs of 2 MiB ran level with it, as the
 * pool did (bench/RESULTS.md, issue 13).
 *
 * Each write still gets its own answer: a combined write that fails is retried write by write, so
 * a write that would have succeeded alone succeeds (an ENOSPC at the end of a run fails only the
 * writes it reaches). Nothing is answered before its bytes are written, so a flush still covers
 * exactly the writes that were answered.
 */
import { OthersCpu } from '../sys/others-cpu.js';
import { IOV_MAX } from '../sys/iovec.js';

export interface GrowingWritesLimits {
  /** Writes that grow one file in the pool at once. */
  inFlight: number;
  /** The most bytes one combined write carries. */
  combinedMaxBytes: number;
}

/**
 * Quiet: one in flight (see the file comment), in runs large enough that a queue of 1 MiB writes at
 * depth 32 goes down in two calls, small enough that the first write of a run is not held long
 * behind the copy of the rest (16 MiB copies into tmpfs in about 3 ms here).
 */
export const QUIET_LIMITS: GrowingWritesLimits = { inFlight: 1, combinedMaxBytes: 16 * 1024 * 1024 };
/** While other processes take the CPUs: more threads carry the chain, each a shorter run. */
export const CONTENDED_LIMITS: GrowingWritesLimits = { inFlight: 16, combinedMaxBytes: 2 * 1024 * 1024 };
/**
 * Fewer CPUs than this left by other processes: contended. The copy needs a whole CPU, and the
 * event loop and the next write's thread part of another.
 */
export const CONTENDED_CORES_LEFT = 1.5;

/** The limits for now: CONTENDED_LIMITS while other processes take the CPUs, else QUIET_LIMITS. */
export type LimitsNow = () => GrowingWritesLimits;

let othersCpu: OthersCpu | undefined;

/** From the CPU other processes keep busy (read at most every 200 ms: two small /proc reads). */
export function limitsByContention(): GrowingWritesLimits {
  othersCpu ??= new OthersCpu();
  return othersCpu.coresLeft() < CONTENDED_CORES_LEFT ? CONTENDED_LIMITS : QUIET_LIMITS;
}

/** Writes bufs (back to back, lengthBytes in all) at hostOffset: the pool's pwritev loop. */
export type WriteCall = (bufs: readonly Uint8Array[], hostOffset: number, lengthBytes: number) => Promise<void>;

interface QueuedWrite {
  bufs: readonly Uint8Array[];
  hostOffset: number;
  lengthBytes: number;
  resolve: () => void;
  reject: (err: unknown) => void;
}

export class GrowingWrites {
  private inFlight = 0;
  /** In arrival order: the oldest is served first, with whatever lies next to it. */
  private readonly queue: QueuedWrite[] = [];
  /** Writes that went down combined with others (tests). */
  combinedWrites = 0;
  /** Combined calls that failed and were retried write by write (tests). */
  retriedRuns = 0;

  constructor(
    private readonly writeCall: WriteCall,
    private readonly limitsNow: LimitsNow = limitsByContention,
  ) {}

  write(bufs: readonly Uint8Array[], hostOffset: number, lengthBytes: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ bufs, hostOffset, lengthBytes, resolve, reject });
      this.pump();
    });
  }

  /** Writes waiting for a turn (not yet in the pool). */
  get queuedWrites(): number {
    return this.queue.length;
  }

  private pump(): void {
    if (this.queue.length === 0) return;
    const limits = this.limitsNow();
    while (this.inFlight < limits.inFlight && this.queue.length > 0) {
      const run = this.takeRun(limits.combinedMaxBytes);
      this.inFlight++;
      void this.send(run).finally(() => {
        this.inFlight--;
        this.pump();
      });
    }
  }

  /**
   * The oldest queued write and the queued writes that continue it back to back in the file on
   * either side, within combinedMaxBytes and IOV_MAX buffers; removed from the queue, in file order.
   */
  private takeRun(combinedMaxBytes: number): QueuedWrite[] {
    const oldest = this.queue[0]!;
    if (this.queue.length === 1) {
      this.queue.length = 0;
      return [oldest];
    }
    const byStart = new Map<number, QueuedWrite>();
    const byEnd = new Map<number, QueuedWrite>();
    for (const w of this.queue) {
      // Two queued writes at the same offset are never combined (the second stays for a later run).
      if (!byStart.has(w.hostOffset)) byStart.set(w.hostOffset, w);
      if (!byEnd.has(w.hostOffset + w.lengthBytes)) byEnd.set(w.hostOffset + w.lengthBytes, w);
    }
    const run = [oldest];
    let bytes = oldest.lengthBytes;
    let buffers = oldest.bufs.length;
    const fits = (w: QueuedWrite): boolean =>
      !run.includes(w) && bytes + w.lengthBytes <= combinedMaxBytes && buffers + w.bufs.length <= IOV_MAX;
    for (let next = byStart.get(oldest.hostOffset + oldest.lengthBytes); next !== undefined && fits(next); ) {
      run.push(next);
      bytes += next.lengthBytes;
      buffers += next.bufs.length;
      next = byStart.get(next.hostOffset + next.lengthBytes);
    }
    for (let before = byEnd.get(oldest.hostOffset); before !== undefined && fits(before); ) {
      run.unshift(before);
      bytes += before.lengthBytes;
      buffers += before.bufs.length;
      before = byEnd.get(before.hostOffset);
    }
    const taken = new Set(run);
    let kept = 0;
    for (const w of this.queue) if (!taken.has(w)) this.queue[kept++] = w;
    this.queue.length = kept;
    return run;
  }

  private async send(run: QueuedWrite[]): Promise<void> {
    if (run.length === 1) return this.sendAlone(run[0]!);
    const bufs: Uint8Array[] = [];
    let bytes = 0;
    for (const w of run) {
      for (const b of w.bufs) bufs.push(b);
      bytes += w.lengthBytes;
    }
    try {
      await this.writeCall(bufs, run[0]!.hostOffset, bytes);
    } catch {
      // Which of them failed is the file's to say: each again on its own.
      this.retriedRuns++;
      for (const w of run) await this.sendAlone(w);
      return;
    }
    this.combinedWrites += run.length;
    for (const w of run) w.resolve();
  }

  /** One write in a call of its own, answered with that call's outcome. */
  private async sendAlone(w: QueuedWrite): Promise<void> {
    try {
      await this.writeCall(w.bufs, w.hostOffset, w.lengthBytes);
      w.resolve();
    } catch (err) {
      w.reject(err);
    }
  }
}
