/**
 * Freezing a volume's active layer (dedup pools): the O(1) half of sealing by policy or by
 * `strata volume seal`. Like a snapshot without the snapshot: exports of the volume pause (their
 * requests in flight complete, the chain is flushed and closed), the active layer becomes an
 * internal frozen layer (a layer record no snapshot names, `internal`), an empty overlay goes on
 * top as the new active layer, and the exports resume on it. The frozen layer is then sealed in
 * the background (sealing.ts, a 'seal' job), and once sealed, compacted with an internal layer
 * under it (compact.ts).
 *
 * Crash safety is the snapshot's: an intent names the overlay it creates; until the one catalog
 * transaction lands, recovery deletes the overlay and the volume is as it was; after it, the
 * frozen layer is an ordinary frozen layer that resumeSeals seals at start-up.
 */
import { StorageError } from '../core/errors.js';
import { CatalogTxn } from './catalog.js';
import { newId, type ServiceContext } from './context.js';
import { withVolume } from './guards.js';
import { commitIntent, newIntent, newLayer, runIntent } from './intents.js';
import { createLayerFile } from './layers.js';
import { withLiveChanges } from './live-registry.js';
import { layerById, layerChain, requirePool } from './queries.js';
import type { LayerRecord, VolumeRecord } from './records.js';
import { isChunkedLayer, scheduleSeal } from './sealing.js';
import type { VolumeSealReport } from './types.js';

/** `strata volume seal POOL/VOL`: freezes the active layer now and starts its seal. */
export async function sealVolumeNow(svc: ServiceContext, pool: string, volume: string): Promise<VolumeSealReport> {
  const record = await requirePool(svc, pool);
  if (record.dedup === undefined || !isChunkedLayer(svc, { pool })) {
    throw new StorageError(
      'INVALID_ARGUMENT',
      `pool '${pool}' is a local pool: only dedup pools seal layers (create one with strata pool create --dedup and copy the volume there with strata volume copy)`,
    );
  }
  return withVolume(svc, pool, volume, async (vol) => {
    const frozen = await freezeActiveLayer(svc, vol, 'refuse');
    return { pool, volume, frozenLayerId: frozen.layer.id, sealJobId: frozen.sealJobId, chainDepth: frozen.chainDepth };
  });
}

/**
 * Freezes the volume's active layer (call under the volume's lock). With a full chain
 * (maxChainDepth), 'refuse' throws LIMIT_EXCEEDED naming the fix; 'skip' returns undefined.
 */
export async function freezeActiveLayer(svc: ServiceContext, vol: VolumeRecord, whenFull: 'refuse'): Promise<FrozenLayer>;
export async function freezeActiveLayer(svc: ServiceContext, vol: VolumeRecord, whenFull: 'skip'): Promise<FrozenLayer | undefined>;
export async function freezeActiveLayer(svc: ServiceContext, vol: VolumeRecord, whenFull: 'refuse' | 'skip'): Promise<FrozenLayer | undefined> {
  const depth = (await layerChain(svc, vol.activeLayerId)).length + 1;
  if (depth > svc.maxChainDepth) {
    if (whenFull === 'skip') return undefined;
    throw new StorageError(
      'LIMIT_EXCEEDED',
      `sealing would make the chain of '${vol.pool}/${vol.name}' ${depth} layers deep (maxChainDepth ${svc.maxChainDepth}); wait for its seal jobs and run strata volume compact, or delete some of its snapshots`,
    );
  }
  const frozen = await layerById(svc, vol.activeLayerId);
  const active = newLayer(newId(), vol.pool, vol.id, frozen);
  const frozenRecord: LayerRecord = { ...frozen, frozen: true, internal: true };
  const intent = newIntent('freeze', `${vol.pool}/${vol.name}`, { createFiles: [active] });
  await withLiveChanges(svc, [frozen.id], () =>
    runIntent(svc, intent, async () => {
      // The frozen layer is closed (the exports paused), so everything written is durable.
      await createLayerFile(svc.layerStore, active, vol.sizeBytes, frozen);
      await svc.layerStore.syncPool(vol.pool);
      const txn = new CatalogTxn();
      svc.catalog.layers.update(txn, frozen, frozenRecord);
      svc.catalog.layers.create(txn, active);
      svc.catalog.volumes.update(txn, vol, { ...vol, activeLayerId: active.id });
      await commitIntent(svc, txn, intent);
    }),
  );
  const job = await scheduleSeal(svc, frozenRecord, `${vol.pool}/${vol.name}`);
  return { layer: frozenRecord, sealJobId: job?.id ?? null, chainDepth: depth };
}

export interface FrozenLayer {
  layer: LayerRecord;
  /** The seal job started for it (null when none could be: not a dedup pool). */
  sealJobId: string | null;
  /** The volume's chain depth after the freeze. */
  chainDepth: number;
}
