/**
 * FaultInjectingFile: an in-memory HostFile for crash tests.
 *
 * It keeps two states: the live contents that reads see, and the durable contents as of the last
 * completed flush, plus the list of writes, truncates and hole punches made since. crash(rng)
 * builds what a disk might hold after a power cut at this moment: the durable contents plus a
 * random subset of the unflushed operations applied in order, each included write optionally torn
 * at 512-byte sector boundaries (each sector of it independently applied or not).
 *
 * failAfterOps simulates the power cut happening mid-sequence: after that many operations every
 * later call rejects with IO_ERROR, and the operation that hit the cut stays among the unflushed
 * ones (it may or may not have reached the disk).
 */
import { StorageError } from '../core/errors.js';
import type { HostFile, HostFileFeatures } from '../core/host-file.js';
import { copyRangeByBytes } from './copy-range.js';
import { MemoryHostFile } from './memory-file.js';
import { toRandomFn, type RandomSource } from './seeded-random.js';

export const TORN_WRITE_SECTOR_BYTES = 512;

export interface FaultInjectingFileOptions {
  name?: string;
  /** crash() may apply only some 512-byte sectors of an included write. */
  tornWrites?: boolean;
  /**
   * Operations (pwrite, truncate, punchHole, flush) that succeed; the next one and every call after
   * it (reads too) reject with IO_ERROR. Undefined: no limit.
   */
  failAfterOps?: number;
}

export type PendingOperation =
  | { kind: 'write'; hostOffset: number; data: Uint8Array }
  | { kind: 'truncate'; sizeBytes: number }
  | { kind: 'punch'; hostOffset: number; lengthBytes: number };

export interface CrashOptions {
  /** Probability that each unflushed operation is included (default 0.5). */
  keepProbability?: number;
  /** Probability that an included write, when tornWrites is set, is torn (default 0.5). */
  tearProbability?: number;
  /** Probability that each sector of a torn write is applied (default 0.5). */
  sectorProbability?: number;
  /** Name of the returned MemoryHostFile. */
  name?: string;
}

export class FaultInjectingFile implements HostFile {
  readonly name: string;
  readonly readOnly = false;
  tornWrites: boolean;
  private readonly live: MemoryHostFile;
  private durable: MemoryHostFile;
  private pending: PendingOperation[] = [];
  private opsDone = 0;
  private opLimit: number | undefined;
  private cut = false;

  /**
   * `initial` is the durable starting state: bytes, or a MemoryHostFile whose contents are copied
   * (for instance an image created on a plain MemoryHostFile beforehand).
   */
  constructor(initial?: Uint8Array | MemoryHostFile, options: FaultInjectingFileOptions = {}) {
    this.name = options.name ?? 'fault-injecting';
    this.tornWrites = options.tornWrites === true;
    this.opLimit = options.failAfterOps;
    const base =
      initial instanceof MemoryHostFile
        ? initial.clone({ name: this.name })
        : new MemoryHostFile(initial, { name: this.name });
    this.durable = base;
    this.live = base.clone();
  }

  /** Operations counted toward failAfterOps so far. */
  get operationCount(): number {
    return this.opsDone;
  }

  /** True once failAfterOps has tripped (or powerCut() was called). */
  get poweredOff(): boolean {
    return this.cut;
  }

  /** Sets (or clears, with undefined) the limit, counted from now. */
  setFailAfterOps(ops: number | undefined): void {
    this.opLimit = ops === undefined ? undefined : this.opsDone + ops;
  }

  /** Cuts the power now: every later call rejects with IO_ERROR. */
  powerCut(): void {
    this.cut = true;
  }

  /** The operations since the last completed flush, oldest first (shared, do not modify). */
  get pendingOperations(): readonly PendingOperation[] {
    return this.pending;
  }

  /** The durable contents: bytes as of the last completed flush. */
  durableBytes(): Uint8Array {
    return this.durable.snapshotBytes();
  }

  /** The live contents, as reads see them. */
  liveBytes(): Uint8Array {
    return this.live.snapshotBytes();
  }

  /**
   * What the disk may hold after a power cut now: a new MemoryHostFile with the durable contents
   * plus a random subset of the unflushed operations, in order (writes possibly torn).
   */
  crash(rng: RandomSource, options: CrashOptions = {}): MemoryHostFile {
    const random = toRandomFn(rng);
    const keep = options.keepProbability ?? 0.5;
    const tear = options.tearProbability ?? 0.5;
    const sectorKeep = options.sectorProbability ?? 0.5;
    const out = this.durable.clone({ name: options.name ?? `${this.name} (after crash)` });
    for (const op of this.pending) {
      if (!(random() < keep)) continue;
      if (op.kind === 'write' && this.tornWrites && random() < tear) {
        applyTornWrite(out, op.hostOffset, op.data, () => random() < sectorKeep);
      } else {
        applyOperation(out, op);
      }
    }
    return out;
  }

