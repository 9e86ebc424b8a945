/**
 * The checksums S3 clients send (x-amz-checksum-*): CRC32, CRC32C, CRC64NVME, SHA1, SHA256, and
 * the MD5 behind ETags and Content-MD5. Each is computed incrementally while a body streams through
 * (`update` per piece) and reported as S3 spells it: base64 of the big-endian digest.
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

const CRC32C_TABLE = new Uint32Array(256).map((_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ CRC32C_POLY_REFLECTED : c >>> 1;
  return c >>> 0;
});

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
  private value = 0xffffffff;
  update(piece: Uint8Array): void {
    let c = this.value;
    for (let i = 0; i < piece.length; i++) c = CRC32C_TABLE[(c ^ piece[i]!) & 0xff]! ^ (c >>> 8);
    this.value = c >>> 0;
  }
  digest(): Buffer {
    const out = Buffer.alloc(4);
    out.writeUInt32BE((this.value ^ 0xffffffff) >>> 0);
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
  const expectedBytes = { CRC32: 4, CRC32C: 4, CRC64NVME: 8, SHA1: 20, SHA256: 32 }[algorithm];
  const bytes = Buffer.from(valueBase64, 'base64');
  if (bytes.length !== expectedBytes || bytes.toString('base64') !== valueBase64) {
    throw new ObjectError('InvalidRequest', `x-amz-checksum-${algorithm.toLowerCase()} "${valueBase64.slice(0, 80)}" is not the base64 of a ${expectedBytes}-byte ${algorithm}`);
  }
}
