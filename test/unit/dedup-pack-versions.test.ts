/**
 * Pack format versions and the partial-read path of DedupChunkRepository: packs of version 1 (no
 * block checksums, written by older Strata) still read whole and by range beside version 2 packs,
 * GC rewrites them as version 2, a remembered location whose pack GC deleted falls back to the
 * index, and a damaged block checksum (bytes intact) fails partial reads, is found by scrub and is
 * repaired by rewriting the pack. Real repository over memory stores.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { MemoryCatalogStore } from '../../src/meta/memory-catalog.js';
import { BLAKE3_HASHER, XXH128_HASHER } from '../../src/store/dedup/chunk-hasher.js';
import { DedupChunkRepository } from '../../src/store/dedup/dedup-repository.js';
import { decodePack, packKey } from '../../src/store/dedup/pack-format.js';
import type { ReferenceSource } from '../../src/store/dedup/scrub.js';
import { MemoryChunkStore } from '../../src/store/memory-chunk-store.js';
import { isBlake3Available } from '../../src/sys/blake3.js';
import { expectSameBytes } from '../support/bytes.js';
import { chunkLocation, packKeys } from '../support/dedup.js';
import { expectCode } from '../support/expect-error.js';

const KIB = 1024;
const GRACE_MS = 60_000;
const hasher = isBlake3Available() ? BLAKE3_HASHER : XXH128_HASHER;
const chunk = (sizeBytes = 64 * KIB) => new Uint8Array(randomBytes(sizeBytes));

async function packVersions(store: MemoryChunkStore): Promise<number[]> {
  const versions: number[] = [];
  for (const key of await packKeys(store)) versions.push(decodePack(key, (await store.get(key))!).version);
  return versions.sort();
}

function holding(hashes: string[]): ReferenceSource {
  return async function* () {
    yield { name: 'test-holder', hashes };
  };
}

describe('pack versions and partial reads', () => {
  it('version 1 packs read whole and by range beside version 2 packs; GC rewrites them as version 2; scrub finds both clean', async () => {
    const chunkStore = new MemoryChunkStore();
    const catalog = new MemoryCatalogStore();
    let nowMs = 1_000_000_000;
    const options = { chunkStore, catalog, hasher, packTargetBytes: 256 * KIB, nowMs: () => nowMs };
    const old = await DedupChunkRepository.open({ ...options, packVersion: 1 });
    const oldChunks = [chunk(), chunk(), chunk(1000)];
    const oldNames = await old.addReferences(oldChunks);
    expect(await packVersions(chunkStore)).toEqual([1]);

    const repo = await DedupChunkRepository.open({ ...options, readCacheBytes: 0 });
    const newChunks = [chunk(), chunk(5000)];
    const newNames = await repo.addReferences(newChunks);
    expect(await packVersions(chunkStore)).toEqual([1, 2]);
    const all = [...oldChunks, ...newChunks];
    const names = [...oldNames, ...newNames];
    const readAll = async (reader: DedupChunkRepository) => {
      for (const [i, name] of names.entries()) {
        expectSameBytes(await reader.read(name), all[i]!);
        expectSameBytes(await reader.readRange(name, 100, 900), all[i]!.subarray(100, 1000));
        if (all[i]!.length > 8 * KIB) expectSameBytes(await reader.readRange(name, 4000, 4200), all[i]!.subarray(4000, 8200));
      }
    };
    await readAll(repo);
    const scrub = await repo.scrub({ references: holding(names), nowMs });
    expect(scrub.problems).toEqual([]);

    // Every chunk dropped but the old ones: GC rewrites the mostly dead packs; the old chunks move into version 2 packs.
    await repo.dropReferences(newNames);
    nowMs += 2 * GRACE_MS;
    const before = await chunkLocation(catalog, oldNames[0]!);
    await repo.gc({ graceMs: GRACE_MS, nowMs, liveShareMin: 1 });
    const after = await chunkLocation(catalog, oldNames[0]!);
    expect(after.pack).not.toBe(before.pack);
    expect(await packVersions(chunkStore)).toEqual([2]);
    // The repository remembered the old location: its pack is gone, so it asks the index and reads right.
    for (const [i, name] of oldNames.entries()) {
      expectSameBytes(await repo.readRange(name, 10, 500), oldChunks[i]!.subarray(10, 510));
      expectSameBytes(await repo.read(name), oldChunks[i]!);
    }
    expect((await repo.scrub({ references: holding(oldNames), nowMs })).problems).toEqual([]);
  });

  it('a damaged block checksum (the bytes intact): partial reads of that block are CORRUPT, whole reads are right; scrub reports the pack and a repair rewrites it', async () => {
    const chunkStore = new MemoryChunkStore();
    const catalog = new MemoryCatalogStore();
    const nowMs = 1_000_000_000;
    const repo = await DedupChunkRepository.open({ chunkStore, catalog, hasher, readCacheBytes: 0, nowMs: () => nowMs });
    const data = chunk();
    const names = await repo.addReferences([data, chunk()]);
    const name = names[0];
    const at = await chunkLocation(catalog, name!);
    const pack = (await chunkStore.get(packKey(at.pack)))!;
    // Block 3's checksum: after 3 stored blocks of 4100 bytes and block 3's 4096 bytes.
    pack[at.offsetBytes + 3 * 4100 + 4096 + 1]! ^= 0x01;
    await chunkStore.put(packKey(at.pack), pack);

    expectSameBytes(await repo.read(name!), data);
    expectSameBytes(await repo.readRange(name!, 2 * 4096, 4096), data.subarray(2 * 4096, 3 * 4096));
    await expectCode(repo.readRange(name!, 3 * 4096, 10), 'CORRUPT', /block 3 fails its checksum/);
    await expectCode(repo.readRange(name!, 0, 64 * KIB), 'CORRUPT', /block 3/);

    const found = await repo.scrub({ references: holding(names), nowMs });
    expect(found.problems.map((problem) => problem.kind)).toContain('pack-damaged');
    expect(found.problems.find((problem) => problem.kind === 'pack-damaged')?.message).toMatch(/block 3 fails its checksum/);
    await repo.scrub({ references: holding(names), nowMs, repair: true });
    expect((await chunkLocation(catalog, name!)).pack).not.toBe(at.pack);
    expectSameBytes(await repo.readRange(name!, 3 * 4096, 4096), data.subarray(3 * 4096, 4 * 4096));
    expect((await repo.scrub({ references: holding(names), nowMs })).problems).toEqual([]);
  });
});