  /** The state after a crash that lost every unflushed operation. */
  crashLosingAll(): MemoryHostFile {
    return this.durable.clone({ name: `${this.name} (after crash)` });
  }

  /** The state after a crash that kept every unflushed operation whole (the live contents). */
  crashKeepingAll(): MemoryHostFile {
    return this.live.clone({ name: `${this.name} (after crash)` });
  }

  async pread(buf: Uint8Array, hostOffset: number): Promise<number> {
    this.checkPower('pread');
    return this.live.readSync(buf, hostOffset);
  }

  async pwrite(buf: Uint8Array, hostOffset: number): Promise<void> {
    this.checkRange('pwrite', hostOffset, buf.length);
    const op: PendingOperation = { kind: 'write', hostOffset, data: buf.slice() };
    this.beginMutation('pwrite', op);
    this.live.writeSync(op.data, hostOffset);
    this.pending.push(op);
  }

  async truncate(sizeBytes: number): Promise<void> {
    this.checkRange('truncate', sizeBytes, 0);
    const op: PendingOperation = { kind: 'truncate', sizeBytes };
    this.beginMutation('truncate', op);
    this.live.truncateSync(sizeBytes);
    this.pending.push(op);
  }

  async punchHole(hostOffset: number, lengthBytes: number): Promise<void> {
    this.checkRange('punchHole', hostOffset, lengthBytes);
    const op: PendingOperation = { kind: 'punch', hostOffset, lengthBytes };
    this.beginMutation('punchHole', op);
    this.live.punchHoleSync(hostOffset, lengthBytes);
    this.pending.push(op);
  }

  async flush(): Promise<void> {
    this.beginMutation('flush', undefined);
    for (const op of this.pending) applyOperation(this.durable, op);
    this.pending = [];
  }

  async sizeBytes(): Promise<number> {
    this.checkPower('sizeBytes');
    return this.live.sizeBytes();
  }

  async allocatedBytes(): Promise<number> {
    this.checkPower('allocatedBytes');
    return this.live.allocatedBytes();
  }

  async seekData(hostOffset: number): Promise<number | undefined> {
    this.checkPower('seekData');
    return this.live.seekData(hostOffset);
  }

  async seekHole(hostOffset: number): Promise<number | undefined> {
    this.checkPower('seekHole');
    return this.live.seekHole(hostOffset);
  }

  /** Closing keeps every state; crash() and the byte accessors still work afterwards. */
  supports(): HostFileFeatures {
    return this.live.supports();
  }

  /** Through this.pwrite, so each copied piece is an unflushed write that a crash may lose. */
  copyRange(source: HostFile, sourceOffset: number, targetOffset: number, lengthBytes: number): Promise<void> {
    return copyRangeByBytes(source, this, sourceOffset, targetOffset, lengthBytes);
  }

  async close(): Promise<void> {}

  private checkRange(what: string, hostOffset: number, length: number): void {
    const ok =
      Number.isSafeInteger(hostOffset) &&
      hostOffset >= 0 &&
      Number.isSafeInteger(length) &&
      length >= 0 &&
      Number.isSafeInteger(hostOffset + length);
    if (!ok) {
      throw new StorageError('INVALID_ARGUMENT', `${what} on ${this.name}: invalid range: offset ${hostOffset}, length ${length}`);
    }
  }

  private checkPower(what: string): void {
    if (this.cut) throw new StorageError('IO_ERROR', `${what} on ${this.name}: injected I/O error (power cut)`);
  }

  /** Counts an operation; at the limit, cuts the power, keeping `op` as possibly-persisted. */
  private beginMutation(what: string, op: PendingOperation | undefined): void {
    this.checkPower(what);
    if (this.opLimit !== undefined && this.opsDone >= this.opLimit) {
      this.cut = true;
      if (op) this.pending.push(op);
      throw new StorageError(
        'IO_ERROR',
        `${what} on ${this.name}: injected I/O error (power cut after ${this.opsDone} operations)`,
      );
    }
    this.opsDone++;
  }
}

function applyOperation(file: MemoryHostFile, op: PendingOperation): void {
  switch (op.kind) {
    case 'write':
      file.writeSync(op.data, op.hostOffset);
      break;
    case 'truncate':
      file.truncateSync(op.sizeBytes);
      break;
    case 'punch':
      file.punchHoleSync(op.hostOffset, op.lengthBytes);
      break;
  }
}

/** Applies the sectors of a write (split at absolute 512-byte boundaries) for which keep() is true. */
function applyTornWrite(file: MemoryHostFile, hostOffset: number, data: Uint8Array, keep: () => boolean): void {
  const S = TORN_WRITE_SECTOR_BYTES;
  let pos = 0;
  while (pos < data.length) {
    const abs = hostOffset + pos;
    const n = Math.min(S - (abs % S), data.length - pos);
    if (keep()) file.writeSync(data.subarray(pos, pos + n), abs);
    pos += n;
  }
}
