/**
 * The daemon commands' progress bar on stderr:
 *   "  importing [#########.........]  45%  450 MiB / 1 GiB  120 MiB/s"
 * rewritten in place at most ten times a second. Shown when stderr is a terminal (or with
 * --progress), never with --no-progress or --json. Ctrl-C while it shows ends its line before the
 * CLI exits (status 130, as a shell reports SIGINT).
 */
import { formatSizeHuman } from '../../core/units.js';
import type { ParsedArgs } from '../args.js';
import type { Console } from '../output.js';

/** Redraws at most this often. */
const REDRAW_INTERVAL_MS = 100;
/** No rate is shown until the samples span this long: over less, a rate is noise. */
export const MIN_RATE_WINDOW_MS = 1000;
/** The rate is measured over the last this long (it follows changes of pace). */
export const RATE_WINDOW_MS = 5000;
/** The exit status after Ctrl-C: 128 + SIGINT, what a shell reports for a process SIGINT ended. */
export const EXIT_INTERRUPTED = 128 + 2;
const BAR_WIDTH = 30;

/**
 * Transfer rate from progress samples: the bytes done between the oldest sample in the window and
 * the newest, over the time between them. Only deltas count, so progress made before the first
 * sample (a job half done when `job watch` starts) is never divided by a few milliseconds.
 */
export class RateEstimator {
  private readonly samples: Array<{ atMs: number; doneBytes: number }> = [];

  sample(atMs: number, doneBytes: number): void {
    this.samples.push({ atMs, doneBytes });
    // Keep one sample at or before the window's start, so the window stays full.
    while (this.samples.length > 2 && atMs - (this.samples[1] as { atMs: number }).atMs >= RATE_WINDOW_MS) this.samples.shift();
  }

  /** Bytes per second, or undefined while the samples span less than MIN_RATE_WINDOW_MS. */
  bytesPerSecond(): number | undefined {
    const first = this.samples[0];
    const last = this.samples[this.samples.length - 1];
    if (first === undefined || last === undefined || last.atMs - first.atMs < MIN_RATE_WINDOW_MS) return undefined;
    return Math.max(0, (last.doneBytes - first.doneBytes) / ((last.atMs - first.atMs) / 1000));
  }
}

/** What the bar needs from the process: a clock, and a way to hear Ctrl-C (tests give their own). */
export interface BarHost {
  nowMs(): number;
  /** Calls onInterrupt on SIGINT, then exits EXIT_INTERRUPTED; returns the function that stops listening. */
  trapInterrupt(onInterrupt: () => void): () => void;
}

export const PROCESS_HOST: BarHost = {
  nowMs: () => Date.now(),
  trapInterrupt: (onInterrupt) => {
    const handler = () => {
      onInterrupt();
      process.exit(EXIT_INTERRUPTED);
    };
    process.once('SIGINT', handler);
    return () => process.off('SIGINT', handler);
  },
};

export class ProgressBar {
  private lastDrawMs: number | undefined;
  private done = 0;
  private drawn = false;
  private ended = false;
  private readonly rate = new RateEstimator();
  private untrap: (() => void) | undefined;

  constructor(
    private readonly con: Console,
    private readonly enabled: boolean,
    private readonly label: string,
    private total: number | undefined,
    private readonly host: BarHost = PROCESS_HOST,
    /** How a quantity is shown (default bytes; a job counting packs shows "5 packs"). */
    private readonly format: (quantity: number) => string = formatSizeHuman,
  ) {}

  static enabled(args: ParsedArgs): boolean {
    if (args.has('no-progress') || args.has('json')) return false;
    if (args.has('progress')) return true;
    return process.stderr.isTTY === true;
  }

  setTotal(total: number | undefined): void {
    this.total = total;
  }

  add(bytes: number): void {
    this.update(this.done + bytes);
  }

  update(done: number, total?: number): void {
    if (total !== undefined) this.total = total;
    this.done = done;
    if (!this.enabled || this.ended) return;
    const now = this.host.nowMs();
    if (this.lastDrawMs !== undefined && now - this.lastDrawMs < REDRAW_INTERVAL_MS) return;
    this.lastDrawMs = now;
    this.draw(now);
  }

  private draw(now: number): void {
    this.rate.sample(now, this.done);
    const bytesPerSecond = this.rate.bytesPerSecond();
    const rate = bytesPerSecond === undefined ? '' : `  ${this.format(Math.round(bytesPerSecond))}/s`;
    let text: string;
    if (this.total !== undefined && this.total > 0) {
      const fraction = Math.min(1, this.done / this.total);
      const filled = Math.round(fraction * BAR_WIDTH);
      const bar = `[${'#'.repeat(filled)}${'.'.repeat(BAR_WIDTH - filled)}]`;
      text = `  ${this.label} ${bar} ${(fraction * 100).toFixed(0).padStart(3)}%  ${this.format(this.done)} / ${this.format(this.total)}${rate}`;
    } else {
      text = `  ${this.label} ${this.format(this.done)}${rate}`;
    }
    this.con.stderr(`\r${text}\x1b[K`);
    if (!this.drawn) this.untrap = this.host.trapInterrupt(() => this.abort());
    this.drawn = true;
  }

  /** Draws the final state and ends the line. */
  finish(): void {
    if (!this.enabled || this.ended) return;
    if (this.total !== undefined && this.done < this.total) this.done = this.total;
    this.draw(this.host.nowMs());
    this.end();
  }

  /** Ends the line without claiming completion (on errors and Ctrl-C). */
  abort(): void {
    if (!this.enabled || this.ended) return;
    this.end();
  }

  private end(): void {
    this.ended = true;
    this.untrap?.();
    this.untrap = undefined;
    if (this.drawn) this.con.stderr('\n');
  }
}
