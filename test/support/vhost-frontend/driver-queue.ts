/** A split virtqueue, driver side: rings laid out like Linux lays them out, requests in flight, completions. */
import { EventFd } from '../../../src/sys/eventfd.js';
import { PAGE, USED_F_NO_NOTIFY } from './wire.js';
import { GuestBuffer, GuestMemoryImage } from './guest-memory.js';
// ---------------------------------------------------------------------------------------------
// Split virtqueue (driver side)

export interface RawDescriptor {
  addr: bigint;
  len: number;
  flags: number;
  /**
   * Index of the next descriptor. By default relative to this chain (0 = the chain's first
   * descriptor) and translated to the table slot the front-end picked; with `absoluteNext` it is
   * written as is. Defaults to the following descriptor when flags has NEXT.
   */
  next?: number;
}

export interface SubmitChainOptions {
  queue?: number;
  /** `next` fields are ring indices, written unchanged (use with `descIndices`). */
  absoluteNext?: boolean;
  /** Put the descriptors in these ring slots (default: free slots). */
  descIndices?: number[];
  /** Do not kick (the test kicks itself). */
  noKick?: boolean;
}

export interface ChainCompletion {
  head: number;
  /** The `len` the back-end wrote into the used ring element. */
  writtenBytes: number;
}

export interface Pending {
  head: number;
  descCount: number;
  resolve: (c: ChainCompletion) => void;
  reject: (e: Error) => void;
}

export interface Slot {
  index: number;
  /** 16-byte out header, then the status byte at +16; at +64 the indirect table */
  meta: GuestBuffer;
  data: GuestBuffer;
}

export const META_HEADER = 0;
export const META_STATUS = 16;
export const META_INDIRECT = 64;

export class DriverQueue {
  readonly size: number;
  readonly desc: GuestBuffer;
  readonly avail: GuestBuffer;
  readonly used: GuestBuffer;
  private readonly descDv: DataView;
  private readonly availDv: DataView;
  private readonly usedDv: DataView;
  private readonly availIdx16: Uint16Array;
  private readonly usedIdx16: Uint16Array;
  private readonly usedEvent16: Uint16Array; // in the avail ring
  private readonly availEvent16: Uint16Array; // in the used ring
  private readonly usedFlags16: Uint16Array;

  kick: EventFd;
  call: EventFd;
  /** Signals of the call eventfd seen so far: the interrupts a guest would have taken. */
  interrupts = 0;
  eventIdx = false;
  enabled = false;

  /** free descriptor indices (a stack) */
  private freeDescs: number[] = [];
  /** next avail index to publish (free-running u16) */
  availIdx = 0;
  /** avail index at the last kick */
  private kickedIdx = 0;
  lastUsedIdx = 0;
  /** the device's last avail index as GET_VRING_BASE reported it (what SET_VRING_BASE sends on restart) */
  deviceBase = 0;
  private readonly inflight = new Map<number, Pending>();
  private kickScheduled = false;
  alwaysKick = false;

  readonly slots: Slot[] = [];
  private freeSlots: number[] = [];
  private slotWaiters: (() => void)[] = [];
  private descWaiters: (() => void)[] = [];

