/**
 * The pack target counts chunk bytes, with 1/64 of slack: a 4 MiB batch of 64 KiB chunks (a seal
 * batch; an S3 PUT's step, with its ~70-byte marker chunk) is one pack, where the pack's own
 * metadata (or the marker) once pushed it just over the target and every batch wrote a second
 * pack of a single chunk (two puts, two fsyncs, two pack records).
 */
import { describe, expect, it } from 'vitest';
import { MemoryCatalogStore } from '../../src/meta/memory-catalog.js';
import { DedupChunkRepository, PACK_TARGET_BYTES_DEFAULT } from '../../src/store/dedup/dedup-repository.js';
import { PACK_KEY_PREFIX } from '../../src/store/dedup/pack-format.js';
import { MemoryChunkStore } from '../../src/store/memory-chunk-store.js';
import { SeededRandom } from '../../src/store/seeded-random.js';

const KiB = 1024;

describe('DedupChunkRepository pack target', () => {
  it('a batch of chunks totalling the target, and a marker-sized chunk, is one pack; chunks past the slack (1/64) start a second', async () => {
    const store = new MemoryChunkStore();
    const repo = await DedupChunkRepository.open({ chunkStore: store, catalog: new MemoryCatalogStore(), readCacheBytes: 0 });
    const random = new SeededRandom(7);
    const batch = Array.from({ length: PACK_TARGET_BYTES_DEFAULT / (64 * KiB) }, () => random.fill(new Uint8Array(64 * KiB)));
    await repo.addReferences([...batch, random.fill(new Uint8Array(70))]);
    const packs = (await store.list(PACK_KEY_PREFIX)).keys;
    expect(packs.length).toBe(1);
    // The pack is the chunks plus its metadata: over the target by that much only.
    const packBytes = (await store.get(packs[0]!))!.length;
    expect(packBytes).toBeGreaterThan(PACK_TARGET_BYTES_DEFAULT);
    expect(packBytes).toBeLessThan(PACK_TARGET_BYTES_DEFAULT * 1.01);
    // 66 chunks of 64 KiB: 65 fit the target and its slack, the 66th starts another pack.
    await repo.addReferences(Array.from({ length: 66 }, () => random.fill(new Uint8Array(64 * KiB))));
    expect((await store.list(PACK_KEY_PREFIX)).keys.length).toBe(3);
    const usage = await repo.usage();
    expect(usage.packCount).toBe(3);
  });
});
