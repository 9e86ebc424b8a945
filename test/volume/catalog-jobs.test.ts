/** The catalog (typed records over LevelDB, atomic batches) and the job runner. */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Catalog, delOp, putOp } from '../../src/catalog/index.js';
import { StorageError } from '../../src/core/errors.js';
import { JobRunner, type JobContext } from '../../src/volume/jobs.js';
import { KeyedMutex } from '../../src/volume/locks.js';
import { shmTempDir } from '../support/tmp.js';
import { expectCode } from './helpers.js';

async function openCatalog(): Promise<{ catalog: Catalog; dir: string }> {
  const dir = path.join(shmTempDir(), 'catalog');
  return { catalog: await Catalog.open(dir), dir };
}

describe('catalog', () => {
  it('stores typed records by kind and key; batches apply all or nothing', async () => {
    const { catalog, dir } = await openCatalog();
    const now = new Date().toISOString();
    await catalog.put('pool', { name: 'p', createdAt: now });
    await catalog.batch([
      putOp('volume', { id: 'v1', pool: 'p', name: 'a', sizeBytes: 512, activeLayerId: 'l1', createdAt: now }),
      putOp('layer', { id: 'l1', pool: 'p', fileName: 'l1.qcow2', ownerVolumeId: 'v1', frozen: false, createdAt: now }),
    ]);
    expect(await catalog.get('volume', 'v1')).toMatchObject({ name: 'a' });
    expect(await catalog.get('volume', 'nope')).toBeUndefined();
    expect((await catalog.list('layer')).map((l) => l.id)).toEqual(['l1']);
    expect((await catalog.list('pool')).map((p) => p.name)).toEqual(['p']);
    await expectCode(catalog.require('snapshot', 'x'), 'NOT_FOUND');
    // A batch that touches one key twice is a programmer error, and nothing of it lands.
    await expect(catalog.batch([delOp('volume', 'v1'), putOp('volume', { id: 'v1', pool: 'p', name: 'b', sizeBytes: 1, activeLayerId: 'l1', createdAt: now })])).rejects.toThrow(/twice/);
    expect(await catalog.get('volume', 'v1')).toMatchObject({ name: 'a' });
    await catalog.batch([delOp('volume', 'v1'), delOp('layer', 'l1')]);
    expect(await catalog.list('volume')).toEqual([]);
    await catalog.close();
    const again = await Catalog.open(dir);
    expect((await again.list('pool')).map((p) => p.name)).toEqual(['p']);
    await again.close();
  });
});

describe('job runner', () => {
  it('runs jobs with progress, queues past the concurrency limit, cancels running and queued jobs', async () => {
    const { catalog } = await openCatalog();
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
    await catalog.close();
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
