/**
 * Live devices: a volume (or a snapshot) held open for an export (NBD, vhost-user-blk) while the
 * volume layer keeps changing the files underneath (snapshot create puts a new active layer on
 * top, snapshot delete and flatten rewrite layers in the chain).
 *
 * One LiveVolume per opened chain, shared by every export of it (one Qcow2Image per file: two
 * writers on one qcow2 file would corrupt it). Exports get a LiveDevice handle (a BlockDevice).
 * While the volume layer changes a layer in the chain it pauses the LiveVolume: new requests wait
 * at the gate, requests in flight complete, the chain is flushed and closed; after the change the
 * chain is reopened from the catalog and the waiting requests go on against it. A snapshot
 * therefore holds exactly the writes completed before it, and no request is lost or failed.
 *
 * A resize (a grow: a shrink is refused while the head is live) is such a change: after the reopen
 * the handles' resize listeners are called, so exports tell their clients (vhost-user: the guest).
 *
 * QoS (issue 15): every handle's reads, writes and flushes pass the LiveVolume's QosThrottle
 * first, so the limits hold for the volume whatever exports (NBD, vhost-user) reach it, and a
 * change of limits applies to the running exports at once. blockStatus is not throttled.
 */
import { type BlockDevice, type BlockDeviceCapabilities, type Extent, type WriteFlags, type WriteZeroesFlags } from '../core/block-device.js';
import { StorageError, type ExportRef } from '../core/errors.js';
import { RequestGate } from '../core/request-gate.js';
import type { Qcow2Image } from '../../formats/qcow2/index.js';
import { backingOf } from './layers.js';
import { chainMap } from './extents.js';
import { QosThrottle, type QosOp } from './qos/throttle.js';

/** What a live chain is: a volume's head (snapshotId undefined) or one of its snapshots. */
export interface LiveTarget {
  volumeId: string;
  snapshotId: string | undefined;
}

export function liveKey(target: LiveTarget): string {
  return target.snapshotId === undefined ? target.volumeId : `${target.volumeId}@${target.snapshotId}`;
}

/** Opens the chain a target currently is (from the catalog): top image and its layer ids, top first. */
export type LiveOpener = (target: LiveTarget) => Promise<{ image: Qcow2Image; layerIds: string[] }>;

export class LiveVolume {
  private image: Qcow2Image | undefined;
  /** Layer ids of the open chain, top first (what a change must intersect to pause this volume). */
  layerIds: string[];
  /**
   * When a write last reached the chain's top layer (ms since the epoch); undefined while none has
   * since it became the top (the seal policy's idea of a cooled active layer: seal-policy.ts).
   */
  lastWriteMs: number | undefined;
  /** Requests on the open chain; closed while paused (requests wait) and while closing. */
  private readonly gate = new RequestGate();
  private pauseDepth = 0;
  /**
   * The last change of state (drain-and-close, reopen): the next one starts after it settles, so a
   * pause that arrives while a resume is still reopening closes the chain it reopens.
   */
  private settled: Promise<void> = Promise.resolve();
  /** Set when reopening after a change failed: every request fails with it. */
  private broken: StorageError | undefined;
  private refs = 0;
  /** The exports its handles serve, as named by who opened them (a refusal names them to stop). */
  private readonly exportRefs = new Set<ExportRef>();
  private closed = false;
  private lastSizeBytes: number;
  /** Handles' resize listeners (LiveDevice.onResize). */
  private readonly resizeListeners = new Set<(sizeBytes: number) => void>();
  /**
   * Requests that had to wait at the closed gate (a pause, a close), ever: a job pausing the chain
   * again and again (live-copy.ts) gives the exports a turn between pauses only when some waited.
   */
  waitedRequests = 0;
  /** The volume's QoS limiter, shared by its handles (unlimited until the registry sets limits). */
  readonly throttle = new QosThrottle(undefined);

  constructor(
    readonly target: LiveTarget,
    readonly writable: boolean,
    opened: { image: Qcow2Image; layerIds: string[] },
    private readonly opener: LiveOpener,
    /** Called (synchronously) when the last handle closes, before the chain is closed. */
    private readonly onUnreferenced: () => void,
    /** Called once the chain is closed after the last handle closed (gives back a writer lease). */
    private readonly afterClose?: () => Promise<void>,
  ) {
    this.image = opened.image;
    this.layerIds = opened.layerIds;
    this.lastSizeBytes = opened.image.sizeBytes;
  }

  get key(): string {
    return liveKey(this.target);
  }

  /** The chain's size (kept while paused: a client connecting meanwhile must not see 0). */
  get sizeBytes(): number {
    if (this.image !== undefined) this.lastSizeBytes = this.image.sizeBytes;
    return this.lastSizeBytes;
  }

