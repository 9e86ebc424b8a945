/** Volumes: create, list, describe, resize, rename and delete. */
import { StorageError } from '../core/errors.js';
import { countOf } from '../core/text.js';
import { formatSizeHuman } from '../core/units.js';
import type { CatalogOp } from '../catalog/catalog.js';
import { delOp, putOp } from '../catalog/catalog.js';
import type { VolumeRecord } from '../catalog/records.js';
import { newId, nowIso, poolKey, type ServiceContext } from './context.js';
import { checkHeadNotLive, checkNotLive, withVolume } from './guards.js';
import { commitOps, newIntent, newLayer, runIntent, finishResize } from './intents.js';
import { createLayerFile } from './layers.js';
import { withLiveChanges } from './live-registry.js';
import { checkName, checkVolumeSize } from './names.js';
import { catalogView, checkNameFree, checkQuota, clonesOfVolume, describeVolume, requirePool, volumeByName } from './queries.js';
import type { VolumeInfo } from './types.js';

export async function createVolume(svc: ServiceContext, pool: string, name: string, sizeBytes: number): Promise<VolumeInfo> {
  checkName('volume', name);
  checkVolumeSize(sizeBytes);
  return svc.locks.run([poolKey(pool)], async () => {
    const poolRecord = await requirePool(svc, pool);
    await checkNameFree(svc, pool, name);
    await checkQuota(svc, poolRecord, sizeBytes, `the new volume '${pool}/${name}'`);
    const volume: VolumeRecord = { id: newId(), pool, name, sizeBytes, activeLayerId: newId(), createdAt: nowIso() };
    const layer = newLayer(volume.activeLayerId, pool, volume.id, undefined);
    const intent = newIntent('volume-create', `${pool}/${name}`, { createFiles: [layer] });
    await runIntent(svc, intent, async () => {
      await createLayerFile(svc.layerStore, layer, sizeBytes);
      await svc.layerStore.syncPool(pool);
      await svc.catalog.batch(commitOps(intent, [putOp('volume', volume), putOp('layer', layer)]));
    });
    return describeVolume(svc, volume);
  });
}

export async function listVolumes(svc: ServiceContext, pool: string): Promise<VolumeInfo[]> {
  await requirePool(svc, pool);
  const view = await catalogView(svc);
  const volumes = view.volumes.filter((v) => v.pool === pool).sort((a, b) => a.name.localeCompare(b.name));
  return Promise.all(volumes.map((v) => describeVolume(svc, v, view)));
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
      const renamed = { ...vol, name: newName };
      await svc.catalog.put('volume', renamed);
      return describeVolume(svc, renamed);
    },
    { keys: [poolKey(pool)] },
  );
}

export async function deleteVolume(svc: ServiceContext, pool: string, name: string, options: { force?: boolean } = {}): Promise<void> {
  await withVolume(svc, pool, name, async (vol) => {
    checkNotLive(svc, vol, 'delete it');
    const view = await catalogView(svc);
    const snapshots = view.snapshots.filter((s) => s.volumeId === vol.id);
    const clones = clonesOfVolume(vol, view);
    if (clones.length > 0) {
      throw new StorageError(
        'BUSY',
        `volume '${pool}/${name}' has clones (${clones.join(', ')}); flatten or delete them first`,
      );
    }
    if (snapshots.length > 0 && !options.force) {
      const them = snapshots.length === 1 ? 'it' : 'them';
      throw new StorageError('BUSY', `volume '${pool}/${name}' has ${countOf(snapshots.length, 'snapshot')}`, {
        fix: { option: 'force', text: `delete ${them} first, or pass {} to delete ${them} with the volume` },
      });
    }
    const layers = [...view.layers.values()].filter((l) => l.ownerVolumeId === vol.id);
    const intent = newIntent('volume-delete', `${pool}/${name}`, {});
    const ops: CatalogOp[] = [
      delOp('volume', vol.id),
      ...snapshots.map((s) => delOp('snapshot', s.id)),
      ...layers.map((l) => delOp('layer', l.id)),
    ];
    await runIntent(svc, intent, async () => {
      await svc.catalog.batch(commitOps(intent, ops, layers));
    });
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
  await runIntent(svc, intent, () => finishResize(svc, intent));
  return { ...vol, sizeBytes };
}
