import { randomBytes } from 'node:crypto';
import { crc32 as zlibCrc32 } from 'node:zlib';
import { afterEach, describe, expect, it } from 'vitest';
import { crc32, crc32c, crc32cByTable, isNativeCrcLoaded, useFallbackCrcsForTests } from '../../src/sys/crc.js';

/** CRC-32C a bit at a time, from its definition (reflected 0x82F63B78, init and xorout all ones). */
function crc32cByBits(data: Uint8Array, crc = 0): number {
  let c = ~crc >>> 0;
  for (const byte of data) {
    c ^= byte;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  }
  return ~c >>> 0;
}

const LENGTHS = [0, 1, 7, 8, 9, 4095, 4096, 4097, 65536, 1 << 20];

describe('sys/crc', () => {
  afterEach(() => useFallbackCrcsForTests(false));

  it('loads the native package here (a dependency), so the daemon does not run on the slow fallbacks', () => {
    expect(isNativeCrcLoaded()).toBe(true);
  });

  for (const fallback of [false, true]) {
    describe(fallback ? 'fallbacks (zlib, the table)' : 'the package', () => {
      it('gives zlib\'s CRC-32 for every length, seed and a string', () => {
        useFallbackCrcsForTests(fallback);
        for (const length of LENGTHS) {
          const data = randomBytes(length);
          expect(crc32(data)).toBe(zlibCrc32(data));
          expect(crc32(data, 0x9e3779b1)).toBe(zlibCrc32(data, 0x9e3779b1));
          // A view that does not start at its buffer's start.
          expect(crc32(data.subarray(length >> 1))).toBe(zlibCrc32(data.subarray(length >> 1)));
        }
        expect(crc32('0123456789abcdef')).toBe(zlibCrc32('0123456789abcdef'));
        expect(crc32('123456789')).toBe(0xcbf43926);
      });

      it('gives CRC-32C by its definition, chains from a previous value, and reads a view of shared memory', () => {
        useFallbackCrcsForTests(fallback);
        expect(crc32c(Buffer.from('123456789'))).toBe(0xe3069283);
        for (const length of LENGTHS.filter((n) => n <= 65536)) {
          const data = randomBytes(length);
          expect(crc32c(data)).toBe(crc32cByBits(data));
          const cut = length >> 2;
          expect(crc32c(data.subarray(cut), crc32c(data.subarray(0, cut)))).toBe(crc32c(data));
        }
        const shared = new Uint8Array(new SharedArrayBuffer(4096));
        shared.set(randomBytes(4096));
        expect(crc32c(shared)).toBe(crc32cByBits(shared));
        expect(crc32(shared)).toBe(zlibCrc32(Buffer.from(shared)));
      });
    });
  }

  it('table and package agree on a MiB', () => {
    const data = randomBytes(1 << 20);
    expect(crc32c(data)).toBe(crc32cByTable(data));
  });
});
