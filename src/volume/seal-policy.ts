/**
 * The seal policy of dedup pools (`pool create --dedup --seal-after DURATION --seal-above SIZE`):
 * one bounded pass (the daemon's timer, src/daemon/seal-policy.ts, calls it) freezes the active
 * layer of each volume that has cooled or grown (freeze.ts), which then is sealed and compacted in
 * the background. Only the active layer is ever looked at; nothing is frozen twice for one write.
 *
 * - sealAboveBytes: the active layer allocates more than this (its local file's allocated bytes).
 * - sealAfterMs: the active layer holds data and no write has reached it for this long. Writes are
 *   seen by the exports' live chains (LiveVolume.lastWriteMs); for a layer not written since it
 *   was opened here (or not exported), the quiet time counts from its creation or from the
 *   service's start, whichever is later.
 */
import { isStorageError } from '../core/errors.js';
import type { DedupPoolConfig } from '../core/chunked-pools.js';
import type { ServiceContext } from './context.js';
import { freezeActiveLayer } from './freeze.js';
import { withVolume } from './guards.js';
import { openLayerAlone } from './layers.js';
import { liveKey } from './live.js';
import { layerById, volumesOfPool } from './queries.js';
import type { LayerRecord, VolumeRecord } from './records.js';
import { isChunkedLayer } from './sealing.js';
import type { SealPolicyPass } from './types.js';

/** Volumes one pass freezes at most, across all pools (each freeze pauses a guest briefly). */
export const SEAL_POLICY_FREEZES_PER_PASS = 16;

export async function applySealPolicy(svc: ServiceContext, options: { startedAtMs: number; freezesMax?: number }): Promise<SealPolicyPass> {
  const pass: SealPolicyPass = { frozen: [], failed: [] };
  const freezesMax = options.freezesMax ?? SEAL_POLICY_FREEZES_PER_PASS;
  for (const pool of await svc.catalog.pools.all()) {
    const config = pool.dedup;
    if (config === undefined || (config.sealAfterMs === undefined && config.sealAboveBytes === undefined)) continue;
    if (!isChunkedLayer(svc, { pool: pool.name })) continue;
    for (const vol of await volumesOfPool(svc, pool.name)) {
      if (pass.frozen.length >= freezesMax) return pass;
      const name = `${vol.pool}/${vol.name}`;
      try {
        const reason = await sealReason(svc, config, vol, options.startedAtMs);
        if (reason === undefined) continue;
        const frozen = await withVolume(svc, vol.pool, vol.name, (current) =>
          current.activeLayerId === vol.activeLayerId ? freezeActiveLayer(svc, current, 'skip') : Promise.resolve(undefined),
        );
        if (frozen !== undefined) pass.frozen.push({ volume: name, reason, layerId: frozen.layer.id });
      } catch (err) {
        // Held by a job, renamed or deleted meanwhile: the next pass looks again.
        if (isStorageError(err, 'BUSY') || isStorageError(err, 'NOT_FOUND')) continue;
        pass.failed.push({ volume: name, error: err instanceof Error ? err.message : String(err) });
      }
    }
  }
  return pass;
}

/** Why the volume's active layer is due for sealing now, if it is. */
async function sealReason(svc: ServiceContext, config: DedupPoolConfig, vol: VolumeRecord, startedAtMs: number): Promise<'size' | 'idle' | undefined> {
  const active = await layerById(svc, vol.activeLayerId);
  if (config.sealAboveBytes !== undefined && (await svc.layerStore.allocatedBytes(active)) > config.sealAboveBytes) return 'size';
  if (config.sealAfterMs === undefined) return undefined;
  const nowMs = Date.now();
  const live = svc.live.get(liveKey({ volumeId: vol.id, snapshotId: undefined }));
  const lastWriteMs = live !== undefined && live.layerIds[0] === active.id ? live.lastWriteMs : undefined;
  if (lastWriteMs !== undefined) return nowMs - lastWriteMs >= config.sealAfterMs ? 'idle' : undefined;
  const quietSinceMs = Math.max(Date.parse(active.createdAt), startedAtMs);
  if (nowMs - quietSinceMs < config.sealAfterMs) return undefined;
  if (live !== undefined) return (await live.topLayerHasData()) ? 'idle' : undefined;
  // A closed layer found empty is not opened again while its allocation stays the same (any
  // write to it, through an export since, allocated at least an L2 table).
  let empty = emptyClosedLayers.get(svc);
  if (empty === undefined) emptyClosedLayers.set(svc, (empty = new Map()));
  const allocatedBytes = await svc.layerStore.allocatedBytes(active);
  if (empty.get(active.id) === allocatedBytes) return undefined;
  if (await layerHasData(svc, active)) return 'idle';
  if (empty.size >= EMPTY_LAYERS_REMEMBERED_MAX) empty.clear();
  empty.set(active.id, allocatedBytes);
  return undefined;
}

/** Closed active layers found empty, by service: layer id -> its allocated bytes then. */
const emptyClosedLayers = new WeakMap<ServiceContext, Map<string, number>>();
const EMPTY_LAYERS_REMEMBERED_MAX = 10_000;

/** True when a closed layer maps anything (data or zeroes) itself. */
async function layerHasData(svc: ServiceContext, layer: LayerRecord): Promise<boolean> {
  const image = await openLayerAlone(svc.layerStore, layer, { writable: false });
  try {
    return (await image.mapLayer(0, image.sizeBytes)).some((e) => e.kind !== 'unallocated');
  } finally {
    await image.close();
  }
}
