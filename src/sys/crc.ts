/**
 * CRC-32 (IEEE 802.3, zlib's: the checks of pack blocks, manifests and S3's x-amz-checksum-crc32)
 * and CRC-32C (Castagnoli: x-amz-checksum-crc32c), from the npm package @node-rs/crc32 (prebuilt
 * Rust binaries per platform, carry-less multiply): on this machine 13.6 GB/s for CRC-32 on 1 MiB
 * and 8.7 GB/s on 4 KiB blocks, against node:zlib's 4.5 and 2.6-4.1; CRC-32C 6.2 GB/s against
 * ~0.8 for the table-driven loop below (bench/RESULTS.md). CRC-32 was ~7% of the event loop's CPU
 * in a profile of 1 MiB S3 PUTs (pack blocks). Where the package cannot load, node:zlib and the
 * table give the same values, slower: nothing stored depends on which one ran. CRC-64/NVME
 * (x-amz-checksum-crc64nvme) is JavaScript here, slice-by-8.
 */
import { createRequire } from 'node:module';
import { crc32 as zlibCrc32 } from 'node:zlib';

const PACKAGE = '@node-rs/crc32';

/** A CRC of `data` continuing from `crc` (0 to start), as an unsigned 32-bit number. */
type Crc32Function = (data: Uint8Array | string, crc?: number) => number;

/** CRC-32C (Castagnoli): reflected polynomial 0x82F63B78, init and xorout all ones. */
const CRC32C_POLY_REFLECTED = 0x82f63b78;
/** Bytes consumed per slice-by-8 step of the table-driven CRC-32C (~1.4x the byte-at-a-time loop). */
const CRC32C_SLICE = 8;

/** Table t[k][n]: the CRC of byte n followed by k zero bytes, for slice-by-8 (built on first use). */
let crc32cTables: readonly Uint32Array[] | undefined;

function tablesForCrc32c(): readonly Uint32Array[] {
  if (crc32cTables !== undefined) return crc32cTables;
  const tables = Array.from({ length: CRC32C_SLICE }, () => new Uint32Array(256));
  const t0 = tables[0]!;
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ CRC32C_POLY_REFLECTED : c >>> 1;
    t0[n] = c >>> 0;
  }
  for (let t = 1; t < CRC32C_SLICE; t++) {
    const previous = tables[t - 1]!;
    for (let n = 0; n < 256; n++) tables[t]![n] = ((previous[n]! >>> 8) ^ t0[previous[n]! & 0xff]!) >>> 0;
  }
  crc32cTables = tables;
  return tables;
}

