/**
 * A vhost-user-blk front-end in TypeScript: it plays QEMU's role without a VM, for tests (hostile
 * guests, malformed messages) and benchmarks. Shared by bench/vhost-bench.ts and the tests
 * (test/vhost-user/frontend.ts re-exports it; tests may import from bench/, not the other way).
 *
 * - Connects to a back-end's unix socket and replays the message sequence QEMU 7.2 sends
 *   (GET_FEATURES, GET/SET_PROTOCOL_FEATURES, GET_QUEUE_NUM, GET_MAX_MEM_SLOTS, SET_OWNER,
 *   SET_VRING_CALL, GET_CONFIG; on start SET_FEATURES, ADD_MEM_REG or SET_MEM_TABLE, per queue
 *   SET_VRING_NUM/BASE/ADDR/KICK/CALL, then SET_VRING_ENABLE; on stop SET_VRING_ENABLE 0 and
 *   GET_VRING_BASE).
 * - "Guest" memory is a memfd mapped MAP_SHARED here, split into one or more regions; guest
 *   addresses (`guestAddr`) start at 0 with a gap between regions, front-end addresses
 *   (`frontendAddr`, what QEMU calls user addresses) are this process's mapping addresses.
 * - Split rings laid out like Linux lays them out (desc table, avail ring, used ring aligned to
 *   4 KiB), with or without EVENT_IDX and INDIRECT_DESC.
 * - The wire encoding is written here on purpose, independently of src/export/vhost-user/messages.ts:
 *   an independent encoder is the better test of the back-end.
 */
import { EventFd } from '../src/sys/eventfd.js';
import { closeFd } from '../src/sys/fd.js';
import { memfdCreate } from '../src/sys/memfd.js';
import { mapShared, type MappedRegion } from '../src/sys/mmap.js';
import { UnixStream } from '../src/sys/unix-socket.js';

// ---------------------------------------------------------------------------------------------
// Protocol constants (docs/interop/vhost-user.rst)

export const VhostUserRequest = {
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  RESET_OWNER: 4,
  SET_MEM_TABLE: 5,
  SET_LOG_BASE: 6,
  SET_LOG_FD: 7,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  GET_VRING_BASE: 11,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  SET_VRING_ERR: 14,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  GET_QUEUE_NUM: 17,
  SET_VRING_ENABLE: 18,
  SET_BACKEND_REQ_FD: 21,
  GET_CONFIG: 24,
  SET_CONFIG: 25,
  GET_INFLIGHT_FD: 31,
  SET_INFLIGHT_FD: 32,
  RESET_DEVICE: 34,
  GET_MAX_MEM_SLOTS: 36,
  ADD_MEM_REG: 37,
  REM_MEM_REG: 38,
  SET_STATUS: 39,
  GET_STATUS: 40,
} as const;

/** Requests the back-end always answers (with NEED_REPLY or not). */
const REPLYING = new Set<number>([
  VhostUserRequest.GET_FEATURES,
  VhostUserRequest.GET_PROTOCOL_FEATURES,
  VhostUserRequest.GET_QUEUE_NUM,
  VhostUserRequest.GET_VRING_BASE,
  VhostUserRequest.GET_CONFIG,
  VhostUserRequest.GET_INFLIGHT_FD,
  VhostUserRequest.GET_MAX_MEM_SLOTS,
  VhostUserRequest.GET_STATUS,
]);

export const HEADER_BYTES = 12;
export const FLAG_VERSION = 0x1;
export const FLAG_REPLY = 0x4;
export const FLAG_NEED_REPLY = 0x8;
/** u64 payload of SET_VRING_KICK/CALL/ERR: no fd follows (polling mode). */
export const VRING_NOFD_MASK = 0x100;

export const ProtocolFeature = {
  MQ: 0,
  LOG_SHMFD: 1,
  REPLY_ACK: 3,
  BACKEND_REQ: 5,
  CONFIG: 9,
  INFLIGHT_SHMFD: 12,
  RESET_DEVICE: 13,
  CONFIGURE_MEM_SLOTS: 15,
  STATUS: 16,
} as const;

/** Virtio feature bit 30: the back-end speaks GET/SET_PROTOCOL_FEATURES. */
export const VHOST_USER_F_PROTOCOL_FEATURES = 30;

export const BlkFeature = {
  SIZE_MAX: 1,
  SEG_MAX: 2,
  GEOMETRY: 4,
  RO: 5,
  BLK_SIZE: 6,
  FLUSH: 9,
  TOPOLOGY: 10,
  CONFIG_WCE: 11,
  MQ: 12,
  DISCARD: 13,
  WRITE_ZEROES: 14,
  NOTIFY_ON_EMPTY: 24,
  INDIRECT_DESC: 28,
  EVENT_IDX: 29,
  VERSION_1: 32,
} as const;

export const BlkType = { IN: 0, OUT: 1, FLUSH: 4, GET_ID: 8, DISCARD: 11, WRITE_ZEROES: 13, SECURE_ERASE: 14 } as const;
export const BlkStatus = { OK: 0, IOERR: 1, UNSUPP: 2 } as const;

export const DescFlag = { NEXT: 1, WRITE: 2, INDIRECT: 4 } as const;
export const AVAIL_F_NO_INTERRUPT = 1;
const USED_F_NO_NOTIFY = 1;

export const SECTOR_BYTES = 512;
const PAGE = 4096;

const bit = (n: number): bigint => 1n << BigInt(n);

// ---------------------------------------------------------------------------------------------
// Wire encoding (little-endian, x86-64)

export interface MessageHeader {
  request: number;
  flags: number;
  /** Payload size written into the header (defaults to the payload's length). */
  size?: number;
}

export function encodeMessage(header: MessageHeader, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  const out = new Uint8Array(HEADER_BYTES + payload.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, header.request >>> 0, true);
  dv.setUint32(4, header.flags >>> 0, true);
  dv.setUint32(8, (header.size ?? payload.length) >>> 0, true);
  out.set(payload, HEADER_BYTES);
  return out;
}

