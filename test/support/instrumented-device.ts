/**
 * A BlockDevice wrapper for export tests: it passes every call to the real device below and
 * records when each one started and ended, so a test can say what reached the device and in which
 * order. It can also fail the next call of a kind with a StorageError, hold the next call of a kind
 * until the test releases it, or hold calls until a number of them are in flight at once (no
 * sleeps: each of these is an event the test awaits).
 */
import type { BlockDevice, BlockDeviceCapabilities, Extent, WriteFlags, WriteZeroesFlags } from '../../src/core/block-device.js';
import { StorageError } from '../../src/core/errors.js';

export type DeviceOp = 'read' | 'write' | 'writeZeroes' | 'discard' | 'flush' | 'blockStatus';

export interface DeviceEvent {
  op: DeviceOp;
  phase: 'start' | 'end' | 'error';
  guestOffset: number;
  lengthBytes: number;
}

/** A call held before it reaches the device below. */
export interface HeldCall {
  /** Resolves when the call arrived (and is waiting). */
  readonly entered: Promise<void>;
  /** Lets the call go on to the device below. */
  release(): void;
}

interface PendingHold {
  arrived: () => void;
  gate: Promise<void>;
}

interface Barrier {
  count: number;
  waiting: (() => void)[];
}

export class InstrumentedDevice implements BlockDevice {
  readonly events: DeviceEvent[] = [];
  /** Calls that fell outside [0, sizeBytes): the caller broke the BlockDevice contract. */
  readonly outOfBounds: string[] = [];
  private inFlight = 0;
  private maxInFlightSeen = 0;
  private readonly failures = new Map<DeviceOp, StorageError>();
  private readonly holds = new Map<DeviceOp, PendingHold>();
  private barrier: Barrier | undefined;
  /** The release of every hold made, taken or not (releasing twice is harmless). */
  private readonly released: (() => void)[] = [];

  constructor(readonly inner: BlockDevice) {}

  get sizeBytes(): number {
    return this.inner.sizeBytes;
  }

  get capabilities(): BlockDeviceCapabilities {
    return this.inner.capabilities;
  }

  /** The most calls that were in flight at once. */
  get maxInFlight(): number {
    return this.maxInFlightSeen;
  }

  /** Events of one op and phase (e.g. the flushes that completed). */
  count(op: DeviceOp, phase: DeviceEvent['phase']): number {
    return this.events.filter((e) => e.op === op && e.phase === phase).length;
  }

  /** The next call of `op` fails with `error` (an IO_ERROR by default) without reaching the device below. */
  failNext(op: DeviceOp, error = new StorageError('IO_ERROR', `test device: injected failure of ${op}`)): void {
    this.failures.set(op, error);
  }

  /** The next call of `op` waits, once it arrived, until release(). */
  holdNext(op: DeviceOp): HeldCall {
    let arrived!: () => void;
    const entered = new Promise<void>((resolve) => (arrived = resolve));
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    this.holds.set(op, { arrived, gate });
    this.released.push(release);
    return { entered, release };
  }

  /** The next `count` calls wait until all of them have arrived, then go on together. */
  holdUntilConcurrent(count: number): void {
    this.barrier = { count, waiting: [] };
  }

  /** Lets every held call go on and holds nothing more (a test's clean-up, whatever it asserted). */
  releaseAll(): void {
    this.holds.clear();
    for (const release of this.released.splice(0)) release();
    const barrier = this.barrier;
    this.barrier = undefined;
    for (const go of barrier?.waiting ?? []) go();
  }

  async read(guestOffset: number, buf: Uint8Array): Promise<void> {
    return this.call('read', guestOffset, buf.length, () => this.inner.read(guestOffset, buf));
  }

  async write(guestOffset: number, data: Uint8Array, flags?: WriteFlags): Promise<void> {
    return this.call('write', guestOffset, data.length, () => this.inner.write(guestOffset, data, flags));
  }

  async writeZeroes(guestOffset: number, lengthBytes: number, flags?: WriteZeroesFlags): Promise<void> {
    return this.call('writeZeroes', guestOffset, lengthBytes, () => this.inner.writeZeroes(guestOffset, lengthBytes, flags));
  }

  async discard(guestOffset: number, lengthBytes: number): Promise<void> {
    return this.call('discard', guestOffset, lengthBytes, () => this.inner.discard(guestOffset, lengthBytes));
  }

  async flush(): Promise<void> {
    return this.call('flush', 0, 0, () => this.inner.flush());
  }

  async blockStatus(guestOffset: number, lengthBytes: number): Promise<Extent[]> {
    return this.call('blockStatus', guestOffset, lengthBytes, () => this.inner.blockStatus(guestOffset, lengthBytes));
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  private async call<T>(op: DeviceOp, guestOffset: number, lengthBytes: number, run: () => Promise<T>): Promise<T> {
    if (guestOffset < 0 || lengthBytes < 0 || guestOffset + lengthBytes > this.sizeBytes) {
      this.outOfBounds.push(`${op} ${guestOffset}+${lengthBytes} on a device of ${this.sizeBytes} bytes`);
    }
    this.events.push({ op, phase: 'start', guestOffset, lengthBytes });
    this.inFlight++;
    this.maxInFlightSeen = Math.max(this.maxInFlightSeen, this.inFlight);
    try {
      await this.waitForHolds(op);
      const failure = this.failures.get(op);
      if (failure !== undefined) {
        this.failures.delete(op);
        throw failure;
      }
      const result = await run();
      this.events.push({ op, phase: 'end', guestOffset, lengthBytes });
      return result;
    } catch (err) {
      this.events.push({ op, phase: 'error', guestOffset, lengthBytes });
      throw err;
    } finally {
      this.inFlight--;
    }
  }

  private async waitForHolds(op: DeviceOp): Promise<void> {
    const hold = this.holds.get(op);
    if (hold !== undefined) {
      this.holds.delete(op);
      hold.arrived();
      await hold.gate;
    }
    const barrier = this.barrier;
    if (barrier !== undefined) {
      if (barrier.waiting.length + 1 < barrier.count) {
        await new Promise<void>((resolve) => barrier.waiting.push(resolve));
        return;
      }
      this.barrier = undefined;
      for (const go of barrier.waiting) go();
    }
  }
}
