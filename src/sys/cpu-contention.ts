/**
 * How much the calling thread waits for a CPU: the share of its runnable time it spent queued
 * behind other threads (Linux schedstat: /proc/thread-self/schedstat gives the nanoseconds run and
 * waited on a run queue, and the time slices).
 *
 * Why: where work may run either on the event loop or on a worker thread, the cheapest place
 * depends on the machine. Quiet, the event loop has a core to itself and a hand-off to a thread
 * only adds CPU; with other processes taking the cores, the event loop gets one share among
 * theirs, and work on a thread of its own gets a share of its own (Linux schedules threads, not
 * processes, fairly within a group). bench:s3 with two CPU-bound processes beside 16 concurrent
 * 1 MiB PUTs: the event loop waited 0.75 s on the run queue for each 0.65 s it ran.
 *
 * The share is measured over windows of at least WINDOW_MS, read again only when asked for after
 * the window has passed (one read of a small /proc file, ~10 us), so the caller may ask per request.
 * Where schedstat is not available the share is 0: the thread is taken to be uncontended.
 */
import fs from 'node:fs';

/** The shortest window a share is measured over. */
const WINDOW_MS = 200;

/** The calling thread's schedstat file: the main thread's when called there. */
const SCHEDSTAT_PATH = '/proc/thread-self/schedstat';

interface Sample {
  readonly atMs: number;
  readonly runNs: number;
  readonly waitNs: number;
}

/** A thread's run-queue wait share, over windows of WINDOW_MS or more. */
export class CpuContention {
  private last: Sample | undefined;
  private share = 0;
  private unavailable = false;

  constructor(
    private readonly readSchedstat: () => string = () => fs.readFileSync(SCHEDSTAT_PATH, 'utf8'),
    private readonly nowMs: () => number = () => performance.now(),
  ) {}

  /** False once schedstat could not be read or parsed (the share is 0 from then on). */
  get available(): boolean {
    return !this.unavailable;
  }

  /** The share (0..1) of the last complete window's runnable time that the thread spent waiting for a CPU. */
  waitShare(): number {
    if (this.unavailable) return 0;
    const atMs = this.nowMs();
    if (this.last !== undefined && atMs - this.last.atMs < WINDOW_MS) return this.share;
    const sample = this.sample(atMs);
    if (sample === undefined) return 0;
    if (this.last !== undefined) {
      const ranNs = sample.runNs - this.last.runNs;
      const waitedNs = sample.waitNs - this.last.waitNs;
      this.share = ranNs + waitedNs > 0 ? waitedNs / (ranNs + waitedNs) : 0;
    }
    this.last = sample;
    return this.share;
  }

  private sample(atMs: number): Sample | undefined {
    let text: string;
    try {
      text = this.readSchedstat();
    } catch {
      this.unavailable = true; // not Linux, or no schedstat: taken as uncontended
      return undefined;
    }
    const [runNs, waitNs] = text.trim().split(/\s+/).map(Number);
    if (runNs === undefined || waitNs === undefined || !Number.isFinite(runNs) || !Number.isFinite(waitNs)) {
      this.unavailable = true;
      return undefined;
    }
    return { atMs, runNs, waitNs };
  }
}
