/**
 * The payload checksums S3 clients send (x-amz-checksum-* in headers or trailers) and Content-MD5,
 * computed incrementally as a body streams. CRC32 is zlib's (node:zlib crc32, GiB/s); CRC32C
 * (slice-by-8, ~1.4x the byte-at-a-time loop here) and CRC64NVME (a byte at a time, on two 32-bit
 * halves so no BigInt is made per byte) are table-driven here: Node has neither. On this shared
 * machine they run at ~150-400 and ~100-130 MiB/s; a native package would be faster.
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

/** The byte table of CRC64/NVME as two 32-bit halves. */
interface Crc64Table {
  hi: Uint32Array;
  lo: Uint32Array;
}

function crc64TableOf(): Crc64Table {
  const hi = new Uint32Array(256);
  const lo = new Uint32Array(256);
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
    hi[n] = h;
    lo[n] = l;
  }
  return { hi, lo };
}

let crc64Table: Crc64Table | undefined;

/** CRC64/NVME state as two halves (already inverted: start from {hi: ~0, lo: ~0}). */
interface Crc64State {
  hi: number;
  lo: number;
}

/**
 * A byte at a time: with the state in two 32-bit halves, slice-by-8 needs two loads per byte as
 * this loop does, and measured slower here (~65 against ~120 MiB/s).
 */
function crc64Update(state: Crc64State, data: Uint8Array): void {
  const { hi, lo } = (crc64Table ??= crc64TableOf());
  let h = state.hi;
  let l = state.lo;
  for (let i = 0; i < data.length; i++) {
    const idx = (l ^ data[i]!) & 0xff;
    l = (((l >>> 8) | ((h & 0xff) << 24)) ^ lo[idx]!) >>> 0;
    h = ((h >>> 8) ^ hi[idx]!) >>> 0;
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
