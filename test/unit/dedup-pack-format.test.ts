/** The pack format: round trips, and every kind of damage is CORRUPT naming the pack (never a crash). */
import { randomBytes } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { describe, expect, it, vi } from 'vitest';
import { isStorageError } from '../../src/core/errors.js';
import { XXH128_HASHER } from '../../src/store/dedup/chunk-hasher.js';
import {
  PACK_HEADER_BYTES,
  PACK_TRAILER_BYTES,
  PACK_VERSION,
  PackBuilder,
  chunkBytesIn,
  decodePack,
  newPackId,
  packCreatedAtMs,
} from '../../src/store/dedup/pack-format.js';
import { SeededRandom } from '../../src/store/seeded-random.js';
import { expectCode } from '../support/expect-error.js';

const DIGEST_BYTES = XXH128_HASHER.digestBytes;
const ENTRY_BYTES = DIGEST_BYTES + 12;

function buildPack(sizes: number[], version = PACK_VERSION): { pack: Uint8Array; chunks: Uint8Array[] } {
  const builder = new PackBuilder('xxh128', DIGEST_BYTES, version);
  const chunks = sizes.map((size) => new Uint8Array(randomBytes(size)));
  for (const chunk of chunks) builder.add(XXH128_HASHER.hash(chunk), chunk);
  expect(builder.chunkCount).toBe(chunks.length);
  const pack = builder.finish();
  expect(pack.length).toBe(builder.sizeBytes);
  return { pack, chunks };
}

/** The pack with its checksum recomputed: damage that only the structural checks can catch. */
function resign(pack: Uint8Array): Uint8Array {
  const view = Buffer.from(pack.buffer, pack.byteOffset, pack.length);
  const trailer = pack.length - PACK_TRAILER_BYTES;
  const indexOffset = Number(view.readBigUInt64LE(trailer));
  view.writeUInt32LE(crc32(pack.subarray(indexOffset, trailer + 12), crc32(pack.subarray(0, PACK_HEADER_BYTES))), trailer + 12);
  return pack;
}

function edit(pack: Uint8Array, change: (view: Buffer, trailer: number) => void): Uint8Array {
  const copy = Uint8Array.from(pack);
  change(Buffer.from(copy.buffer), copy.length - PACK_TRAILER_BYTES);
  return copy;
}

const corrupt = (pack: Uint8Array, message: RegExp) =>
  expectCode(
    (async () => decodePack('p1', pack))(),
    'CORRUPT',
    new RegExp(`pack p1 is damaged: .*${message.source}`),
  );

