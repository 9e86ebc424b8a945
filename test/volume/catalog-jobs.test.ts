/** The volume layer's catalog tables (records, indexes, compare-and-set, name claims) and the job runner. */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { CatalogStore } from '../../src/core/catalog-store.js';
import { StorageError } from '../../src/core/errors.js';
import { LevelCatalogStore } from '../../src/meta/level-catalog.js';
import { MemoryCatalogStore } from '../../src/meta/memory-catalog.js';
import { CatalogTxn, SCHEMA_KEY, VolumeCatalog, VOLUME_CATALOG_SCHEMA_VERSION } from '../../src/volume/catalog.js';
import { JobRunner, type JobContext } from '../../src/volume/jobs.js';
import { KeyedMutex } from '../../src/volume/locks.js';
import type { LayerRecord, VolumeRecord } from '../../src/volume/records.js';
import { shmTempDir } from '../support/tmp.js';
import { expectCode } from './helpers.js';

async function openCatalog(): Promise<{ catalog: LevelCatalogStore; dir: string }> {
  const dir = path.join(shmTempDir(), 'catalog');
  return { catalog: await LevelCatalogStore.open(dir), dir };
}

const now = new Date().toISOString();
const volume = (id: string, pool: string, name: string): VolumeRecord => ({ id, pool, name, sizeBytes: 512, activeLayerId: `l${id}`, createdAt: now });
const layer = (id: string, owner: string, backing?: string): LayerRecord => ({
  id,
  pool: 'p',
  fileName: `${id}.qcow2`,
  ...(backing === undefined ? {} : { backingLayerId: backing }),
  ownerVolumeId: owner,
  frozen: false,
  createdAt: now,
});