/** CRC-32C in JavaScript (slice-by-8): where the package is missing, and the reference its tests compare with. */
export function crc32cByTable(data: Uint8Array, crc = 0): number {
  const [t0, t1, t2, t3, t4, t5, t6, t7] = tablesForCrc32c() as [Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array];
  let c = ~crc >>> 0;
  let i = 0;
  const end8 = data.length - (data.length % CRC32C_SLICE);
  for (; i < end8; i += CRC32C_SLICE) {
    const low = (c ^ (data[i]! | (data[i + 1]! << 8) | (data[i + 2]! << 16) | (data[i + 3]! << 24))) >>> 0;
    c = t7[low & 0xff]! ^ t6[(low >>> 8) & 0xff]! ^ t5[(low >>> 16) & 0xff]! ^ t4[low >>> 24]! ^ t3[data[i + 4]!]! ^ t2[data[i + 5]!]! ^ t1[data[i + 6]!]! ^ t0[data[i + 7]!]!;
  }
  for (; i < data.length; i++) c = t0[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return ~c >>> 0;
}

/** CRC-64/NVME: reflected polynomial 0x9A6C9329AC4BC9B5 (0xAD93D23594C93659 unreflected), init and xorout all ones. */
const CRC64NVME_POLY_REFLECTED_HIGH = 0x9a6c9329;
const CRC64NVME_POLY_REFLECTED_LOW = 0xac4bc9b5;
/** Bytes consumed per slice-by-8 step of CRC-64/NVME. */
const CRC64_SLICE = 8;
const TABLE_ENTRIES = 256;

/**
 * CRC-64/NVME's tables as 32-bit halves (JavaScript numbers hold 53 bits, and a BigInt per byte is
 * slow): entry k * 256 + n is the CRC of byte n followed by k zero bytes (built on first use).
 */
let crc64Tables: { readonly high: Uint32Array; readonly low: Uint32Array } | undefined;

function tablesForCrc64(): { readonly high: Uint32Array; readonly low: Uint32Array } {
  if (crc64Tables !== undefined) return crc64Tables;
  const high = new Uint32Array(CRC64_SLICE * TABLE_ENTRIES);
  const low = new Uint32Array(CRC64_SLICE * TABLE_ENTRIES);
  for (let n = 0; n < TABLE_ENTRIES; n++) {
    let h = 0;
    let l = n;
    for (let k = 0; k < 8; k++) {
      const carry = l & 1;
      l = ((l >>> 1) | ((h & 1) << 31)) >>> 0;
      h = h >>> 1;
      if (carry) {
        h = (h ^ CRC64NVME_POLY_REFLECTED_HIGH) >>> 0;
        l = (l ^ CRC64NVME_POLY_REFLECTED_LOW) >>> 0;
      }
    }
    high[n] = h;
    low[n] = l;
  }
  for (let k = 1; k < CRC64_SLICE; k++) {
    for (let n = 0; n < TABLE_ENTRIES; n++) {
      const h = high[(k - 1) * TABLE_ENTRIES + n]!;
      const l = low[(k - 1) * TABLE_ENTRIES + n]!;
      const byte = l & 0xff;
      high[k * TABLE_ENTRIES + n] = ((h >>> 8) ^ high[byte]!) >>> 0;
      low[k * TABLE_ENTRIES + n] = (((l >>> 8) | (h << 24)) ^ low[byte]!) >>> 0;
    }
  }
  crc64Tables = { high, low };
  return crc64Tables;
}

/**
 * A running CRC-64/NVME (x-amz-checksum-crc64nvme), slice-by-8 in JavaScript: no package we carry
 * has it. ~0.37 GB/s here, 1.5x the byte-at-a-time loop it replaced (the AWS SDK's own JavaScript
 * one runs at ~0.4).
 */
export class Crc64Nvme {
  /** The register's halves, before the final xorout. */
  private high = 0xffffffff;
  private low = 0xffffffff;

  update(data: Uint8Array): void {
    const { high: th, low: tl } = tablesForCrc64();
    let high = this.high;
    let low = this.low;
    let i = 0;
    const end8 = data.length - (data.length % CRC64_SLICE);
    for (; i < end8; i += CRC64_SLICE) {
      // The next 8 bytes, little-endian, into the register: its first byte meets the table with 7 zero bytes after it.
      const a = (low ^ (data[i]! | (data[i + 1]! << 8) | (data[i + 2]! << 16) | (data[i + 3]! << 24))) >>> 0;
      const b = (high ^ (data[i + 4]! | (data[i + 5]! << 8) | (data[i + 6]! << 16) | (data[i + 7]! << 24))) >>> 0;
      const i7 = 7 * TABLE_ENTRIES + (a & 0xff);
      const i6 = 6 * TABLE_ENTRIES + ((a >>> 8) & 0xff);
      const i5 = 5 * TABLE_ENTRIES + ((a >>> 16) & 0xff);
      const i4 = 4 * TABLE_ENTRIES + (a >>> 24);
      const i3 = 3 * TABLE_ENTRIES + (b & 0xff);
      const i2 = 2 * TABLE_ENTRIES + ((b >>> 8) & 0xff);
      const i1 = TABLE_ENTRIES + ((b >>> 16) & 0xff);
      const i0 = b >>> 24;
      low = (tl[i7]! ^ tl[i6]! ^ tl[i5]! ^ tl[i4]! ^ tl[i3]! ^ tl[i2]! ^ tl[i1]! ^ tl[i0]!) >>> 0;
      high = (th[i7]! ^ th[i6]! ^ th[i5]! ^ th[i4]! ^ th[i3]! ^ th[i2]! ^ th[i1]! ^ th[i0]!) >>> 0;
    }
    for (; i < data.length; i++) {
      const index = (low ^ data[i]!) & 0xff;
      low = (((low >>> 8) | (high << 24)) ^ tl[index]!) >>> 0;
      high = ((high >>> 8) ^ th[index]!) >>> 0;
    }
    this.high = high;
    this.low = low;
  }

  /** The CRC, big-endian (8 bytes). */
  digest(): Buffer {
    const out = Buffer.alloc(8);
    out.writeUInt32BE((this.high ^ 0xffffffff) >>> 0, 0);
    out.writeUInt32BE((this.low ^ 0xffffffff) >>> 0, 4);
    return out;
  }
}

interface Crcs {
  readonly crc32: Crc32Function;
  readonly crc32c: (data: Uint8Array, crc?: number) => number;
}

const FALLBACK: Crcs = { crc32: zlibCrc32, crc32c: crc32cByTable };

/** The package's functions, or FALLBACK where it does not load; undefined until first use. */
let crcs: Crcs | undefined;

function implementations(): Crcs {
  if (crcs !== undefined) return crcs;
  try {
    // A CommonJS native module: required, not imported, so a host without it still starts.
    const mod = createRequire(import.meta.url)(PACKAGE) as { crc32?: unknown; crc32c?: unknown };
    crcs = typeof mod.crc32 === 'function' && typeof mod.crc32c === 'function' ? { crc32: mod.crc32 as Crcs['crc32'], crc32c: mod.crc32c as Crcs['crc32c'] } : FALLBACK;
  } catch {
    crcs = FALLBACK;
  }
  return crcs;
}

/** CRC-32 (zlib's) of `data` (a string: its UTF-8) continuing from `crc` (0 to start). */
export function crc32(data: Uint8Array | string, crc = 0): number {
  return (crcs ?? implementations()).crc32(data, crc);
}

/** CRC-32C of `data` continuing from `crc` (0 to start). */
export function crc32c(data: Uint8Array, crc = 0): number {
  return (crcs ?? implementations()).crc32c(data, crc);
}

/** Whether the fast package is in use here (tests). */
export function isNativeCrcLoaded(): boolean {
  return implementations() !== FALLBACK;
}

/** Tests: run the fallbacks (true), or load the package again (false). */
export function useFallbackCrcsForTests(fallback: boolean): void {
  crcs = fallback ? FALLBACK : undefined;
}
