/**
 * SplitVirtqueue: the device side of a virtio 1.x split ring living in guest memory.
 *
 * Layout (little-endian, virtio 1.x section 2.7):
 *   descriptor table  queueSize x 16 B  {le64 addr, le32 len, le16 flags, le16 next}
 *   available ring    {le16 flags, le16 idx, le16 ring[queueSize], le16 used_event}
 *   used ring         {le16 flags, le16 idx, {le32 id, le32 len}[queueSize], le16 avail_event}
 *
 * The guest is hostile and runs concurrently with us. Rules this file follows:
 *  - Every descriptor field is read exactly once into a local and only the local is validated and
 *    used, so a guest rewriting a descriptor mid-walk cannot make a checked value differ from the
 *    used one. Fields are assembled from single byte loads (no DataView or typed array per table,
 *    no alignment requirement on indirect tables); a torn value is just another hostile value.
 *  - avail.idx is read once per batch (Atomics.load), before the ring entries it publishes; the used
 *    element is written before used.idx, and used.idx is stored with Atomics.store. V8 emits a
 *    sequentially consistent store on x86-64 as XCHG, a full barrier, which is what the used-idx
 *    publish followed by the used_event / flags read in shouldNotify() needs (store->load ordering),
 *    and what enableNotify() needs before the caller re-checks avail.idx.
 *  - Anything malformed throws VirtqueueError and marks the queue broken: pop() returns undefined
 *    from then on. That mirrors what a virtio device does (DEVICE_NEEDS_RESET): a guest that breaks
 *    the ring protocol loses its queue until the front-end resets it, and cannot make us loop,
 *    allocate without bound or touch memory outside its RAM.
 *
 * Limits (documented choices where the spec leaves room):
 *  - A chain (the direct descriptors) is at most queueSize long; this also catches next-loops.
 *  - An indirect table holds 1..max(queueSize, 1024) entries, len a multiple of 16, and its walk is
 *    capped at its entry count. The spec bounds the table by the queue size, but Linux sizes its
 *    tables from seg_max (+2), which the front-end may pair with a smaller queue; QEMU's own device
 *    accepts up to 1024 whatever the queue size, so we do too. An indirect descriptor may end a direct chain (spec 2.7.5.3.2: zero or more direct
 *    descriptors followed by one indirect), must not carry NEXT, and its WRITE flag is ignored.
 *  - No INDIRECT inside an indirect table.
 *  - Total bytes of a chain (readable + writable) <= maxChainBytes (64 MiB by default; blk.ts
 *    advertises seg_max x size_max below that, so a well-behaved Linux guest never hits it).
 *  - A readable descriptor after a writable one is refused (the spec orders them; device-written
 *    data must not be interleaved with device-read data).
 *  - Zero-length descriptors are accepted and contribute no segment.
 *
 * This code assumes a little-endian host (x86-64): the rings are accessed through Uint16Array and
 * Uint32Array views, which requires avail to be 2-aligned and used to be 4-aligned (the spec
 * requires that of the driver).
 */
import { endianness } from 'node:os';
import type { GuestMemoryAccess } from './memory.js';

export const VIRTQ_DESC_F_NEXT = 1;
export const VIRTQ_DESC_F_WRITE = 2;
export const VIRTQ_DESC_F_INDIRECT = 4;
export const VRING_AVAIL_F_NO_INTERRUPT = 1;
export const VRING_USED_F_NO_NOTIFY = 1;

export const MAX_QUEUE_SIZE = 32768;
export const DESCRIPTOR_BYTES = 16;
export const DEFAULT_MAX_CHAIN_BYTES = 64 * 1024 * 1024;
/** Indirect tables may hold this many entries even when the queue is smaller (see above). */
export const MIN_INDIRECT_ENTRIES_CAP = 1024;

/** Descriptor addresses at or above 2^53 (high word >= 2^21) are outside guest memory by construction (memory.ts). */
const ADDR_HIGH_LIMIT = 2 ** 21;
const TWO_POW_32 = 2 ** 32;

if (endianness() !== 'LE') throw new Error('vhost-user virtqueue: little-endian host required');

/** The guest broke the ring protocol; the queue is unusable until reset. */
export class VirtqueueError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'VirtqueueError';
  }
}

export interface DescriptorChain {
  /** Head descriptor index: what pushUsed() gives back. */
  readonly head: number;
  /** Device-readable buffers in order (a descriptor crossing mappings yields several views). */
  readonly readable: Uint8Array[];
  /** Device-writable buffers in order. */
  readonly writable: Uint8Array[];
  readonly readableBytes: number;
  readonly writableBytes: number;
}

