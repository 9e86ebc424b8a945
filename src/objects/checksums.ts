/**
 * The checksums S3 clients send (x-amz-checksum-*): CRC32, CRC32C, CRC64NVME, SHA1, SHA256, and
 * the MD5 behind ETags and Content-MD5. Each is computed incrementally while a body streams through
 * (`update` per piece) and reported as S3 spells it: base64 of the big-endian digest. The one
 * implementation: the S3 endpoint's payload checks use it too. The CRCs come from sys/crc.ts
 * (CRC32 and CRC32C native, CRC64NVME slice-by-8 in JavaScript), the rest from node:crypto.
 */
import { createHash, type Hash } from 'node:crypto';
import { Crc64Nvme, crc32, crc32c } from '../sys/crc.js';
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
