/**
 * Snapshots: create, list, describe, rename, roll back to, delete (merging the snapshot's layer
 * into its children), protect, and the per-volume snapshot limit.
 */
import { StorageError } from '../core/errors.js';
import type { Qcow2Image } from '../../formats/qcow2/index.js';
import { countOf } from '../core/text.js';
import { formatSizeHuman } from '../core/units.js';
import { CatalogTxn } from './catalog.js';
import { flattenLocked } from './clones.js';
import { newId, nowIso, poolKey, type ServiceContext } from './context.js';
import { layerMap, type KindRange } from './extents.js';
import { checkHeadNotLive, stopExportsFix, withVolume } from './guards.js';
import { copyPlan, totalOfKind, type PlanStep } from './image-ops.js';
import { commitIntent, newIntent, newLayer, runIntent } from './intents.js';
import type { JobContext } from './jobs.js';
import { backingOf, createLayerFile, openLayerAlone } from './layers.js';
import { copyInWindows, runIntentLive, withChain } from './live-copy.js';
import { liveKey } from './live.js';
import { prepareToWrite, scheduleSeal, stopSeals, withResealing } from './sealing.js';
import { withLiveChanges } from './live-registry.js';
import { withVolumeWriter } from './writers.js';
import { checkLimit, checkName } from './names.js';
import {
  boundaryLayers,
  childLayers,
  childrenOf,
  checkQuota,
  describeSnapshot,
  describeVolume,
  findSnapshot,
  layerById,
  layerChain,
  requirePool,
  snapshotByName,
  snapshotsOfVolume,
  volumeByName,
} from './queries.js';
import type { LayerRecord, SnapshotRecord, VolumeRecord } from './records.js';
import type { SnapshotInfo, VolumeInfo } from './types.js';

export async function createSnapshot(svc: ServiceContext, pool: string, volume: string, name: string): Promise<SnapshotInfo> {
  checkName('snapshot', name);
  return withVolume(svc, pool, volume, async (vol) => {
    const snap = await createSnapshotLocked(svc, vol, name);
    return describeSnapshot(svc, snap);
  });
}

export async function listSnapshots(svc: ServiceContext, pool: string, volume: string): Promise<SnapshotInfo[]> {
  const vol = await volumeByName(svc, pool, volume);
  const snaps = await snapshotsOfVolume(svc, vol.id);
  return Promise.all(snaps.map((s) => describeSnapshot(svc, s)));
}

export async function snapshotInfo(svc: ServiceContext, pool: string, volume: string, name: string): Promise<SnapshotInfo> {
  const vol = await volumeByName(svc, pool, volume);
  return describeSnapshot(svc, await snapshotByName(svc, vol, name));
}

export async function renameSnapshot(svc: ServiceContext, pool: string, volume: string, name: string, newName: string): Promise<SnapshotInfo> {
  checkName('snapshot', newName);
  return withVolume(svc, pool, volume, async (vol) => {
    const snap = await snapshotByName(svc, vol, name);
    if (newName === name) return describeSnapshot(svc, snap);
    await checkNotGroupOwned(svc, snap, vol, 'rename');
    const exported = svc.live.get(liveKey({ volumeId: vol.id, snapshotId: snap.id }));
    if (exported !== undefined) {
      throw new StorageError('BUSY', `snapshot '${pool}/${volume}@${name}' is exported; stop its exports to rename it (exports are named after it)`, {
        fix: stopExportsFix([exported]),
      });
    }
    if (await findSnapshot(svc, vol, newName)) {
      throw new StorageError('ALREADY_EXISTS', `snapshot '${pool}/${volume}@${newName}' already exists`);
    }
    const renamed = { ...snap, name: newName };
    await svc.catalog.change((txn) => svc.catalog.snapshots.update(txn, snap, renamed));
    return describeSnapshot(svc, renamed);
  });
}

