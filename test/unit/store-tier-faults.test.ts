/**
 * TieredChunkStore while the cold tier fails or stalls (a FaultyChunkStore standing in for a
 * failing S3 endpoint; the S3 client's own fault tests run against a real server): a cold call
 * fails alone, with a clear error, after a bounded time, and hot data keeps being served.
 */
import { describe, expect, it } from 'vitest';
import type { CatalogCompare, CatalogOp, CatalogStore, CatalogTxnResult } from '../../src/core/catalog-store.js';
import { isStorageError, StorageError } from '../../src/core/errors.js';
import { MemoryCatalogStore } from '../../src/meta/memory-catalog.js';
import { expectCode } from '../support/expect-error.js';
import { objectBytes, openTierFixture, TEST_COOLING_MS, type TierFixture } from '../support/tier.js';

const KiB = 1024;
const COLD_TIMEOUT_MS = 100;

/** `cold1` on the cold tier only, `hot1` on the hot tier. */
async function mixed(): Promise<TierFixture> {
  const fixture = await openTierFixture({ coldTimeoutMs: COLD_TIMEOUT_MS });
  await fixture.store.put('cold1', objectBytes(1, 8 * KiB));
  await fixture.store.evict(['cold1']);
  await fixture.store.put('hot1', objectBytes(2, 8 * KiB));
  return fixture;
}

describe('TieredChunkStore with a failing cold tier', () => {
  it('a stalled cold tier fails the cold read after the bound while hot reads and writes go on', async () => {
    const { store, cold } = await mixed();
    cold.inject({ kind: 'stall', ignoreSignal: true }); // even a client that never gives up is bounded
    const stalledRead = store.getRange('cold1', 0, KiB);
    const stalledGet = store.get('cold1');
    expect(await store.get('hot1')).toEqual(objectBytes(2, 8 * KiB));
    await store.put('hot2', objectBytes(3, KiB));
    expect(await store.getRange('hot2', 0, 4)).toEqual(objectBytes(3, 4));
    expect(cold.stalled).toBe(2);
    await expectCode(stalledRead, 'UNAVAILABLE', new RegExp(`cold tier did not complete get cold1.* within ${COLD_TIMEOUT_MS} ms; check that it is reachable`));
    await expectCode(stalledGet, 'UNAVAILABLE', /cold tier did not complete get cold1/);
    expect(store.stats().coldReadFailures).toBe(2);
    cold.heal();
    expect(await store.getRange('cold1', 0, 4)).toEqual(objectBytes(1, 4));
  });

  it('a stalled cold call aborts through its signal; the caller aborting gives CANCELLED', async () => {
    const { store, cold } = await mixed();
    cold.inject({ kind: 'stall' });
    await expectCode(store.getRange('cold1', 0, KiB), 'UNAVAILABLE', /within 100 ms/);
    expect(cold.stalled).toBe(0); // the timeout aborted the cold store's call too
    const controller = new AbortController();
    const read = store.getRange('cold1', 0, KiB, { signal: controller.signal });
    controller.abort();
    await expectCode(read, 'CANCELLED');
  });

  it('a cold tier that errors: the error reaches the caller, named as the cold tier', async () => {
    const { store, cold } = await mixed();
    cold.inject({ kind: 'fail' });
    const message = await expectCode(store.getRange('cold1', 0, KiB), 'IO_ERROR');
    expect(message).toMatch(/injected: getRange cold1 failed/);
    await expectCode(store.list(''), 'IO_ERROR');
    await expectCode(store.putIfAbsent('new', objectBytes(4, KiB)), 'IO_ERROR');
    expect(await store.get('hot1')).toEqual(objectBytes(2, 8 * KiB));
  });

  it('a delete while the cold tier fails is reported and finished by a retry', async () => {
    const { store, hot, cold } = await mixed();
    cold.inject({ kind: 'fail' }, ['delete']);
    await expectCode(store.delete('cold1'), 'IO_ERROR');
    expect(await store.get('cold1')).toEqual(objectBytes(1, 8 * KiB)); // not deleted yet
    cold.heal();
    await store.delete('cold1');
    expect(await store.get('cold1')).toBeUndefined();
    expect(await cold.inner.get('cold1')).toBeUndefined();
    expect(await hot.inner.get('cold1')).toBeUndefined();
    expect(store.stats()).toMatchObject({ coldObjects: 0, hotObjects: 1 });
  });

  it('a promotion that fails is counted; the read that asked for it was served', async () => {
    const { store, cold } = await mixed();
    await store.getRange('cold1', 6 * KiB, 10);
    cold.inject({ kind: 'fail' }, ['get']); // the promotion's whole-object get
    expect(await store.getRange('cold1', 6 * KiB, 10)).toEqual(objectBytes(1, 6 * KiB + 10).subarray(6 * KiB));
    await store.settled();
    expect(store.stats()).toMatchObject({ promotions: 0, promotionFailures: 1, cacheObjects: 0 });
  });

  it('a failing hot tier fails the call that needs it, and a migration leaves nothing half-moved', async () => {
    const { store, hot, cold } = await mixed();
    hot.inject({ kind: 'fail' }, ['delete']);
    const result = await store.migrateCold({ nowMs: TEST_COOLING_MS });
    expect(result.failed.map((f) => f.key)).toEqual(['hot1']);
    expect(await cold.inner.get('hot1')).toEqual(objectBytes(2, 8 * KiB)); // verified copy, hot copy kept
    hot.heal();
    expect((await store.migrateCold({ nowMs: TEST_COOLING_MS })).movedObjects).toBe(1);
    expect(cold.calls.put).toBe(2); // cold1 once, hot1 once: the verified copy was not uploaded again
    expect(await store.get('hot1')).toEqual(objectBytes(2, 8 * KiB));
    expect(isStorageError(result.failed[0]?.error, 'IO_ERROR')).toBe(true);
  });

  it('a catalog that cannot record the verified copy: the hot copy stays until it can', async () => {
    const inner = new MemoryCatalogStore();
    let failTxn = false;
    // Stands in for a catalog whose disk write fails (LevelDB's own failures are its suite's).
    const catalog: CatalogStore = Object.assign(Object.create(inner) as CatalogStore, {
      txn: (compares: readonly CatalogCompare[], ops: readonly CatalogOp[]): Promise<CatalogTxnResult> =>
        failTxn ? Promise.reject(new StorageError('IO_ERROR', 'injected: catalog write failed')) : inner.txn(compares, ops),
    });
    const { store, hot, cold } = await openTierFixture({ catalog });
    await store.put('p', objectBytes(5, KiB));
    failTxn = true;
    const result = await store.migrateCold({ nowMs: TEST_COOLING_MS });
    expect(result.failed.map((f) => f.error.message)).toEqual(['injected: catalog write failed']);
    expect(await hot.inner.get('p')).toEqual(objectBytes(5, KiB));
    expect(store.stats()).toMatchObject({ hotObjects: 1, coldObjects: 0 });
    failTxn = false;
    expect((await store.migrateCold({ nowMs: TEST_COOLING_MS })).movedObjects).toBe(1);
    expect(await hot.inner.get('p')).toBeUndefined();
    expect(await cold.inner.get('p')).toEqual(objectBytes(5, KiB));
  });
});
