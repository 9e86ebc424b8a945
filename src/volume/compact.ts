/**
 * Compaction (dedup pools): adjacent internal sealed layers of a volume's chain (frozen by the seal
 * policy or `volume seal`, or an import's base; never a user snapshot) are merged by reference, so the chain stays short
 * whatever the policy did: after each policy seal at most one internal layer is left between two
 * user snapshots (or between the active layer and the snapshot under it).
 *
 * A pair, upper U over lower L (L's only child is U), becomes one layer in U's place:
 * ChunkedPools.prepareMerge builds the merged manifest (the new qcow2 metadata as new chunks, every
 * data cluster a reference to the chunk U or L already has) while the guest runs; then, with the
 * volume's exports paused, the merged manifest replaces U's (one atomic put) and the catalog drops
 * L and points U at L's backing in one transaction; L's manifest and references go last. U keeps
 * its name, so whatever names U as its backing file (the active layer, a snapshot) is untouched.
 *
 * Crash safety: an intent names the pair and the backing file the merged U names. Recovery reads
 * U's header: naming that backing file, the merge landed and the catalog change is finished (L
 * removed); naming L, it did not and the intent is dropped. References a killed merge added are
 * dropped by the pool's reference audit at start-up (recovery.ts).
 */
import type { PreparedMerge } from '../core/chunked-pools.js';
import { isStorageError, StorageError } from '../core/errors.js';
import { CatalogTxn } from './catalog.js';
import { type ServiceContext } from './context.js';
import { withVolume } from './guards.js';
import { commitIntent, finishIntent, newIntent } from './intents.js';
import type { JobContext } from './jobs.js';
import { openLayerAlone } from './layers.js';
import { withLiveChanges } from './live-registry.js';
import { childLayers, layerById, layerChain, requirePool } from './queries.js';
import type { IntentRecord, LayerRecord, VolumeRecord } from './records.js';
import { isChunkedLayer, isSealedLayer } from './sealing.js';
import type { JobInfo, VolumeCompactReport } from './types.js';

/** `strata volume compact POOL/VOL`: merges what can be merged now, as a 'compact' job the caller awaits. */
export async function compactVolume(svc: ServiceContext, pool: string, volume: string): Promise<{ job: JobInfo; report: VolumeCompactReport }> {
  const record = await requirePool(svc, pool);
  if (record.dedup === undefined || !isChunkedLayer(svc, { pool })) {
    throw new StorageError('INVALID_ARGUMENT', `pool '${pool}' is a local pool: only dedup pools have sealed layers to compact (strata pool create --dedup)`);
  }
  let jobId = '';
  const report = await withVolume(svc, pool, volume, (vol) =>
    svc.jobs.run('compact', `${pool}/${volume}`, (ctx) => {
      jobId = ctx.id;
      return compactLocked(svc, vol, ctx);
    }),
  );
  return { job: await svc.jobs.info(jobId), report };
}

/**
 * After an internal layer's seal: a background 'compact' job for its volume. A volume that is busy
 * (a flatten or copy holds it) or gone is left alone: the next seal or a manual compact catches up.
 */
export async function scheduleCompaction(svc: ServiceContext, volumeId: string): Promise<void> {
  const vol = await svc.catalog.volumes.get(volumeId);
  if (vol === undefined || vol.trash !== undefined) return;
  await svc.jobs.start('compact', `${vol.pool}/${vol.name}`, async (ctx) => {
    try {
      await withVolume(svc, vol.pool, vol.name, (current) => compactLocked(svc, current, ctx));
    } catch (err) {
      if (!isStorageError(err, 'BUSY') && !isStorageError(err, 'NOT_FOUND')) throw err;
    }
  });
}

/** Merges adjacent internal sealed layers of the volume's chain until none are left (under its lock). */
export async function compactLocked(svc: ServiceContext, vol: VolumeRecord, ctx: JobContext): Promise<VolumeCompactReport> {
  const before = (await layerChain(svc, vol.activeLayerId)).length;
  const skipped: string[] = [];
  let mergedPairs = 0;
  for (let round = 0; round < before; round++) {
    ctx.throwIfCancelled();
    const pair = await nextMergeablePair(svc, vol, skipped);
    if (pair === undefined) break;
    try {
      await mergePair(svc, vol, pair.upper, pair.lower, ctx);
      mergedPairs++;
      ctx.addDone(1);
    } catch (err) {
      if (!isStorageError(err, 'UNSUPPORTED')) throw err;
      skipped.push(pair.upper.id);
    }
  }
  const after = (await layerChain(svc, vol.activeLayerId)).length;
  return { pool: vol.pool, volume: vol.name, mergedPairs, chainDepthBefore: before, chainDepthAfter: after };
}

