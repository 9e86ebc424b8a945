/**
 * qemu-img's progress indicator ("    (45.00/100%)" rewritten in place with a carriage return),
 * printed to stderr and only when the user asked for it with -p.
 */

export interface ProgressSink {
  write(text: string): void;
}

export class Progress {
  private lastPrinted = -1;
  private finished = false;

  /**
   * @param enabled print anything at all (-p given and not -q).
   * @param minStep the smallest change in percent worth printing again.
   */
  constructor(
    private readonly sink: ProgressSink | undefined,
    private readonly enabled: boolean,
    private readonly minStep = 1,
  ) {
    if (this.enabled) this.print(0);
  }

  /** Reports done out of total (any unit); prints when the percentage moved enough. */
  update(done: number, total: number): void {
    if (!this.enabled || this.finished) return;
    const percent = total <= 0 ? 100 : Math.min(100, (done / total) * 100);
    if (percent - this.lastPrinted >= this.minStep || (percent === 100 && this.lastPrinted < 100)) {
      this.print(percent);
    }
  }

  /** Prints 100% and ends the line. */
  finish(): void {
    if (!this.enabled || this.finished) return;
    if (this.lastPrinted < 100) this.print(100);
    this.finished = true;
    this.sink?.write('\n');
  }

  /** Ends the line without claiming completion (on errors). */
  abort(): void {
    if (!this.enabled || this.finished) return;
    this.finished = true;
    this.sink?.write('\n');
  }

  private print(percent: number): void {
    this.lastPrinted = percent;
    this.sink?.write(`    (${percent.toFixed(2)}/100%)\r`);
  }
}
