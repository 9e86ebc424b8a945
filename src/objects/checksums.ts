/**
 * The checksums S3 clients send (x-amz-checksum-*): CRC32, CRC32C, CRC64NVME, SHA1, SHA256, and
 * the MD5 behind ETags and Content-MD5. Each is computed incrementally while a body streams through
 * (`update` per piece) and reported as S3 spells it: base64 of the big-endian digest. The one
 * implementation: the S3 endpoint's payload checks use it too. CRC32 is zlib's (node:zlib, GiB/s);
 * CRC32C (slice-by-8) and CRC64NVME (a byte at a time on two 32-bit halves, no BigInt per byte)
 * are table-driven here: Node has neither.
 */
import { createHash, type Hash } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { ObjectError } from './errors.js';

export const CHECKSUM_ALGORITHMS = ['CRC32', 'CRC32C', 'CRC64NVME', 'SHA1', 'SHA256'] as const;
export type ChecksumAlgorithm = (typeof CHECKSUM_ALGORITHMS)[number];

export function isChecksumAlgorithm(text: string): text is ChecksumAlgorithm {
  return (CHECKSUM_ALGORITHMS as readonly string[]).includes(text);
}

/** A running digest over the pieces of a body. */
export interface RunningChecksum {
  update(piece: Uint8Array): void;
  /** The digest, big-endian bytes. Call once. */
  digest(): Buffer;
}

/** CRC-32C (Castagnoli): reflected polynomial 0x82F63B78, init and xorout all ones. */
const CRC32C_POLY_REFLECTED = 0x82f63b78;
/** CRC-64/NVME: reflected polynomial 0x9A6C9329AC4BC9B5 (0xAD93D23594C93659 unreflected), init and xorout all ones. */
const CRC64NVME_POLY_REFLECTED_HIGH = 0x9a6c9329;
const CRC64NVME_POLY_REFLECTED_LOW = 0xac4bc9b5;

/** Bytes consumed per slice-by-8 step of CRC32C (~1.4x the byte-at-a-time loop). */
const CRC32C_SLICE = 8;

/** Table t[k][n]: the CRC of byte n followed by k zero bytes, for slice-by-8. */
const CRC32C_TABLES: readonly Uint32Array[] = (() => {
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
  return tables;
})();

