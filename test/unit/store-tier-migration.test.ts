/**
 * TieredChunkStore: cooling, migration with read-back verification, evict, delete and list across
 * tiers, and what survives a reopen. Time is the fixture's clock; migrateCold gets `nowMs`.
 */
import { describe, expect, it } from 'vitest';
import { isStorageError } from '../../src/core/errors.js';
import { TIER_TABLE_DEFAULT } from '../../src/store/tier/tier-catalog.js';
import { objectBytes, openTierFixture, TEST_COOLING_MS } from '../support/tier.js';

const KiB = 1024;

describe('TieredChunkStore migration', () => {
  it('moves objects not read for the cooling period, and only those; reads find them cold', async () => {
    const { store, hot, cold, clock } = await openTierFixture();
    await store.put('packs/a', objectBytes(1, 4 * KiB));
    await store.put('packs/b', objectBytes(2, 4 * KiB));
    clock.nowMs = TEST_COOLING_MS / 2;
    expect(await store.getRange('packs/a', 0, 10)).toEqual(objectBytes(1, 10));
    const first = await store.migrateCold({ nowMs: TEST_COOLING_MS + 1 });
    expect(first).toEqual({ movedObjects: 1, movedBytes: 4 * KiB, failed: [] });
    expect(await hot.inner.get('packs/b')).toBeUndefined();
    expect(await cold.inner.get('packs/b')).toEqual(objectBytes(2, 4 * KiB));
    expect(await hot.inner.get('packs/a')).toEqual(objectBytes(1, 4 * KiB));
    expect(await store.getRange('packs/b', 100, 5)).toEqual(objectBytes(2, 105).subarray(100));
    expect(store.stats()).toMatchObject({ hotObjects: 1, hotBytes: 4 * KiB, coldObjects: 1, coldBytes: 4 * KiB, movedCold: 1 });
    // a was read at half the cooling period: it cools later.
    expect((await store.migrateCold({ nowMs: TEST_COOLING_MS * 1.5 + 1 })).movedObjects).toBe(1);
    expect((await hot.inner.list('')).keys).toEqual([]);
    expect(await store.get('packs/a')).toEqual(objectBytes(1, 4 * KiB));
  });

  it('deletes a hot copy only after the cold tier stored it, read it back and the catalog recorded it', async () => {
    const { store, hot, cold, catalog } = await openTierFixture();
    await store.put('p1', objectBytes(1, 4 * KiB));
    await store.put('p2', objectBytes(2, 4 * KiB));
    let recordedBeforeDelete = true;
    const originalDelete = hot.delete.bind(hot);
    hot.delete = async (key, options) => {
      const entry = await catalog.get(`${TIER_TABLE_DEFAULT}/${key}`);
      recordedBeforeDelete &&= (entry?.value as { place?: string } | undefined)?.place === 'both';
      return originalDelete(key, options);
    };
    await store.migrateCold({ nowMs: TEST_COOLING_MS });
    expect(recordedBeforeDelete).toBe(true);
    const order = [...cold.log.map((entry) => `cold ${entry}`), ...hot.log.map((entry) => `hot ${entry}`)];
    for (const key of ['p1', 'p2']) {
      const steps = [cold.log.indexOf(`put ${key}`), cold.log.indexOf(`get ${key}`)];
      expect(steps.every((step) => step >= 0), order.join(', ')).toBe(true);
    }
    expect(hot.log.filter((entry) => entry.startsWith('delete'))).toEqual(['delete p1', 'delete p2']);
  });

  it('a cold tier that corrupts what it stores: the hot copy is kept, the error reported, the next pass retries', async () => {
    const { store, hot, cold } = await openTierFixture();
    await store.put('p', objectBytes(3, 8 * KiB));
    cold.inject({ kind: 'corrupt' }, ['put']);
    const progress: string[] = [];
    const result = await store.migrateCold({ nowMs: TEST_COOLING_MS, onProgress: (p) => progress.push(`${p.key} ${p.outcome} ${p.done}/${p.total}`) });
    expect(result.movedObjects).toBe(0);
    expect(result.failed.map((f) => [f.key, f.error.code])).toEqual([['p', 'CORRUPT']]);
    expect(result.failed[0]?.error.message).toMatch(/different bytes for p .*hot copy is kept/);
    expect(progress).toEqual(['p failed 1/1']);
    expect(await hot.inner.get('p')).toEqual(objectBytes(3, 8 * KiB));
    expect(await cold.inner.get('p')).toBeUndefined(); // the bad copy was dropped
    expect(store.stats()).toMatchObject({ hotObjects: 1, coldObjects: 0, migrationFailures: 1 });
    cold.heal();
    expect((await store.migrateCold({ nowMs: TEST_COOLING_MS })).movedObjects).toBe(1);
    expect(await store.get('p')).toEqual(objectBytes(3, 8 * KiB));
  });

  it('a cold tier that fails or stalls: the object stays hot and readable, and moves once it is back', async () => {
    const { store, hot, cold } = await openTierFixture({ coldTimeoutMs: 50 });
    await store.put('p', objectBytes(4, 8 * KiB));
    cold.inject({ kind: 'fail' }, ['put']);
    expect((await store.migrateCold({ nowMs: TEST_COOLING_MS })).failed.map((f) => f.error.code)).toEqual(['IO_ERROR']);
    cold.heal();
    cold.inject({ kind: 'stall', ignoreSignal: true }, ['get']);
    const stalled = await store.migrateCold({ nowMs: TEST_COOLING_MS });
    expect(stalled.failed[0]?.error.message).toMatch(/cold tier did not complete read back p within 50 ms/);
    expect(stalled.failed[0]?.error.code).toBe('UNAVAILABLE');
    expect(await hot.inner.get('p')).toEqual(objectBytes(4, 8 * KiB));
    expect(await store.get('p')).toEqual(objectBytes(4, 8 * KiB));
    cold.heal();
    expect((await store.migrateCold({ nowMs: TEST_COOLING_MS })).movedObjects).toBe(1);
    expect(await hot.inner.get('p')).toBeUndefined();
  });

  it('evict moves the given objects now, read or not; cold and unknown keys are skipped', async () => {
    const { store, hot, clock } = await openTierFixture();
    await store.put('v/1', objectBytes(5, 1 * KiB));
    await store.put('v/2', objectBytes(6, 1 * KiB));
    clock.nowMs = 10;
    await store.get('v/1');
    const result = await store.evict(['v/1', 'missing']);
    expect(result.movedObjects).toBe(1);
    expect((await hot.inner.list('')).keys).toEqual(['v/2']);
    expect((await store.evict(['v/1'])).movedObjects).toBe(0);
    expect(await store.get('v/1')).toEqual(objectBytes(5, 1 * KiB));
  });

  it('an aborted migration stops, leaves what it did not finish hot, and says CANCELLED', async () => {
    const { store, hot } = await openTierFixture({ migrationsInFlightMax: 1 });
    for (let i = 0; i < 4; i++) await store.put(`p${i}`, objectBytes(i, KiB));
    const controller = new AbortController();
    const migration = store.migrateCold({ nowMs: TEST_COOLING_MS, signal: controller.signal, onProgress: () => controller.abort() });
    await expect(migration).rejects.toSatisfy((err) => isStorageError(err, 'CANCELLED'));
    expect((await hot.inner.list('')).keys).toEqual(['p1', 'p2', 'p3']);
    for (let i = 0; i < 4; i++) expect(await store.get(`p${i}`)).toEqual(objectBytes(i, KiB));
  });

  it('delete removes both copies; list merges both tiers, each key once, in order, a page at a time', async () => {
    const { store, hot, cold } = await openTierFixture();
    for (const key of ['k1', 'k2', 'k3', 'k4', 'k5']) await store.put(key, objectBytes(key.length, KiB));
    await store.evict(['k2', 'k4']);
    await cold.inner.put('k3', objectBytes(0, KiB)); // a leftover copy on both tiers counts once
    await store.put('k6', objectBytes(6, KiB));
    const pages: string[][] = [];
    for (let after: string | undefined; ; ) {
      const page = await store.list('k', { limit: 2, ...(after === undefined ? {} : { after }) });
      pages.push([...page.keys]);
      if (page.nextAfter === undefined) break;
      after = page.nextAfter;
    }
    expect(pages.flat()).toEqual(['k1', 'k2', 'k3', 'k4', 'k5', 'k6']);
    expect(pages.every((page) => page.length <= 2)).toBe(true);
    await store.delete('k2');
    await store.delete('k3');
    expect(await hot.inner.get('k3')).toBeUndefined();
    expect(await cold.inner.get('k3')).toBeUndefined();
    expect(await store.get('k2')).toBeUndefined();
    expect((await store.list('')).keys).toEqual(['k1', 'k4', 'k5', 'k6']);
    expect(store.stats()).toMatchObject({ hotObjects: 3, coldObjects: 1, coldBytes: KiB });
  });

  it('a put over a cold object replaces it; the new bytes move cold later', async () => {
    const { store, cold } = await openTierFixture();
    await store.put('p', objectBytes(1, KiB));
    await store.evict(['p']);
    await store.put('p', objectBytes(2, 2 * KiB));
    expect(await store.get('p')).toEqual(objectBytes(2, 2 * KiB));
    expect(store.stats()).toMatchObject({ hotObjects: 1, coldObjects: 0 });
    await store.evict(['p']);
    expect(await cold.inner.get('p')).toEqual(objectBytes(2, 2 * KiB));
    expect(await store.putIfAbsent('p', objectBytes(3, KiB))).toBe(false);
  });
});

