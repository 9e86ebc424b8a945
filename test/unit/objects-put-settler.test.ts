/**
 * Settling committed puts together (src/objects/put-settler.ts): puts of marked steps (the
 * repository's sharesCatalog hidden, as one whose counts are in another catalog) committed while
 * a settling runs share the next one drop, and a batch whose drop fails, whether or not the drop was applied,
 * is finished put by put from the marker counts: references end exact, the journal empty. Real
 * DedupChunkRepository; its dropReferences is wrapped to fail (nothing real fails on demand).
 */
import { describe, expect, it } from 'vitest';
import type { ChunkRepository } from '../../src/store/dedup/repository.js';
import { createTestObjectModel, patternBytes, streamOf, totalReferences } from '../support/object-model.js';

const OWNER = 'user-1';
const CHUNK_BYTES = 64 * 1024;

/** dropReferences fails on its first call: before applying it, or after. */
function failingFirstDrop(applied: boolean): { wrap: (repository: ChunkRepository) => ChunkRepository; calls: () => number } {
  let calls = 0;
  return {
    wrap: (repository) =>
      new Proxy(repository, {
        get(target, name, receiver) {
          if (name === 'sharesCatalog') return undefined;
          const value: unknown = Reflect.get(target, name, receiver);
          if (name !== 'dropReferences') return typeof value === 'function' ? value.bind(target) : value;
          return async (...args: Parameters<ChunkRepository['dropReferences']>) => {
            calls++;
            if (calls > 1) return target.dropReferences(...args);
            if (applied) await target.dropReferences(...args);
            throw new Error('drop failed (injected)');
          };
        },
      }),
    calls: () => calls,
  };
}

describe('settling committed puts together', () => {
  it('puts committed at once share one drop of their markers', async () => {
    let drops = 0;
    const { model, catalog, deferredErrors } = await createTestObjectModel({
      cleanupInBackground: true,
      wrapRepository: (repository) =>
        new Proxy(repository, {
          get(target, name, receiver) {
            if (name === 'sharesCatalog') return undefined;
            const value: unknown = Reflect.get(target, name, receiver);
            if (name === 'dropReferences') drops++;
            return typeof value === 'function' ? value.bind(target) : value;
          },
        }),
    });
    await model.createBucket({ name: 'photos', owner: OWNER, pool: 'pool-a' });
    const bodies = Array.from({ length: 6 }, (_, i) => patternBytes(2 * CHUNK_BYTES, 20 + i));
    await Promise.all(bodies.map((data, i) => model.putObject({ bucket: 'photos', key: `k${i}`, owner: OWNER, body: streamOf(data), claims: { sizeBytes: data.length } })));
    await model.idle();
    expect(drops).toBeGreaterThan(0);
    expect(drops).toBeLessThan(bodies.length);
    expect(await totalReferences(catalog, 'pool-a')).toBe(bodies.length * 2);
    expect((await catalog.list('s3-put')).entries).toEqual([]);
    expect(deferredErrors).toEqual([]);
  });

  for (const applied of [false, true]) {
    it(`a batch whose drop fails ${applied ? 'after' : 'before'} applying it is finished from the marker counts`, async () => {
      const failing = failingFirstDrop(applied);
      const { model, catalog, deferredErrors } = await createTestObjectModel({ wrapRepository: failing.wrap });
      await model.createBucket({ name: 'photos', owner: OWNER, pool: 'pool-a' });
      const data = patternBytes(3 * CHUNK_BYTES, 7);
      await model.putObject({ bucket: 'photos', key: 'k', owner: OWNER, body: streamOf(data), claims: { sizeBytes: data.length } });
      expect(failing.calls()).toBe(applied ? 1 : 2);
      expect(await totalReferences(catalog, 'pool-a')).toBe(3);
      expect((await catalog.list('s3-put')).entries).toEqual([]);
      expect(deferredErrors).toEqual([]);
    });
  }
});