/** CRC32C of `data` continuing from `crc` (0 to start). */
export function crc32c(data: Uint8Array, crc = 0): number {
  const [t0, t1, t2, t3, t4, t5, t6, t7] = CRC32C_TABLES as [Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array];
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

/** The CRC-64/NVME table as two 32-bit halves (JavaScript numbers hold 53 bits; BigInt per byte is slow). */
const CRC64_TABLE_HIGH = new Uint32Array(256);
const CRC64_TABLE_LOW = new Uint32Array(256);
for (let n = 0; n < 256; n++) {
  let high = 0;
  let low = n;
  for (let k = 0; k < 8; k++) {
    const carry = low & 1;
    low = ((low >>> 1) | ((high & 1) << 31)) >>> 0;
    high = high >>> 1;
    if (carry) {
      high = (high ^ CRC64NVME_POLY_REFLECTED_HIGH) >>> 0;
      low = (low ^ CRC64NVME_POLY_REFLECTED_LOW) >>> 0;
    }
  }
  CRC64_TABLE_HIGH[n] = high;
  CRC64_TABLE_LOW[n] = low;
}

class Crc32 implements RunningChecksum {
  private value = 0;
  update(piece: Uint8Array): void {
    this.value = crc32(piece, this.value);
  }
  digest(): Buffer {
    const out = Buffer.alloc(4);
    out.writeUInt32BE(this.value >>> 0);
    return out;
  }
}

class Crc32c implements RunningChecksum {
  private value = 0;
  update(piece: Uint8Array): void {
    this.value = crc32c(piece, this.value);
  }
  digest(): Buffer {
    const out = Buffer.alloc(4);
    out.writeUInt32BE(this.value);
    return out;
  }
}

class Crc64Nvme implements RunningChecksum {
  private high = 0xffffffff;
  private low = 0xffffffff;
  update(piece: Uint8Array): void {
    let high = this.high;
    let low = this.low;
    for (let i = 0; i < piece.length; i++) {
      const index = (low ^ piece[i]!) & 0xff;
      low = (((low >>> 8) | (high << 24)) ^ CRC64_TABLE_LOW[index]!) >>> 0;
      high = ((high >>> 8) ^ CRC64_TABLE_HIGH[index]!) >>> 0;
    }
    this.high = high;
    this.low = low;
  }
  digest(): Buffer {
    const out = Buffer.alloc(8);
    out.writeUInt32BE((this.high ^ 0xffffffff) >>> 0, 0);
    out.writeUInt32BE((this.low ^ 0xffffffff) >>> 0, 4);
    return out;
  }
}

class NodeHash implements RunningChecksum {
  private readonly hash: Hash;
  constructor(algorithm: 'md5' | 'sha1' | 'sha256') {
    this.hash = createHash(algorithm);
  }
  update(piece: Uint8Array): void {
    this.hash.update(piece);
  }
  digest(): Buffer {
    return this.hash.digest();
  }
}

export function runningChecksum(algorithm: ChecksumAlgorithm): RunningChecksum {
  switch (algorithm) {
    case 'CRC32':
      return new Crc32();
    case 'CRC32C':
      return new Crc32c();
    case 'CRC64NVME':
      return new Crc64Nvme();
    case 'SHA1':
      return new NodeHash('sha1');
    case 'SHA256':
      return new NodeHash('sha256');
  }
}

export function runningMd5(): RunningChecksum {
  return new NodeHash('md5');
}

/** SHA-256 of a body as it streams (x-amz-content-sha256). */
export function runningSha256(): RunningChecksum {
  return new NodeHash('sha256');
}

/** CRC-64/NVME of `data` as a number (tests check it against the bit-at-a-time definition). */
export function crc64nvme(data: Uint8Array): bigint {
  const running = new Crc64Nvme();
  running.update(data);
  return running.digest().readBigUInt64BE(0);
}

/** The length of each digest, to refuse a malformed value before reading a body. */
export const CHECKSUM_DIGEST_BYTES: Readonly<Record<ChecksumAlgorithm | 'MD5', number>> = { CRC32: 4, CRC32C: 4, CRC64NVME: 8, SHA1: 20, SHA256: 32, MD5: 16 };

/** The checksum of `data` in S3's spelling (base64). */
export function checksumOf(algorithm: ChecksumAlgorithm, data: Uint8Array): string {
  const running = runningChecksum(algorithm);
  running.update(data);
  return running.digest().toString('base64');
}

/**
 * The checksum of a multipart object in S3's composite form: the algorithm over the parts' binary
 * checksums concatenated, base64, then "-" and the part count.
 */
export function compositeChecksum(algorithm: ChecksumAlgorithm, partChecksumsBase64: readonly string[]): string {
  const running = runningChecksum(algorithm);
  for (const part of partChecksumsBase64) running.update(Buffer.from(part, 'base64'));
  return `${running.digest().toString('base64')}-${partChecksumsBase64.length}`;
}

/** A checksum value as the client sent it, checked for the algorithm's digest length. */
export function checkChecksumValue(algorithm: ChecksumAlgorithm, valueBase64: string): void {
  const expectedBytes = CHECKSUM_DIGEST_BYTES[algorithm];
  const bytes = Buffer.from(valueBase64, 'base64');
  if (bytes.length !== expectedBytes || bytes.toString('base64') !== valueBase64) {
    throw new ObjectError('InvalidRequest', `x-amz-checksum-${algorithm.toLowerCase()} "${valueBase64.slice(0, 80)}" is not the base64 of a ${expectedBytes}-byte ${algorithm}`);
  }
}