describe('TieredChunkStore catalog across a reopen', () => {
  it('read times survive a reopen, written at most once per granularity per object', async () => {
    const fixture = await openTierFixture({ readTimeGranularityMs: 60_000 });
    await fixture.store.put('a', objectBytes(1, KiB));
    await fixture.store.put('b', objectBytes(2, KiB));
    await fixture.store.flush();
    for (let t = 1; t <= 50; t++) {
      fixture.clock.nowMs = t * 1000;
      await fixture.store.getRange('a', 0, 1);
    }
    // 50 reads within a minute of the last written read time (the put's): nothing to write.
    expect(fixture.store.stats().pendingCatalogWrites).toBe(0);
    fixture.clock.nowMs = 70_000;
    await fixture.store.getRange('a', 0, 1);
    expect(fixture.store.stats().pendingCatalogWrites).toBe(1);
    const store = await fixture.reopen();
    fixture.clock.nowMs = 1_000_000; // opening later must not make anything look freshly read
    const result = await store.migrateCold({ nowMs: TEST_COOLING_MS + 1 });
    expect(result.movedObjects).toBe(1); // b (read at 0); a was read at 70 s
    expect(store.stats()).toMatchObject({ hotObjects: 1, coldObjects: 1 });
    expect((await store.migrateCold({ nowMs: 70_000 + TEST_COOLING_MS })).movedObjects).toBe(1);
  });

  it('reconciles with the hot tier at open: unrecorded hot objects, dropped hot copies, stale records', async () => {
    const fixture = await openTierFixture();
    await fixture.store.put('recorded', objectBytes(1, KiB));
    await fixture.store.put('cached', objectBytes(2, KiB));
    await fixture.store.evict(['cached']);
    await fixture.store.put('gone', objectBytes(3, KiB));
    await fixture.store.close();
    await fixture.hot.inner.put('unrecorded', objectBytes(4, 2 * KiB)); // a put whose record a crash lost
    await fixture.hot.inner.put('cached', objectBytes(2, KiB)); // a promotion whose record a crash lost
    await fixture.hot.inner.delete('gone'); // a delete whose record a crash lost
    const store = await fixture.reopen();
    expect(store.stats()).toMatchObject({ hotObjects: 3, hotBytes: 4 * KiB, coldObjects: 0 });
    expect((await store.migrateCold({ nowMs: fixture.clock.nowMs + TEST_COOLING_MS })).movedObjects).toBe(3);
    for (const [key, seed, size] of [['recorded', 1, KiB], ['cached', 2, KiB], ['unrecorded', 4, 2 * KiB]] as const) {
      expect(await store.get(key)).toEqual(objectBytes(seed, size));
    }
    expect(await store.get('gone')).toBeUndefined();
    expect(store.stats()).toMatchObject({ hotObjects: 0, coldObjects: 3, coldBytes: 4 * KiB });
  });
});
