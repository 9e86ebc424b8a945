/**
 * A pretend guest for the virtio-side tests: RAM in ordinary ArrayBuffers, and a driver that lays
 * out split rings and descriptor chains the way a virtio driver would.
 *
 * FakeGuestMemory stands in for GuestMemory (guest RAM mapped from the front-end's memfd): these
 * tests exercise ring and request parsing, not mapping, so plain ArrayBuffers with the same
 * guestRange/frontendRange/guestPrefix methods are enough. virtqueue.test.ts also runs one ring over
 * the real GuestMemory on a memfd.
 */
import { type GuestMemoryAccess } from '../../src/export/vhost-user/memory.js';
import {
  SplitVirtqueue,
  splitRingSizes,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  type SplitVirtqueueOptions,
} from '../../src/export/vhost-user/virtqueue.js';

/** Front-end addresses are guest addresses plus this (so a mix-up of the two shows). */
export const FRONTEND_DELTA = 0x7f00_0000_0000n;

interface FakeRegion {
  guestAddr: number;
  bytes: Uint8Array;
}

export class FakeGuestMemory implements GuestMemoryAccess {
  readonly regions: FakeRegion[] = [];

  /** Adds a zero-filled region of sizeBytes at guestAddr (adjacent regions allowed). */
  addRegion(guestAddr: number, sizeBytes: number): Uint8Array {
    const bytes = new Uint8Array(sizeBytes);
    this.regions.push({ guestAddr, bytes });
    return bytes;
  }

  guestPrefix(guestAddr: number, lengthBytes: number): Uint8Array | undefined {
    for (const r of this.regions) {
      if (guestAddr >= r.guestAddr && guestAddr < r.guestAddr + r.bytes.length) {
        const offset = guestAddr - r.guestAddr;
        return new Uint8Array(r.bytes.buffer, r.bytes.byteOffset + offset, Math.min(lengthBytes, r.bytes.length - offset));
      }
    }
    return undefined;
  }

  guestRange(guestAddr: bigint, lengthBytes: number): Uint8Array | undefined {
    const v = this.guestPrefix(Number(guestAddr), lengthBytes);
    return v !== undefined && v.length === lengthBytes ? v : undefined;
  }

  frontendRange(frontendAddr: bigint, lengthBytes: number): Uint8Array | undefined {
    return this.guestRange(frontendAddr - FRONTEND_DELTA, lengthBytes);
  }

  /** The bytes at guestAddr (must be inside one region). */
  at(guestAddr: number, lengthBytes: number): Uint8Array {
    const v = this.guestRange(BigInt(guestAddr), lengthBytes);
    if (v === undefined) throw new Error(`test bug: 0x${guestAddr.toString(16)} +${lengthBytes} not in fake memory`);
    return v;
  }
}

/** Guest memory access the driver needs; FakeGuestMemory and a memfd-backed view both provide it. */
export interface DriverMemory {
  at(guestAddr: number, lengthBytes: number): Uint8Array;
}

export interface BufferSpec {
  /** Guest address of the buffer (default: allocated by the driver). */
  guestAddr?: number;
  lengthBytes: number;
  write?: boolean;
  /** Initial contents for a readable buffer. */
  data?: Uint8Array;
}

/** The driver side of one split ring, little-endian, as Linux lays it out. */
export class FakeDriver {
  readonly descAddr: number;
  readonly availAddr: number;
  readonly usedAddr: number;
  private nextFree: number;
  private nextDesc = 0;
  availIdx: number;

  constructor(
    readonly mem: DriverMemory,
    readonly queueSize: number,
    /** Start of a scratch area for rings and buffers. */
    baseGuestAddr: number,
    readonly eventIdx = false,
    readonly initialIdx = 0,
  ) {
    const sizes = splitRingSizes(queueSize, true);
    this.descAddr = baseGuestAddr;
    this.availAddr = align(this.descAddr + sizes.descBytes, 2);
    this.usedAddr = align(this.availAddr + sizes.availBytes, 4096);
    this.nextFree = align(this.usedAddr + sizes.usedBytes, 4096);
    this.availIdx = initialIdx;
    this.u16(this.availAddr + 2, initialIdx);
    this.u16(this.usedAddr + 2, initialIdx);
  }

  ringOptions(memory: SplitVirtqueueOptions['memory'], extra: Partial<SplitVirtqueueOptions> = {}): SplitVirtqueueOptions {
    const sizes = splitRingSizes(this.queueSize, this.eventIdx);
    return {
      memory,
      queueSize: this.queueSize,
      desc: this.mem.at(this.descAddr, sizes.descBytes),
      avail: this.mem.at(this.availAddr, sizes.availBytes),
      used: this.mem.at(this.usedAddr, sizes.usedBytes),
      eventIdx: this.eventIdx,
      lastAvailIdx: this.initialIdx,
      ...extra,
    };
  }