  constructor(
    readonly index: number,
    mem: GuestMemoryImage,
    size: number,
    depth: number,
    maxRequestBytes: number,
    maxSegments: number,
  ) {
    if (size < 1 || size > 32768 || (size & (size - 1)) !== 0) throw new Error(`queue size ${size} is not a power of two <= 32768`);
    this.size = size;
    // Like Linux's vring_init: desc table, avail ring right after it, used ring aligned (4 KiB).
    this.desc = mem.alloc(16 * size, PAGE, 0);
    this.avail = mem.alloc(6 + 2 * size, 2, 0);
    this.used = mem.alloc(6 + 8 * size, PAGE, 0);
    this.descDv = dvOf(this.desc.bytes);
    this.availDv = dvOf(this.avail.bytes);
    this.usedDv = dvOf(this.used.bytes);
    this.availIdx16 = u16At(this.avail.bytes, 2);
    this.usedEvent16 = u16At(this.avail.bytes, 4 + 2 * size);
    this.usedFlags16 = u16At(this.used.bytes, 0);
    this.usedIdx16 = u16At(this.used.bytes, 2);
    this.availEvent16 = u16At(this.used.bytes, 4 + 8 * size);
    for (let i = size - 1; i >= 0; i--) this.freeDescs.push(i);
    const metaBytes = META_INDIRECT + 16 * (maxSegments + 2);
    for (let i = 0; i < depth; i++) {
      this.slots.push({ index: i, meta: mem.alloc(metaBytes, 64, 0), data: mem.alloc(maxRequestBytes, PAGE) });
    }
    for (let i = depth - 1; i >= 0; i--) this.freeSlots.push(i);
    this.kick = EventFd.create({ nonBlocking: true });
    this.call = EventFd.create({ nonBlocking: true });
  }

  /** Zero the rings and forget everything in flight (a driver reset). */
  reset(error: Error): void {
    this.desc.bytes.fill(0);
    this.avail.bytes.fill(0);
    this.used.bytes.fill(0);
    this.availIdx = 0;
    this.kickedIdx = 0;
    this.lastUsedIdx = 0;
    this.deviceBase = 0;
    this.failAll(error);
    this.freeDescs = [];
    for (let i = this.size - 1; i >= 0; i--) this.freeDescs.push(i);
  }

  failAll(error: Error): void {
    const pending = [...this.inflight.values()];
    this.inflight.clear();
    for (const p of pending) p.reject(error);
  }

  get inflightCount(): number {
    return this.inflight.size;
  }

  get freeDescCount(): number {
    return this.freeDescs.length;
  }

  async acquireSlot(): Promise<Slot> {
    for (;;) {
      const i = this.freeSlots.pop();
      if (i !== undefined) return this.slots[i]!;
      await new Promise<void>((r) => this.slotWaiters.push(r));
    }
  }

  releaseSlot(slot: Slot): void {
    this.freeSlots.push(slot.index);
    this.slotWaiters.shift()?.();
  }

  async waitForDescs(n: number): Promise<void> {
    if (n > this.size) throw new Error(`chain of ${n} descriptors does not fit a ring of ${this.size}`);
    while (this.freeDescs.length < n) await new Promise<void>((r) => this.descWaiters.push(r));
  }

  writeDesc(i: number, d: { addr: bigint; len: number; flags: number; next: number }): void {
    const o = 16 * i;
    this.descDv.setBigUint64(o, BigInt.asUintN(64, d.addr), true);
    this.descDv.setUint32(o + 8, d.len >>> 0, true);
    this.descDv.setUint16(o + 12, d.flags & 0xffff, true);
    this.descDv.setUint16(o + 14, d.next & 0xffff, true);
  }

  /**
   * Places a chain into the descriptor table and publishes its head. Returns the completion.
   * `indices` (if given) are used as is and are not returned to the free list on completion unless
   * they came from it.
   */
  addChain(descs: readonly RawDescriptor[], opts: { absoluteNext?: boolean; descIndices?: number[] } = {}): { head: number; done: Promise<ChainCompletion> } {
    if (descs.length === 0) throw new Error('empty chain');
    let indices: number[];
    let owned: boolean;
    if (opts.descIndices) {
      indices = opts.descIndices;
      owned = false;
    } else {
      if (this.freeDescs.length < descs.length) throw new Error(`no room for ${descs.length} descriptors (${this.freeDescs.length} free)`);
      indices = [];
      for (let k = 0; k < descs.length; k++) indices.push(this.freeDescs.pop()!);
      owned = true;
    }
    descs.forEach((d, k) => {
      let next = d.next ?? (k + 1 < descs.length ? k + 1 : 0);
      if (!opts.absoluteNext) next = indices[next] ?? next;
      this.writeDesc(indices[k]!, { addr: d.addr, len: d.len, flags: d.flags, next });
    });
    const head = indices[0]!;
    const done = new Promise<ChainCompletion>((resolve, reject) => {
      if (this.inflight.has(head)) {
        reject(new Error(`descriptor ${head} is already in flight`));
        return;
      }
      this.inflight.set(head, {
        head,
        descCount: owned ? descs.length : 0,
        resolve: (c) => {
          if (owned) {
            // walk the chain as we wrote it, not as the device may have left it
            for (const i of indices) this.freeDescs.push(i);
            this.descWaiters.shift()?.();
          }
          resolve(c);
        },
        reject,
      });
    });
    this.publish(head);
    return { head, done };
  }

