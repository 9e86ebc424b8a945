/**
 * Readiness watching for raw descriptors, on the libuv loop through koffi.node.poll (uv_poll_t).
 * libuv polls level-triggered: the callback runs on every loop iteration while the descriptor
 * stays readable, so callbacks must consume what is ready (read until EAGAIN) or stop watching.
 */
import koffi from 'koffi';
import { closeFd } from './fd.js';
import { SysError } from './libc.js';

export interface Watcher {
  stop(): void;
}

/**
 * Calls cb (on the event loop) whenever fd is readable, has hung up, or the poll failed (cb then
 * sees the error from its own read). An exception escaping cb is reported and swallowed: it must
 * never unwind into libuv and take the daemon down.
 */
/**
 * A descriptor this object owns and may watch for readability: the one place that stops the
 * watcher before closing, so libuv never watches a descriptor number that may be reused.
 */
export abstract class WatchedFd {
  private fdValue: number;
  private watcher: Watcher | undefined;

  /** `kind` names it in errors ("eventfd", "stream"), `watchLabel` in watcher warnings. */
  protected constructor(
    fd: number,
    private readonly kind: string,
    private readonly watchLabel: string,
  ) {
    this.fdValue = fd;
  }

  /** -1 once closed. */
  get fd(): number {
    return this.fdValue;
  }

  /** Calls cb while the descriptor is readable or hung up (cb must consume). Replaces an earlier cb. */
  onReadable(cb: () => void): void {
    const fd = this.requireOpen('poll');
    this.watcher?.stop();
    this.watcher = watchReadable(fd, cb, `${this.watchLabel} ${fd}`);
  }

  /** Stops readiness callbacks without closing. */
  stopWatching(): void {
    this.watcher?.stop();
    this.watcher = undefined;
  }

  /** Idempotent. */
  close(): void {
    if (this.fdValue < 0) return;
    this.stopWatching();
    const fd = this.fdValue;
    this.fdValue = -1;
    closeFd(fd);
  }

  protected requireOpen(syscall: string): number {
    if (this.fdValue < 0) throw new SysError(syscall, 9 /* EBADF */, `(the ${this.kind} is closed)`);
    return this.fdValue;
  }
}

export function watchReadable(fd: number, cb: () => void, what: string): Watcher {
  let active = true;
  // koffi 3.3.4 calls back with (status, events) although its .d.ts declares (events): accept
  // both shapes at this boundary.
  const handle = koffi.node.poll(fd, { readable: true, disconnect: true }, (() => {
    if (!active) return;
    try {
      cb();
    } catch (err) {
      process.emitWarning(`unhandled error in ${what} readiness callback: ${err instanceof Error ? err.message : String(err)}`);
    }
  }) as (ev: unknown) => void);
  return {
    stop(): void {
      if (!active) return;
      active = false;
      // Stop before the owner closes fd: libuv must not watch a descriptor number that may be reused.
      handle.stop();
      handle.close();
    },
  };
}
