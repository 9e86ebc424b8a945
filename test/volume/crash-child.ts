/**
 * The crash test's child process (see crash.test.ts): runs random volume operations through
 * LocalVolumeService back to back until it is killed, journaling each one before it starts
 * ("begin", with every parameter) and after it ends ("end", or "failed" for a refused operation).
 * The parent replays the journal into a model of what every volume and snapshot must read.
 *
 * argv: <dataDir> <seed> <journal file> <first operation index>
 */
import fs from 'node:fs';
import path from 'node:path';
import { LevelCatalogStore } from '../../src/meta/level-catalog.js';
import { LocalVolumeService } from '../../src/volume/index.js';
import { openImage } from '../../src/cli/img/open-image.js';
import { isStorageError, StorageError } from '../../src/core/errors.js';
import { SeededRandom } from '../../src/store/seeded-random.js';
import { KiB, MiB, pattern, sparseImage } from './patterns.js';
import { CRASH_MAX_CHAIN_DEPTH, CRASH_POOLS, type CrashOp } from './crash-ops.js';

const [dataDir, seedText, journalPath, firstIndexText] = process.argv.slice(2);
if (!dataDir || !seedText || !journalPath || !firstIndexText) throw new Error('usage: crash-child <dataDir> <seed> <journal> <firstIndex>');
const rng = new SeededRandom(Number(seedText));

const catalog = await LevelCatalogStore.open(path.join(dataDir, 'catalog'));
const service = new LocalVolumeService(catalog, dataDir, { maxChainDepth: CRASH_MAX_CHAIN_DEPTH });
const report = await service.recover();
if (report.problems.length > 0) throw new Error(`recover() found problems: ${report.problems.join('; ')}`);
for (const pool of CRASH_POOLS) {
  await service.createPool(pool).catch((err: unknown) => {
    if (!isStorageError(err, 'ALREADY_EXISTS')) throw err;
  });
}
const journal = fs.openSync(journalPath, 'a');
process.stdout.write('ready\n');

function log(entry: object): void {
  fs.writeSync(journal, `${JSON.stringify(entry)}\n`);
}

interface VolState {
  pool: string;
  name: string;
  sizeBytes: number;
  isClone: boolean;
  snapshots: { name: string; protected: boolean; children: number }[];
}

/** The volumes and snapshots, straight from the catalog (cheap: the child spends its time in operations). */
async function state(): Promise<VolState[]> {
  const tables = service.catalog;
  const [volumes, snapshots, layers] = await Promise.all([tables.volumes.all(), tables.snapshots.all(), tables.layers.all()]);
  const owner = new Map(layers.map((l) => [l.id, l.ownerVolumeId]));
  return volumes
    .sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.id.localeCompare(b.id))
    .map((v) => ({
      pool: v.pool,
      name: v.name,
      sizeBytes: v.sizeBytes,
      isClone: layers.some((l) => l.ownerVolumeId === v.id && l.backingLayerId !== undefined && owner.get(l.backingLayerId) !== v.id),
      snapshots: snapshots
        .filter((s) => s.volumeId === v.id)
        .sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.id.localeCompare(b.id))
        .map((s) => ({
          name: s.name,
          protected: s.protected,
          children: layers.filter((l) => l.backingLayerId === s.layerId && l.ownerVolumeId !== v.id).length,
        })),
    }));
}

function weighted<T>(choices: [number, T][]): T {
  const total = choices.reduce((sum, [w]) => sum + w, 0);
  let r = rng.next() * total;
  for (const [w, value] of choices) {
    if ((r -= w) < 0) return value;
  }
  return choices[choices.length - 1]![1];
}

