/**
 * A pass that runs every `intervalMs` after the previous one ended (passes never overlap), for the
 * daemon's timers (tier cooling, the seal policy). stop() cancels the next pass, aborts the
 * signal the running one was given and waits for it. The timer does not keep the process alive.
 */
export class PeriodicPass {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;
  private readonly abort = new AbortController();

  constructor(
    private readonly intervalMs: number,
    /** One pass; it must not reject (it logs its own failures). */
    private readonly pass: (signal: AbortSignal) => Promise<void>,
  ) {}

  get isStopped(): boolean {
    return this.stopped;
  }

  start(): void {
    this.schedule();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.abort.abort(new Error('the daemon is stopping'));
    await this.running;
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.running = this.pass(this.abort.signal);
      void this.running.then(() => this.schedule());
    }, this.intervalMs);
    this.timer.unref();
  }
}
