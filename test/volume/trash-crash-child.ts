/**
 * The trash crash test's child process (see trash-crash.test.ts): creates volumes with snapshots
 * and data, deletes each to the trash and purges it (by id, or through an expiry pass), printing
 * "purging <id>" before each purge and "purged <id>" after, until it is killed.
 *
 * With a pause point it stops inside its first purge and prints "paused <where>", so that the
 * parent's SIGKILL lands exactly there: `intent` (the purge's intent is written, its transaction
 * is not) or `remove-<n>` (the transaction landed and n layer files are deleted). It pauses by
 * wrapping the real catalog and layer store (a fault-injecting pair of the same interfaces);
 * `none` runs on and is killed wherever the parent's timing lands.
 *
 * argv: <dataDir> <first volume index> <none|intent|remove-<n>>
 */
import path from 'node:path';
import type { CatalogOp, CatalogStore } from '../../src/core/catalog-store.js';
import { isStorageError } from '../../src/core/errors.js';
import type { LayerStore } from '../../src/core/layer-store.js';
import { LevelCatalogStore } from '../../src/meta/level-catalog.js';
import { LocalLayerStore } from '../../src/store/local-layer-store.js';
import { LocalVolumeService } from '../../src/volume/index.js';
import { openImage } from '../../src/cli/img/open-image.js';
import { MiB, pattern } from './patterns.js';
import { pauseUntilKilled, wrapWith } from '../support/kill-points.js';

const SNAPSHOTS = 6;
const [dataDir, firstText, pauseAt] = process.argv.slice(2);
if (!dataDir || !firstText || !pauseAt) throw new Error('usage: trash-crash-child <dataDir> <first index> <none|intent|remove-N>');
const pauseAfterRemoves = pauseAt.startsWith('remove-') ? Number(pauseAt.slice('remove-'.length)) : undefined;
let purging = false;
let removes = 0;

const isPurgeIntent = (op: CatalogOp) =>
  op.type === 'put' && op.key.startsWith('intent/') && typeof op.value === 'object' && op.value !== null && !Array.isArray(op.value) && op.value['kind'] === 'trash-purge' && op.value['phase'] === 'prepared';

const level = await LevelCatalogStore.open(path.join(dataDir, 'catalog'));
const catalog = wrapWith<CatalogStore>(level, {
  txn: async (compares, ops) => {
    const result = await level.txn(compares, ops);
    if (purging && pauseAt === 'intent' && result.succeeded && ops.some(isPurgeIntent)) await pauseUntilKilled('intent');
    return result;
  },
});
const localLayers = new LocalLayerStore(path.join(dataDir, 'pools'));
const layerStore = wrapWith<LayerStore>(localLayers, {
  remove: async (ref) => {
    const removed = await localLayers.remove(ref);
    if (purging && ++removes === pauseAfterRemoves) await pauseUntilKilled(pauseAt);
    return removed;
  },
});
const service = new LocalVolumeService(catalog, dataDir, { layerStore });
const report = await service.recover();
if (report.problems.length > 0) throw new Error(`recover() found problems: ${report.problems.join('; ')}`);
await service.createPool('p').catch((err: unknown) => {
  if (!isStorageError(err, 'ALREADY_EXISTS')) throw err;
});
process.stdout.write('ready\n');

async function write(name: string, offset: number, seed: number): Promise<void> {
  const opened = await openImage((await service.volumeInfo('p', name)).location!, { readOnly: false });
  try {
    await opened.image.write(offset, pattern(MiB, seed));
    await opened.image.flush();
  } finally {
    await opened.close();
  }
}

for (let i = Number(firstText); ; i++) {
  const name = `v${i}`;
  await service.createVolume('p', name, 4 * MiB);
  for (let snap = 1; snap <= SNAPSHOTS; snap++) {
    await service.createSnapshot('p', name, `s${snap}`);
    await write(name, (snap % 4) * MiB, i + snap);
  }
  const entry = await service.trashVolume('p', name, { expiresInMs: 0 });
  process.stdout.write(`purging ${entry.id}\n`);
  purging = true;
  if (i % 2 === 0) await service.purgeTrash('p', entry.id);
  else await service.purgeExpiredTrash({ limit: 10 });
  purging = false;
  process.stdout.write(`purged ${entry.id}\n`);
}
