/**
 * TieredChunkStore read-ahead of sequential cold reads (src/store/tier/read-ahead.ts): a scan of a
 * cold object costs a GET per window, not per read; the reads of one pread in flight together share
 * a window; a window that fails is not remembered; a deleted object's windows are dropped.
 */
import { describe, expect, it } from 'vitest';
import { digestOf, objectBytes, openTierFixture, TEST_COOLING_MS, type TierFixture } from '../support/tier.js';

const KiB = 1024;
const OBJECT_BYTES = 1024 * KiB;
const READ_BYTES = 16 * KiB;
const WINDOW_BYTES = 128 * KiB;
const PART_BYTES = 64 * KiB;

/** A fixture with object `o0` (and `o1`) on the cold tier only. */
async function coldObjects(options: Parameters<typeof openTierFixture>[0] = {}): Promise<TierFixture> {
  const fixture = await openTierFixture({
    readPattern: { sequentialGapBytes: 4 * READ_BYTES },
    readAhead: { windowBytes: WINDOW_BYTES },
    coldPartSizeBytes: PART_BYTES,
    ...options,
  });
  for (let i = 0; i < 2; i++) await fixture.store.put(`o${i}`, objectBytes(i, OBJECT_BYTES));
  await fixture.store.migrateCold({ nowMs: TEST_COOLING_MS });
  expect((await fixture.hot.inner.list('')).keys).toEqual([]);
  return fixture;
}

/** Reads `o0` from start to end in READ_BYTES pieces, one at a time, checking every piece. */
async function scan(fixture: TierFixture): Promise<void> {
  const data = objectBytes(0, OBJECT_BYTES);
  for (let offset = 0; offset < OBJECT_BYTES; offset += READ_BYTES) {
    expect(digestOf(await fixture.store.getRange('o0', offset, READ_BYTES))).toEqual(digestOf(data.subarray(offset, offset + READ_BYTES)));
  }
}

describe('TieredChunkStore read-ahead', () => {
  it('a sequential scan of a cold object sends a GET per window part, not one per read, and promotes nothing', async () => {
    const fixture = await coldObjects();
    await scan(fixture);
    // The first read (random: it starts the run) on its own, then windows of 128 KiB from the
    // second read on (16 KiB in): 8 windows of two 64 KiB parts, the last cut short by the end.
    expect(fixture.cold.calls.getRange).toBe(1 + 8 * 2);
    await fixture.store.settled();
    expect(fixture.store.stats()).toMatchObject({ promotions: 0, cacheObjects: 0 });
  });

  it('without read-ahead (bytesMax 0) every read is its own GET', async () => {
    const fixture = await coldObjects({ readAhead: { bytesMax: 0 } });
    await scan(fixture);
    expect(fixture.cold.calls.getRange).toBe(OBJECT_BYTES / READ_BYTES);
  });

  it('reads in flight together (one pread of many chunks) wait for the window instead of each sending a GET', async () => {
    const fixture = await coldObjects();
    const data = objectBytes(0, OBJECT_BYTES);
    const offsets = Array.from({ length: 8 }, (_, i) => i * READ_BYTES);
    const results = await Promise.all(offsets.map((offset) => fixture.store.getRange('o0', offset, READ_BYTES)));
    results.forEach((result, i) => expect(digestOf(result)).toEqual(digestOf(data.subarray(offsets[i]!, offsets[i]! + READ_BYTES))));
    expect(fixture.cold.calls.getRange).toBeLessThanOrEqual(1 + 2 + 2); // the first read, a window, the next window
  });

  it('a window whose fetch fails fails its reads and is not kept: once the tier answers, reads succeed', async () => {
    const fixture = await coldObjects();
    const data = objectBytes(0, OBJECT_BYTES);
    await fixture.store.getRange('o0', 0, READ_BYTES);
    fixture.cold.inject({ kind: 'fail' }, ['getRange']);
    await expect(fixture.store.getRange('o0', READ_BYTES, READ_BYTES)).rejects.toThrow();
    fixture.cold.heal();
    expect(digestOf(await fixture.store.getRange('o0', 2 * READ_BYTES, READ_BYTES))).toEqual(digestOf(data.subarray(2 * READ_BYTES, 3 * READ_BYTES)));
  });

  it("a deleted object's windows go with it: a new object of the same key reads as itself", async () => {
    const fixture = await coldObjects();
    await fixture.store.getRange('o0', 0, READ_BYTES);
    await fixture.store.getRange('o0', READ_BYTES, READ_BYTES); // starts a window
    await fixture.store.delete('o0');
    const replacement = objectBytes(7, OBJECT_BYTES);
    await fixture.store.put('o0', replacement);
    await fixture.store.migrateCold({ nowMs: 2 * TEST_COOLING_MS });
    expect((await fixture.hot.inner.list('')).keys).toEqual([]);
    expect(digestOf(await fixture.store.getRange('o0', 2 * READ_BYTES, READ_BYTES))).toEqual(digestOf(replacement.subarray(2 * READ_BYTES, 3 * READ_BYTES)));
  });
});