  get referenced(): boolean {
    return this.refs > 0;
  }

  /** The exports served from this chain (those whose opener named them: openDevice's `export`). */
  get exports(): ExportRef[] {
    return [...this.exportRefs];
  }

  /** A new handle for an export; the LiveVolume closes when the last handle is closed. */
  handle(readOnly: boolean, exportRef?: ExportRef): LiveDevice {
    this.refs++;
    if (exportRef !== undefined) this.exportRefs.add(exportRef);
    return new LiveDevice(this, readOnly || !this.writable, exportRef);
  }

  /** @internal LiveDevice.onResize */
  onResize(listener: (sizeBytes: number) => void): () => void {
    this.resizeListeners.add(listener);
    return () => this.resizeListeners.delete(listener);
  }

  /** @internal LiveDevice.close */
  async release(exportRef: ExportRef | undefined): Promise<void> {
    if (exportRef !== undefined) this.exportRefs.delete(exportRef);
    if (--this.refs > 0) return;
    this.onUnreferenced();
    try {
      await this.close();
    } finally {
      await this.afterClose?.();
    }
  }

  /**
   * Pauses I/O (nested pauses count), waits for requests in flight, flushes and closes the chain.
   * Requests arriving meanwhile wait until resume().
   */
  async pause(): Promise<void> {
    if (this.pauseDepth++ === 0) {
      this.gate.close();
      this.settled = this.after(() => this.drainAndClose());
    }
    return this.settled;
  }

  /** Reopens the chain as the catalog now describes it and lets the waiting requests go on. */
  async resume(): Promise<void> {
    if (this.pauseDepth === 0 || --this.pauseDepth > 0) return;
    this.settled = this.after(() => this.reopen());
    return this.settled;
  }

  /** Runs step once the previous change of state has settled, whether it succeeded or not. */
  private after(step: () => Promise<void>): Promise<void> {
    return this.settled.then(step, step);
  }

  private async drainAndClose(): Promise<void> {
    await this.gate.whenIdle();
    const image = this.image;
    this.image = undefined;
    if (image !== undefined) {
      try {
        if (this.writable) await image.flush();
      } finally {
        await image.close();
      }
    }
  }

  private async reopen(): Promise<void> {
    // Paused again while this waited its turn, or closed: the chain stays closed.
    if (!this.closed && this.pauseDepth === 0) {
      try {
        const opened = await this.opener(this.target);
        if (opened.layerIds[0] !== this.layerIds[0]) this.lastWriteMs = undefined;
        this.image = opened.image;
        this.layerIds = opened.layerIds;
        this.broken = undefined;
      } catch (err) {
        this.broken = new StorageError('IO_ERROR', `could not reopen the volume after a change: ${(err as Error).message}`, { cause: err });
      }
    }
    this.gate.open();
    this.noteSize();
  }