export async function rollbackSnapshot(svc: ServiceContext, pool: string, volume: string, name: string): Promise<VolumeInfo> {
  return withVolume(
    svc,
    pool,
    volume,
    async (vol) => {
      const plan = await planRollback(svc, vol, await snapshotByName(svc, vol, name));
      const intent = newIntent('rollback', `${pool}/${volume}@${name}`, { createFiles: [plan.active] });
      await runIntent(svc, intent, async () => {
        await createRollbackLayer(svc, plan);
        await svc.layerStore.syncPool(vol.pool);
        const txn = new CatalogTxn();
        addRollbackRecords(svc, txn, plan);
        await commitIntent(svc, txn, intent, rollbackDeletes(plan));
      });
      return describeVolume(svc, plan.updated);
    },
    { keys: [poolKey(pool)] },
  );
}

/** What rolling a volume back to a snapshot writes: a new active layer over the snapshot's, the old one dropped. */
export interface RollbackPlan {
  volume: VolumeRecord;
  snapshot: SnapshotRecord;
  snapshotLayer: LayerRecord;
  oldActive: LayerRecord;
  /** Internal layers the seal policy froze above the snapshot: they go with the old active layer. */
  dropped: LayerRecord[];
  active: LayerRecord;
  updated: VolumeRecord;
}

/**
 * Checks that `vol` may be rolled back to `snap` (its head not exported, the pool's quota if it
 * grows) and builds the records; nothing is written, but the seals of the layers it drops are
 * stopped. The caller holds the volume's and pool's locks.
 */
export async function planRollback(svc: ServiceContext, vol: VolumeRecord, snap: SnapshotRecord): Promise<RollbackPlan> {
  checkHeadNotLive(svc, vol, 'roll it back (the guest would see its disk change under it)');
  if (snap.sizeBytes > vol.sizeBytes) {
    const what = `rolling '${vol.pool}/${vol.name}' back to its ${formatSizeHuman(snap.sizeBytes)} snapshot '${snap.name}'`;
    await checkQuota(svc, await requirePool(svc, vol.pool), snap.sizeBytes, what, { volumeId: vol.id });
  }
  const oldActive = await layerById(svc, vol.activeLayerId);
  const snapshotLayer = await layerById(svc, snap.layerId);
  if ((await childLayers(svc, oldActive.id)).length > 0) {
    throw new Error(`assertion failed: active layer ${oldActive.id} is some layer's backing file`);
  }
  const active = newLayer(newId(), vol.pool, vol.id, snapshotLayer);
  const updated: VolumeRecord = { ...vol, activeLayerId: active.id, sizeBytes: snap.sizeBytes };
  const dropped = await internalLayersUnder(svc, oldActive);
  await stopSeals(svc, dropped.map((l) => l.id));
  return { volume: vol, snapshot: snap, snapshotLayer, oldActive, dropped, active, updated };
}

export async function createRollbackLayer(svc: ServiceContext, plan: RollbackPlan): Promise<void> {
  await createLayerFile(svc.layerStore, plan.active, plan.snapshot.sizeBytes, plan.snapshotLayer);
}

/** Adds the plan's records to txn; the caller's commitIntent deletes rollbackDeletes(plan). */
export function addRollbackRecords(svc: ServiceContext, txn: CatalogTxn, plan: RollbackPlan): void {
  svc.catalog.layers.create(txn, plan.active);
  svc.catalog.layers.remove(txn, plan.oldActive);
  for (const layer of plan.dropped) svc.catalog.layers.remove(txn, layer);
  svc.catalog.volumes.update(txn, plan.volume, plan.updated);
}

/** The layer files a rollback deletes once committed. */
export function rollbackDeletes(plan: RollbackPlan): LayerRecord[] {
  return [plan.oldActive, ...plan.dropped];
}

/**
 * Refuses to delete or rename a member snapshot of a group snapshot on its own (BUSY naming the
 * group snapshot and `group snap delete`): the group snapshot is one point in time for all members.
 */
