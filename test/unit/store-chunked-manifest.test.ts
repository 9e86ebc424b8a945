/** The chunk manifest and its binary format: round trips, and every kind of damage is CORRUPT. */
import { crc32 } from 'node:zlib';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ChunkManifest, ChunkManifestBuilder } from '../../src/store/chunked/manifest.js';
import {
  decodeManifest,
  encodeManifest,
  MANIFEST_CHECKSUM_BYTES,
  MANIFEST_ENTRIES_MAX,
  MANIFEST_HEADER_BYTES,
} from '../../src/store/chunked/manifest-format.js';
import { expectCode } from '../support/expect-error.js';

const KiB = 1024;

function hashOf(i: number, hashBytes: number): string {
  return Buffer.alloc(hashBytes, i % 251).toString('hex').slice(0, -8) + (i >>> 0).toString(16).padStart(8, '0');
}

/** A manifest with chunk i stored when stored(i), under hashOf(i). */
function build(fileSizeBytes: number, chunkSizeBytes: number, hashBytes: number, stored: (i: number) => boolean): ChunkManifest {
  const builder = new ChunkManifestBuilder(chunkSizeBytes, fileSizeBytes, hashBytes);
  for (let i = 0; i < builder.entryCount; i++) if (stored(i)) builder.setStored(i, hashOf(i, hashBytes));
  return builder.finish();
}

function expectSameManifest(actual: ChunkManifest, expected: ChunkManifest): void {
  expect([actual.chunkSizeBytes, actual.fileSizeBytes, actual.hashBytes, actual.entryCount, actual.storedCount]).toEqual([
    expected.chunkSizeBytes,
    expected.fileSizeBytes,
    expected.hashBytes,
    expected.entryCount,
    expected.storedCount,
  ]);
  for (let i = 0; i < expected.entryCount; i++) expect(actual.hashAt(i), `entry ${i}`).toBe(expected.hashAt(i));
}

/** Rewrites the checksum so a damaged field is found by the field checks, not the checksum. */
function resealed(bytes: Buffer): Buffer {
  const at = bytes.length - MANIFEST_CHECKSUM_BYTES;
  bytes.writeUInt32LE(crc32(bytes.subarray(0, at)), at);
  return bytes;
}

