/**
 * The payload checksums S3 clients send (x-amz-checksum-* in headers or trailers) and Content-MD5,
 * computed incrementally as a body streams. CRC32 is zlib's (node:zlib crc32, ~3.5 GiB/s here);
 * CRC32C and CRC64NVME are table-driven here, slice-by-8 (~400 and ~100 MiB/s on this machine):
 * Node has neither. CRC64 runs on two 32-bit halves so no BigInt is made per byte.
 */
import { createHash, type Hash } from 'node:crypto';
import { crc32 } from 'node:zlib';

/** The algorithms of x-amz-checksum-<name> / x-amz-sdk-checksum-algorithm, by their header name. */
export const CHECKSUM_ALGORITHMS = ['crc32', 'crc32c', 'crc64nvme', 'sha1', 'sha256'] as const;
export type ChecksumAlgorithm = (typeof CHECKSUM_ALGORITHMS)[number];

export const CHECKSUM_HEADER_PREFIX = 'x-amz-checksum-';

/** CRC32C (Castagnoli), reflected polynomial. */
const CRC32C_POLY_REFLECTED = 0x82f63b78;
/**
 * CRC64/NVME: polynomial 0xAD93D23594C935A9, used bit-reversed (0x9A6C9329AC4BC9B5) by this
 * reflected algorithm, as two 32-bit halves.
 */
const CRC64NVME_POLY_HI = 0x9a6c9329;
const CRC64NVME_POLY_LO = 0xac4bc9b5;
/** Bytes consumed per slice-by-8 step. */
const SLICE = 8;

export function isChecksumAlgorithm(name: string): name is ChecksumAlgorithm {
  return (CHECKSUM_ALGORITHMS as readonly string[]).includes(name);
}

/** An incremental checksum: feed the bytes, then read the digest (once). */
export interface Checksum {
  update(data: Uint8Array): void;
  /** The digest as S3 sends it: base64 of the big-endian value. */
  digestBase64(): string;
}

function crc32cTables(): Uint32Array[] {
  const tables = Array.from({ length: SLICE }, () => new Uint32Array(256));
  const t0 = tables[0] as Uint32Array;
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ CRC32C_POLY_REFLECTED : c >>> 1;
    t0[n] = c >>> 0;
  }
  for (let t = 1; t < SLICE; t++) {
    const prev = tables[t - 1] as Uint32Array;
    const cur = tables[t] as Uint32Array;
    for (let n = 0; n < 256; n++) {
      const p = prev[n] as number;
      cur[n] = ((p >>> 8) ^ (t0[p & 0xff] as number)) >>> 0;
    }
  }
  return tables;
}

let crc32cTable: Uint32Array[] | undefined;

