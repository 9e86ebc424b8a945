/**
 * The group snapshot crash test's child process (see group-crash.test.ts): three volumes in two
 * pools in group 'g'; it writes to each, then takes group snapshot s<i>, printing "snapping s<i>"
 * before and "snapped s<i>" after, round after round until it is killed.
 *
 * With a pause point it stops inside its first group snapshot and prints "paused <where>", so the
 * parent's SIGKILL lands exactly there: `intent` (the intent is written, no member file yet),
 * `create-<n>` (n members' new active layers created: between members), `committed` (the one
 * transaction landed). It pauses by wrapping the real catalog and layer store; `none` runs on and
 * is killed wherever the parent's timing lands.
 *
 * argv: <dataDir> <first round> <none|intent|create-<n>|committed>
 */
import path from 'node:path';
import type { CatalogOp, CatalogStore } from '../../src/core/catalog-store.js';
import { isStorageError } from '../../src/core/errors.js';
import type { LayerStore } from '../../src/core/layer-store.js';
import { LevelCatalogStore } from '../../src/meta/level-catalog.js';
import { LocalLayerStore } from '../../src/store/local-layer-store.js';
import { LocalVolumeService } from '../../src/volume/index.js';
import { openImage } from '../../src/cli/img/open-image.js';
import { KiB, MiB, pattern } from './patterns.js';
import { pauseUntilKilled, wrapWith } from '../support/kill-points.js';

const GROUP_CRASH_MEMBERS = [
  { pool: 'p', volume: 'v1' },
  { pool: 'q', volume: 'v2' },
  { pool: 'p', volume: 'v3' },
] as const;

const [dataDir, firstText, pauseAt] = process.argv.slice(2);
if (!dataDir || !firstText || !pauseAt) throw new Error('usage: group-crash-child <dataDir> <first round> <none|intent|create-N|committed>');
const pauseAfterCreates = pauseAt.startsWith('create-') ? Number(pauseAt.slice('create-'.length)) : undefined;
let snapping = false;
let creates = 0;

const isPut = (op: CatalogOp, prefix: string) => op.type === 'put' && op.key.startsWith(prefix);
const isGroupIntent = (op: CatalogOp) =>
  op.type === 'put' && op.key.startsWith('intent/') && typeof op.value === 'object' && op.value !== null && !Array.isArray(op.value) && op.value['kind'] === 'group-snapshot-create';

const level = await LevelCatalogStore.open(path.join(dataDir, 'catalog'));
const catalog = wrapWith<CatalogStore>(level, {
  txn: async (compares, ops) => {
    const result = await level.txn(compares, ops);
    if (snapping && result.succeeded) {
      if (pauseAt === 'intent' && ops.some(isGroupIntent)) await pauseUntilKilled('intent');
      if (pauseAt === 'committed' && ops.some((op) => isPut(op, 'group-snapshot/'))) await pauseUntilKilled('committed');
    }
    return result;
  },
});
const localLayers = new LocalLayerStore(path.join(dataDir, 'pools'));
const layerStore = wrapWith<LayerStore>(localLayers, {
  create: async (ref, options) => {
    const file = await localLayers.create(ref, options);
    // The pause comes once the file is whole (createLayerFile writes its header after create).
    if (snapping && ++creates === pauseAfterCreates) {
      const close = file.close.bind(file);
      return wrapWith(file, { close: async () => { await close(); await pauseUntilKilled(pauseAt); } });
    }
    return file;
  },
});
const service = new LocalVolumeService(catalog, dataDir, { layerStore, maxChainDepth: 64 });
const report = await service.recover();
if (report.problems.length > 0) throw new Error(`recover() found problems: ${report.problems.join('; ')}`);
for (const pool of ['p', 'q']) {
  await service.createPool(pool).catch((err: unknown) => {
    if (!isStorageError(err, 'ALREADY_EXISTS')) throw err;
  });
}
await service.createGroup('g').catch((err: unknown) => {
  if (!isStorageError(err, 'ALREADY_EXISTS')) throw err;
});
for (const { pool, volume } of GROUP_CRASH_MEMBERS) {
  await service.createVolume(pool, volume, MiB).catch((err: unknown) => {
    if (!isStorageError(err, 'ALREADY_EXISTS')) throw err;
  });
  await service.addToGroup('g', pool, volume);
}
process.stdout.write('ready\n');

async function write(pool: string, volume: string, offset: number, seed: number): Promise<void> {
  const opened = await openImage((await service.volumeInfo(pool, volume)).location!, { readOnly: false });
  try {
    await opened.image.write(offset, pattern(64 * KiB, seed));
    await opened.image.flush();
  } finally {
    await opened.close();
  }
}

for (let round = Number(firstText); ; round++) {
  for (const [i, { pool, volume }] of GROUP_CRASH_MEMBERS.entries()) await write(pool, volume, (round % 16) * 64 * KiB, round * 10 + i);
  process.stdout.write(`snapping s${round}\n`);
  snapping = true;
  await service.createGroupSnapshot('g', `s${round}`);
  snapping = false;
  process.stdout.write(`snapped s${round}\n`);
}
