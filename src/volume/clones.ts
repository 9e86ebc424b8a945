/** Clones: a new volume on a protected snapshot, and flattening a clone into a standalone volume. */
import { StorageError } from '../core/errors.js';
import { CatalogTxn } from './catalog.js';
import { newId, nowIso, poolKey, volKey, type ServiceContext } from './context.js';
import { chainMap, layerMap, type KindRange } from './extents.js';
import { hold, unhold, withVolume } from './guards.js';
import { copyPlan, totalOf, type PlanStep } from './image-ops.js';
import { prepareToWrite, withResealing } from './sealing.js';
import { commitIntent, newIntent, newLayer, runIntent } from './intents.js';
import { copyInWindows, runIntentLive, withChain } from './live-copy.js';
import type { JobContext } from './jobs.js';
import { backingOf, createLayerFile } from './layers.js';
import { withLiveChanges } from './live-registry.js';
import { withVolumeWriter } from './writers.js';
import { checkName } from './names.js';
import { boundaryLayers, checkNameFree, checkQuota, layerChain, requirePool, snapshotByName } from './queries.js';
import type { VolumeRecord } from './records.js';
import type { JobInfo, VolumeInfo } from './types.js';
import { volumeInfo } from './volumes.js';

export async function cloneSnapshot(svc: ServiceContext, pool: string, volume: string, snapshot: string, destPool: string, destName: string): Promise<VolumeInfo> {
  checkName('volume', destName);
  const clone = await withVolume(
    svc,
    pool,
    volume,
    async (vol) => {
      const snap = await snapshotByName(svc, vol, snapshot);
      if (!snap.protected) {
        throw new StorageError('BUSY', `snapshot '${pool}/${volume}@${snapshot}' is not protected, and only protected snapshots can be cloned`, {
          fix: { operation: 'protectSnapshot', pool, volume, snapshot, text: 'protect it first with {}' },
        });
      }
      const dest = await requirePool(svc, destPool);
      await checkNameFree(svc, destPool, destName);
      await checkQuota(svc, dest, snap.sizeBytes, `the clone '${destPool}/${destName}' of '${pool}/${volume}@${snapshot}'`);
      const baseChain = await layerChain(svc, snap.layerId);
      const base = baseChain[0]!;
      const depth = baseChain.length + 1;
      if (depth > svc.maxChainDepth && svc.chainDepthPolicy === 'refuse') {
        throw new StorageError(
          'LIMIT_EXCEEDED',
          `a clone of '${pool}/${volume}@${snapshot}' would have a chain of ${depth} layers (maxChainDepth ${svc.maxChainDepth}); ` +
            `flatten '${pool}/${volume}' or delete some of its snapshots first`,
        );
      }
      const record: VolumeRecord = { id: newId(), pool: destPool, name: destName, sizeBytes: snap.sizeBytes, activeLayerId: newId(), createdAt: nowIso() };
      const layer = newLayer(record.activeLayerId, destPool, record.id, base);
      const intent = newIntent('clone', `${destPool}/${destName}`, { createFiles: [layer] });
      await runIntent(svc, intent, async () => {
        await createLayerFile(svc.layerStore, layer, snap.sizeBytes, base);
        await svc.layerStore.syncPool(destPool);
        const txn = new CatalogTxn();
        svc.catalog.pools.requireUnchanged(txn, dest);
        svc.catalog.createVolume(txn, record);
        svc.catalog.layers.create(txn, layer);
        await commitIntent(svc, txn, intent);
      });
      return { record, flatten: depth > svc.maxChainDepth };
    },
    { keys: [poolKey(destPool)] },
  );
  if (clone.flatten) {
    // Policy 'flatten': the new clone would be too deep, so it is flattened before it is returned.
    await withVolume(svc, destPool, destName, async (vol) => {
      await svc.jobs.run('flatten', `${destPool}/${destName}`, (ctx) => flattenLocked(svc, vol, ctx));
    });
  }
  return volumeInfo(svc, destPool, destName);
}