  /** Writes head into the avail ring and bumps avail.idx (the release store). */
  publish(head: number): void {
    this.availDv.setUint16(4 + 2 * (this.availIdx % this.size), head, true);
    this.availIdx = (this.availIdx + 1) & 0xffff;
    Atomics.store(this.availIdx16, 0, this.availIdx);
  }

  /** Sets avail.idx to an arbitrary value (hostile tests). */
  setAvailIdxRaw(idx: number): void {
    this.availIdx = idx & 0xffff;
    Atomics.store(this.availIdx16, 0, this.availIdx);
  }

  scheduleKick(): void {
    if (this.kickScheduled) return;
    this.kickScheduled = true;
    queueMicrotask(() => {
      this.kickScheduled = false;
      this.kickNow(false);
    });
  }

  /** Whether the ring asks to be kicked for the next request published (what kickNow(false) decides by). */
  kickWanted(): boolean {
    if (this.eventIdx) return Atomics.load(this.availEvent16, 0) === this.availIdx;
    return (Atomics.load(this.usedFlags16, 0) & USED_F_NO_NOTIFY) === 0;
  }

  kickNow(force: boolean): void {
    const newIdx = this.availIdx;
    const oldIdx = this.kickedIdx;
    if (newIdx === oldIdx && !force) return;
    this.kickedIdx = newIdx;
    let notify: boolean;
    if (force || this.alwaysKick) notify = true;
    else if (this.eventIdx) {
      const event = Atomics.load(this.availEvent16, 0);
      notify = ((newIdx - event - 1) & 0xffff) < ((newIdx - oldIdx) & 0xffff);
    } else notify = (Atomics.load(this.usedFlags16, 0) & USED_F_NO_NOTIFY) === 0;
    if (notify) this.kick.signal();
  }

  /** Reads the used ring; resolves completions. Returns how many were reaped. */
  reap(): number {
    let n = 0;
    for (;;) {
      const usedIdx = Atomics.load(this.usedIdx16, 0);
      while (this.lastUsedIdx !== usedIdx) {
        const at = 4 + 8 * (this.lastUsedIdx % this.size);
        const id = this.usedDv.getUint32(at, true);
        const len = this.usedDv.getUint32(at + 4, true);
        this.lastUsedIdx = (this.lastUsedIdx + 1) & 0xffff;
        const p = this.inflight.get(id);
        if (p) {
          this.inflight.delete(id);
          p.resolve({ head: id, writtenBytes: len });
        } else {
          this.unexpected.push({ head: id, writtenBytes: len });
        }
        n++;
      }
      if (!this.eventIdx) return n;
      // Ask for the next interrupt after what we consumed, then look again (closes the race).
      Atomics.store(this.usedEvent16, 0, this.lastUsedIdx);
      if (Atomics.load(this.usedIdx16, 0) === this.lastUsedIdx) return n;
    }
  }

  /** used elements whose id was not in flight (a misbehaving back-end) */
  readonly unexpected: ChainCompletion[] = [];

  setInterrupts(): void {
    // We always want interrupts (no AVAIL_F_NO_INTERRUPT); with EVENT_IDX used_event steers them.
    this.availDv.setUint16(0, 0, true);
    if (this.eventIdx) Atomics.store(this.usedEvent16, 0, this.lastUsedIdx);
  }
}

export function dvOf(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

export function u16At(b: Uint8Array, offset: number): Uint16Array {
  return new Uint16Array(b.buffer, b.byteOffset + offset, 1);
}