/** Bytes of each part of a split ring; `eventIdx` adds used_event / avail_event. */
export function splitRingSizes(queueSize: number, eventIdx: boolean): { descBytes: number; availBytes: number; usedBytes: number } {
  const tail = eventIdx ? 2 : 0;
  return { descBytes: DESCRIPTOR_BYTES * queueSize, availBytes: 4 + 2 * queueSize + tail, usedBytes: 4 + 8 * queueSize + tail };
}

export interface SplitVirtqueueOptions {
  memory: GuestMemoryAccess;
  /** Power of two, 1..32768 (SET_VRING_NUM). */
  queueSize: number;
  /** Views from GuestMemory.frontendRange, at least splitRingSizes() long. */
  desc: Uint8Array;
  avail: Uint8Array;
  used: Uint8Array;
  /** VIRTIO_RING_F_EVENT_IDX negotiated. */
  eventIdx: boolean;
  /** VIRTIO_RING_F_INDIRECT_DESC negotiated (default true: accept indirect tables). */
  indirectDesc?: boolean;
  /** SET_VRING_BASE (default 0). */
  lastAvailIdx?: number;
  /** Default: what the used ring says (it persists across a back-end restart). */
  usedIdx?: number;
  maxChainBytes?: number;
}

export class SplitVirtqueue {
  readonly queueSize: number;
  readonly eventIdx: boolean;
  private readonly memory: GuestMemoryAccess;
  private readonly indirectDesc: boolean;
  private readonly maxChainBytes: number;
  private readonly maxIndirectEntries: number;
  private readonly sizeMask: number;
  private readonly descTable: Uint8Array;
  /** avail ring as u16: [0] flags, [1] idx, [2 + i] ring[i], [2 + queueSize] used_event. */
  private readonly avail16: Uint16Array;
  /** used ring as u16: [0] flags, [1] idx, [2 + 4 * queueSize] avail_event. */
  private readonly used16: Uint16Array;
  /** used ring as u32: element i is [1 + 2i] id, [2 + 2i] len. */
  private readonly used32: Uint32Array;

  private nextAvailIdx: number;
  /** avail.idx as last read: entries up to it are published and may be popped without re-reading. */
  private shadowAvailIdx: number;
  private nextUsedIdx: number;
  private usedFlags = 0;
  /** used.idx when shouldNotify() last ran (EVENT_IDX); invalid until the first run. */
  private signalledUsedIdx = 0;
  private signalledValid = false;
  private brokenReason: string | undefined;
  private inFlight = 0;

  constructor(options: SplitVirtqueueOptions) {
    const n = options.queueSize;
    if (!Number.isInteger(n) || n < 1 || n > MAX_QUEUE_SIZE || (n & (n - 1)) !== 0) {
      throw new VirtqueueError(`queue size ${n} is not a power of two in 1..${MAX_QUEUE_SIZE}`);
    }
    const sizes = splitRingSizes(n, options.eventIdx);
    if (options.desc.length < sizes.descBytes || options.avail.length < sizes.availBytes || options.used.length < sizes.usedBytes) {
      throw new VirtqueueError(`ring views too short for ${n} entries`);
    }
    if (options.avail.byteOffset % 2 !== 0 || options.used.byteOffset % 4 !== 0) {
      throw new VirtqueueError('avail ring not 2-aligned or used ring not 4-aligned');
    }
    this.queueSize = n;
    this.sizeMask = n - 1;
    this.eventIdx = options.eventIdx;
    this.memory = options.memory;
    this.indirectDesc = options.indirectDesc ?? true;
    this.maxChainBytes = options.maxChainBytes ?? DEFAULT_MAX_CHAIN_BYTES;
    this.maxIndirectEntries = Math.max(n, MIN_INDIRECT_ENTRIES_CAP);
    this.descTable = options.desc.subarray(0, sizes.descBytes);
    this.avail16 = new Uint16Array(options.avail.buffer, options.avail.byteOffset, sizes.availBytes >> 1);
    this.used16 = new Uint16Array(options.used.buffer, options.used.byteOffset, sizes.usedBytes >> 1);
    this.used32 = new Uint32Array(options.used.buffer, options.used.byteOffset, 1 + 2 * n);
    this.nextAvailIdx = (options.lastAvailIdx ?? 0) & 0xffff;
    this.shadowAvailIdx = this.nextAvailIdx;
    this.nextUsedIdx = (options.usedIdx ?? Atomics.load(this.used16, 1)) & 0xffff;
  }

  /** Next avail index to consume (GET_VRING_BASE answer once in-flight requests are done). */
  get lastAvailIdx(): number {
    return this.nextAvailIdx;
  }

  get usedIdx(): number {
    return this.nextUsedIdx;
  }

  /** Chains popped and not yet pushed back. */
  get inFlightCount(): number {
    return this.inFlight;
  }

