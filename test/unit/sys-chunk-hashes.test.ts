/** The native hashes chunks are named by, against published test vectors. */
import { describe, expect, it } from 'vitest';
import { blake3Hex, isBlake3Available } from '../../src/sys/blake3.js';
import { isXxhashAvailable, xxh128Hex } from '../../src/sys/xxhash.js';

const text = (s: string) => new TextEncoder().encode(s);

describe('xxh128 through libxxhash', () => {
  it('matches the reference digests (canonical, big-endian hex)', () => {
    expect(isXxhashAvailable()).toBe(true);
    expect(xxh128Hex(new Uint8Array(0))).toBe('99aa06d3014798d86001c324468d497f');
    expect(xxh128Hex(text('hello'))).toMatch(/^[0-9a-f]{32}$/);
    // A view into a larger buffer hashes only its own bytes.
    const big = text('xxhelloxx');
    expect(xxh128Hex(big.subarray(2, 7))).toBe(xxh128Hex(text('hello')));
  });
});

describe.skipIf(!isBlake3Available())('BLAKE3 through @napi-rs/blake-hash', () => {
  it('matches the reference digests', () => {
    expect(blake3Hex(new Uint8Array(0))).toBe('af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262');
    expect(blake3Hex(text('abc'))).toBe('6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85');
    const big = text('xxabcxx');
    expect(blake3Hex(big.subarray(2, 5))).toBe(blake3Hex(text('abc')));
  });
});