/** The first pair (top down) of internal, sealed, adjacent layers of the volume that may merge. */
async function nextMergeablePair(svc: ServiceContext, vol: VolumeRecord, skipped: readonly string[]): Promise<{ upper: LayerRecord; lower: LayerRecord } | undefined> {
  const chain = await layerChain(svc, vol.activeLayerId);
  for (let i = 1; i + 1 < chain.length; i++) {
    const upper = chain[i]!;
    const lower = chain[i + 1]!;
    if (skipped.includes(upper.id) || !(await isMergeable(svc, vol, upper)) || !(await isMergeable(svc, vol, lower))) continue;
    if (!(await isSealedLayer(svc, upper)) || !(await isSealedLayer(svc, lower))) continue;
    const children = await childLayers(svc, lower.id);
    if (children.length !== 1) continue;
    return { upper, lower };
  }
  return undefined;
}

/**
 * A frozen layer of the volume that no snapshot names: an internal layer (freeze.ts) or an
 * import's base; never a user snapshot, nor another volume's layer (a clone's parent).
 */
async function isMergeable(svc: ServiceContext, vol: VolumeRecord, layer: LayerRecord): Promise<boolean> {
  if (!layer.frozen || layer.ownerVolumeId !== vol.id || svc.seals.has(layer.id)) return false;
  return layer.internal === true || (await svc.catalog.snapshots.lookup('layer', layer.id)) === undefined;
}

async function mergePair(svc: ServiceContext, vol: VolumeRecord, upper: LayerRecord, lower: LayerRecord, ctx: JobContext): Promise<void> {
  const pools = svc.chunkedPools!;
  const below = lower.backingLayerId === undefined ? undefined : await layerById(svc, lower.backingLayerId);
  const backingFile = below === undefined ? undefined : svc.layerStore.backingName(upper, below);
  const intent: IntentRecord = {
    ...newIntent('compact', `${vol.pool}/${vol.name}`, {}),
    compact: { volumeId: vol.id, upperLayerId: upper.id, lowerLayerId: lower.id, ...(backingFile === undefined ? {} : { backingFile }) },
  };
  await svc.catalog.change((txn) => svc.catalog.intents.create(txn, intent));
  let prepared: PreparedMerge;
  try {
    prepared = await pools.prepareMerge(upper, lower, { backingFile, signal: ctx.signal });
  } catch (err) {
    await svc.catalog.change((txn) => svc.catalog.intents.remove(txn, intent));
    throw err;
  }
  let installed = false;
  try {
    // The pause covers only the swap: the manifest put and one catalog transaction.
    await withLiveChanges(svc, [upper.id, lower.id], async () => {
      await prepared.install();
      installed = true;
      await commitMerge(svc, intent, upper, lower, below);
    });
  } catch (err) {
    if (!installed) {
      await prepared.discard().catch(() => undefined);
      await svc.catalog.change((txn) => svc.catalog.intents.remove(txn, intent)).catch(() => undefined);
    } else {
      // The merged layer is in place: finish the catalog change now (or at the next start).
      await recoverCompact(svc, intent, []).catch(() => undefined);
    }
    throw err;
  }
  const committed = await svc.catalog.intents.get(intent.id);
  if (committed !== undefined) await finishIntent(svc, committed);
}

/** U takes L's backing, L's record goes, and the intent turns committed (deleting L's file). */
async function commitMerge(svc: ServiceContext, intent: IntentRecord, upper: LayerRecord, lower: LayerRecord, below: LayerRecord | undefined): Promise<void> {
  const { backingLayerId: _lower, ...rest } = upper;
  const txn = new CatalogTxn();
  svc.catalog.layers.update(txn, upper, below === undefined ? rest : { ...rest, backingLayerId: below.id });
  svc.catalog.layers.remove(txn, lower);
  await commitIntent(svc, txn, intent, [lower]);
}

/**
 * Recovery of a compact intent still 'prepared': finishes the merge when U's header shows it
 * landed, else drops the intent (a committed one is finished like any other: recovery.ts).
 */
export async function recoverCompact(svc: ServiceContext, intent: IntentRecord, problems: string[]): Promise<'finished' | 'dropped'> {
  const compact = intent.compact!;
  const upper = await svc.catalog.layers.get(compact.upperLayerId);
  const lower = await svc.catalog.layers.get(compact.lowerLayerId);
  if (upper !== undefined && lower !== undefined && upper.backingLayerId === lower.id) {
    const image = await openLayerAlone(svc.layerStore, upper, { writable: false });
    const named = image.info().backingFile;
    await image.close();
    if (named === compact.backingFile) {
      const below = lower.backingLayerId === undefined ? undefined : await layerById(svc, lower.backingLayerId);
      await commitMerge(svc, intent, upper, lower, below);
      const committed = await svc.catalog.intents.get(intent.id);
      if (committed !== undefined) await finishIntent(svc, committed, problems);
      return 'finished';
    }
  }
  await svc.catalog.change((txn) => svc.catalog.intents.remove(txn, intent));
  return 'dropped';
}