  /** Why the queue stopped, once a VirtqueueError was thrown. */
  get broken(): string | undefined {
    return this.brokenReason;
  }

  /** Whether the guest has published entries we have not popped (re-check after enableNotify). */
  hasAvailable(): boolean {
    if (this.brokenReason !== undefined) return false;
    if (this.shadowAvailIdx !== this.nextAvailIdx) return true;
    return Atomics.load(this.avail16, 1) !== this.nextAvailIdx;
  }

  /**
   * The next published chain, or undefined when there is none (or the queue is broken).
   * Throws VirtqueueError for a malformed chain or avail.idx; the queue is then broken.
   */
  pop(): DescriptorChain | undefined {
    if (this.brokenReason !== undefined) return undefined;
    if (this.shadowAvailIdx === this.nextAvailIdx) {
      const availIdx = Atomics.load(this.avail16, 1);
      const pending = (availIdx - this.nextAvailIdx) & 0xffff;
      if (pending > this.queueSize) {
        this.fail(`avail.idx ${availIdx} is ${pending} entries ahead of ${this.nextAvailIdx} (queue size ${this.queueSize})`);
      }
      this.shadowAvailIdx = availIdx;
      if (pending === 0) return undefined;
    }
    const head = this.avail16[2 + (this.nextAvailIdx & this.sizeMask)]!;
    this.nextAvailIdx = (this.nextAvailIdx + 1) & 0xffff;
    if (head >= this.queueSize) this.fail(`avail ring entry ${head} is not a descriptor index (queue size ${this.queueSize})`);
    const chain = this.walk(head);
    this.inFlight++;
    return chain;
  }

  /**
   * The chain starting at descriptor `head`, without consuming the avail ring: for resubmitting
   * requests a previous back-end left in flight (INFLIGHT_SHMFD gives their heads). Validated like
   * pop() (VirtqueueError breaks the queue) and counted in inFlightCount.
   */
  chainAt(head: number): DescriptorChain {
    if (this.brokenReason !== undefined) throw new VirtqueueError(this.brokenReason);
    if (!Number.isInteger(head) || head < 0 || head >= this.queueSize) {
      this.fail(`inflight head ${head} is not a descriptor index (queue size ${this.queueSize})`);
    }
    const chain = this.walk(head);
    this.inFlight++;
    return chain;
  }

  /** Returns a chain to the guest with the number of bytes written into its writable buffers. */
  pushUsed(head: number, writtenBytes: number): void {
    const slot = this.nextUsedIdx & this.sizeMask;
    this.used32[1 + 2 * slot] = head;
    this.used32[2 + 2 * slot] = writtenBytes;
    this.nextUsedIdx = (this.nextUsedIdx + 1) & 0xffff;
    // Publishes the element written above (store->store is ordered on x86; Atomics keeps V8 from
    // reordering) and fences before shouldNotify() reads used_event.
    Atomics.store(this.used16, 1, this.nextUsedIdx);
    if (this.inFlight > 0) this.inFlight--;
  }

  /**
   * Whether to signal the call eventfd now, after one or more pushUsed().
   * EVENT_IDX: notify when used_event lies in [used idx at the previous check, used idx now), i.e.
   * (u16)(new - used_event - 1) < (u16)(new - old). The previous *check* (not the previous actual
   * notification) is the right "old": if used_event was not in the earlier window, the guest did not
   * ask for it then. The first check after set-up always notifies.
   * Without EVENT_IDX: notify unless the guest set VRING_AVAIL_F_NO_INTERRUPT.
   */
  shouldNotify(): boolean {
    if (this.eventIdx) {
      const oldIdx = this.signalledUsedIdx;
      const newIdx = this.nextUsedIdx;
      const valid = this.signalledValid;
      this.signalledUsedIdx = newIdx;
      this.signalledValid = true;
      if (!valid) return true;
      const usedEvent = Atomics.load(this.avail16, 2 + this.queueSize);
      return ((newIdx - usedEvent - 1) & 0xffff) < ((newIdx - oldIdx) & 0xffff);
    }
    return (Atomics.load(this.avail16, 0) & VRING_AVAIL_F_NO_INTERRUPT) === 0;
  }

  /**
   * Asks the guest to kick us for new entries. The caller must re-check hasAvailable()/pop() after
   * this: an entry published just before the guest saw the request produced no kick.
   * EVENT_IDX: avail_event = the next index we will consume (the guest kicks when it publishes it).
   */
  enableNotify(): void {
    if (this.eventIdx) {
      Atomics.store(this.used16, 2 + this.queueSize * 4, this.nextAvailIdx);
    } else {
      this.usedFlags &= ~VRING_USED_F_NO_NOTIFY;
      Atomics.store(this.used16, 0, this.usedFlags);
    }
  }