  /** Calls the resize listeners when the reopened chain's size differs from the last one seen. */
  private noteSize(): void {
    const before = this.lastSizeBytes;
    const now = this.sizeBytes;
    if (now === before) return;
    for (const listener of [...this.resizeListeners]) {
      // One export's failure to tell its client must not keep the others from being told.
      try {
        listener(now);
      } catch (err) {
        process.emitWarning(`a resize listener of ${this.key} failed: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
  }

  /** Drains and closes the chain for good; requests still arriving fail ('the volume was closed'). */
  private async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.gate.close();
    this.settled = this.after(() => this.drainAndClose());
    try {
      await this.settled;
    } finally {
      // Opened on a chain that is gone: whoever waited finds no image and fails.
      this.gate.open();
    }
  }

  /** @internal LiveDevice: a write, write-zeroes or discard was taken. */
  noteWrite(): void {
    this.lastWriteMs = Date.now();
  }

  /** True when the chain's top layer maps anything itself (asked like a request: it waits while paused). */
  topLayerHasData(): Promise<boolean> {
    return this.run(async (image) => (await image.mapLayer(0, image.sizeBytes)).some((e) => e.kind !== 'unallocated'));
  }

  /**
   * Runs op against the open image, counted as in flight. Fast path: an open gate, no extra await.
   * @internal LiveDevice
   */
  run<T>(op: (image: Qcow2Image) => Promise<T>): Promise<T> {
    const image = this.image;
    if (image === undefined || !this.gate.tryEnter()) return this.runLater(op);
    return op(image).then(
      (value) => {
        this.gate.leave();
        return value;
      },
      (err: unknown) => {
        this.gate.leave();
        throw err;
      },
    );
  }

  private async runLater<T>(op: (image: Qcow2Image) => Promise<T>): Promise<T> {
    this.waitedRequests++;
    while (!this.gate.isOpen) await this.gate.whenOpen();
    if (this.broken !== undefined) throw this.broken;
    if (this.image === undefined) throw new StorageError('IO_ERROR', 'the volume was closed');
    return this.run(op);
  }
}

/** One export's view of a LiveVolume: the BlockDevice exports consume. */
export class LiveDevice implements BlockDevice {
  readonly capabilities: BlockDeviceCapabilities;
  private closed = false;

  constructor(
    private readonly live: LiveVolume,
    readonly readOnly: boolean,
    private readonly exportRef: ExportRef | undefined,
  ) {
    // blockStatus answers for the whole chain: what it calls unallocated reads as zeroes.
    this.capabilities = { readOnly, discard: true, efficientZeroes: true, flush: true, unallocatedReadsZero: true };
  }

  get target(): LiveTarget {
    return this.live.target;
  }

  get sizeBytes(): number {
    return this.live.sizeBytes;
  }

  onResize(listener: (sizeBytes: number) => void): () => void {
    return this.live.onResize(listener);
  }

  read(guestOffset: number, buf: Uint8Array): Promise<void> {
    return this.throttled('read', buf.length, (image) => image.read(guestOffset, buf));
  }

  write(guestOffset: number, data: Uint8Array, flags?: WriteFlags): Promise<void> {
    if (this.readOnly) return Promise.reject(this.readOnlyError());
    this.live.noteWrite();
    return this.throttled('write', data.length, (image) => image.write(guestOffset, data, flags));
  }

  /** One request over several buffers (a vhost-user request's descriptors): one operation to the throttle. */
  readSegments(guestOffset: number, segments: readonly Uint8Array[]): Promise<void> {
    return this.throttled('read', totalBytes(segments), (image) => image.readSegments(guestOffset, segments));
  }

  writeSegments(guestOffset: number, segments: readonly Uint8Array[], flags?: WriteFlags): Promise<void> {
    if (this.readOnly) return Promise.reject(this.readOnlyError());
    this.live.noteWrite();
    return this.throttled('write', totalBytes(segments), (image) => image.writeSegments(guestOffset, segments, flags));
  }

  /** An NBD read answered from blockStatus (all zeroes): counted as the read it is, then nothing to do. */
  readSkipped(_guestOffset: number, lengthBytes: number): Promise<void> {
    return this.live.throttle.admit('read', lengthBytes) ?? Promise.resolve();
  }

  /** Zeroes and discards move no data: one write operation each, no bytes (docs/qos.md). */
  writeZeroes(guestOffset: number, lengthBytes: number, flags?: WriteZeroesFlags): Promise<void> {
    if (this.readOnly) return Promise.reject(this.readOnlyError());
    this.live.noteWrite();
    return this.throttled('write', 0, (image) => image.writeZeroes(guestOffset, lengthBytes, flags));
  }

  discard(guestOffset: number, lengthBytes: number): Promise<void> {
    if (this.readOnly) return Promise.reject(this.readOnlyError());
    this.live.noteWrite();
    return this.throttled('write', 0, (image) => image.discard(guestOffset, lengthBytes));
  }

  flush(): Promise<void> {
    if (this.readOnly) return Promise.resolve();
    return this.throttled('flush', 0, (image) => image.flush());
  }

  /** Runs op once the throttle admits it: at once (no extra await) under the limits. */
  private throttled(op: QosOp, bytes: number, run: (image: Qcow2Image) => Promise<void>): Promise<void> {
    const wait = this.live.throttle.admit(op, bytes);
    return wait === undefined ? this.live.run(run) : wait.then(() => this.live.run(run));
  }

  /**
   * What the whole chain reads (the volume, not its top layer): 'unallocated' only where nothing
   * in the chain has data or zeroes, so 'unallocated' always reads as zeroes here
   * (capabilities.unallocatedReadsZero).
   */
  blockStatus(guestOffset: number, lengthBytes: number): Promise<Extent[]> {
    return this.live.run(async (image) => {
      if (backingOf(image) === undefined) return image.blockStatus(guestOffset, lengthBytes);
      const out: Extent[] = [];
      for (const r of await chainMap(image, guestOffset, guestOffset + lengthBytes)) {
        out.push({ guestOffset: r.offset, lengthBytes: r.length, kind: r.kind });
      }
      return out;
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.live.release(this.exportRef);
  }

  private readOnlyError(): StorageError {
    return new StorageError('READ_ONLY', 'the export is read-only');
  }
}

function totalBytes(segments: readonly Uint8Array[]): number {
  let bytes = 0;
  for (const segment of segments) bytes += segment.length;
  return bytes;
}
