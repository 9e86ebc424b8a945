/**
 * cleanupInBackground (what the daemon runs): a put of marked steps (a repository whose counts
 * are in another catalog: sharesCatalog hidden) is answered once its commit is durable, while
 * the clean-up after it (dropping its markers, deleting its journal) is still running; idle()
 * waits for that clean-up, after which the pool holds exactly the objects' references. The
 * repository is the real DedupChunkRepository; its dropReferences is held back (a gate in a
 * wrapper) to show that the put does not wait for it. Where the counts share the catalog, the
 * install deletes the journal: nothing is left to clean up once the put is answered.
 */
import { describe, expect, it } from 'vitest';
import type { ChunkRepository } from '../../src/store/dedup/repository.js';
import { collect, createTestObjectModel, patternBytes, streamOf, totalReferences } from '../support/object-model.js';

const OWNER = 'user-1';
const CHUNK_BYTES = 64 * 1024;

/** A repository whose dropReferences waits until `open()` is called. */
function gatedDrops(): { wrap: (repository: ChunkRepository) => ChunkRepository; open: () => void; reached: (n: number) => Promise<void>; calls: () => number } {
  let opened = false;
  let calls = 0;
  let waiting = 0;
  const waiters: (() => void)[] = [];
  const watchers: { n: number; resolve: () => void }[] = [];
  return {
    wrap: (repository) =>
      new Proxy(repository, {
        get(target, name, receiver) {
          if (name === 'sharesCatalog') return undefined;
          if (name !== 'dropReferences') {
            const value: unknown = Reflect.get(target, name, receiver);
            return typeof value === 'function' ? value.bind(target) : value;
          }
          return async (...args: Parameters<ChunkRepository['dropReferences']>) => {
            calls++;
            if (!opened) {
              waiting++;
              for (const w of watchers.filter((w) => waiting >= w.n)) w.resolve();
              await new Promise<void>((resolve) => waiters.push(resolve));
            }
            return target.dropReferences(...args);
          };
        },
      }),
    open: () => {
      opened = true;
      for (const resolve of waiters.splice(0)) resolve();
    },
    reached: (n) => new Promise((resolve) => (waiting >= n ? resolve() : watchers.push({ n, resolve }))),
    calls: () => calls,
  };
}

describe('object model with cleanupInBackground', () => {
  it('answers a put before its markers are dropped; idle() waits for them; then the references are exact', async () => {
    const gate = gatedDrops();
    const { model, catalog, deferredErrors } = await createTestObjectModel({ wrapRepository: gate.wrap, cleanupInBackground: true });
    await model.createBucket({ name: 'photos', owner: OWNER, pool: 'pool-a' });
    // All above the inline size (objects-inline.test.ts), so all journal references.
    const bodies = [patternBytes(3 * CHUNK_BYTES + 5, 1), patternBytes(20 * 1024, 2), patternBytes(CHUNK_BYTES, 3)];
    for (const [i, data] of bodies.entries()) {
      const put = await model.putObject({ bucket: 'photos', key: `k${i}`, owner: OWNER, body: streamOf(data), claims: { sizeBytes: data.length } });
      expect(put.sizeBytes).toBe(data.length);
    }
    // Every put was answered; the first one's clean-up waits at the gate, the others queue behind
    // it (settled together next: put-settler.ts); the objects read back.
    await gate.reached(1);
    for (const [i, data] of bodies.entries()) {
      const got = await model.getObject({ bucket: 'photos', key: `k${i}` });
      if (got.outcome !== 'ok') throw new Error('expected the object');
      expect(await collect(got.body())).toEqual(data);
    }
    expect((await catalog.list('s3-put/')).entries.map((e) => (e.value as { state: string }).state)).toEqual(['committed', 'committed', 'committed']);

    let idle = false;
    const waited = model.idle().then(() => (idle = true));
    await Promise.resolve();
    expect(idle).toBe(false);
    gate.open();
    await waited;
    expect((await catalog.list('s3-put')).entries).toEqual([]);
    // One drop for the first put's markers, one for the two committed while it waited.
    expect(gate.calls()).toBe(2);
    const chunks = bodies.reduce((sum, data) => sum + Math.ceil(data.length / CHUNK_BYTES), 0);
    expect(await totalReferences(catalog, 'pool-a')).toBe(chunks);
    expect(deferredErrors).toEqual([]);
  });

  it('a put into a repository that shares the catalog leaves no journal once answered, before idle()', async () => {
    const { model, catalog, deferredErrors } = await createTestObjectModel({ cleanupInBackground: true });
    await model.createBucket({ name: 'photos', owner: OWNER, pool: 'pool-a' });
    const data = patternBytes(3 * CHUNK_BYTES + 5, 4);
    await model.putObject({ bucket: 'photos', key: 'k', owner: OWNER, body: streamOf(data), claims: { sizeBytes: data.length } });
    expect((await catalog.list('s3-put')).entries).toEqual([]);
    expect(await totalReferences(catalog, 'pool-a')).toBe(4);
    expect(deferredErrors).toEqual([]);
  });

  it('an overwrite releases the old data in the background too; idle() leaves only the new object', async () => {
    const { model, catalog } = await createTestObjectModel({ cleanupInBackground: true });
    await model.createBucket({ name: 'photos', owner: OWNER, pool: 'pool-a' });
    for (let round = 0; round < 5; round++) {
      const data = patternBytes(2 * CHUNK_BYTES, 10 + round);
      await model.putObject({ bucket: 'photos', key: 'same', owner: OWNER, body: streamOf(data), claims: { sizeBytes: data.length } });
    }
    await model.idle();
    expect(await totalReferences(catalog, 'pool-a')).toBe(2);
    expect((await catalog.list('s3-release/')).entries).toEqual([]);
  });
});