export async function flattenVolume(svc: ServiceContext, pool: string, name: string): Promise<JobInfo> {
  return withVolume(svc, pool, name, async (vol) => {
    if ((await boundaryLayers(svc, vol)).length === 0) {
      throw new StorageError('BUSY', `volume '${pool}/${name}' is not a clone; there is nothing to flatten`);
    }
    hold(svc, vol.id, 'a flatten job runs on it', { job: true });
    try {
      return await svc.jobs.start('flatten', `${pool}/${name}`, async (ctx) => {
        try {
          ctx.throwIfCancelled();
          const current = await svc.catalog.volumes.require(vol.id, `volume '${pool}/${name}'`);
          // The hold keeps other changes away; the lock is taken only for the commit.
          await flattenLocked(svc, current, ctx, { lockForCommit: true });
        } finally {
          unhold(svc, vol.id);
        }
      });
    } catch (err) {
      unhold(svc, vol.id);
      throw err;
    }
  });
}

/**
 * Flattens a clone: every layer of the volume whose backing layer belongs to another volume gets
 * the data its backing chain supplies copied up, then loses its backing file.
 *
 * The copy goes a window at a time (live-copy.ts): the volume's exports pause for each window and
 * run between them, so a guest keeps working through a long flatten. Only the commit (headers
 * without backing file, and the catalog) happens under one more pause.
 */
export async function flattenLocked(svc: ServiceContext, vol: VolumeRecord, ctx: JobContext, options: { lockForCommit?: boolean } = {}): Promise<void> {
  const boundary = await boundaryLayers(svc, vol);
  if (boundary.length === 0) return;
  const ids = boundary.map((l) => l.id);
  const intent = newIntent('flatten', `${vol.pool}/${vol.name}`, { rebaseLayerIds: ids, writeLayerIds: ids });
  // A sealed snapshot layer of the clone is unsealed to be written, and sealed again afterwards.
  await withResealing(svc, ids, `${vol.pool}/${vol.name}`, () => withVolumeWriter(svc, vol.id, () => runIntentLive(svc, ids, intent, async () => {
    // Under a pause: a chain an export holds may read a sealed layer's manifest, which unsealing drops.
    await withLiveChanges(svc, ids, () => prepareToWrite(svc, boundary));
    // The backing chains belong to other volumes and are frozen: what they hold is read outside the pauses.
    const sources = await Promise.all(boundary.map(async (layer) => layerChain(svc, layer.backingLayerId!)));
    const sizes = await Promise.all(sources.map((chain) => withChain(svc, chain, async (image) => image.sizeBytes)));
    await copyInWindows(svc, ctx, {
      pauseLayerIds: ids,
      sizeBytes: Math.max(...sizes),
      candidates: async (start, end) => {
        const out: KindRange[] = [];
        for (const chain of sources) {
          await withChain(svc, chain, async (backing) => {
            for (const x of await chainMap(backing, start, end)) if (x.kind === 'data') out.push(x);
          });
        }
        return out;
      },
      copyWindow: async (start, end) => {
        let copied = 0;
        for (const layer of boundary) {
          await withChain(svc, await layerChain(svc, layer.id), async (image) => {
            const backing = backingOf(image)!;
            // Planned now: what the layer holds by now (guest writes included) is not copied over.
            const plan: PlanStep[] = [];
            for (const u of await layerMap(image, start, Math.min(end, image.sizeBytes))) {
              if (u.kind !== 'unallocated') continue;
              for (const x of await chainMap(backing, u.offset, u.offset + u.length)) if (x.kind === 'data') plan.push(x);
            }
            await copyPlan(backing, image, plan, ctx, 'skip');
            await image.flush();
            copied += totalOf(plan);
          }, { writable: true });
        }
        return copied;
      },
    });
    ctx.throwIfCancelled();
    // Headers and catalog change together, the exports paused and under the volume's lock, so
    // that nothing opening the chain (an export, a diff) sees one without the other.
    const commit = () => withLiveChanges(svc, ids, async () => {
      for (const layer of boundary) {
        await withChain(svc, await layerChain(svc, layer.id), (image) => image.setBackingFile(undefined, undefined), { writable: true });
      }
      const txn = new CatalogTxn();
      for (const layer of boundary) {
        const { backingLayerId: _old, ...rest } = layer;
        svc.catalog.layers.update(txn, layer, rest);
      }
      await commitIntent(svc, txn, intent);
    });
    if (options.lockForCommit) await svc.locks.run([volKey(vol.id)], commit);
    else await commit();
  })));
}