async function chooseOp(i: number): Promise<CrashOp> {
  const vols = await state();
  const pool = rng.pick(CRASH_POOLS);
  if (vols.length < 2) return { op: 'create', pool, vol: `v${i}`, sizeBytes: rng.intBetween(2, 8) * MiB };
  const v = rng.pick(vols);
  const snap = v.snapshots.length > 0 ? rng.pick(v.snapshots) : undefined;
  const kind = weighted<CrashOp['op']>([
    [5, 'write'],
    [3, 'snapshot'],
    [3, 'deleteSnapshot'],
    [1, 'rollback'],
    [2, 'clone'],
    [2, 'flatten'],
    [vols.length < 6 ? 1 : 0, 'import'],
    [vols.length < 6 ? 1 : 0, 'copy'],
    [vols.length < 6 ? 1 : 0, 'create'],
    [vols.length > 3 ? 2 : 0.5, 'deleteVolume'],
    [1, 'resize'],
    [1, 'unprotect'],
    [0.5, 'exportQcow2'],
  ]);
  switch (kind) {
    case 'write': {
      const length = Math.min(v.sizeBytes, rng.intBetween(1, 512) * 4 * KiB);
      const offset = rng.int((v.sizeBytes - length) / 512 + 1) * 512;
      return { op: 'write', pool: v.pool, vol: v.name, offset, length, seed: i };
    }
    case 'snapshot':
      return { op: 'snapshot', pool: v.pool, vol: v.name, snap: `s${i}` };
    case 'deleteSnapshot':
    case 'rollback':
    case 'unprotect':
      if (!snap) return { op: 'snapshot', pool: v.pool, vol: v.name, snap: `s${i}` };
      return { op: kind, pool: v.pool, vol: v.name, snap: snap.name };
    case 'clone':
      if (!snap) return { op: 'snapshot', pool: v.pool, vol: v.name, snap: `s${i}` };
      return { op: 'clone', pool: v.pool, vol: v.name, snap: snap.name, destPool: pool, dest: `c${i}` };
    case 'flatten': {
      const clone = vols.find((x) => x.isClone);
      if (!clone) return { op: 'write', pool: v.pool, vol: v.name, offset: 0, length: 64 * KiB, seed: i };
      return { op: 'flatten', pool: clone.pool, vol: clone.name };
    }
    case 'import':
      return { op: 'import', pool, vol: `i${i}`, sizeBytes: rng.intBetween(2, 8) * MiB, seed: i };
    case 'copy':
      return { op: 'copy', pool: v.pool, vol: v.name, destPool: pool, dest: `k${i}` };
    case 'create':
      return { op: 'create', pool, vol: `v${i}`, sizeBytes: rng.intBetween(2, 8) * MiB };
    case 'deleteVolume':
      return { op: 'deleteVolume', pool: v.pool, vol: v.name };
    case 'resize':
      return { op: 'resize', pool: v.pool, vol: v.name, sizeBytes: rng.intBetween(2, 16) * 512 * KiB };
    case 'exportQcow2':
      return { op: 'exportQcow2', pool: v.pool, vol: v.name };
  }
}

async function* chunks(data: Uint8Array): AsyncGenerator<Uint8Array> {
  for (let pos = 0; pos < data.length; pos += 256 * KiB) yield data.subarray(pos, Math.min(data.length, pos + 256 * KiB));
}

async function waitJob(id: string): Promise<void> {
  const done = await service.waitForJob(id);
  if (done.state !== 'succeeded') throw new StorageError('IO_ERROR', `job ${id} ${done.state}: ${done.error?.message ?? ''}`);
}

async function runOp(op: CrashOp): Promise<void> {
  switch (op.op) {
    case 'create':
      await service.createVolume(op.pool, op.vol, op.sizeBytes);
      return;
    case 'write': {
      const info = await service.volumeInfo(op.pool, op.vol);
      const opened = await openImage(info.location!, { readOnly: false });
      try {
        await opened.image.write(op.offset, pattern(op.length, op.seed));
        await opened.image.flush();
      } finally {
        await opened.close();
      }
      return;
    }
    case 'snapshot':
      await service.createSnapshot(op.pool, op.vol, op.snap);
      return;
    case 'deleteSnapshot':
      await service.deleteSnapshot(op.pool, op.vol, op.snap);
      return;
    case 'rollback':
      await service.rollbackSnapshot(op.pool, op.vol, op.snap);
      return;
    case 'unprotect':
      await service.unprotectSnapshot(op.pool, op.vol, op.snap);
      return;
    case 'clone':
      await service.protectSnapshot(op.pool, op.vol, op.snap);
      await service.cloneSnapshot(op.pool, op.vol, op.snap, op.destPool, op.dest);
      return;
    case 'flatten':
      await waitJob((await service.flattenVolume(op.pool, op.vol)).id);
      return;
    case 'import':
      await service.importVolume(op.pool, op.vol, chunks(sparseImage(op.sizeBytes, op.seed)), { format: 'raw' });
      return;
    case 'copy':
      await waitJob((await service.copyVolume(op.pool, op.vol, op.destPool, op.dest)).id);
      return;
    case 'deleteVolume':
      await service.deleteVolume(op.pool, op.vol, { force: true });
      return;
    case 'resize':
      await service.resizeVolume(op.pool, op.vol, op.sizeBytes, { allowShrink: true });
      return;
    case 'exportQcow2': {
      const { stream } = await service.exportVolume(op.pool, op.vol, { format: 'qcow2' });
      for await (const _ of stream) {
        // discard
      }
      return;
    }
  }
}

const first = Number(firstIndexText);
for (let i = first; i < first + 100_000; i++) {
  const op = await chooseOp(i);
  log({ i, phase: 'begin', op });
  try {
    await runOp(op);
    log({ i, phase: 'end' });
  } catch (err) {
    if (!isStorageError(err) || err.code === 'CORRUPT' || err.code === 'IO_ERROR') throw err;
    log({ i, phase: 'failed', error: `${err.code}: ${err.message}` });
  }
}