export function u64Payload(value: bigint): Uint8Array {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt.asUintN(64, value), true);
  return out;
}

export function vringStatePayload(index: number, num: number): Uint8Array {
  const out = new Uint8Array(8);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, index >>> 0, true);
  dv.setUint32(4, num >>> 0, true);
  return out;
}

export interface VringAddr {
  index: number;
  flags?: number;
  descFrontendAddr: bigint;
  usedFrontendAddr: bigint;
  availFrontendAddr: bigint;
  logGuestAddr?: bigint;
}

export function vringAddrPayload(a: VringAddr): Uint8Array {
  const out = new Uint8Array(40);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, a.index >>> 0, true);
  dv.setUint32(4, (a.flags ?? 0) >>> 0, true);
  dv.setBigUint64(8, a.descFrontendAddr, true);
  dv.setBigUint64(16, a.usedFrontendAddr, true);
  dv.setBigUint64(24, a.availFrontendAddr, true);
  dv.setBigUint64(32, a.logGuestAddr ?? 0n, true);
  return out;
}

export interface MemRegionDesc {
  guestAddr: bigint;
  sizeBytes: bigint;
  frontendAddr: bigint;
  mmapOffsetBytes: bigint;
}

function writeRegion(dv: DataView, at: number, r: MemRegionDesc): void {
  dv.setBigUint64(at, r.guestAddr, true);
  dv.setBigUint64(at + 8, r.sizeBytes, true);
  dv.setBigUint64(at + 16, r.frontendAddr, true);
  dv.setBigUint64(at + 24, r.mmapOffsetBytes, true);
}

/** SET_MEM_TABLE payload: u32 nregions, u32 padding, 8 x 32-byte regions (QEMU always sends the full 8 slots' room? no: only nregions). */
export function memTablePayload(regions: readonly MemRegionDesc[], countOverride?: number): Uint8Array {
  const out = new Uint8Array(8 + 32 * regions.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, countOverride ?? regions.length, true);
  regions.forEach((r, i) => writeRegion(dv, 8 + 32 * i, r));
  return out;
}

/** ADD_MEM_REG / REM_MEM_REG payload: u64 padding, one region. */
export function singleRegionPayload(r: MemRegionDesc): Uint8Array {
  const out = new Uint8Array(40);
  writeRegion(new DataView(out.buffer), 8, r);
  return out;
}

export function configPayload(offset: number, size: number, flags = 0, data?: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + size);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, offset, true);
  dv.setUint32(4, size, true);
  dv.setUint32(8, flags, true);
  if (data) out.set(data.subarray(0, size), 12);
  return out;
}

export interface BlkConfig {
  capacitySectors: bigint;
  sizeMax: number;
  segMax: number;
  blkSize: number;
  writeback: number;
  numQueues: number;
  maxDiscardSectors: number;
  maxDiscardSeg: number;
  discardAlignment: number;
  maxWriteZeroesSectors: number;
  maxWriteZeroesSeg: number;
  writeZeroesMayUnmap: number;
  raw: Uint8Array;
}

export function decodeBlkConfig(raw: Uint8Array): BlkConfig {
  const buf = new Uint8Array(64);
  buf.set(raw.subarray(0, 64));
  const dv = new DataView(buf.buffer);
  return {
    capacitySectors: dv.getBigUint64(0, true),
    sizeMax: dv.getUint32(8, true),
    segMax: dv.getUint32(12, true),
    blkSize: dv.getUint32(20, true),
    writeback: dv.getUint8(32),
    numQueues: dv.getUint16(34, true),
    maxDiscardSectors: dv.getUint32(36, true),
    maxDiscardSeg: dv.getUint32(40, true),
    discardAlignment: dv.getUint32(44, true),
    maxWriteZeroesSectors: dv.getUint32(48, true),
    maxWriteZeroesSeg: dv.getUint32(52, true),
    writeZeroesMayUnmap: dv.getUint8(56),
    raw: raw.slice(),
  };
}

export interface ReceivedMessage {
  request: number;
  flags: number;
  size: number;
  payload: Uint8Array;
  fds: number[];
}

// ---------------------------------------------------------------------------------------------
// Errors

export class ConnectionClosedError extends Error {
  constructor(message = 'vhost-user connection closed') {
    super(message);
    this.name = 'ConnectionClosedError';
  }
}

export class BlkStatusError extends Error {
  constructor(
    readonly status: number,
    what: string,
  ) {
    super(`${what}: virtio-blk status ${status} (${status === 1 ? 'IOERR' : status === 2 ? 'UNSUPP' : 'unknown'})`);
    this.name = 'BlkStatusError';
  }
}

// ---------------------------------------------------------------------------------------------
// Options

export interface FrontendOptions {
  /** Queues to set up (<= what GET_QUEUE_NUM reports when MQ is negotiated). Default 1. */
  queueCount?: number;
  /** Ring size (power of two). Default 256. */
  queueSize?: number;
  /** Requests in flight per queue (each has its own header, status, indirect table and data slot). Default 64. */
  queueDepth?: number;
  /** Largest data buffer of one request (bytes). Default 128 KiB. */
  maxRequestBytes?: number;
  /** Split data buffers into descriptors of at most this many bytes (like a guest's 4 KiB pages). Default: one descriptor. */
  segmentBytes?: number;
  /** Negotiate EVENT_IDX when the back-end offers it. Default true. */
  eventIdx?: boolean;
  /** Negotiate INDIRECT_DESC and put every request in an indirect table. Default false (Linux uses direct chains when the ring has room). */
  indirect?: boolean;
  /** Number of memory regions (same memfd, separate mmap offsets, a 2 MiB gap in guest addresses between them). Default 1. */
  regionCount?: number;
  /** Scratch bytes in guest memory for raw chains (hostile tests). Default 1 MiB. */
  scratchBytes?: number;
  /** Protocol features this front-end accepts (intersected with the back-end's). Default MQ|REPLY_ACK|CONFIG|CONFIGURE_MEM_SLOTS|RESET_DEVICE. */
  protocolFeatureMask?: bigint;
  /** Use ADD_MEM_REG when CONFIGURE_MEM_SLOTS is negotiated (QEMU does); false forces SET_MEM_TABLE. Default true. */
  addMemReg?: boolean;
  /** With REPLY_ACK, set NEED_REPLY on every request that has no reply of its own. Default true (QEMU sets it on memory table messages only). */
  ackAll?: boolean;
  /** GET_CONFIG size. Default 60 (struct virtio_blk_config). */
  configBytes?: number;
  /** Wait this long for a reply (ms). Default 10000. */
  replyTimeoutMs?: number;
  /** Kick after every submission batch even when the back-end asked not to be notified. Default false. */
  alwaysKick?: boolean;
  /** Set up and start the rings in connect() (default true); false stops after the QEMU init phase. */
  start?: boolean;
}