describe('pack format', () => {
  it('round trips (version 1): every chunk where the index says, back to back', () => {
    const { pack, chunks } = buildPack([65536, 1, 4096, 65536], 1);
    const index = decodePack('p1', pack);
    expect([index.version, index.algorithm]).toEqual([1, 'xxh128']);
    expect(index.entries.map((entry) => entry.hash)).toEqual(chunks.map((chunk) => XXH128_HASHER.hash(chunk)));
    for (const [i, entry] of index.entries.entries()) {
      expect(pack.subarray(entry.offsetBytes, entry.offsetBytes + entry.lengthBytes)).toEqual(chunks[i]);
      expect(chunkBytesIn(pack, 1, entry.offsetBytes, entry.lengthBytes)).toEqual(chunks[i]);
    }
    expect(index.entries[0]!.offsetBytes).toBe(PACK_HEADER_BYTES);
    expect(pack.length).toBe(PACK_HEADER_BYTES + 65536 * 2 + 4097 + 4 * ENTRY_BYTES + PACK_TRAILER_BYTES);
    expect(decodePack('empty', buildPack([], 1).pack).entries).toEqual([]);
  });

  it('round trips (version 2): each chunk as 4 KiB blocks with a 4-byte checksum after each', () => {
    const { pack, chunks } = buildPack([65536, 1, 4096, 65536]);
    const index = decodePack('p1', pack);
    expect(index.version).toBe(2);
    for (const [i, entry] of index.entries.entries()) {
      expect(chunkBytesIn(pack, 2, entry.offsetBytes, entry.lengthBytes)).toEqual(chunks[i]);
    }
    expect(index.entries.map((entry) => entry.offsetBytes)).toEqual([16, 16 + 65536 + 64, 16 + 65536 + 64 + 5, 16 + 65536 + 64 + 5 + 4100]);
    expect(pack.length).toBe(PACK_HEADER_BYTES + (65536 + 64) * 2 + 5 + 4100 + 4 * ENTRY_BYTES + PACK_TRAILER_BYTES);
    expect(chunkBytesIn(pack, 2, pack.length - 100, 65536)).toBeUndefined();
  });

  it('a pack finished into a reused buffer that held other bytes is the same pack, at the buffer\'s start', () => {
    for (const version of [1, PACK_VERSION]) {
      const chunks = [5000, 4096, 1, 70_000].map((size) => new Uint8Array(randomBytes(size)));
      const fresh = new PackBuilder('xxh128', DIGEST_BYTES, version);
      const reused = new PackBuilder('xxh128', DIGEST_BYTES, version);
      for (const chunk of chunks) {
        fresh.add(XXH128_HASHER.hash(chunk), chunk);
        reused.add(XXH128_HASHER.hash(chunk), chunk);
      }
      const dirty = new Uint8Array(randomBytes(reused.sizeBytes + 9000));
      const pack = reused.finish(dirty);
      expect(pack.buffer).toBe(dirty.buffer);
      expect(pack.byteOffset).toBe(0);
      expect(Buffer.from(pack).equals(Buffer.from(fresh.finish()))).toBe(true);
      expect(decodePack('p', pack).entries.map((entry) => chunkBytesIn(pack, version, entry.offsetBytes, entry.lengthBytes))).toEqual(chunks);
    }
  });

  it('pack ids carry their creation time', () => {
    const id = newPackId(1_700_000_000_123);
    expect(packCreatedAtMs(id)).toBe(1_700_000_000_123);
    expect(newPackId(5)).not.toBe(newPackId(5));
    expect(packCreatedAtMs('not-a-pack')).toBeUndefined();
  });

  it('pack ids made in one millisecond sort in the order they were made, and a restarted process makes other ids', async () => {
    const sameMs = Array.from({ length: 1000 }, () => newPackId(1_700_000_000_123));
    expect([...sameMs].sort()).toEqual(sameMs);
    const later = newPackId(1_700_000_000_124);
    expect([...sameMs, later].sort().at(-1)).toBe(later);
    // A fresh copy of the module: its sequence starts again, as in another process or after a restart.
    vi.resetModules();
    const restarted = (await import('../../src/store/dedup/pack-format.js')) as typeof import('../../src/store/dedup/pack-format.js');
    const again = Array.from({ length: 1000 }, () => restarted.newPackId(1_700_000_000_123));
    expect([...again].sort()).toEqual(again);
    expect(new Set([...sameMs, ...again]).size).toBe(2000);
    expect(again.every((id) => restarted.packCreatedAtMs(id) === 1_700_000_000_123)).toBe(true);
  });

  it('names each kind of damage (the structure is the same in both versions: shown on version 1)', async () => {
    const { pack } = buildPack([100, 200, 300], 1);
    const indexOffset = PACK_HEADER_BYTES + 600;
    await corrupt(pack.subarray(0, 30), /shorter than a header and a trailer/);
    await corrupt(pack.subarray(0, pack.length - 1), /trailer has no pack magic/);
    await corrupt(edit(pack, (v) => v.write('XTRATAPK', 0, 'latin1')), /header has no pack magic/);
    await corrupt(edit(pack, (v, t) => v.writeBigUInt64LE(BigInt(pack.length), t)), /index offset/);
    await corrupt(edit(pack, (v, t) => v.writeBigUInt64LE(3n, t)), /index offset/);
    await corrupt(edit(pack, (v) => (v[indexOffset + 3]! ^= 1)), /fails its checksum/);
    await corrupt(edit(pack, (v) => (v[5]! ^= 1)), /header has no pack magic/);
    await corrupt(edit(pack, (v) => (v[13]! ^= 1)), /fails its checksum/);
    await corrupt(edit(pack, (v, t) => (v[t + 8]! ^= 1)), /fails its checksum/);
    // Damage that keeps the checksum right (a writer's bug): the structure is still checked.
    await corrupt(resign(edit(pack, (v) => v.writeUInt8(9, 10))), /unknown hash algorithm code 9/);
    await corrupt(resign(edit(pack, (v) => v.writeUInt8(0, 11))), /digest length is 0/);
    await corrupt(resign(edit(pack, (v, t) => v.writeUInt32LE(4, t + 8))), /4 index entries/);
    await corrupt(resign(edit(pack, (v) => v.writeBigUInt64LE(BigInt(PACK_HEADER_BYTES + 1), indexOffset + DIGEST_BYTES))), /chunk 0 .* starts at 17, not at 16/);
    await corrupt(resign(edit(pack, (v) => v.writeUInt32LE(100_000, indexOffset + ENTRY_BYTES * 2 + DIGEST_BYTES + 8))), /runs past the chunks' end/);
    await corrupt(resign(edit(pack, (v) => v.writeUInt32LE(299, indexOffset + ENTRY_BYTES * 2 + DIGEST_BYTES + 8))), /the chunks end at 615, but the index starts at 616/);
    await expectCode((async () => decodePack('p1', resign(edit(pack, (v) => v.writeUInt16LE(7, 8)))))(), 'UNSUPPORTED', /version 7/);
  });

  it('any flipped byte outside the chunks, and any cut, is CORRUPT (seeded random)', () => {
    const random = new SeededRandom(12);
    const { pack } = buildPack([5000, 3000, 700]);
    const chunksEnd = PACK_HEADER_BYTES + 8700 + 4 * (2 + 1 + 1);
    for (let i = 0; i < 400; i++) {
      const at = random.int(pack.length);
      const damaged = i % 2 === 0 ? edit(pack, (v) => (v[at]! ^= 1 << random.int(8))) : pack.subarray(0, at);
      let outcome: string;
      try {
        decodePack('p1', damaged);
        outcome = 'decoded';
      } catch (err) {
        outcome = isStorageError(err, 'CORRUPT') ? 'corrupt' : `threw ${String(err)}`;
      }
      // A flip in the chunks' bytes is the chunk hashes' and block checksums' to catch (on read); everything else is the format's.
      const expected = i % 2 === 0 && at >= PACK_HEADER_BYTES && at < chunksEnd ? 'decoded' : 'corrupt';
      expect(outcome, `${i % 2 === 0 ? 'flip' : 'cut'} at ${at}`).toBe(expected);
    }
  });
});
