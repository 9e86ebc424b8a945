/**
 * L2 entries, decoded without BigInt on the hot path: each 64-bit field is read as two u32 halves.
 * Standard entries are 8 bytes; extended entries add a 64-bit subcluster bitmap (16 bytes).
 */

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
  return (hi & 0x00ffffff) * TWO_POW_32 + ((lo & 0xfffffe00) >>> 0);
}

export function entryCopied(hi: number): boolean {
  return (hi & 0x80000000) !== 0;
}

export function entryCompressed(hi: number): boolean {
  return (hi & 0x40000000) !== 0;
}

export function entryZeroFlag(lo: number): boolean {
  return (lo & 1) !== 0;
}

/** Reserved bits of a standard (uncompressed) entry: 1-8 and 56-61. */
export function entryReservedBits(hi: number, lo: number): boolean {
  return (hi & 0x3f000000) !== 0 || (lo & 0x1fe) !== 0;
}

export function encodeEntry(hostOffset: number, flags: { copied?: boolean; zero?: boolean }): L2Word {
  const hi = Math.floor(hostOffset / TWO_POW_32) | (flags.copied ? 0x80000000 : 0);
  const lo = (hostOffset % TWO_POW_32) | (flags.zero ? 1 : 0);
  return { hi: hi >>> 0, lo: lo >>> 0 };
}

export function entryToBigInt(hi: number, lo: number): bigint {
  return (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
}

export function bigIntToEntry(value: bigint): L2Word {
  return { hi: Number((value >> 32n) & 0xffffffffn), lo: Number(value & 0xffffffffn) };
}