describe('chunk manifest', () => {
  it('gives each entry its hash or zero, and counts stored bytes with a short last chunk', () => {
    const m = build(10 * 64 * KiB + 100, 64 * KiB, 32, (i) => i % 4 !== 1);
    expect(m.entryCount).toBe(11);
    expect(m.storedCount).toBe(8);
    expect(m.hashAt(0)).toBe(hashOf(0, 32));
    expect(m.hashAt(1)).toBeUndefined();
    expect(m.isZero(5)).toBe(true);
    expect(m.isZero(4)).toBe(false);
    expect(m.hashAt(10)).toBe(hashOf(10, 32));
    expect(m.chunkLengthBytes(10)).toBe(100);
    expect(m.storedBytes()).toBe(7 * 64 * KiB + 100);
    expect([...m.storedHashes()]).toEqual([0, 2, 3, 4, 6, 7, 8, 10].map((i) => hashOf(i, 32)));
  });

  it('round-trips through its encoding (random shapes)', () => {
    fc.assert(
      fc.property(
        fc.nat(300 * 4 * KiB),
        fc.constantFrom(512, 4 * KiB, 64 * KiB),
        fc.constantFrom(16, 32),
        fc.integer({ min: 0, max: 2 ** 31 }),
        (fileSizeBytes, chunkSizeBytes, hashBytes, seed) => {
          const m = build(fileSizeBytes, chunkSizeBytes, hashBytes, (i) => ((i * 2654435761 + seed) >>> 0) % 5 < 3);
          const encoded = encodeManifest(m);
          expect(encoded.length).toBe(MANIFEST_HEADER_BYTES + Math.ceil(m.entryCount / 8) + m.storedCount * hashBytes + MANIFEST_CHECKSUM_BYTES);
          expectSameManifest(decodeManifest(encoded, 'test'), m);
        },
      ),
      { numRuns: 60, seed: 1212 },
    );
  });

  it('encodes an empty file and an all-zero file in a header, a bitmap and a checksum', () => {
    for (const m of [build(0, 64 * KiB, 32, () => true), build(1024 * 64 * KiB, 64 * KiB, 32, () => false)]) {
      const encoded = encodeManifest(m);
      expect(encoded.length).toBe(MANIFEST_HEADER_BYTES + m.entryCount / 8 + MANIFEST_CHECKSUM_BYTES);
      expectSameManifest(decodeManifest(encoded, 'test'), m);
    }
  });

  it('costs a bitmap bit per zero chunk and the hash per stored one: 1 TiB of 64 KiB chunks, sparse', () => {
    const entries = 16 * 1024 * 1024;
    const m = build(entries * 64 * KiB, 64 * KiB, 32, (i) => i % 4096 === 0);
    expect(encodeManifest(m).length).toBe(MANIFEST_HEADER_BYTES + entries / 8 + 4096 * 32 + MANIFEST_CHECKSUM_BYTES);
    expect(m.hashAt(entries - 4096)).toBe(hashOf(entries - 4096, 32));
  });

  it('reports every kind of damage as CORRUPT naming it (or UNSUPPORTED for a newer version)', async () => {
    const good = encodeManifest(build(20 * 4 * KiB + 1, 4 * KiB, 32, (i) => i % 2 === 0));
    const decode = async (bytes: Buffer): Promise<unknown> => decodeManifest(bytes, 'layer x');
    const damaged = (change: (b: Buffer) => void, reseal = true): Buffer => {
      const copy = Buffer.from(good);
      change(copy);
      return reseal ? resealed(copy) : copy;
    };
    await expectCode(decode(good.subarray(0, 20)), 'CORRUPT', /layer x.*shorter than/);
    await expectCode(decode(damaged((b) => b.write('XTRATACM', 0, 'latin1'))), 'CORRUPT', /magic/);
    await expectCode(decode(damaged((b) => (b[MANIFEST_HEADER_BYTES + 3] = b[MANIFEST_HEADER_BYTES + 3]! ^ 1), false)), 'CORRUPT', /checksum/);
    await expectCode(decode(good.subarray(0, good.length - 1)), 'CORRUPT', /checksum/);
    await expectCode(decode(damaged((b) => b.writeUInt32LE(2, 8))), 'UNSUPPORTED', /version 2/);
    await expectCode(decode(damaged((b) => b.writeUInt32LE(0, 12))), 'CORRUPT', /hash length 0/);
    await expectCode(decode(damaged((b) => b.writeUInt32LE(65, 12))), 'CORRUPT', /hash length 65/);
    await expectCode(decode(damaged((b) => b.writeUInt32LE(3 * KiB, 16))), 'CORRUPT', /chunk size 3072/);
    await expectCode(decode(damaged((b) => b.writeUInt32LE(256, 16))), 'CORRUPT', /chunk size 256/);
    await expectCode(decode(damaged((b) => b.writeUInt32LE(1, 20))), 'CORRUPT', /flags/);
    await expectCode(decode(damaged((b) => b.writeBigUInt64LE(2n ** 63n, 24))), 'CORRUPT', /file size/);
    await expectCode(decode(damaged((b) => b.writeBigUInt64LE(BigInt(MANIFEST_ENTRIES_MAX) * 4096n + 1n, 24))), 'CORRUPT', /more than/);
    await expectCode(decode(damaged((b) => b.writeBigUInt64LE(50n * 4096n, 24))), 'CORRUPT', /bytes where its header says/);
    await expectCode(decode(damaged((b) => b.writeBigUInt64LE(22n, 32))), 'CORRUPT', /22 stored chunks in a file of 21/);
    await expectCode(decode(damaged((b) => b.writeBigUInt64LE(10n, 32))), 'CORRUPT', /bytes where its header says/);
    // 21 chunks: the bitmap's third byte holds chunks 16..20; bit 5 would be chunk 21.
    await expectCode(decode(damaged((b) => (b[MANIFEST_HEADER_BYTES + 2] = b[MANIFEST_HEADER_BYTES + 2]! | 0x20))), 'CORRUPT', /past the last chunk/);
    // One stored chunk moved to another (count unchanged) still decodes; one more is a mismatch.
    await expectCode(decode(damaged((b) => (b[MANIFEST_HEADER_BYTES] = b[MANIFEST_HEADER_BYTES]! | 0x02))), 'CORRUPT', /bitmap marks 12 stored chunks where the header says 11/);
    // Random damage anywhere: never a crash, never a silent success.
    fc.assert(
      fc.property(fc.nat(good.length - 1), fc.integer({ min: 1, max: 255 }), (at, xor) => {
        const copy = Buffer.from(good);
        copy[at] = copy[at]! ^ xor;
        let code: string | undefined;
        try {
          decodeManifest(copy, 'layer x');
        } catch (err) {
          code = (err as { code?: string }).code;
        }
        expect(['CORRUPT', 'UNSUPPORTED']).toContain(code);
      }),
      { numRuns: 200, seed: 12 },
    );
  });

  it('refuses a hash unlike the repository\'s others while building', async () => {
    const builder = new ChunkManifestBuilder(4 * KiB, 8 * KiB, 16);
    await expectCode(Promise.resolve().then(() => builder.setStored(0, 'ab')), 'CORRUPT', /32 lower-case hex/);
    await expectCode(Promise.resolve().then(() => builder.setStored(0, 'Z'.repeat(32))), 'CORRUPT', /hex/);
  });
});