async function checkNotGroupOwned(svc: ServiceContext, snap: SnapshotRecord, vol: VolumeRecord, what: 'delete' | 'rename'): Promise<void> {
  if (snap.groupSnapshotId === undefined) return;
  const groupSnap = await svc.catalog.groupSnapshots.get(snap.groupSnapshotId);
  const group = groupSnap === undefined ? undefined : await svc.catalog.groups.get(groupSnap.groupId);
  if (groupSnap === undefined || group === undefined) return; // released by `group remove` meanwhile
  const message = `snapshot '${vol.pool}/${vol.name}@${snap.name}' belongs to group snapshot '${group.name}@${groupSnap.name}'`;
  if (what === 'rename') throw new StorageError('BUSY', `${message}: it keeps its group's name (remove the volume from the group to make it its own)`);
  throw new StorageError('BUSY', message, {
    fix: { operation: 'deleteGroupSnapshot', group: group.name, snapshot: groupSnap.name, text: 'delete the whole group snapshot with {}' },
  });
}

/**
 * The internal layers (freeze.ts) under `top` that only `top`'s chain reads: each the sole child's
 * backing, down to the first snapshot layer or layer with other children.
 */
async function internalLayersUnder(svc: ServiceContext, top: LayerRecord): Promise<LayerRecord[]> {
  const out: LayerRecord[] = [];
  for (let child = top; child.backingLayerId !== undefined; ) {
    const layer = await layerById(svc, child.backingLayerId);
    if (layer.internal !== true || (await childLayers(svc, layer.id)).length !== 1) break;
    out.push(layer);
    child = layer;
  }
  return out;
}

export async function deleteSnapshot(svc: ServiceContext, pool: string, volume: string, name: string): Promise<void> {
  await withVolume(svc, pool, volume, async (vol) => {
    const snap = await snapshotByName(svc, vol, name);
    await checkNotGroupOwned(svc, snap, vol, 'delete');
    if (snap.protected) {
      throw new StorageError('BUSY', `snapshot '${pool}/${volume}@${name}' is protected`, {
        fix: { operation: 'unprotectSnapshot', pool, volume, snapshot: name, text: 'unprotect it first with {}' },
      });
    }
    const exported = svc.live.get(liveKey({ volumeId: vol.id, snapshotId: snap.id }));
    if (exported !== undefined) {
      // The fix names each export: 'strata volume detach POOL/VOL@SNAP' for a guest's, unexport-nbd for NBD.
      throw new StorageError('BUSY', `snapshot '${pool}/${volume}@${name}' is exported; stop its exports first`, { fix: stopExportsFix([exported]) });
    }
    await svc.jobs.run('snapshot-delete', `${pool}/${volume}@${name}`, (ctx) => deleteSnapshotLocked(svc, vol, snap, ctx));
  });
}

export async function protectSnapshot(svc: ServiceContext, pool: string, volume: string, name: string): Promise<SnapshotInfo> {
  return withVolume(svc, pool, volume, async (vol) => {
    const snap = await snapshotByName(svc, vol, name);
    const updated = { ...snap, protected: true };
    if (!snap.protected) await svc.catalog.change((txn) => svc.catalog.snapshots.update(txn, snap, updated));
    return describeSnapshot(svc, updated);
  });
}

export async function unprotectSnapshot(svc: ServiceContext, pool: string, volume: string, name: string): Promise<SnapshotInfo> {
  return withVolume(svc, pool, volume, async (vol) => {
    const snap = await snapshotByName(svc, vol, name);
    const children = await childrenOf(svc, snap);
    if (children.length > 0) {
      throw new StorageError(
        'BUSY',
        `snapshot '${pool}/${volume}@${name}' has clones (${children.join(', ')}); flatten or delete them first`,
      );
    }
    const updated = { ...snap, protected: false };
    if (snap.protected) await svc.catalog.change((txn) => svc.catalog.snapshots.update(txn, snap, updated));
    return describeSnapshot(svc, updated);
  });
}

