/** Volumes: create, list, describe, resize, rename and delete. */
import { StorageError } from '../core/errors.js';
import { countOf } from '../core/text.js';
import { formatSizeHuman } from '../core/units.js';
import { CatalogTxn } from './catalog.js';
import { newId, nowIso, poolKey, type ServiceContext } from './context.js';
import { checkHeadNotLive, checkNotLive, withVolume } from './guards.js';
import { checkNotInGroup } from './groups.js';
import { stopSeals } from './sealing.js';
import { commitIntent, newIntent, newLayer, runIntent, finishResize } from './intents.js';
import { createLayerFile } from './layers.js';
import { withLiveChanges } from './live-registry.js';
import { withVolumeWriter } from './writers.js';
import { checkName, checkVolumeSize } from './names.js';
import {
  checkNameFree,
  checkQuota,
  clonesOfVolume,
  describeVolume,
  layersOfVolume,
  requirePool,
  snapshotsOfVolume,
  volumeByName,
  volumesOfPool,
} from './queries.js';
import { settingForNewVolume } from './qos/settings.js';
import type { QosSettingChange } from './qos/types.js';
import type { VolumeRecord } from './records.js';
import type { VolumeInfo } from './types.js';

export async function createVolume(svc: ServiceContext, pool: string, name: string, sizeBytes: number, options: { qos?: QosSettingChange } = {}): Promise<VolumeInfo> {
  checkName('volume', name);
  checkVolumeSize(sizeBytes);
  return svc.locks.run([poolKey(pool)], async () => {
    const poolRecord = await requirePool(svc, pool);
    await checkNameFree(svc, pool, name);
    await checkQuota(svc, poolRecord, sizeBytes, `the new volume '${pool}/${name}'`);
    // The policy check (and its record's rewrite: see qos/settings.ts) goes in the final transaction.
    const qosTxn = new CatalogTxn();
    const qos = await settingForNewVolume(svc, qosTxn, options.qos);
    const volume: VolumeRecord = { id: newId(), pool, name, sizeBytes, activeLayerId: newId(), ...(qos === undefined ? {} : { qos }), createdAt: nowIso() };
    const layer = newLayer(volume.activeLayerId, pool, volume.id, undefined);
    const intent = newIntent('volume-create', `${pool}/${name}`, { createFiles: [layer] });
    await runIntent(svc, intent, async () => {
      await createLayerFile(svc.layerStore, layer, sizeBytes);
      await svc.layerStore.syncPool(pool);
      const txn = qosTxn;
      svc.catalog.pools.requireUnchanged(txn, poolRecord);
      svc.catalog.createVolume(txn, volume);
      svc.catalog.layers.create(txn, layer);
      await commitIntent(svc, txn, intent);
    });
    return describeVolume(svc, volume);
  });
}

export async function listVolumes(svc: ServiceContext, pool: string): Promise<VolumeInfo[]> {
  await requirePool(svc, pool);
  const volumes = (await volumesOfPool(svc, pool)).sort((a, b) => a.name.localeCompare(b.name));
  return Promise.all(volumes.map((v) => describeVolume(svc, v)));
}

export async function volumeInfo(svc: ServiceContext, pool: string, name: string): Promise<VolumeInfo> {
  return describeVolume(svc, await volumeByName(svc, pool, name));
}

export async function resizeVolume(svc: ServiceContext, pool: string, name: string, sizeBytes: number, options: { allowShrink?: boolean } = {}): Promise<VolumeInfo> {
  checkVolumeSize(sizeBytes);
  return withVolume(
    svc,
    pool,
    name,
    async (vol) => {
      if (sizeBytes < vol.sizeBytes && !options.allowShrink) {
        throw new StorageError(
          'INVALID_ARGUMENT',
          `shrinking '${pool}/${name}' from ${formatSizeHuman(vol.sizeBytes)} to ${formatSizeHuman(sizeBytes)} loses the data past the new end`,
          { fix: { option: 'allowShrink', text: 'pass {} to shrink it anyway' } },
        );
      }
      if (sizeBytes < vol.sizeBytes) checkHeadNotLive(svc, vol, 'shrink it');
      const resized = await withLiveChanges(svc, [vol.activeLayerId], () => resizeLocked(svc, vol, sizeBytes));
      return describeVolume(svc, resized);
    },
    { keys: [poolKey(pool)] },
  );
}

