/**
 * The tiered store crash test's child (store-tier-crash.test.ts): over two local folders and a
 * LevelDB catalog, it stores OBJECTS objects once, then cycles until killed: rewrite a few with
 * the same bytes (hot again), move everything cold (copy, read back, record, delete), read a few
 * at random (promotions and cache evictions), evict a few. Every step prints a line so the parent
 * can SIGKILL it at varying points. The bytes of object i are always objectBytes(i).
 *
 * argv: <folder> <seed>
 */
import path from 'node:path';
import { LevelCatalogStore } from '../../src/meta/level-catalog.js';
import { SeededRandom } from '../../src/store/seeded-random.js';
import { TieredChunkStore } from '../../src/store/tier/tiered-chunk-store.js';
import { LocalChunkStore } from '../../src/store/local-chunk-store.js';
import { objectBytes } from '../support/tier.js';
import { CRASH_OBJECT_BYTES, CRASH_OBJECTS, crashObjectKey } from './store-tier-crash-shape.js';

const [folder, seedText] = process.argv.slice(2);
if (folder === undefined || seedText === undefined) throw new Error('usage: store-tier-crash-child <folder> <seed>');
const random = new SeededRandom(Number(seedText));
const catalog = await LevelCatalogStore.open(path.join(folder, 'catalog'));
const store = await TieredChunkStore.open({
  hot: new LocalChunkStore(path.join(folder, 'hot')),
  cold: new LocalChunkStore(path.join(folder, 'cold')),
  catalog,
  coolingMs: 0,
  cacheSizeBytesMax: 4 * CRASH_OBJECT_BYTES,
  flushIntervalMs: 5,
  readPattern: { sequentialGapBytes: 0 },
});
const step = (what: string) => process.stdout.write(`step ${what}\n`);
if ((await store.list('', { limit: 1 })).keys.length === 0) {
  for (let i = 0; i < CRASH_OBJECTS; i++) await store.put(crashObjectKey(i), objectBytes(i, CRASH_OBJECT_BYTES));
}
process.stdout.write('ready\n');
for (;;) {
  for (let n = 0; n < 8; n++) {
    const i = random.int(CRASH_OBJECTS);
    await store.put(crashObjectKey(i), objectBytes(i, CRASH_OBJECT_BYTES));
    step(`put ${i}`);
  }
  const moved = await store.migrateCold({ nowMs: Date.now() + 1, onProgress: (p) => step(`${p.outcome} ${p.key}`) });
  if (moved.failed.length > 0) throw new Error(`migration failed: ${moved.failed.map((f) => f.error.message).join('; ')}`);
  for (let n = 0; n < 6; n++) {
    const key = crashObjectKey(random.int(CRASH_OBJECTS));
    const offset = random.int(CRASH_OBJECT_BYTES - 100);
    await store.getRange(key, offset, 100);
    await store.getRange(key, offset, 100);
    await store.settled();
    step(`read ${key}`);
  }
  await store.evict([crashObjectKey(random.int(CRASH_OBJECTS))], { onProgress: (p) => step(`evict ${p.key}`) });
}