/** CRC32C of `data` continuing from `crc` (0 to start); the value, not yet base64. */
export function crc32c(data: Uint8Array, crc = 0): number {
  const t = (crc32cTable ??= crc32cTables());
  const [t0, t1, t2, t3, t4, t5, t6, t7] = t as [Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array];
  let c = ~crc >>> 0;
  let i = 0;
  const end8 = data.length - (data.length % SLICE);
  for (; i < end8; i += SLICE) {
    const lo = (c ^ (data[i]! | (data[i + 1]! << 8) | (data[i + 2]! << 16) | (data[i + 3]! << 24))) >>> 0;
    c =
      t7[lo & 0xff]! ^ t6[(lo >>> 8) & 0xff]! ^ t5[(lo >>> 16) & 0xff]! ^ t4[lo >>> 24]! ^
      t3[data[i + 4]!]! ^ t2[data[i + 5]!]! ^ t1[data[i + 6]!]! ^ t0[data[i + 7]!]!;
  }
  for (; i < data.length; i++) c = t0[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return ~c >>> 0;
}

interface Crc64Tables {
  hi: Uint32Array[];
  lo: Uint32Array[];
}

function crc64Tables(): Crc64Tables {
  const hi = Array.from({ length: SLICE }, () => new Uint32Array(256));
  const lo = Array.from({ length: SLICE }, () => new Uint32Array(256));
  const h0 = hi[0] as Uint32Array;
  const l0 = lo[0] as Uint32Array;
  for (let n = 0; n < 256; n++) {
    let h = 0;
    let l = n;
    for (let k = 0; k < 8; k++) {
      const bit = l & 1;
      l = ((l >>> 1) | ((h & 1) << 31)) >>> 0;
      h = h >>> 1;
      if (bit) {
        h = (h ^ CRC64NVME_POLY_HI) >>> 0;
        l = (l ^ CRC64NVME_POLY_LO) >>> 0;
      }
    }
    h0[n] = h;
    l0[n] = l;
  }
  for (let t = 1; t < SLICE; t++) {
    const ph = hi[t - 1] as Uint32Array;
    const pl = lo[t - 1] as Uint32Array;
    const ch = hi[t] as Uint32Array;
    const cl = lo[t] as Uint32Array;
    for (let n = 0; n < 256; n++) {
      // table[t][n] = (table[t-1][n] >> 8) ^ table[0][table[t-1][n] & 0xff]
      const h = ph[n] as number;
      const l = pl[n] as number;
      const idx = l & 0xff;
      ch[n] = ((h >>> 8) ^ (h0[idx] as number)) >>> 0;
      cl[n] = (((l >>> 8) | ((h & 0xff) << 24)) ^ (l0[idx] as number)) >>> 0;
    }
  }
  return { hi, lo };
}

let crc64Table: Crc64Tables | undefined;

/** CRC64/NVME state as two halves (already inverted: start from {hi: ~0, lo: ~0}). */
interface Crc64State {
  hi: number;
  lo: number;
}

function crc64Update(state: Crc64State, data: Uint8Array): void {
  const { hi, lo } = (crc64Table ??= crc64Tables());
  let h = state.hi;
  let l = state.lo;
  let i = 0;
  const end8 = data.length - (data.length % SLICE);
  for (; i < end8; i += SLICE) {
    // XOR the next 8 bytes (little-endian) into the state, then one lookup per byte.
    const x0 = (l ^ (data[i]! | (data[i + 1]! << 8) | (data[i + 2]! << 16) | (data[i + 3]! << 24))) >>> 0;
    const x1 = (h ^ (data[i + 4]! | (data[i + 5]! << 8) | (data[i + 6]! << 16) | (data[i + 7]! << 24))) >>> 0;
    const [h0, h1, h2, h3, h4, h5, h6, h7] = hi as [Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array];
    const [l0, l1, l2, l3, l4, l5, l6, l7] = lo as [Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array];
    const b0 = x0 & 0xff, b1 = (x0 >>> 8) & 0xff, b2 = (x0 >>> 16) & 0xff, b3 = x0 >>> 24;
    const b4 = x1 & 0xff, b5 = (x1 >>> 8) & 0xff, b6 = (x1 >>> 16) & 0xff, b7 = x1 >>> 24;
    const nh = h7[b0]! ^ h6[b1]! ^ h5[b2]! ^ h4[b3]! ^ h3[b4]! ^ h2[b5]! ^ h1[b6]! ^ h0[b7]!;
    const nl = l7[b0]! ^ l6[b1]! ^ l5[b2]! ^ l4[b3]! ^ l3[b4]! ^ l2[b5]! ^ l1[b6]! ^ l0[b7]!;
    h = nh >>> 0;
    l = nl >>> 0;
  }
  const hiByte = hi[0] as Uint32Array;
  const loByte = lo[0] as Uint32Array;
  for (; i < data.length; i++) {
    const idx = (l ^ data[i]!) & 0xff;
    l = (((l >>> 8) | ((h & 0xff) << 24)) ^ loByte[idx]!) >>> 0;
    h = ((h >>> 8) ^ hiByte[idx]!) >>> 0;
  }
  state.hi = h;
  state.lo = l;
}

/** CRC64/NVME of `data` as a bigint (for tests and callers that want the number). */
export function crc64nvme(data: Uint8Array): bigint {
  const state = { hi: 0xffffffff, lo: 0xffffffff };
  crc64Update(state, data);
  return (BigInt(~state.hi >>> 0) << 32n) | BigInt(~state.lo >>> 0);
}

function u32Base64(value: number): string {
  const out = Buffer.alloc(4);
  out.writeUInt32BE(value >>> 0);
  return out.toString('base64');
}

class Crc32Checksum implements Checksum {
  private crc = 0;
  update(data: Uint8Array): void {
    this.crc = crc32(data, this.crc);
  }
  digestBase64(): string {
    return u32Base64(this.crc);
  }
}

class Crc32cChecksum implements Checksum {
  private crc = 0;
  update(data: Uint8Array): void {
    this.crc = crc32c(data, this.crc);
  }
  digestBase64(): string {
    return u32Base64(this.crc);
  }
}

class Crc64NvmeChecksum implements Checksum {
  private readonly state = { hi: 0xffffffff, lo: 0xffffffff };
  update(data: Uint8Array): void {
    crc64Update(this.state, data);
  }
  digestBase64(): string {
    const out = Buffer.alloc(8);
    out.writeUInt32BE(~this.state.hi >>> 0, 0);
    out.writeUInt32BE(~this.state.lo >>> 0, 4);
    return out.toString('base64');
  }
}

class HashChecksum implements Checksum {
  private readonly hash: Hash;
  constructor(algorithm: 'sha1' | 'sha256' | 'md5') {
    this.hash = createHash(algorithm);
  }
  update(data: Uint8Array): void {
    this.hash.update(data);
  }
  digestBase64(): string {
    return this.hash.digest('base64');
  }
}

export function createChecksum(algorithm: ChecksumAlgorithm | 'md5'): Checksum {
  switch (algorithm) {
    case 'crc32':
      return new Crc32Checksum();
    case 'crc32c':
      return new Crc32cChecksum();
    case 'crc64nvme':
      return new Crc64NvmeChecksum();
    case 'sha1':
    case 'sha256':
    case 'md5':
      return new HashChecksum(algorithm);
  }
}

/** The length in bytes of a digest, to refuse a malformed x-amz-checksum-* value early. */
export const CHECKSUM_DIGEST_BYTES: Readonly<Record<ChecksumAlgorithm | 'md5', number>> = {
  crc32: 4,
  crc32c: 4,
  crc64nvme: 8,
  sha1: 20,
  sha256: 32,
  md5: 16,
};