for (const [label, open] of [
  ['memory', async (): Promise<CatalogStore> => new MemoryCatalogStore()],
  ['LevelDB', async (): Promise<CatalogStore> => (await openCatalog()).catalog],
] as const) {
  describe(`volume catalog over ${label}`, () => {
    it('finds volumes by pool and name, a pool\'s volumes and a layer\'s children by index prefix', async () => {
      const store = await open();
      const catalog = new VolumeCatalog(store);
      await catalog.change((txn) => {
        catalog.pools.create(txn, { name: 'p', createdAt: now });
        catalog.pools.create(txn, { name: 'pp', createdAt: now });
        catalog.createVolume(txn, volume('v1', 'p', 'a'));
        catalog.createVolume(txn, volume('v2', 'p', 'b'));
        catalog.createVolume(txn, volume('v3', 'pp', 'a'));
        catalog.layers.create(txn, layer('l1', 'v1'));
        catalog.layers.create(txn, layer('l2', 'v1', 'l1'));
        catalog.layers.create(txn, layer('l3', 'v2', 'l1'));
      });
      expect((await catalog.volumes.lookup('name', 'p/b'))?.id).toBe('v2');
      expect(await catalog.volumes.lookup('name', 'p/c')).toBeUndefined();
      expect((await catalog.volumes.byIndexPrefix('name', 'p/')).map((v) => v.id)).toEqual(['v1', 'v2']);
      expect((await catalog.layers.byIndexPrefix('backing', 'l1/')).map((l) => l.id)).toEqual(['l2', 'l3']);
      expect((await catalog.layers.byIndexPrefix('owner', 'v1/')).map((l) => l.id)).toEqual(['l1', 'l2']);
      await expectCode(catalog.pools.require('nope', "pool 'nope'"), 'NOT_FOUND');
      // A transaction is all or nothing: a taken name fails it, and nothing of it lands.
      const txn = new CatalogTxn();
      catalog.createVolume(txn, volume('v4', 'p', 'x'));
      catalog.createVolume(txn, volume('v5', 'p', 'a'));
      await expectCode(catalog.commit(txn), 'ALREADY_EXISTS');
      expect(await catalog.volumes.get('v4')).toBeUndefined();
      await store.close();
    });

    it('an update from a stale read is BUSY (no lost update); a rename frees the old name', async () => {
      const store = await open();
      const mine = new VolumeCatalog(store);
      const theirs = new VolumeCatalog(store);
      await mine.change((txn) => mine.createVolume(txn, volume('v1', 'p', 'a')));
      const read = (await mine.volumes.get('v1'))!;
      const readByThem = (await theirs.volumes.get('v1'))!;
      await mine.change((txn) => mine.volumes.update(txn, read, { ...read, sizeBytes: 1024 }));
      await expectCode(theirs.change((txn) => theirs.volumes.update(txn, readByThem, { ...readByThem, sizeBytes: 2048 })), 'BUSY');
      expect((await theirs.volumes.get('v1'))?.sizeBytes).toBe(1024);
      const current = (await mine.volumes.get('v1'))!;
      const txn = new CatalogTxn();
      mine.renameVolume(txn, current, 'b');
      await mine.commit(txn);
      expect(await mine.volumes.lookup('name', 'p/a')).toBeUndefined();
      expect((await mine.volumes.lookup('name', 'p/b'))?.id).toBe('v1');
      await store.close();
    });

    it('a name claimed by an import is taken for volumes, and the claim turns into the volume', async () => {
      const store = await open();
      const catalog = new VolumeCatalog(store);
      const claim = { id: 'r1', pool: 'p', name: 'new', sizeBytes: 512, createdAt: now };
      await catalog.change((txn) => catalog.claimVolumeName(txn, claim));
      await expectCode(catalog.change((txn) => catalog.createVolume(txn, volume('v1', 'p', 'new'))), 'ALREADY_EXISTS');
      await expectCode(catalog.change((txn) => catalog.claimVolumeName(txn, { ...claim, id: 'r2' })), 'ALREADY_EXISTS');
      await catalog.change((txn) => catalog.createVolume(txn, volume('v2', 'p', 'new'), claim));
      expect(await catalog.reservations.all()).toEqual([]);
      expect((await catalog.volumes.lookup('name', 'p/new'))?.id).toBe('v2');
      await expectCode(catalog.change((txn) => catalog.claimVolumeName(txn, { ...claim, id: 'r3' })), 'ALREADY_EXISTS');
      await store.close();
    });

    it('a damaged record is CORRUPT naming its key; a newer layout is refused', async () => {
      const store = await open();
      const catalog = new VolumeCatalog(store);
      await catalog.checkSchema();
      expect((await store.get(SCHEMA_KEY))?.value).toBe(VOLUME_CATALOG_SCHEMA_VERSION);
      await store.txn([], [{ type: 'put', key: 'volume/v9', value: { id: 'v9', pool: 'p', name: 'x', sizeBytes: -1 } }]);
      const err = await expectCode(catalog.volumes.get('v9'), 'CORRUPT');
      expect(err).toContain('volume/v9');
      expect(err).toContain('sizeBytes');
      await store.txn([], [{ type: 'put', key: SCHEMA_KEY, value: VOLUME_CATALOG_SCHEMA_VERSION + 1 }]);
      expect(await expectCode(catalog.checkSchema(), 'UNSUPPORTED')).toMatch(/layout version 3/);
      await store.close();
    });
  });
}

