/**
 * L2 entries, decoded without BigInt on the hot path: each 64-bit field is read as two u32 halves.
 * Standard entries are 8 bytes; extended entries add a 64-bit subcluster bitmap (16 bytes).
 */
import {
  ENTRY_HI_COMPRESSED,
  ENTRY_HI_COPIED,
  ENTRY_HI_OFFSET_MASK,
  ENTRY_LO_OFFSET_MASK,
  ENTRY_LO_ZERO_FLAG,
  L2E_HI_STD_RESERVED_MASK,
  L2E_LO_STD_RESERVED_MASK,
  SUBCLUSTER_BITMAP_HALF_ALL,
  SUBCLUSTERS_PER_CLUSTER,
} from './constants.js';

/** What a cluster (or, with extended L2, a subcluster) holds in this layer. */
export const SlotKind = {
  /** Nothing here: read the backing image (or zeroes without one). */
  unallocated: 0,
  /** Reads as zeroes; no host cluster. */
  zeroPlain: 1,
  /** Reads as zeroes; a host cluster is still allocated (can be rewritten in place). */
  zeroAllocated: 2,
  /** Data at the host offset. */
  normal: 3,
  /** The whole cluster is compressed. */
  compressed: 4,
  /** Extended L2 only: the host cluster exists but this subcluster defers to the backing image. */
  unallocatedInAllocated: 5,
} as const;
export type SlotKind = (typeof SlotKind)[keyof typeof SlotKind];

const TWO_POW_32 = 4294967296;

export interface L2Word {
  hi: number;
  lo: number;
}

/** Host offset bits 9-55 of an L1/L2 entry (two u32 halves). */
export function entryHostOffset(hi: number, lo: number): number {
  return (hi & ENTRY_HI_OFFSET_MASK) * TWO_POW_32 + ((lo & ENTRY_LO_OFFSET_MASK) >>> 0);
}

export function entryCopied(hi: number): boolean {
  return (hi & ENTRY_HI_COPIED) !== 0;
}

export function entryCompressed(hi: number): boolean {
  return (hi & ENTRY_HI_COMPRESSED) !== 0;
}

export function entryZeroFlag(lo: number): boolean {
  return (lo & ENTRY_LO_ZERO_FLAG) !== 0;
}

/** Reserved bits of a standard (uncompressed) entry: 1-8 and 56-61. */
export function entryReservedBits(hi: number, lo: number): boolean {
  return (hi & L2E_HI_STD_RESERVED_MASK) !== 0 || (lo & L2E_LO_STD_RESERVED_MASK) !== 0;
}

export function encodeEntry(hostOffset: number, flags: { copied?: boolean; zero?: boolean }): L2Word {
  const hi = Math.floor(hostOffset / TWO_POW_32) | (flags.copied ? ENTRY_HI_COPIED : 0);
  const lo = (hostOffset % TWO_POW_32) | (flags.zero ? ENTRY_LO_ZERO_FLAG : 0);
  return { hi: hi >>> 0, lo: lo >>> 0 };
}

export function entryToBigInt(hi: number, lo: number): bigint {
  return (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
}

export function bigIntToEntry(value: bigint): L2Word {
  return { hi: Number((value >> 32n) & 0xffffffffn), lo: Number(value & 0xffffffffn) };
}

/** Bits of the subclusters that a byte range inside one cluster touches. */
export function subclusterMask(offsetInCluster: number, lengthBytes: number, subclusterSizeBytes: number): number {
  const first = Math.floor(offsetInCluster / subclusterSizeBytes);
  const last = Math.floor((offsetInCluster + lengthBytes - 1) / subclusterSizeBytes);
  const count = last - first + 1;
  const bits = count >= SUBCLUSTERS_PER_CLUSTER ? SUBCLUSTER_BITMAP_HALF_ALL : (2 ** count - 1) >>> 0;
  return (bits << first) >>> 0;
}
