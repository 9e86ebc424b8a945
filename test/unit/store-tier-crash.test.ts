/**
 * A process using a TieredChunkStore (two local folders and a LevelDB catalog) is SIGKILLed at
 * varying points of rewriting, migrating, promoting and evicting; after every kill the store is
 * reopened here and every object must read back whole, from whichever tier holds it.
 */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { LevelCatalogStore } from '../../src/meta/level-catalog.js';
import { TieredChunkStore } from '../../src/store/tier/tiered-chunk-store.js';
import { LocalChunkStore } from '../../src/store/local-chunk-store.js';
import { digestOf, objectBytes } from '../support/tier.js';
import { tempDir } from '../support/tmp.js';
import { spawnTsChild, watchLines } from '../support/ts-child.js';
import { CRASH_OBJECT_BYTES, CRASH_OBJECTS, crashObjectKey } from './store-tier-crash-shape.js';

const CHILD = path.join(import.meta.dirname, 'store-tier-crash-child.ts');
const ROUNDS = 8;

/** Runs the child until it has printed `steps` step lines, then SIGKILLs it. */
async function runAndKill(folder: string, seed: number, steps: number): Promise<string[]> {
  const child = spawnTsChild(CHILD, [folder, String(seed)]);
  const seen: string[] = [];
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, signal) => resolve(signal)));
  await watchLines(child, (line) => {
    if (line.startsWith('step ')) seen.push(line.slice(5));
    return seen.length >= steps;
  });
  child.kill('SIGKILL');
  expect(await exited).toBe('SIGKILL');
  return seen;
}

async function checkEveryObject(folder: string): Promise<{ hot: number; cold: number }> {
  const catalog = await LevelCatalogStore.open(path.join(folder, 'catalog'));
  const hot = new LocalChunkStore(path.join(folder, 'hot'));
  const cold = new LocalChunkStore(path.join(folder, 'cold'));
  try {
    // No cache: the checker must not promote, or the next round would only drop cached copies.
    const store = await TieredChunkStore.open({ hot, cold, catalog, coolingMs: 0, flushIntervalMs: 0, cacheSizeBytesMax: 0 });
    for (let i = 0; i < CRASH_OBJECTS; i++) {
      const key = crashObjectKey(i);
      expect(digestOf(await store.get(key)), key).toEqual(digestOf(objectBytes(i, CRASH_OBJECT_BYTES)));
      expect(await store.getRange(key, 1000, 8), key).toEqual(objectBytes(i, 1008).subarray(1000));
    }
    expect((await store.list('')).keys).toEqual(Array.from({ length: CRASH_OBJECTS }, (_, i) => crashObjectKey(i)));
    const stats = store.stats();
    await store.close();
    return { hot: stats.hotObjects, cold: stats.coldObjects };
  } finally {
    await catalog.close();
  }
}

describe('TieredChunkStore crash (SIGKILL during migration, promotion, eviction)', () => {
  it('after every kill, every object reads back', async () => {
    const folder = tempDir();
    const steps: string[][] = [];
    for (let round = 0; round < ROUNDS; round++) {
      steps.push(await runAndKill(folder, 1000 + round, 1 + ((round * 11) % 45)));
      const counts = await checkEveryObject(folder);
      expect(counts.hot + counts.cold).toBeGreaterThanOrEqual(CRASH_OBJECTS);
    }
    // The kills landed in the middle of the work, not only between cycles.
    expect(steps.flat().some((s) => s.startsWith('moved'))).toBe(true);
    expect(steps.flat().some((s) => s.startsWith('read'))).toBe(true);
  });
});