const DEFAULT_PROTOCOL_MASK =
  bit(ProtocolFeature.MQ) |
  bit(ProtocolFeature.REPLY_ACK) |
  bit(ProtocolFeature.CONFIG) |
  bit(ProtocolFeature.CONFIGURE_MEM_SLOTS) |
  bit(ProtocolFeature.RESET_DEVICE);

const WANTED_BLK_FEATURES =
  bit(BlkFeature.SIZE_MAX) |
  bit(BlkFeature.SEG_MAX) |
  bit(BlkFeature.GEOMETRY) |
  bit(BlkFeature.RO) |
  bit(BlkFeature.BLK_SIZE) |
  bit(BlkFeature.FLUSH) |
  bit(BlkFeature.TOPOLOGY) |
  bit(BlkFeature.CONFIG_WCE) |
  bit(BlkFeature.MQ) |
  bit(BlkFeature.DISCARD) |
  bit(BlkFeature.WRITE_ZEROES) |
  bit(BlkFeature.VERSION_1);

export interface StartOptions {
  eventIdx?: boolean;
  indirect?: boolean;
  /** Zero the rings and start from index 0 (what a guest driver reset does); default: continue from where the last stop left off. */
  fresh?: boolean;
  /** New kick and call eventfds for every queue (the old ones are closed here after the back-end got the new ones). */
  replaceFds?: boolean;
}

// ---------------------------------------------------------------------------------------------
// Guest memory

interface Region {
  index: number;
  guestAddr: bigint;
  sizeBytes: number;
  mmapOffsetBytes: number;
  map: MappedRegion;
  bytes: Uint8Array;
  dv: DataView;
  /** bump allocator cursor */
  used: number;
}

/** A buffer in guest memory: its guest address and a view of it in this process. */
export interface GuestBuffer {
  guestAddr: bigint;
  frontendAddr: bigint;
  bytes: Uint8Array;
  region: number;
}

const REGION_GAP_BYTES = 2 * 1024 * 1024;

class GuestMemoryImage {
  readonly fd: number;
  readonly regions: Region[] = [];
  private cursor = 0;

  constructor(totalBytes: number, regionCount: number) {
    const regionBytes = Math.ceil(totalBytes / regionCount / (2 * 1024 * 1024)) * 2 * 1024 * 1024;
    this.fd = memfdCreate('strata-vhost-frontend', regionBytes * regionCount);
    try {
      for (let i = 0; i < regionCount; i++) {
        const map = mapShared(this.fd, regionBytes, i * regionBytes);
        this.regions.push({
          index: i,
          guestAddr: BigInt(i) * BigInt(regionBytes + REGION_GAP_BYTES),
          sizeBytes: regionBytes,
          mmapOffsetBytes: i * regionBytes,
          map,
          bytes: map.bytes,
          dv: new DataView(map.bytes.buffer, map.bytes.byteOffset, map.bytes.byteLength),
          used: 0,
        });
      }
    } catch (e) {
      this.close();
      throw e;
    }
  }

  get totalBytes(): number {
    return this.regions.reduce((s, r) => s + r.sizeBytes, 0);
  }

  describe(): MemRegionDesc[] {
    return this.regions.map((r) => ({
      guestAddr: r.guestAddr,
      sizeBytes: BigInt(r.sizeBytes),
      frontendAddr: r.map.hostAddr,
      mmapOffsetBytes: BigInt(r.mmapOffsetBytes),
    }));
  }

  /** Allocates within one region (round robin over the regions), zeroed. */
  alloc(sizeBytes: number, align = 64, region?: number): GuestBuffer {
    const n = this.regions.length;
    for (let k = 0; k < n; k++) {
      const r = this.regions[region ?? (this.cursor + k) % n]!;
      const start = Math.ceil(r.used / align) * align;
      if (start + sizeBytes <= r.sizeBytes) {
        r.used = start + sizeBytes;
        if (region === undefined) this.cursor = (r.index + 1) % n;
        const bytes = r.bytes.subarray(start, start + sizeBytes);
        bytes.fill(0);
        return { guestAddr: r.guestAddr + BigInt(start), frontendAddr: r.map.hostAddr + BigInt(start), bytes, region: r.index };
      }
      if (region !== undefined) break;
    }
    throw new Error(`guest memory exhausted allocating ${sizeBytes} bytes`);
  }

  /** A view of guest memory [guestAddr, +len) within one region, or undefined. */
  view(guestAddr: bigint, lengthBytes: number): Uint8Array | undefined {
    for (const r of this.regions) {
      if (guestAddr >= r.guestAddr && guestAddr + BigInt(lengthBytes) <= r.guestAddr + BigInt(r.sizeBytes)) {
        const off = Number(guestAddr - r.guestAddr);
        return r.bytes.subarray(off, off + lengthBytes);
      }
    }
    return undefined;
  }

