/**
 * TieredChunkStore reads of cold objects: ranged (only the range, large ones in parallel parts),
 * promotion of randomly read objects into the bounded cache and none for sequential reads.
 */
import { describe, expect, it } from 'vitest';
import { digestOf, objectBytes, openTierFixture, TEST_COOLING_MS, type TierFixture } from '../support/tier.js';

const KiB = 1024;
const OBJECT_BYTES = 64 * KiB;
const READ_BYTES = 4 * KiB;

/** A fixture with `count` objects `o0`... on the cold tier only. */
async function coldObjects(count: number, options: Parameters<typeof openTierFixture>[0] = {}): Promise<TierFixture> {
  const fixture = await openTierFixture({ readPattern: { sequentialGapBytes: 2 * READ_BYTES }, ...options });
  for (let i = 0; i < count; i++) await fixture.store.put(`o${i}`, objectBytes(i, OBJECT_BYTES));
  await fixture.store.migrateCold({ nowMs: TEST_COOLING_MS });
  expect((await fixture.hot.inner.list('')).keys).toEqual([]);
  return fixture;
}

/** Two reads far apart in one object: a random pattern. */
async function readAtRandom(fixture: TierFixture, key: string): Promise<void> {
  await fixture.store.getRange(key, 48 * KiB, READ_BYTES);
  await fixture.store.getRange(key, 0, READ_BYTES);
}