export async function setSnapshotLimit(svc: ServiceContext, pool: string, volume: string, limit: number | undefined): Promise<VolumeInfo> {
  const checked = checkLimit('snapshot limit', limit);
  return withVolume(svc, pool, volume, async (vol) => {
    const count = (await snapshotsOfVolume(svc, vol.id)).length;
    if (checked !== undefined && count > checked) {
      throw new StorageError('BUSY', `volume '${pool}/${volume}' already has ${countOf(count, 'snapshot')}, more than the limit ${checked}; delete some first`);
    }
    const { snapshotLimit: _old, ...rest } = vol;
    const updated: VolumeRecord = checked === undefined ? rest : { ...rest, snapshotLimit: checked };
    await svc.catalog.change((txn) => svc.catalog.volumes.update(txn, vol, updated));
    return describeVolume(svc, updated);
  });
}

async function checkSnapshotLimit(svc: ServiceContext, vol: VolumeRecord): Promise<void> {
  if (vol.snapshotLimit === undefined) return;
  const count = (await snapshotsOfVolume(svc, vol.id)).length;
  if (count >= vol.snapshotLimit) {
    throw new StorageError('LIMIT_EXCEEDED', `volume '${vol.pool}/${vol.name}' has ${countOf(count, 'snapshot')}, its limit`, {
      fix: { operation: 'setSnapshotLimit', pool: vol.pool, volume: vol.name, text: 'delete one, or raise the limit with {}' },
    });
  }
}

/**
 * Snapshot limit and chain depth (flattening a clone first under policy 'flatten'). With dryRun,
 * only throws what a snapshot would be refused for, and flattens nothing.
 */
export async function ensureSnapshotAllowed(svc: ServiceContext, vol: VolumeRecord, options: { dryRun?: boolean } = {}): Promise<VolumeRecord> {
  await checkSnapshotLimit(svc, vol);
  let depth = (await layerChain(svc, vol.activeLayerId)).length + 1;
  if (depth <= svc.maxChainDepth) return vol;
  if (svc.chainDepthPolicy === 'flatten' && (await boundaryLayers(svc, vol)).length > 0) {
    if (options.dryRun) return vol;
    await svc.jobs.run('flatten', `${vol.pool}/${vol.name}`, (ctx) => flattenLocked(svc, vol, ctx));
    depth = (await layerChain(svc, vol.activeLayerId)).length + 1;
    if (depth <= svc.maxChainDepth) return (await svc.catalog.volumes.get(vol.id)) ?? vol;
  }
  const isClone = (await boundaryLayers(svc, vol)).length > 0;
  throw new StorageError(
    'LIMIT_EXCEEDED',
    `a snapshot would make the chain of '${vol.pool}/${vol.name}' ${depth} layers deep (maxChainDepth ${svc.maxChainDepth}); ` +
      (isClone ? 'flatten the volume or delete some of its snapshots first' : 'delete some of its snapshots first'),
  );
}

/** What taking a snapshot of a volume writes: planned (checked) first, written by the caller. */
export interface SnapshotPlan {
  /** The volume as the snapshot finds it (after a flatten ensureSnapshotAllowed may have run). */
  volume: VolumeRecord;
  /** Its active layer, frozen as the snapshot's layer. */
  frozen: LayerRecord;
  /** The new empty active layer on top (a file the caller creates under its intent). */
  active: LayerRecord;
  snapshot: SnapshotRecord;
}

/**
 * Checks that `vol` may take snapshot `name` (the name is free, limit and chain depth) and builds
 * its records; nothing is written. `groupSnapshotId` marks a member snapshot of a group snapshot.
 */
export async function planSnapshot(svc: ServiceContext, vol: VolumeRecord, name: string, groupSnapshotId?: string): Promise<SnapshotPlan> {
  checkName('snapshot', name);
  if (await findSnapshot(svc, vol, name)) {
    throw new StorageError('ALREADY_EXISTS', `snapshot '${vol.pool}/${vol.name}@${name}' already exists`);
  }
  const current = await ensureSnapshotAllowed(svc, vol);
  const frozen = await layerById(svc, current.activeLayerId);
  const active = newLayer(newId(), current.pool, current.id, frozen);
  const snapshot: SnapshotRecord = {
    id: newId(),
    volumeId: current.id,
    pool: current.pool,
    name,
    layerId: frozen.id,
    sizeBytes: current.sizeBytes,
    protected: false,
    ...(groupSnapshotId === undefined ? {} : { groupSnapshotId }),
    createdAt: nowIso(),
  };
  return { volume: current, frozen, active, snapshot };
}

