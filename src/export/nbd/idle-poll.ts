/**
 * Adaptive busy-polling of idle NBD connections: the latency of a queue-depth-1 client.
 *
 * At queue depth 1 a request's round trip is dominated by wake-ups, not by work: after replying,
 * the server's event loop sleeps in epoll, and the client's next request must wake it (on this
 * 2-core VM ~40-60 us of the ~150 us round trip, measured in bench/RESULTS.md). The remedy storage
 * systems use (QEMU's IOThread poll-max-ns, SPDK, the kernel's busy_poll) is to keep checking for
 * the next request for a short window before sleeping. Node's event loop cannot do that, so a
 * connection that has just sent its last reply checks its socket itself, non-blocking, for up to
 * its window, and reads the next request straight from the file descriptor when it arrives.
 *
 * Each connection learns whether polling pays: while most of its polls catch the next request it
 * polls, otherwise it does not (a client that thinks long between requests costs no CPU) except
 * for an occasional probe. A poll during which the process was preempted counts as a miss: on a
 * machine short of CPU, spinning competes with the client and sleeping is faster. While a connection polls, the event loop is blocked, so every
 * other NBD connection's socket is watched at the same time and polling stops as soon as one of
 * them has input (libuv then serves it), and after SPIN_BUDGET_MS of requests served by polling
 * the poll continues from setImmediate, after the event loop has had a turn (without sleeping:
 * pending immediates make libuv poll with a zero timeout).
 *
 * Reading the descriptor beside libuv is safe (see socket-fd.ts).
 */
import { performance } from 'node:perf_hooks';
import { POLLFD_BYTES, POLLIN, type Libc } from '../../sys/libc.js';
import type { PollWindow } from '../poll-window.js';
import { socketSys } from './socket-fd.js';

/** Longest a chain of requests served by polling keeps the event loop from other work. */
const SPIN_BUDGET_MS = 1;
/** A pause this long between two checks of a poll means the process was preempted. */
const PREEMPTED_MS = 0.03;
/** Bytes read from a socket in one go while polling (more stays in the socket for libuv). */
const READ_CHUNK_BYTES = 256 * 1024;

/**
 * What a poll found: the bytes read from the connection's socket (a fresh Buffer); 'timeout': the
 * window passed; 'busy': another connection had input first; 'yield': this turn's budget is spent
 * (poll again from setImmediate); 'closed': end-of-file or an error, left for libuv to report.
 */
export type PollOutcome = Buffer | 'timeout' | 'busy' | 'yield' | 'closed';

export class IdlePoller {
  private readonly chunk = Buffer.allocUnsafe(READ_CHUNK_BYTES);
  private pollfds = new Uint8Array(0);
  private budgetStartMs: number | undefined;
  private readonly endTurn = (): void => {
    this.budgetStartMs = undefined;
  };
  /** Counters for tests and the curious: polls started, and those that caught a request. */
  polls = 0;
  hits = 0;

  constructor(private readonly sys: Libc) {}

  /**
   * Waits up to windowUs for input on ownFd while watching otherFds, and tells the window how it
   * went (see PollOutcome).
   */
  poll(ownFd: number, otherFds: readonly number[], windowUs: number, window: PollWindow): PollOutcome {
    const startMs = performance.now();
    if (this.budgetStartMs === undefined) {
      this.budgetStartMs = startMs;
      setImmediate(this.endTurn);
    } else if (startMs - this.budgetStartMs >= SPIN_BUDGET_MS) {
      return 'yield';
    }
    this.polls++;
    const count = 1 + otherFds.length;
    const fds = this.pollfdsFor(ownFd, otherFds);
    const view = new DataView(fds.buffer, fds.byteOffset, fds.byteLength);
    const deadlineMs = startMs + windowUs / 1000;
    let nowMs = startMs;
    do {
      const ready = this.sys.poll(fds, count, 0);
      if (ready > 0) {
        // revents of our own socket first: any event there (data, hang-up, error) ends the wait.
        if (view.getInt16(6, true) === 0) return 'busy'; // another connection has work: let the event loop serve it
        const bytes = this.readOwn(ownFd);
        if (bytes === undefined) return 'closed';
        window.hit();
        return bytes;
      }
      if (ready < 0) return 'closed';
      const beforeMs = nowMs;
      nowMs = performance.now();
      if (nowMs - beforeMs > PREEMPTED_MS) {
        // The CPU was taken from us mid-poll: the machine is busy, and a sleeping event loop is
        // woken sooner (the scheduler favours sleepers) than a spinning one gets the CPU back.
        window.miss();
        return 'timeout';
      }
    } while (nowMs < deadlineMs);
    window.miss();
    return 'timeout';
  }

  private readOwn(fd: number): Buffer | undefined {
    const n = this.sys.read(fd, this.chunk, READ_CHUNK_BYTES);
    if (n <= 0) return undefined; // EOF, EAGAIN or an error: libuv will see and report it
    this.hits++;
    return Buffer.from(this.chunk.subarray(0, n));
  }

  private pollfdsFor(ownFd: number, otherFds: readonly number[]): Uint8Array {
    const bytes = (1 + otherFds.length) * POLLFD_BYTES;
    if (this.pollfds.length < bytes) this.pollfds = new Uint8Array(Math.max(bytes, 16 * POLLFD_BYTES));
    const view = new DataView(this.pollfds.buffer);
    const put = (i: number, fd: number): void => {
      view.setInt32(i * POLLFD_BYTES, fd, true);
      view.setInt16(i * POLLFD_BYTES + 4, POLLIN, true);
      view.setInt16(i * POLLFD_BYTES + 6, 0, true);
    };
    put(0, ownFd);
    otherFds.forEach((fd, i) => put(i + 1, fd));
    return this.pollfds;
  }
}

/** An IdlePoller, or undefined where the system calls cannot be bound (then nobody polls). */
export function createIdlePoller(): IdlePoller | undefined {
  const sys = socketSys();
  return sys === null ? undefined : new IdlePoller(sys);
}
