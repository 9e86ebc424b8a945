/**
 * The checksums (src/objects/checksums.ts, also the S3 endpoint's payload checks): the catalogue check values of "123456789", the CRC tables against
 * a bit-at-a-time reference written here from the polynomials, and incremental feeding.
 */
import { describe, expect, it } from 'vitest';
import { runningChecksum, crc64nvme, CHECKSUM_ALGORITHMS } from '../../src/objects/checksums.js';
import { crc32c } from '../../src/sys/crc.js';
import { SeededRandom } from '../../src/store/seeded-random.js';

const CHECK_INPUT = Buffer.from('123456789');

function hexOf(base64: string): string {
  return Buffer.from(base64, 'base64').toString('hex');
}

/** Bit-at-a-time reflected CRC-32C, the definition. */
function crc32cReference(data: Uint8Array): number {
  let c = 0xffffffff;
  for (const byte of data) {
    c ^= byte;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  }
  return ~c >>> 0;
}

/** Bit-at-a-time reflected CRC-64/NVME (polynomial 0xAD93D23594C935A9 reversed), the definition. */
function crc64nvmeReference(data: Uint8Array): bigint {
  const mask = (1n << 64n) - 1n;
  const poly = 0x9a6c9329ac4bc9b5n;
  let c = mask;
  for (const byte of data) {
    c ^= BigInt(byte);
    for (let k = 0; k < 8; k++) c = c & 1n ? (c >> 1n) ^ poly : c >> 1n;
  }
  return ~c & mask;
}

describe('check values of "123456789"', () => {
  it.each([
    ['CRC32', 'cbf43926'],
    ['CRC32C', 'e3069283'],
    ['CRC64NVME', 'ae8b14860a799888'],
    ['SHA1', 'f7c3bc1d808e04732adf679965ccc34ca7ae3441'],
    ['SHA256', '15e2b0d3c33891ebb0f1ef609ec419420c20e320ce94c65fbc8c3312448eb225'],
  ] as const)('%s = %s', (algorithm, hex) => {
    const checksum = runningChecksum(algorithm);
    checksum.update(CHECK_INPUT);
    expect(hexOf(checksum.digest().toString('base64'))).toBe(hex);
  });

  it('the values S3 clients send: crc32 of "hello stream" is gtnkmQ==', () => {
    const checksum = runningChecksum('CRC32');
    checksum.update(Buffer.from('hello stream'));
    expect(checksum.digest().toString('base64')).toBe('gtnkmQ==');
  });
});

describe('CRC tables', () => {
  it('agree with the bit-at-a-time definitions on every length 0..300 and on 64 KiB', () => {
    const random = new SeededRandom(14);
    const inputs = [...Array.from({ length: 301 }, (_, n) => random.fill(Buffer.alloc(n))), random.fill(Buffer.alloc(65536))];
    for (const data of inputs) {
      expect(crc32c(data)).toBe(crc32cReference(data));
      expect(crc64nvme(data)).toBe(crc64nvmeReference(data));
    }
  });

  it('give the same digest however the bytes are split', () => {
    const random = new SeededRandom(15);
    const data = random.fill(Buffer.alloc(10_000));
    for (const algorithm of CHECKSUM_ALGORITHMS) {
      const whole = runningChecksum(algorithm);
      whole.update(data);
      const pieces = runningChecksum(algorithm);
      for (let at = 0; at < data.length; ) {
        const size = 1 + random.int(37);
        pieces.update(data.subarray(at, at + size));
        at += size;
      }
      expect(pieces.digest().toString('base64')).toBe(whole.digest().toString('base64'));
    }
  });
});