/**
 * Creates the plan's new active layer file (backed by the frozen layer). The caller has paused the
 * volume's exports, so the frozen layer is closed and everything written to it is durable; it
 * syncs the pool before its transaction.
 */
export async function createSnapshotLayer(svc: ServiceContext, plan: SnapshotPlan): Promise<void> {
  await createLayerFile(svc.layerStore, plan.active, plan.volume.sizeBytes, plan.frozen);
}

/** Adds the plan's records to txn: the layer frozen, the new active layer, the snapshot, the volume on top of it. */
export function addSnapshotRecords(svc: ServiceContext, txn: CatalogTxn, plan: SnapshotPlan): void {
  svc.catalog.layers.update(txn, plan.frozen, { ...plan.frozen, frozen: true });
  svc.catalog.layers.create(txn, plan.active);
  svc.catalog.snapshots.create(txn, plan.snapshot);
  svc.catalog.volumes.update(txn, plan.volume, { ...plan.volume, activeLayerId: plan.active.id });
}

export async function createSnapshotLocked(svc: ServiceContext, vol: VolumeRecord, name: string): Promise<SnapshotRecord> {
  const plan = await planSnapshot(svc, vol, name);
  const label = `${plan.volume.pool}/${plan.volume.name}@${name}`;
  const intent = newIntent('snapshot-create', label, { createFiles: [plan.active] });
  // An export of the volume is paused (its requests in flight complete, its chain is flushed and
  // closed) while the new active layer goes on top, then reopened on it: the snapshot holds
  // exactly the writes completed before it.
  await withLiveChanges(svc, [plan.frozen.id], () => runIntent(svc, intent, async () => {
    await createSnapshotLayer(svc, plan);
    await svc.layerStore.syncPool(plan.volume.pool);
    const txn = new CatalogTxn();
    addSnapshotRecords(svc, txn, plan);
    await commitIntent(svc, txn, intent);
  }));
  await scheduleSeal(svc, { ...plan.frozen, frozen: true }, label);
  return plan.snapshot;
}

/**
 * Deletes snapshot S (layer L): each child layer C of L gets L's data copied up where C has
 * none, then C is rebased onto L's parent G; then L goes. What every layer reads is unchanged.
 *
 * The copy-up goes a window at a time (live-copy.ts): exports whose chains hold L or a child pause
 * for each window and run between them; a guest write into the head between two windows lands in
 * C (when C is the active layer) and the next window's plan leaves it alone. Only the rebase and
 * the catalog change happen under one more pause. The volume's lock is held throughout.
 */
