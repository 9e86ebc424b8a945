/**
 * eventfd(2): the kick (front-end -> us) and call (us -> front-end) doorbells of vhost-user.
 * A counter: signal() adds 1, drain() reads and resets it. Both are one syscall (~0.6 us).
 */
import { EAGAIN, EFD_CLOEXEC, EFD_NONBLOCK, EINTR, ErrnoDoubt, errno, fail, libc, SysError } from './libc.js';
import { setNonBlocking } from './fd.js';
import { WatchedFd } from './poll.js';

/** 8-byte buffers reused by every EventFd (all calls are synchronous on one thread). */
const ONE = new Uint8Array(new BigUint64Array([1n]).buffer);
const counter = new Uint8Array(8);
const counterView = new DataView(counter.buffer);

export class EventFd extends WatchedFd {
  private constructor(fd: number) {
    super(fd, 'eventfd', 'eventfd');
  }

  /** A new eventfd with counter 0 (non-blocking unless nonBlocking: false). */
  static create(options: { nonBlocking?: boolean } = {}): EventFd {
    const flags = EFD_CLOEXEC | (options.nonBlocking === false ? 0 : EFD_NONBLOCK);
    const fd = libc().eventfd(0, flags);
    if (fd < 0) throw fail('eventfd');
    return new EventFd(fd);
  }

  /**
   * Takes ownership of a received eventfd. It is made non-blocking (the flag lives in the open file
   * description shared with the sender; QEMU creates its eventfds non-blocking already) so that
   * drain() can never stall the event loop.
   */
  static fromFd(fd: number): EventFd {
    setNonBlocking(fd);
    return new EventFd(fd);
  }

  /** Adds 1 to the counter (wakes the reader). EAGAIN (counter saturated) means a wakeup is pending anyway. */
  signal(): void {
    const fd = this.requireOpen('write');
    let doubt: ErrnoDoubt | undefined;
    for (;;) {
      if (libc().write(fd, ONE, 8) === 8) return;
      const e = errno();
      if (e === EINTR) continue;
      if (e === EAGAIN) return;
      if ((doubt ??= new ErrnoDoubt()).shouldRetry(e)) continue;
      throw new SysError('write', e, `to eventfd ${fd}`);
    }
  }

  /** Reads and resets the counter; 0 when nothing was pending (requires a non-blocking fd). */
  drain(): number {
    const fd = this.requireOpen('read');
    let doubt: ErrnoDoubt | undefined;
    for (;;) {
      if (libc().read(fd, counter, 8) === 8) return Number(counterView.getBigUint64(0, true));
      const e = errno();
      if (e === EINTR) continue;
      if (e === EAGAIN) return 0;
      if ((doubt ??= new ErrnoDoubt()).shouldRetry(e)) continue;
      throw new SysError('read', e, `from eventfd ${fd}`);
    }
  }

  // onReadable (cb runs while the counter is non-zero: it should drain()), stopWatching and
  // close come from WatchedFd.
}