  /**
   * Tells the guest not to kick (we are polling the ring anyway). With EVENT_IDX nothing is written:
   * avail_event stays at the index enableNotify() stored, which falls behind as we pop, and the
   * guest only kicks when its avail.idx crosses avail_event.
   */
  disableNotify(): void {
    if (this.eventIdx) return;
    this.usedFlags |= VRING_USED_F_NO_NOTIFY;
    Atomics.store(this.used16, 0, this.usedFlags);
  }

  private fail(reason: string): never {
    this.brokenReason = reason;
    throw new VirtqueueError(reason);
  }

  private walk(head: number): DescriptorChain {
    const readable: Uint8Array[] = [];
    const writable: Uint8Array[] = [];
    let readableBytes = 0;
    let writableBytes = 0;
    let table = this.descTable;
    let tableEntries = this.queueSize;
    let indirect = false;
    let seenWritable = false;
    let index = head;
    let visited = 0;
    for (;;) {
      if (++visited > tableEntries) {
        this.fail(`descriptor chain from head ${head} is longer than ${tableEntries} entries (loop?)`);
      }
      const o = index * DESCRIPTOR_BYTES;
      const addrLow = le32(table, o);
      const addrHigh = le32(table, o + 4);
      const lengthBytes = le32(table, o + 8);
      const flags = table[o + 12]! | (table[o + 13]! << 8);
      const next = table[o + 14]! | (table[o + 15]! << 8);

      if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) {
        if (indirect) this.fail(`nested indirect descriptor in chain ${head}`);
        if (!this.indirectDesc) this.fail(`indirect descriptor in chain ${head} without VIRTIO_RING_F_INDIRECT_DESC`);
        if ((flags & VIRTQ_DESC_F_NEXT) !== 0) this.fail(`indirect descriptor with NEXT in chain ${head}`);
        if (lengthBytes === 0 || lengthBytes % DESCRIPTOR_BYTES !== 0 || lengthBytes / DESCRIPTOR_BYTES > this.maxIndirectEntries) {
          this.fail(`indirect table of ${lengthBytes} bytes in chain ${head} (must be 16..${16 * this.maxIndirectEntries}, a multiple of 16)`);
        }
        const view = addrHigh < ADDR_HIGH_LIMIT ? this.memory.guestPrefix(addrHigh * TWO_POW_32 + addrLow, lengthBytes) : undefined;
        if (view === undefined || view.length !== lengthBytes) {
          this.fail(`indirect table at 0x${(addrHigh * TWO_POW_32 + addrLow).toString(16)} (+${lengthBytes}) is outside guest memory`);
        }
        table = view;
        tableEntries = lengthBytes / DESCRIPTOR_BYTES;
        indirect = true;
        index = 0;
        visited = 0;
        continue;
      }

      const isWrite = (flags & VIRTQ_DESC_F_WRITE) !== 0;
      if (isWrite) seenWritable = true;
      else if (seenWritable) this.fail(`readable descriptor after a writable one in chain ${head}`);
      if (lengthBytes > 0) {
        const total = readableBytes + writableBytes + lengthBytes;
        if (total > this.maxChainBytes) this.fail(`descriptor chain ${head} exceeds ${this.maxChainBytes} bytes`);
        if (addrHigh >= ADDR_HIGH_LIMIT) this.fail(`descriptor address 0x${addrHigh.toString(16)}${addrLow.toString(16).padStart(8, '0')} is outside guest memory`);
        const list = isWrite ? writable : readable;
        let guestAddr = addrHigh * TWO_POW_32 + addrLow;
        let remainingBytes = lengthBytes;
        while (remainingBytes > 0) {
          const view = this.memory.guestPrefix(guestAddr, remainingBytes);
          if (view === undefined || view.length === 0) {
            this.fail(`descriptor buffer [0x${guestAddr.toString(16)}, +${remainingBytes}) in chain ${head} is outside guest memory`);
          }
          list.push(view);
          guestAddr += view.length;
          remainingBytes -= view.length;
        }
        if (isWrite) writableBytes += lengthBytes;
        else readableBytes += lengthBytes;
      }

      if ((flags & VIRTQ_DESC_F_NEXT) === 0) break;
      if (next >= tableEntries) this.fail(`descriptor next ${next} out of range (${tableEntries} entries) in chain ${head}`);
      index = next;
    }
    return { head, readable, writable, readableBytes, writableBytes };
  }
}

function le32(bytes: Uint8Array, offset: number): number {
  return (bytes[offset]! | (bytes[offset + 1]! << 8) | (bytes[offset + 2]! << 16) | (bytes[offset + 3]! << 24)) >>> 0;
}