export async function deleteSnapshotLocked(svc: ServiceContext, vol: VolumeRecord, snap: SnapshotRecord, ctx: JobContext): Promise<void> {
  const layer = await layerById(svc, snap.layerId);
  const children = await childLayers(svc, layer.id);
  const foreign = children.filter((c) => c.ownerVolumeId !== vol.id);
  if (foreign.length > 0) {
    throw new StorageError('BUSY', `snapshot '${vol.pool}/${vol.name}@${snap.name}' has clones; flatten or delete them first`);
  }
  const parent = layer.backingLayerId === undefined ? undefined : await layerById(svc, layer.backingLayerId);
  const ids = children.map((c) => c.id);
  const pauseIds = [layer.id, ...ids];
  const intent = newIntent('snapshot-delete', `${vol.pool}/${vol.name}@${snap.name}`, { rebaseLayerIds: ids, writeLayerIds: ids });
  // The merged layer's seal stops (it is going); the children are written, so a sealed one is
  // made a local file again first, and sealed again after the merge.
  await stopSeals(svc, [layer.id]);
  await withResealing(svc, ids, `${vol.pool}/${vol.name}`, () => withVolumeWriter(svc, vol.id, () => runIntentLive(svc, pauseIds, intent, async () => {
    // Under a pause: a chain an export holds may read a sealed layer's manifest, which unsealing drops.
    await withLiveChanges(svc, pauseIds, () => prepareToWrite(svc, children));
    // L is frozen and nothing writes it while the lock is held: where it has something is read outside the pauses.
    const sizes = await withChain(svc, await layerChain(svc, layer.id), async (merged) => ({ merged: merged.sizeBytes, parent: backingOf(merged)?.sizeBytes ?? 0 }));
    await copyInWindows(svc, ctx, {
      pauseLayerIds: pauseIds,
      sizeBytes: Math.max(sizes.merged, sizes.parent),
      candidates: async (start, end) => {
        const own: KindRange[] = [];
        const inMerged = Math.min(end, sizes.merged);
        if (start < inMerged) {
          const merged = await openLayerAlone(svc.layerStore, layer, { writable: false });
          try {
            for (const x of await layerMap(merged, start, inMerged)) if (x.kind !== 'unallocated') own.push({ offset: x.offset, length: x.length, kind: x.kind });
          } finally {
            await merged.close();
          }
        }
        const zeroStart = Math.max(start, sizes.merged);
        const zeroEnd = Math.min(end, sizes.parent);
        if (zeroStart < zeroEnd) own.push({ offset: zeroStart, length: zeroEnd - zeroStart, kind: 'zero' });
        // Each child may take a copy of all of it (progress counts each child's copy).
        return children.flatMap(() => own);
      },
      copyWindow: async (start, end) => {
        let copied = 0;
        for (const child of children) {
          await withChain(svc, await layerChain(svc, child.id), async (image) => {
            const plan = await mergePlan(image, start, Math.min(end, image.sizeBytes));
            await copyPlan(backingOf(image)!, image, plan, ctx, 'write-zeroes');
            await image.flush();
            copied += totalOfKind(plan, 'data');
          }, { writable: true });
        }
        return copied;
      },
    });
    ctx.throwIfCancelled();
    await withLiveChanges(svc, pauseIds, async () => {
      for (const child of children) {
        const backingName = parent === undefined ? undefined : svc.layerStore.backingName(child, parent);
        await withChain(svc, await layerChain(svc, child.id), (image) => image.setBackingFile(backingName, parent === undefined ? undefined : 'qcow2'), { writable: true });
      }
      await svc.layerStore.syncPool(vol.pool);
      const txn = new CatalogTxn();
      svc.catalog.snapshots.remove(txn, snap);
      svc.catalog.layers.remove(txn, layer);
      for (const child of children) {
        const { backingLayerId: _old, ...rest } = child;
        svc.catalog.layers.update(txn, child, parent === undefined ? rest : { ...rest, backingLayerId: parent.id });
      }
      await commitIntent(svc, txn, intent, [layer]);
    });
  })));
}

/**
 * What child C (`image`, backed by the merged layer L) takes from L over [start, end), planned
 * from C's map as it is now: L's data and zeroes where C has nothing of its own, and zeroes past
 * L's end where L's parent G is longer (C read zeroes there; G would show its data).
 */
async function mergePlan(image: Qcow2Image, start: number, end: number): Promise<PlanStep[]> {
  const merged = backingOf(image)!;
  const parentSize = backingOf(merged)?.sizeBytes ?? 0;
  const plan: PlanStep[] = [];
  for (const u of await layerMap(image, start, end)) {
    if (u.kind !== 'unallocated') continue;
    const uEnd = u.offset + u.length;
    const inMerged = Math.min(uEnd, merged.sizeBytes);
    if (u.offset < inMerged) {
      for (const x of await layerMap(merged, u.offset, inMerged)) if (x.kind !== 'unallocated') plan.push({ offset: x.offset, length: x.length, kind: x.kind });
    }
    const zeroStart = Math.max(u.offset, merged.sizeBytes);
    const zeroEnd = Math.min(uEnd, parentSize);
    if (zeroStart < zeroEnd) plan.push({ offset: zeroStart, length: zeroEnd - zeroStart, kind: 'zero' });
  }
  return plan;
}
