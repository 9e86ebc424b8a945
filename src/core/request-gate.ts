/**
 * RequestGate: the requests in flight on something (a live volume, an NBD connection, a
 * vhost-user connection and each of its rings), and a gate in front of them that can be closed
 * while the owner waits for the drain and does what needs quiet (closing files, unmapping guest
 * memory, ending a socket), then opened again.
 *
 * What a closed gate means for a new request is the caller's choice: tryEnter() says no, and the
 * caller either waits (`await whenOpen()`, then tries again: a live volume being paused) or does
 * not take the request at all (an NBD connection stops parsing, a vhost-user ring stops popping).
 * enter() counts a request the caller has already accepted whatever the gate says (a request
 * parsed before the close, one resubmitted from the inflight region).
 *
 * Closes nest: the gate opens when every close() has had its open(). A gate that is never opened
 * again is simply closed for good (a connection shutting down).
 *
 * Hot path: tryEnter, enter and leave on an open gate are a compare and a counter change; nothing is
 * allocated and nothing awaited. The promises of whenIdle and whenOpen are made only while someone
 * waits, one per drain or per closed period, shared by every waiter.
 */
import { assert } from './errors.js';

const SETTLED: Promise<void> = Promise.resolve();

/** A promise shared by everyone waiting for one event, and the function that resolves it. */
interface Waiting {
  promise: Promise<void>;
  resolve: () => void;
}

function waiting(): Waiting {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

export class RequestGate {
  private inFlightCount = 0;
  private closeDepth = 0;
  /** Resolved when the count reaches zero; exists only while someone waits for it. */
  private idle: Waiting | undefined;
  /** Resolved when the gate opens; exists only while someone waits for it. */
  private opened: Waiting | undefined;

  /** Requests entered and not yet left. */
  get inFlight(): number {
    return this.inFlightCount;
  }

  get isOpen(): boolean {
    return this.closeDepth === 0;
  }

  /** Counts a request in when the gate is open; false (nothing counted) when it is closed. */
  tryEnter(): boolean {
    if (this.closeDepth !== 0) return false;
    this.inFlightCount++;
    return true;
  }

  /** Counts a request the caller has already accepted, open gate or not. */
  enter(): void {
    this.inFlightCount++;
  }

  /** A request counted by tryEnter or enter has finished. */
  leave(): void {
    assert(this.inFlightCount > 0, 'RequestGate.leave without a request in flight');
    if (--this.inFlightCount === 0 && this.idle !== undefined) {
      const idle = this.idle;
      this.idle = undefined;
      idle.resolve();
    }
  }

  /** Closes the gate (closes nest): tryEnter refuses until every close has been opened again. */
  close(): void {
    this.closeDepth++;
  }

  /** Undoes one close(); the last one opens the gate and wakes whoever waits in whenOpen. */
  open(): void {
    assert(this.closeDepth > 0, 'RequestGate.open on an open gate');
    if (--this.closeDepth === 0 && this.opened !== undefined) {
      const opened = this.opened;
      this.opened = undefined;
      opened.resolve();
    }
  }

  /** Resolves once no request is in flight (at once if none is). */
  whenIdle(): Promise<void> {
    if (this.inFlightCount === 0) return SETTLED;
    this.idle ??= waiting();
    return this.idle.promise;
  }

  /** Resolves once the gate is open (at once if it is); it may close again before the waiter runs. */
  whenOpen(): Promise<void> {
    if (this.closeDepth === 0) return SETTLED;
    this.opened ??= waiting();
    return this.opened.promise;
  }

  /** close(), then resolves once the requests already in flight have left. */
  closeAndDrain(): Promise<void> {
    this.close();
    return this.whenIdle();
  }
}
