/**
 * Readiness watching for raw descriptors, on the libuv loop through koffi.node.poll (uv_poll_t).
 * libuv polls level-triggered: the callback runs on every loop iteration while the descriptor
 * stays readable, so callbacks must consume what is ready (read until EAGAIN) or stop watching.
 */
import koffi from 'koffi';

export interface Watcher {
  stop(): void;
}

/**
 * Calls cb (on the event loop) whenever fd is readable, has hung up, or the poll failed (cb then
 * sees the error from its own read). An exception escaping cb is reported and swallowed: it must
 * never unwind into libuv and take the daemon down.
 */
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