export async function renameVolume(svc: ServiceContext, pool: string, name: string, newName: string): Promise<VolumeInfo> {
  checkName('volume', newName);
  return withVolume(
    svc,
    pool,
    name,
    async (vol) => {
      if (newName === vol.name) return describeVolume(svc, vol);
      checkNotLive(svc, vol, 'rename it (exports are named after it)');
      await checkNameFree(svc, pool, newName);
      const txn = new CatalogTxn();
      const renamed = svc.catalog.renameVolume(txn, vol, newName);
      await svc.catalog.commit(txn);
      return describeVolume(svc, renamed);
    },
    { keys: [poolKey(pool)] },
  );
}

export async function deleteVolume(svc: ServiceContext, pool: string, name: string, options: { force?: boolean } = {}): Promise<void> {
  await withVolume(svc, pool, name, async (vol) => {
    checkNotLive(svc, vol, 'delete it');
    await checkNotInGroup(svc, vol, 'delete it');
    const snapshots = await snapshotsOfVolume(svc, vol.id);
    await checkNoClones(svc, vol, `volume '${pool}/${name}'`);
    if (snapshots.length > 0 && !options.force) {
      const them = snapshots.length === 1 ? 'it' : 'them';
      throw new StorageError('BUSY', `volume '${pool}/${name}' has ${countOf(snapshots.length, 'snapshot')}`, {
        fix: { option: 'force', text: `delete ${them} first, or pass {} to delete ${them} with the volume` },
      });
    }
    await dropVolume(svc, vol, 'volume-delete');
  });
}

/** Refuses (BUSY, naming them) while other volumes are clones of the volume's snapshots. */
export async function checkNoClones(svc: ServiceContext, vol: VolumeRecord, what: string): Promise<void> {
  const clones = await clonesOfVolume(svc, vol);
  if (clones.length > 0) throw new StorageError('BUSY', `${what} has clones (${clones.join(', ')}); flatten or delete them first`);
}

/**
 * Deletes a volume (the caller holds its lock and checked it has no clones): its record, its
 * snapshots' and layers' in one transaction under an intent that names the layer files, which
 * are deleted after it (recovery finishes that after a crash).
 */
export async function dropVolume(svc: ServiceContext, vol: VolumeRecord, kind: string): Promise<void> {
  const snapshots = await snapshotsOfVolume(svc, vol.id);
  const layers = await layersOfVolume(svc, vol.id);
  await stopSeals(svc, layers.map((l) => l.id)); // a seal in a dedup pool ends first, leaving its layer whole
  const intent = newIntent(kind, `${vol.pool}/${vol.name}`, {});
  await runIntent(svc, intent, async () => {
    const txn = new CatalogTxn();
    svc.catalog.volumes.remove(txn, vol);
    for (const snap of snapshots) svc.catalog.snapshots.remove(txn, snap);
    for (const layer of layers) svc.catalog.layers.remove(txn, layer);
    await commitIntent(svc, txn, intent, layers);
  });
}

/** Resizes the volume's active layer (zeroing what a larger backing file would show). */
export async function resizeLocked(svc: ServiceContext, vol: VolumeRecord, sizeBytes: number): Promise<VolumeRecord> {
  if (sizeBytes === vol.sizeBytes) return vol;
  if (sizeBytes > vol.sizeBytes) {
    await checkQuota(svc, await requirePool(svc, vol.pool), sizeBytes, `growing '${vol.pool}/${vol.name}' to ${formatSizeHuman(sizeBytes)}`, { volumeId: vol.id });
  }
  const intent = newIntent('resize', `${vol.pool}/${vol.name}`, {
    resize: { volumeId: vol.id, layerId: vol.activeLayerId, fromBytes: vol.sizeBytes, toBytes: sizeBytes },
  });
  await withVolumeWriter(svc, vol.id, () => runIntent(svc, intent, () => finishResize(svc, intent)));
  return svc.catalog.volumes.require(vol.id, `volume '${vol.pool}/${vol.name}'`);
}
