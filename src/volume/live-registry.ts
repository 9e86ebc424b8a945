/**
 * Live devices: the chains held open for exports (one per volume head or snapshot, shared by all
 * its exports), opening them, and pausing them while an operation changes their files.
 */
import type { Qcow2Image } from '../../formats/qcow2/index.js';
import { notFound, type ServiceContext } from './context.js';
import { withVolume } from './guards.js';
import { repairLeaks } from './intents.js';
import { openChain } from './layers.js';
import { effectiveLimits } from './qos/settings.js';
import { LiveVolume, liveKey, type LiveDevice, type LiveTarget } from './live.js';
import { layerChain, snapshotByName } from './queries.js';
import type { OpenDeviceOptions } from './types.js';
import { acquireVolumeWriter } from './writers.js';

/**
 * Opens a volume (read-write unless readOnly) or one of its snapshots (always read-only) for an
 * export. Every export of the same volume or snapshot shares one open chain. The device stays
 * valid across snapshot create, snapshot delete and flatten (it pauses while they change its
 * files); while the volume's head is exported, operations that would change what the guest sees
 * or read the head under it (rollback, delete, shrink, copy, export, diffs to the head) are BUSY.
 */
export async function openDevice(svc: ServiceContext, pool: string, volume: string, options: OpenDeviceOptions = {}): Promise<LiveDevice> {
  return withVolume(svc, pool, volume, async (vol) => {
    const snap = options.snapshot === undefined ? undefined : await snapshotByName(svc, vol, options.snapshot);
    const target: LiveTarget = { volumeId: vol.id, snapshotId: snap?.id };
    const key = liveKey(target);
    let live = svc.live.get(key);
    if (live === undefined) {
      // Snapshots' exports are held to the volume's limits too (each with buckets of its own).
      const limits = await effectiveLimits(svc, vol);
      // A daemon killed while the volume was exported read-write leaves, at worst, leaked
      // clusters in its active layer (the write ordering guarantees no more): reclaim them
      // before serving it again. Nothing else has the layer open (we hold the volume's lock).
      // The head is opened for writing: this service takes the volume's writer lease for as long as
      // the chain stays open (another daemon sharing the catalog is refused, BUSY).
      const releaseWriter = snap === undefined ? await acquireVolumeWriter(svc, vol.id) : undefined;
      try {
        if (snap === undefined) await repairLeaks(svc, [vol.activeLayerId], []);
        const opened = await openLive(svc, target);
        live = new LiveVolume(
          target,
          snap === undefined,
          opened,
          (t) => openLive(svc, t),
          () => {
            if (svc.live.get(key) === live) svc.live.delete(key);
          },
          releaseWriter,
        );
      } catch (err) {
        await releaseWriter?.();
        throw err;
      }
      live.throttle.setLimits(limits);
      svc.live.set(key, live);
    }
    // Named as the refusals while it lasts name it (guards.ts); a renaming is refused meanwhile.
    const exportRef = options.export === undefined ? undefined : { ...options.export, pool: vol.pool, volume: vol.name, ...(snap !== undefined ? { snapshot: snap.name } : {}) };
    return live.handle(options.readOnly === true || snap !== undefined, exportRef);
  });
}

/** The chain a live target is now, opened (the head writable). */
async function openLive(svc: ServiceContext, target: LiveTarget): Promise<{ image: Qcow2Image; layerIds: string[] }> {
  const vol = await svc.catalog.volumes.get(target.volumeId);
  if (!vol) throw notFound(`volume ${target.volumeId} no longer exists`);
  let layerId = vol.activeLayerId;
  if (target.snapshotId !== undefined) {
    const snap = await svc.catalog.snapshots.get(target.snapshotId);
    if (!snap) throw notFound(`snapshot ${target.snapshotId} no longer exists`);
    layerId = snap.layerId;
  }
  const chain = await layerChain(svc, layerId);
  const image = await openChain(svc.layerStore, chain, { writable: target.snapshotId === undefined });
  return { image, layerIds: chain.map((l) => l.id) };
}

/**
 * Pauses the exports whose chains hold any of these layers while fn changes them. Every one of
 * them is paused in the same turn of the event loop (their gates close together, then their
 * requests in flight drain): for a group snapshot that moment is the one instant of all members.
 */
export async function withLiveChanges<T>(svc: ServiceContext, layerIds: readonly string[], fn: () => Promise<T>): Promise<T> {
  const ids = new Set(layerIds);
  const affected = [...svc.live.values()].filter((l) => l.layerIds.some((id) => ids.has(id))).sort((a, b) => a.key.localeCompare(b.key));
  // Each is resumed even if its pause (or another's) fails: its requests must not wait forever.
  const pauses = await Promise.allSettled(affected.map((live) => live.pause()));
  try {
    const failed = pauses.find((p): p is PromiseRejectedResult => p.status === 'rejected');
    if (failed !== undefined) throw failed.reason;
    return await fn();
  } finally {
    for (const live of affected) await live.resume();
  }
}