describe('TieredChunkStore cold reads', () => {
  it('fetch only the range; a large range in parts, a bounded number at once', async () => {
    const fixture = await coldObjects(1, { coldPartSizeBytes: 8 * KiB, coldPartsInFlightMax: 3 });
    const { store, cold } = fixture;
    const data = objectBytes(0, OBJECT_BYTES);
    const getsBefore = cold.calls.get;
    cold.inFlightMax = 0;
    expect(digestOf(await store.getRange('o0', 100, 50 * KiB))).toEqual(digestOf(data.subarray(100, 100 + 50 * KiB)));
    expect(cold.calls.get).toBe(getsBefore);
    expect(cold.calls.getRange).toBe(Math.ceil((50 * KiB) / (8 * KiB)));
    expect(cold.inFlightMax).toBeLessThanOrEqual(3);
    expect(cold.inFlightMax).toBeGreaterThan(1);
    expect(digestOf(await store.getRange('o0', 40 * KiB, 100 * KiB))).toEqual(digestOf(data.subarray(40 * KiB)));
    expect(await store.getRange('o0', 3, 2)).toEqual(data.subarray(3, 5));
    expect(await store.getRange('nothing', 0, 100 * KiB)).toBeUndefined();
    expect(store.stats()).toMatchObject({ misses: 4, hits: 0 });
  });

  it('random reads promote the object; later reads are hot hits', async () => {
    const fixture = await coldObjects(2);
    const { store, hot, cold } = fixture;
    await readAtRandom(fixture, 'o0');
    await store.settled();
    expect(store.stats()).toMatchObject({ promotions: 1, cacheObjects: 1, cacheBytes: OBJECT_BYTES });
    expect(digestOf(await hot.inner.get('o0'))).toEqual(digestOf(objectBytes(0, OBJECT_BYTES)));
    const coldCalls = cold.calls.getRange + cold.calls.get;
    expect(await store.getRange('o0', 8 * KiB, READ_BYTES)).toEqual(objectBytes(0, 12 * KiB).subarray(8 * KiB));
    expect(cold.calls.getRange + cold.calls.get).toBe(coldCalls);
    expect(store.stats().hits).toBe(1);
    // A whole-object get promotes with the bytes it fetched: no second cold read.
    const getsBefore = cold.calls.get;
    await store.get('o1');
    await store.get('o1');
    await store.settled();
    expect(cold.calls.get - getsBefore).toBe(2);
    expect(store.stats().promotions).toBe(2);
  });

  it('sequential reads (a scan, chunks arriving slightly out of order) promote nothing', async () => {
    const fixture = await coldObjects(6);
    const { store, hot } = fixture;
    for (let i = 0; i < 6; i++) {
      const offsets = Array.from({ length: OBJECT_BYTES / READ_BYTES }, (_, n) => n * READ_BYTES);
      if (i % 2 === 1) [offsets[0], offsets[1]] = [offsets[1] as number, offsets[0] as number];
      for (const offset of offsets) await store.getRange(`o${i}`, offset, READ_BYTES);
    }
    await store.settled();
    expect(store.stats()).toMatchObject({ promotions: 0, cacheObjects: 0 });
    expect((await hot.inner.list('')).keys).toEqual([]);
  });

  it('the cache stays within its bound, least recently read dropped first; every object still reads', async () => {
    const fixture = await coldObjects(10, { cacheSizeBytesMax: 4 * OBJECT_BYTES });
    const { store, hot } = fixture;
    for (let i = 0; i < 10; i++) {
      await readAtRandom(fixture, `o${i}`);
      await store.settled();
      if (i === 6) await store.getRange('o3', 0, 1); // o3 read again: kept over o4, o5 and o6
      expect(store.stats().cacheBytes).toBeLessThanOrEqual(4 * OBJECT_BYTES);
    }
    expect(store.stats()).toMatchObject({ promotions: 10, evictions: 6, cacheObjects: 4, cacheBytes: 4 * OBJECT_BYTES });
    expect((await hot.inner.list('')).keys).toEqual(['o7', 'o8', 'o9', 'o3'].sort());
    for (let i = 0; i < 10; i++) expect(digestOf(await store.get(`o${i}`))).toEqual(digestOf(objectBytes(i, OBJECT_BYTES)));
  });

  it('a promoted copy that cools is dropped without another upload, and the cache survives a reopen', async () => {
    const fixture = await coldObjects(2);
    await readAtRandom(fixture, 'o0');
    await fixture.store.settled();
    const store = await fixture.reopen();
    expect(store.stats()).toMatchObject({ cacheObjects: 1, hotObjects: 1, coldObjects: 2 });
    const puts = fixture.cold.calls.put;
    fixture.clock.nowMs += 1;
    await store.getRange('o0', 0, 1);
    expect(store.stats().hits).toBe(1);
    const result = await store.migrateCold({ nowMs: fixture.clock.nowMs + TEST_COOLING_MS });
    expect(result.movedObjects).toBe(1);
    expect(fixture.cold.calls.put).toBe(puts);
    expect(store.stats()).toMatchObject({ cacheObjects: 0, hotObjects: 0, coldObjects: 2 });
    expect(await store.getRange('o0', 0, 4)).toEqual(objectBytes(0, 4));
  });

  it("maintenance reads (scrub, GC) neither refresh read times nor promote: a pass over every pack leaves the tiers as they were", async () => {
    const fixture = await coldObjects(2);
    const { store, hot } = fixture;
    const maintenance = { readPurpose: 'maintenance' } as const;
    // Cold: random reads and a whole get, as a scrub does, promote nothing.
    await store.getRange('o0', 48 * KiB, READ_BYTES, maintenance);
    await store.getRange('o0', 0, READ_BYTES, maintenance);
    expect(digestOf(await store.get('o1', maintenance))).toEqual(digestOf(objectBytes(1, OBJECT_BYTES)));
    await store.settled();
    expect(store.stats()).toMatchObject({ promotions: 0, cacheObjects: 0 });
    expect((await hot.inner.list('')).keys).toEqual([]);
    // Hot: a new object read by maintenance only still cools on time; a guest read keeps it hot.
    await store.put('h-maintenance', objectBytes(2, 4 * KiB));
    await store.put('h-guest', objectBytes(3, 4 * KiB));
    fixture.clock.nowMs = TEST_COOLING_MS / 2;
    expect(await store.get('h-maintenance', maintenance)).toEqual(objectBytes(2, 4 * KiB));
    expect(await store.getRange('h-maintenance', 0, 10, maintenance)).toEqual(objectBytes(2, 10));
    expect(await store.getRange('h-guest', 0, 10)).toEqual(objectBytes(3, 10));
    await store.migrateCold({ nowMs: TEST_COOLING_MS + 1 });
    expect((await hot.inner.list('')).keys).toEqual(['h-guest']);
  });
});