describe('job runner', () => {
  it('runs jobs with progress, queues past the concurrency limit, cancels running and queued jobs', async () => {
    const { catalog: store } = await openCatalog();
    const catalog = new VolumeCatalog(store);
    const runner = new JobRunner(catalog, { maxConcurrent: 1 });
    const gates: (() => void)[] = [];
    const body = (bytes: number) => async (ctx: JobContext) => {
      ctx.throwIfCancelled();
      ctx.setTotal(bytes);
      await new Promise<void>((resolve) => gates.push(resolve));
      ctx.throwIfCancelled();
      ctx.addDone(bytes);
    };
    const a = await runner.start('copy', 'p/a', body(10));
    const b = await runner.start('flatten', 'p/b', body(20));
    const c = await runner.start('flatten', 'p/c', body(30));
    expect(a.state).toBe('running');
    expect(b.state).toBe('queued');
    expect((await runner.info(b.id)).state).toBe('queued');
    // Cancelling a queued job ends it at once, without waiting for a slot.
    expect((await runner.cancel(c.id)).state).toBe('cancelled');
    gates.shift()!();
    expect(await runner.wait(a.id)).toMatchObject({ state: 'succeeded', doneBytes: 10, totalBytes: 10 });
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect((await runner.info(b.id)).state).toBe('running');
    const cancelling = runner.cancel(b.id);
    gates.shift()!();
    expect(await cancelling).toMatchObject({ state: 'cancelled', error: { code: 'CANCELLED' } });
    // A failing job keeps its error code; inline jobs return their value or throw.
    await expect(runner.run('import', 'p/x', async () => { throw new StorageError('NO_SPACE', 'full'); })).rejects.toThrow(/full/);
    expect(await runner.run('import', 'p/y', async () => 42)).toBe(42);
    const states = (await runner.list()).map((j) => `${j.target}:${j.state}`).sort();
    expect(states).toEqual(['p/a:succeeded', 'p/b:cancelled', 'p/c:cancelled', 'p/x:failed', 'p/y:succeeded']);
    expect((await runner.list()).find((j) => j.target === 'p/x')?.error).toEqual({ code: 'NO_SPACE', message: 'full' });
    // Persisted: a new runner over the same catalog sees them.
    const fresh = new JobRunner(catalog);
    expect(await fresh.recover()).toBe(0);
    expect((await fresh.info(a.id)).state).toBe('succeeded');
    await runner.shutdown();
    await expectCode(runner.start('copy', 'p/z', body(1)), 'BUSY');
    await store.close();
  });

  it('a job whose final state is still being stored reads as ended: info says so, cancel finds nothing to stop', async () => {
    /** Holds every transaction while `hold` is set (the job's last persist, here). */
    class HeldCatalogStore extends MemoryCatalogStore {
      hold: Promise<void> | undefined;
      override async txn(...args: Parameters<MemoryCatalogStore['txn']>): ReturnType<MemoryCatalogStore['txn']> {
        if (this.hold !== undefined) await this.hold;
        return super.txn(...args);
      }
    }
    const store = new HeldCatalogStore();
    const runner = new JobRunner(new VolumeCatalog(store));
    let finishBody!: () => void;
    const job = await runner.start('copy', 'p/a', () => new Promise<void>((resolve) => (finishBody = resolve)));
    await new Promise((resolve) => setTimeout(resolve, 10)); // running, its first persist stored
    let release!: () => void;
    store.hold = new Promise((resolve) => (release = resolve));
    finishBody();
    await new Promise((resolve) => setTimeout(resolve, 10)); // the body ended; its final state waits to be stored
    expect((await runner.info(job.id)).state).toBe('succeeded');
    const cancelling = runner.cancel(job.id);
    store.hold = undefined;
    release();
    expect(await cancelling).toMatchObject({ state: 'succeeded' });
    expect((await new JobRunner(new VolumeCatalog(store)).info(job.id)).state).toBe('succeeded');
  });

  it('keyed mutex: runs in FIFO order per key, several keys without deadlock', async () => {
    const mutex = new KeyedMutex();
    const order: string[] = [];
    const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
    await Promise.all([
      mutex.run(['a', 'b'], async () => { order.push('ab-start'); await sleep(5); order.push('ab-end'); }),
      mutex.run(['b', 'a'], async () => { order.push('ba-start'); await sleep(1); order.push('ba-end'); }),
      mutex.run(['c'], async () => { order.push('c'); }),
    ]);
    expect(order.indexOf('ab-end')).toBeLessThan(order.indexOf('ba-start'));
    expect(order.indexOf('c')).toBeLessThan(order.indexOf('ab-end'));
    expect(mutex.isLocked('a')).toBe(false);
  });
});