  queue(memory: SplitVirtqueueOptions['memory'], extra: Partial<SplitVirtqueueOptions> = {}): SplitVirtqueue {
    return new SplitVirtqueue(this.ringOptions(memory, extra));
  }

  alloc(lengthBytes: number, alignment = 16): number {
    this.nextFree = align(this.nextFree, alignment);
    const addr = this.nextFree;
    this.nextFree += lengthBytes;
    return addr;
  }

  /** Writes descriptor `index` of the table at tableAddr. */
  writeDesc(tableAddr: number, index: number, guestAddr: number | bigint, lengthBytes: number, flags: number, next: number): void {
    const d = this.mem.at(tableAddr + 16 * index, 16);
    const dv = new DataView(d.buffer, d.byteOffset, 16);
    dv.setBigUint64(0, BigInt(guestAddr), true);
    dv.setUint32(8, lengthBytes >>> 0, true);
    dv.setUint16(12, flags, true);
    dv.setUint16(14, next, true);
  }

  /** Allocates buffers (filling readable ones) and returns their guest addresses. */
  buffers(specs: readonly BufferSpec[]): number[] {
    return specs.map((s) => {
      const addr = s.guestAddr ?? this.alloc(s.lengthBytes, 4096);
      if (s.data !== undefined && s.guestAddr === undefined) this.mem.at(addr, s.data.length).set(s.data);
      return addr;
    });
  }

  /** A direct chain in the descriptor table; returns the head index (not yet published). */
  addDirect(specs: readonly BufferSpec[]): number {
    const addrs = this.buffers(specs);
    const head = this.nextDesc;
    specs.forEach((s, i) => {
      const index = (head + i) % this.queueSize;
      const last = i === specs.length - 1;
      this.writeDesc(this.descAddr, index, addrs[i]!, s.lengthBytes, (s.write ? VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : VIRTQ_DESC_F_NEXT), (index + 1) % this.queueSize);
    });
    this.nextDesc = (head + specs.length) % this.queueSize;
    return head;
  }

  /** One direct descriptor pointing at an indirect table holding the chain; returns the head. */
  addIndirect(specs: readonly BufferSpec[]): number {
    const addrs = this.buffers(specs);
    const table = this.alloc(16 * specs.length, 16);
    specs.forEach((s, i) => {
      const last = i === specs.length - 1;
      this.writeDesc(table, i, addrs[i]!, s.lengthBytes, (s.write ? VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : VIRTQ_DESC_F_NEXT), i + 1);
    });
    const head = this.nextDesc;
    this.writeDesc(this.descAddr, head, table, 16 * specs.length, VIRTQ_DESC_F_INDIRECT, 0);
    this.nextDesc = (head + 1) % this.queueSize;
    return head;
  }

  /** Puts head into the avail ring and bumps avail.idx. */
  publish(head: number): void {
    this.u16(this.availAddr + 4 + 2 * (this.availIdx % this.queueSize), head);
    this.availIdx = (this.availIdx + 1) & 0xffff;
    this.u16(this.availAddr + 2, this.availIdx);
  }

  setAvailIdx(idx: number): void {
    this.u16(this.availAddr + 2, idx);
  }

  setAvailFlags(flags: number): void {
    this.u16(this.availAddr, flags);
  }

  setUsedEvent(idx: number): void {
    this.u16(this.availAddr + 4 + 2 * this.queueSize, idx);
  }

  usedIdx(): number {
    return this.readU16(this.usedAddr + 2);
  }

  usedFlags(): number {
    return this.readU16(this.usedAddr);
  }

  availEvent(): number {
    return this.readU16(this.usedAddr + 4 + 8 * this.queueSize);
  }

  usedElem(slot: number): { id: number; len: number } {
    const b = this.mem.at(this.usedAddr + 4 + 8 * (slot % this.queueSize), 8);
    const dv = new DataView(b.buffer, b.byteOffset, 8);
    return { id: dv.getUint32(0, true), len: dv.getUint32(4, true) };
  }

  private u16(guestAddr: number, value: number): void {
    const b = this.mem.at(guestAddr, 2);
    b[0] = value & 0xff;
    b[1] = (value >> 8) & 0xff;
  }

  private readU16(guestAddr: number): number {
    const b = this.mem.at(guestAddr, 2);
    return b[0]! | (b[1]! << 8);
  }
}

function align(value: number, alignment: number): number {
  return Math.ceil(value / alignment) * alignment;
}
