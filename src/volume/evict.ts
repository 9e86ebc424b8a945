/**
 * `strata volume evict POOL/VOL`: the packs holding the chunks of the volume's sealed layers (its
 * snapshots', and an import's frozen base) go to the pool's tier now, as an 'evict' job whose progress counts packs.
 * Packs shared with other volumes move too (a pack moves whole): the report says how many.
 */
import { StorageError } from '../core/errors.js';
import type { LayerRef } from '../core/layer-store.js';
import { volumeNotFound, type ServiceContext } from './context.js';
import { layersOfVolume, requirePool } from './queries.js';
import type { JobInfo, VolumeEvictReport } from './types.js';

export async function evictVolume(svc: ServiceContext, pool: string, volume: string): Promise<{ job: JobInfo; report: VolumeEvictReport }> {
  const record = await requirePool(svc, pool);
  const chunked = svc.chunkedPools;
  if (record.dedup?.tier === undefined || chunked?.evictLayers === undefined || chunked.tierStatus?.(pool) === undefined) {
    throw new StorageError(
      'INVALID_ARGUMENT',
      `pool '${pool}' has no tier to evict to: only a dedup pool created with --tier s3://BUCKET/PREFIX (or file:///path) moves packs out; copy the volume into such a pool (strata volume copy)`,
    );
  }
  const vol = await svc.catalog.volumes.lookup('name', `${pool}/${volume}`);
  if (!vol) throw volumeNotFound(pool, volume);
  // Every layer the volume owns (snapshots, an import's frozen base, the active layer): only the
  // sealed ones have manifests, so the rest hold no packs.
  const layers: readonly LayerRef[] = await layersOfVolume(svc, vol.id);
  let jobId = '';
  const evictLayers = chunked.evictLayers.bind(chunked);
  const report = await svc.jobs.run('evict', `${pool}/${volume}`, async (ctx) => {
    jobId = ctx.id;
    ctx.throwIfCancelled();
    // doneBytes/totalBytes of an evict job count packs (moved or looked at), not bytes.
    let reported = 0;
    return evictLayers(pool, layers, {
      signal: ctx.signal,
      onProgress: (done, total) => {
        if (reported === 0) ctx.setTotal(total);
        ctx.addDone(done - reported);
        reported = done;
      },
    });
  });
  return { job: await svc.jobs.info(jobId), report: { pool, volume, ...report } };
}