  close(): void {
    for (const r of this.regions) r.map.unmap();
    this.regions.length = 0;
    closeFd(this.fd);
  }
}

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

interface Pending {
  head: number;
  descCount: number;
  resolve: (c: ChainCompletion) => void;
  reject: (e: Error) => void;
}

interface Slot {
  index: number;
  /** 16-byte out header, then the status byte at +16; at +64 the indirect table */
  meta: GuestBuffer;
  data: GuestBuffer;
}

const META_HEADER = 0;
const META_STATUS = 16;
const META_INDIRECT = 64;

class DriverQueue {
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

function dvOf(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

function u16At(b: Uint8Array, offset: number): Uint16Array {
  return new Uint16Array(b.buffer, b.byteOffset + offset, 1);
}

// ---------------------------------------------------------------------------------------------
// The front-end

export interface IoResult {
  status: number;
  /** used.len as reported by the back-end */
  writtenBytes: number;
}

export interface SectorRange {
  sector: bigint | number;
  sectors: number;
}

export class VhostUserFrontend {
  readonly socketPath: string;
  private readonly opts: Required<Omit<FrontendOptions, 'segmentBytes'>> & { segmentBytes: number };
  private stream: UnixStream | undefined;
  private inbuf = new Uint8Array(0);
  private inFds: number[] = [];
  private readonly replies: ReceivedMessage[] = [];
  private replyWaiters: { resolve: (m: ReceivedMessage) => void; reject: (e: Error) => void }[] = [];
  private closedError: Error | undefined;
  private mem: GuestMemoryImage | undefined;
  private scratch: GuestBuffer | undefined;
  private scratchUsed = 0;
  private queues: DriverQueue[] = [];
  private nextQueue = 0;
  private readonly closeListeners: (() => void)[] = [];

  backendFeatures = 0n;
  backendProtocolFeatures = 0n;
  protocolFeatures = 0n;
  features = 0n;
  backendQueueCount = 1;
  maxMemSlots = 0;
  config: BlkConfig | undefined;
  /** Log of requests sent (ids), for tests that check the sequence. */
  readonly sent: number[] = [];
  started = false;

  private constructor(socketPath: string, opts: FrontendOptions) {
    this.socketPath = socketPath;
    this.opts = {
      queueCount: opts.queueCount ?? 1,
      queueSize: opts.queueSize ?? 256,
      queueDepth: opts.queueDepth ?? 64,
      maxRequestBytes: opts.maxRequestBytes ?? 128 * 1024,
      segmentBytes: opts.segmentBytes ?? 0,
      eventIdx: opts.eventIdx ?? true,
      indirect: opts.indirect ?? false,
      regionCount: opts.regionCount ?? 1,
      scratchBytes: opts.scratchBytes ?? 1024 * 1024,
      protocolFeatureMask: opts.protocolFeatureMask ?? DEFAULT_PROTOCOL_MASK,
      addMemReg: opts.addMemReg ?? true,
      ackAll: opts.ackAll ?? true,
      configBytes: opts.configBytes ?? 60,
      replyTimeoutMs: opts.replyTimeoutMs ?? 10_000,
      alwaysKick: opts.alwaysKick ?? false,
      start: opts.start ?? true,
    };
  }

  /** Connects only: no message sent (for malformed-message tests). Guest memory is set up. */
  static connectRaw(socketPath: string, opts: FrontendOptions = {}): VhostUserFrontend {
    const fe = new VhostUserFrontend(socketPath, opts);
    fe.open();
    return fe;
  }

  /** Connects and runs QEMU's init sequence, then (unless `start: false`) starts the rings. */
  static async connect(socketPath: string, opts: FrontendOptions = {}): Promise<VhostUserFrontend> {
    const fe = VhostUserFrontend.connectRaw(socketPath, opts);
    try {
      await fe.init();
      if (fe.opts.start) await fe.start();
      return fe;
    } catch (e) {
      fe.close();
      throw e;
    }
  }

  private open(): void {
    const o = this.opts;
    const maxSegments = o.segmentBytes > 0 ? Math.ceil(o.maxRequestBytes / o.segmentBytes) + 1 : 1;
    const metaBytes = META_INDIRECT + 16 * (maxSegments + 2);
    const perQueue =
      3 * PAGE + 16 * o.queueSize + 8 * o.queueSize + o.queueDepth * (Math.ceil(metaBytes / 64) * 64 + o.maxRequestBytes + PAGE);
    const total = o.queueCount * perQueue + o.scratchBytes + PAGE * 4 * o.regionCount;
    this.mem = new GuestMemoryImage(total, o.regionCount);
    try {
      for (let q = 0; q < o.queueCount; q++) {
        const dq = new DriverQueue(q, this.mem, o.queueSize, o.queueDepth, o.maxRequestBytes, maxSegments);
        dq.alwaysKick = o.alwaysKick;
        this.queues.push(dq);
      }
      this.scratch = this.mem.alloc(o.scratchBytes, PAGE, 0);
      this.stream = UnixStream.connect(this.socketPath);
    } catch (e) {
      this.close();
      throw e;
    }
    this.stream.onReadable(() => this.onReadable());
  }

  // ------------------------------------------------------------------ messages

  get connected(): boolean {
    return this.closedError === undefined && this.stream !== undefined;
  }

  /** Resolves when the back-end closes the connection (or we do). */
  whenClosed(): Promise<void> {
    if (!this.connected) return Promise.resolve();
    return new Promise((r) => this.closeListeners.push(r));
  }

  private onReadable(): void {
    const s = this.stream;
    if (!s) return;
    for (;;) {
      let got: ReturnType<UnixStream['recvMessage']>;
      try {
        got = s.recvMessage(65536, 16);
      } catch (e) {
        // ECONNRESET: the back-end closed with data unread; a close like any other
        const reset = (e as { errno?: number }).errno === 104;
        this.fail(reset ? new ConnectionClosedError('vhost-user connection reset by the back-end') : e instanceof Error ? e : new Error(String(e)));
        return;
      }
      if (got === 'again') break;
      if (got === 'eof') {
        this.fail(new ConnectionClosedError());
        return;
      }
      const merged = new Uint8Array(this.inbuf.length + got.data.length);
      merged.set(this.inbuf);
      merged.set(got.data, this.inbuf.length);
      this.inbuf = merged;
      this.inFds.push(...got.fds);
    }
    while (this.inbuf.length >= HEADER_BYTES) {
      const dv = new DataView(this.inbuf.buffer, this.inbuf.byteOffset, this.inbuf.length);
      const size = dv.getUint32(8, true);
      if (size > 4096) {
        this.fail(new Error(`back-end sent a message of ${size} bytes`));
        return;
      }
      if (this.inbuf.length < HEADER_BYTES + size) break;
      const msg: ReceivedMessage = {
        request: dv.getUint32(0, true),
        flags: dv.getUint32(4, true),
        size,
        payload: this.inbuf.slice(HEADER_BYTES, HEADER_BYTES + size),
        fds: this.inFds,
      };
      this.inFds = [];
      this.inbuf = this.inbuf.slice(HEADER_BYTES + size);
      const w = this.replyWaiters.shift();
      if (w) w.resolve(msg);
      else this.replies.push(msg);
    }
  }

  private fail(e: Error): void {
    if (this.closedError) return;
    this.closedError = e;
    for (const w of this.replyWaiters.splice(0)) w.reject(e);
    for (const q of this.queues) q.failAll(e);
    for (const fd of this.inFds.splice(0)) closeFd(fd);
    for (const l of this.closeListeners.splice(0)) l();
  }

  /** Sends a message exactly as given (the header's size may lie). */
  sendRaw(header: MessageHeader, payload: Uint8Array = new Uint8Array(0), fds: readonly number[] = []): void {
    this.sendBytes(encodeMessage(header, payload), fds);
  }

  /** Sends arbitrary bytes (e.g. a truncated header). */
  sendBytes(bytes: Uint8Array, fds: readonly number[] = []): void {
    if (this.closedError) throw this.closedError;
    if (!this.stream) throw new ConnectionClosedError();
    if (bytes.length >= 4) this.sent.push(new DataView(bytes.buffer, bytes.byteOffset).getUint32(0, true));
    this.stream.sendMessage(bytes, fds);
  }

  /** The next message from the back-end; rejects on timeout or when the connection closes. */
  nextMessage(timeoutMs = this.opts.replyTimeoutMs): Promise<ReceivedMessage> {
    const queued = this.replies.shift();
    if (queued) return Promise.resolve(queued);
    if (this.closedError) return Promise.reject(this.closedError);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.replyWaiters = this.replyWaiters.filter((w) => w !== waiter);
        reject(new Error(`no reply from the back-end within ${timeoutMs} ms`));
      }, timeoutMs);
      const waiter = {
        resolve: (m: ReceivedMessage) => {
          clearTimeout(timer);
          resolve(m);
        },
        reject: (e: Error) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      this.replyWaiters.push(waiter);
    });
  }

  /**
   * What the back-end did after a message: `{ reply }`, `'closed'` (it closed the connection) or
   * `'silent'` (nothing within timeoutMs).
   */
  async outcome(timeoutMs = 2000): Promise<{ reply: ReceivedMessage } | 'closed' | 'silent'> {
    try {
      return { reply: await this.nextMessage(timeoutMs) };
    } catch (e) {
      if (this.closedError) return 'closed';
      if (e instanceof Error && e.message.startsWith('no reply')) return 'silent';
      throw e;
    }
  }

  private get replyAck(): boolean {
    return (this.protocolFeatures & bit(ProtocolFeature.REPLY_ACK)) !== 0n;
  }

  /**
   * Sends a request; for requests with a reply returns it. With REPLY_ACK (and ackAll, or
   * needReply) waits for the ack and throws when it is non-zero.
   */
  async request(request: number, payload: Uint8Array = new Uint8Array(0), fds: readonly number[] = [], needReply?: boolean): Promise<ReceivedMessage | undefined> {
    const replies = REPLYING.has(request);
    const ack = !replies && this.replyAck && (needReply ?? this.opts.ackAll);
    this.sendRaw({ request, flags: FLAG_VERSION | (ack ? FLAG_NEED_REPLY : 0) }, payload, fds);
    if (!replies && !ack) return undefined;
    const m = await this.nextMessage();
    if (m.request !== request) throw new Error(`reply to request ${m.request}, expected ${request}`);
    if ((m.flags & FLAG_REPLY) === 0) throw new Error(`reply without the REPLY flag (flags 0x${m.flags.toString(16)})`);
    if (ack) {
      const status = m.payload.length >= 8 ? new DataView(m.payload.buffer, m.payload.byteOffset).getBigUint64(0, true) : -1n;
      if (status !== 0n) throw new Error(`back-end refused request ${request} (ack ${status})`);
      return undefined;
    }
    return m;
  }

  private async getU64(request: number): Promise<bigint> {
    const m = (await this.request(request))!;
    if (m.payload.length !== 8) throw new Error(`reply to ${request} has ${m.payload.length} bytes, expected 8`);
    return new DataView(m.payload.buffer, m.payload.byteOffset).getBigUint64(0, true);
  }

  // ------------------------------------------------------------------ QEMU's sequence

  /** vhost_dev_init: features, protocol features, queue count, memory slots, owner, call fds, config. */
  async init(): Promise<void> {
    this.backendFeatures = await this.getU64(VhostUserRequest.GET_FEATURES);
    if ((this.backendFeatures & bit(VHOST_USER_F_PROTOCOL_FEATURES)) !== 0n) {
      this.backendProtocolFeatures = await this.getU64(VhostUserRequest.GET_PROTOCOL_FEATURES);
      this.protocolFeatures = this.backendProtocolFeatures & this.opts.protocolFeatureMask;
      // protocol features are set before REPLY_ACK is in force: no NEED_REPLY on this one
      this.sendRaw({ request: VhostUserRequest.SET_PROTOCOL_FEATURES, flags: FLAG_VERSION }, u64Payload(this.protocolFeatures));
    }
    if ((this.protocolFeatures & bit(ProtocolFeature.MQ)) !== 0n) {
      this.backendQueueCount = Number(await this.getU64(VhostUserRequest.GET_QUEUE_NUM));
    }
    if (this.opts.queueCount > this.backendQueueCount) {
      throw new Error(`back-end has ${this.backendQueueCount} queue(s), ${this.opts.queueCount} wanted`);
    }
    if ((this.protocolFeatures & bit(ProtocolFeature.CONFIGURE_MEM_SLOTS)) !== 0n) {
      this.maxMemSlots = Number(await this.getU64(VhostUserRequest.GET_MAX_MEM_SLOTS));
    }
    await this.request(VhostUserRequest.SET_OWNER);
    for (const q of this.queues) await this.request(VhostUserRequest.SET_VRING_CALL, u64Payload(BigInt(q.index)), [q.call.fd]);
    if ((this.protocolFeatures & bit(ProtocolFeature.CONFIG)) !== 0n) {
      this.config = await this.getConfig();
    }
  }

  async getConfig(offset = 0, size = this.opts.configBytes): Promise<BlkConfig> {
    const m = (await this.request(VhostUserRequest.GET_CONFIG, configPayload(offset, size)))!;
    if (m.payload.length < 12) throw new Error(`GET_CONFIG reply of ${m.payload.length} bytes`);
    const got = new DataView(m.payload.buffer, m.payload.byteOffset).getUint32(4, true);
    if (got !== size || m.payload.length !== 12 + size) throw new Error(`GET_CONFIG reply: size ${got}, payload ${m.payload.length} (asked ${size})`);
    return decodeBlkConfig(m.payload.subarray(12));
  }

  /** The virtio features this front-end sends in SET_FEATURES for the given options. */
  featuresFor(o: { eventIdx: boolean; indirect: boolean }): bigint {
    let want = WANTED_BLK_FEATURES | bit(VHOST_USER_F_PROTOCOL_FEATURES);
    if (o.eventIdx) want |= bit(BlkFeature.EVENT_IDX);
    if (o.indirect) want |= bit(BlkFeature.INDIRECT_DESC);
    return this.backendFeatures & want;
  }

  get memoryRegions(): MemRegionDesc[] {
    return this.mem!.describe();
  }

  get memfd(): number {
    return this.mem!.fd;
  }

  get useMemSlots(): boolean {
    return this.opts.addMemReg && (this.protocolFeatures & bit(ProtocolFeature.CONFIGURE_MEM_SLOTS)) !== 0n;
  }

  /** vhost_dev_start: features, memory, then every queue's NUM/BASE/ADDR/KICK/CALL, then ENABLE. */
  async start(so: StartOptions = {}): Promise<void> {
    const eventIdx = so.eventIdx ?? this.opts.eventIdx;
    const indirect = so.indirect ?? this.opts.indirect;
    this.features = this.featuresFor({ eventIdx, indirect });
    await this.request(VhostUserRequest.SET_FEATURES, u64Payload(this.features));
    await this.sendMemTable();
    const negotiatedEventIdx = (this.features & bit(BlkFeature.EVENT_IDX)) !== 0n;
    this.useIndirect = (this.features & bit(BlkFeature.INDIRECT_DESC)) !== 0n && indirect;
    for (const q of this.queues) {
      if (so.fresh) q.reset(new Error('queue reset'));
      if (so.replaceFds) {
        const oldKick = q.kick;
        const oldCall = q.call;
        q.kick = EventFd.create({ nonBlocking: true });
        q.call = EventFd.create({ nonBlocking: true });
        oldCall.stopWatching();
        oldKick.close();
        oldCall.close();
      }
      q.eventIdx = negotiatedEventIdx;
      q.setInterrupts();
      await this.request(VhostUserRequest.SET_VRING_NUM, vringStatePayload(q.index, q.size));
      await this.request(VhostUserRequest.SET_VRING_BASE, vringStatePayload(q.index, q.deviceBase));
      await this.request(
        VhostUserRequest.SET_VRING_ADDR,
        vringAddrPayload({
          index: q.index,
          descFrontendAddr: q.desc.frontendAddr,
          usedFrontendAddr: q.used.frontendAddr,
          availFrontendAddr: q.avail.frontendAddr,
        }),
      );
      await this.request(VhostUserRequest.SET_VRING_KICK, u64Payload(BigInt(q.index)), [q.kick.fd]);
      await this.request(VhostUserRequest.SET_VRING_CALL, u64Payload(BigInt(q.index)), [q.call.fd]);
      q.call.onReadable(() => {
        q.call.drain();
        q.reap();
      });
    }
    if ((this.features & bit(VHOST_USER_F_PROTOCOL_FEATURES)) !== 0n) {
      for (const q of this.queues) await this.request(VhostUserRequest.SET_VRING_ENABLE, vringStatePayload(q.index, 1));
    }
    for (const q of this.queues) {
      q.enabled = true;
      q.reap();
    }
    this.started = true;
  }

  private memSent = false;

  /** SET_MEM_TABLE or ADD_MEM_REG per region (once; SET_MEM_TABLE again on later starts). */
  async sendMemTable(): Promise<void> {
    if (this.memSent) {
      // QEMU re-sends the table on every start only when it changed; ADD_MEM_REG of an identical region is not repeated.
      if (!this.useMemSlots) await this.request(VhostUserRequest.SET_MEM_TABLE, memTablePayload(this.memoryRegions), [this.memfd], true);
      return;
    }
    const regions = this.memoryRegions;
    if (this.useMemSlots) {
      for (const r of regions) await this.request(VhostUserRequest.ADD_MEM_REG, singleRegionPayload(r), [this.memfd], true);
    } else {
      await this.request(VhostUserRequest.SET_MEM_TABLE, memTablePayload(regions), regions.map(() => this.memfd), true);
    }
    this.memSent = true;
  }

  /**
   * vhost_dev_stop: SET_VRING_ENABLE 0 then GET_VRING_BASE per queue. Returns each queue's base
   * (the back-end's last avail index). Requests still in flight stay pending.
   */
  async stop(): Promise<number[]> {
    const bases: number[] = [];
    if ((this.features & bit(VHOST_USER_F_PROTOCOL_FEATURES)) !== 0n) {
      for (const q of this.queues) await this.request(VhostUserRequest.SET_VRING_ENABLE, vringStatePayload(q.index, 0));
    }
    for (const q of this.queues) {
      const m = (await this.request(VhostUserRequest.GET_VRING_BASE, vringStatePayload(q.index, 0)))!;
      if (m.payload.length !== 8) throw new Error(`GET_VRING_BASE reply of ${m.payload.length} bytes`);
      const base = new DataView(m.payload.buffer, m.payload.byteOffset).getUint32(4, true);
      bases.push(base);
      q.deviceBase = base & 0xffff;
      q.enabled = false;
      q.call.stopWatching();
      q.reap();
    }
    this.started = false;
    return bases;
  }

  // ------------------------------------------------------------------ requests

  private useIndirect = false;

  get queueCount(): number {
    return this.queues.length;
  }

  queue(i: number): DriverQueue {
    const q = this.queues[i];
    if (!q) throw new Error(`no queue ${i}`);
    return q;
  }

  private pickQueue(queue: number | undefined): DriverQueue {
    if (queue !== undefined) return this.queue(queue);
    const q = this.queues[this.nextQueue]!;
    this.nextQueue = (this.nextQueue + 1) % this.queues.length;
    return q;
  }

  /**
   * One virtio-blk request through a slot: header, optional data (readable for writes, writable
   * for reads), status. `fill` writes the outgoing data into the slot's buffer; `take` reads the
   * incoming data before the slot is reused.
   */
  async io<T = undefined>(
    type: number,
    sector: bigint | number,
    dataBytes: number,
    opts: { queue?: number; dataWritable?: boolean; fill?: (buf: Uint8Array) => void; take?: (buf: Uint8Array) => T; sectorRaw?: bigint } = {},
  ): Promise<IoResult & { value: T | undefined }> {
    if (this.closedError) throw this.closedError;
    if (dataBytes > this.opts.maxRequestBytes) throw new Error(`request of ${dataBytes} bytes > maxRequestBytes ${this.opts.maxRequestBytes}`);
    const q = this.pickQueue(opts.queue);
    const slot = await q.acquireSlot();
    try {
      const meta = slot.meta.bytes;
      const mdv = dvOf(meta);
      mdv.setUint32(META_HEADER, type, true);
      mdv.setUint32(META_HEADER + 4, 0, true);
      mdv.setBigUint64(META_HEADER + 8, BigInt.asUintN(64, BigInt(sector)), true);
      meta[META_STATUS] = 0xff;
      const data = slot.data.bytes.subarray(0, dataBytes);
      if (opts.fill) opts.fill(data);
      const dataWritable = opts.dataWritable ?? type === BlkType.IN;
      const chain: RawDescriptor[] = [{ addr: slot.meta.guestAddr + BigInt(META_HEADER), len: 16, flags: DescFlag.NEXT }];
      if (dataBytes > 0) {
        const seg = this.opts.segmentBytes > 0 ? this.opts.segmentBytes : dataBytes;
        for (let off = 0; off < dataBytes; off += seg) {
          chain.push({ addr: slot.data.guestAddr + BigInt(off), len: Math.min(seg, dataBytes - off), flags: DescFlag.NEXT | (dataWritable ? DescFlag.WRITE : 0) });
        }
      }
      chain.push({ addr: slot.meta.guestAddr + BigInt(META_STATUS), len: 1, flags: DescFlag.WRITE });
      let done: Promise<ChainCompletion>;
      if (this.useIndirect && chain.length > 1) {
        const tableAt = META_INDIRECT;
        chain.forEach((d, k) => {
          const o = tableAt + 16 * k;
          mdv.setBigUint64(o, d.addr, true);
          mdv.setUint32(o + 8, d.len, true);
          mdv.setUint16(o + 12, d.flags, true);
          mdv.setUint16(o + 14, k + 1 < chain.length ? k + 1 : 0, true);
        });
        await q.waitForDescs(1);
        done = q.addChain([{ addr: slot.meta.guestAddr + BigInt(tableAt), len: 16 * chain.length, flags: DescFlag.INDIRECT }]).done;
      } else {
        await q.waitForDescs(chain.length);
        done = q.addChain(chain).done;
      }
      q.scheduleKick();
      const c = await done;
      const status = meta[META_STATUS]!;
      const value = opts.take ? opts.take(data) : undefined;
      return { status, writtenBytes: c.writtenBytes, value };
    } finally {
      q.releaseSlot(slot);
    }
  }

  async read(sector: bigint | number, lengthBytes: number, queue?: number): Promise<Uint8Array> {
    const r = await this.io(BlkType.IN, sector, lengthBytes, { queue, take: (b) => b.slice() });
    if (r.status !== BlkStatus.OK) throw new BlkStatusError(r.status, `read sector ${sector}`);
    return r.value!;
  }

  async write(sector: bigint | number, data: Uint8Array, queue?: number): Promise<void> {
    const r = await this.io(BlkType.OUT, sector, data.length, { queue, fill: (b) => b.set(data) });
    if (r.status !== BlkStatus.OK) throw new BlkStatusError(r.status, `write sector ${sector}`);
  }

  async flush(queue?: number): Promise<void> {
    const r = await this.io(BlkType.FLUSH, 0, 0, { queue });
    if (r.status !== BlkStatus.OK) throw new BlkStatusError(r.status, 'flush');
  }

  private async segments(type: number, ranges: readonly SectorRange[], unmap: boolean, queue?: number): Promise<IoResult> {
    const r = await this.io(type, 0, 16 * ranges.length, {
      queue,
      dataWritable: false,
      fill: (b) => {
        const dv = dvOf(b);
        ranges.forEach((s, i) => {
          dv.setBigUint64(16 * i, BigInt.asUintN(64, BigInt(s.sector)), true);
          dv.setUint32(16 * i + 8, s.sectors >>> 0, true);
          dv.setUint32(16 * i + 12, unmap ? 1 : 0, true);
        });
      },
    });
    return r;
  }

  async discard(ranges: readonly SectorRange[], queue?: number): Promise<void> {
    const r = await this.segments(BlkType.DISCARD, ranges, false, queue);
    if (r.status !== BlkStatus.OK) throw new BlkStatusError(r.status, 'discard');
  }

  async writeZeroes(ranges: readonly SectorRange[], unmap: boolean, queue?: number): Promise<void> {
    const r = await this.segments(BlkType.WRITE_ZEROES, ranges, unmap, queue);
    if (r.status !== BlkStatus.OK) throw new BlkStatusError(r.status, 'write zeroes');
  }

  /** Raw status of a discard / write-zeroes request (for tests expecting errors). */
  segmentsStatus(type: number, ranges: readonly SectorRange[], unmap = false, queue?: number): Promise<IoResult> {
    return this.segments(type, ranges, unmap, queue);
  }

  async getId(bufferBytes = 20, queue?: number): Promise<string> {
    const r = await this.io(BlkType.GET_ID, 0, bufferBytes, { queue, take: (b) => b.slice() });
    if (r.status !== BlkStatus.OK) throw new BlkStatusError(r.status, 'get id');
    const b = r.value!;
    const end = b.indexOf(0);
    return Buffer.from(b.subarray(0, end < 0 ? b.length : end)).toString('latin1');
  }

  // ------------------------------------------------------------------ raw access (hostile tests)

  /** Allocates scratch guest memory (zeroed) for raw chains; reset with resetScratch(). */
  allocScratch(sizeBytes: number, align = 16): GuestBuffer {
    const s = this.scratch!;
    const start = Math.ceil(this.scratchUsed / align) * align;
    if (start + sizeBytes > s.bytes.length) throw new Error('scratch memory exhausted');
    this.scratchUsed = start + sizeBytes;
    const bytes = s.bytes.subarray(start, start + sizeBytes);
    bytes.fill(0);
    return { guestAddr: s.guestAddr + BigInt(start), frontendAddr: s.frontendAddr + BigInt(start), bytes, region: s.region };
  }

  resetScratch(): void {
    this.scratchUsed = 0;
  }

  /** A view of guest memory (undefined outside every region). */
  guestView(guestAddr: bigint, lengthBytes: number): Uint8Array | undefined {
    return this.mem!.view(guestAddr, lengthBytes);
  }

  /** The whole region i (to check that nothing outside the buffers changed). */
  regionBytes(i: number): Uint8Array {
    return this.mem!.regions[i]!.bytes;
  }

  /** Guest address one past the end of the last region. */
  get guestEnd(): bigint {
    const r = this.mem!.regions[this.mem!.regions.length - 1]!;
    return r.guestAddr + BigInt(r.sizeBytes);
  }

  /** Writes an out header {type, ioprio 0, sector} into a fresh scratch buffer; returns it. */
  scratchHeader(type: number, sector: bigint | number): GuestBuffer {
    const b = this.allocScratch(16);
    const dv = dvOf(b.bytes);
    dv.setUint32(0, type, true);
    dv.setBigUint64(8, BigInt.asUintN(64, BigInt(sector)), true);
    return b;
  }

  /** Writes an indirect table into scratch memory; returns its buffer (len = 16 * descs.length). */
  scratchIndirectTable(descs: readonly RawDescriptor[]): GuestBuffer {
    const b = this.allocScratch(16 * Math.max(1, descs.length), 16);
    const dv = dvOf(b.bytes);
    descs.forEach((d, k) => {
      dv.setBigUint64(16 * k, BigInt.asUintN(64, d.addr), true);
      dv.setUint32(16 * k + 8, d.len >>> 0, true);
      dv.setUint16(16 * k + 12, d.flags, true);
      dv.setUint16(16 * k + 14, d.next ?? (k + 1 < descs.length ? k + 1 : 0), true);
    });
    return b;
  }

  /** Publishes an arbitrary chain and kicks; the promise resolves when the back-end returns its head. */
  submitChain(descriptors: readonly RawDescriptor[], opts: SubmitChainOptions = {}): { head: number; done: Promise<ChainCompletion> } {
    if (this.closedError) throw this.closedError;
    const q = this.queue(opts.queue ?? 0);
    const r = q.addChain(descriptors, opts);
    r.done.catch(() => {}); // callers may never await a chain the device drops
    if (!opts.noKick) q.kickNow(true);
    return r;
  }

  /** Sets a queue's avail.idx to any value and kicks (avail idx jumping ahead). */
  setAvailIdx(queue: number, idx: number, kick = true): void {
    const q = this.queue(queue);
    q.setAvailIdxRaw(idx);
    if (kick) q.kickNow(true);
  }

  kick(queue: number): void {
    this.queue(queue).kickNow(true);
  }

  // ------------------------------------------------------------------ teardown

  /** Closes the socket, the eventfds and the guest memory. In-flight requests reject. */
  close(): void {
    this.fail(new ConnectionClosedError('front-end closed'));
    const s = this.stream;
    this.stream = undefined;
    s?.close();
    for (const q of this.queues) {
      q.call.stopWatching();
      q.kick.close();
      q.call.close();
    }
    this.queues = [];
    this.mem?.close();
    this.mem = undefined;
  }
}
