/**
 * `pool scrub`: a dedup pool's scrub (docs/dedup.md) run as a 'scrub' job, and the layers its
 * report names ("layer <pool>/<file>") mapped back to the volumes and snapshots an operator knows.
 * A local pool has no chunks, index or packs: it is refused with the way to check its qcow2 files.
 */
import { StorageError } from '../core/errors.js';
import type { ScrubReport } from '../core/scrub-report.js';
import type { ServiceContext } from './context.js';
import { layersOfPool, requirePool, snapshotsOfVolume } from './queries.js';
import type { JobInfo, PoolScrubReport, ScrubLayerOwner } from './types.js';

/** How a scrub names a sealed layer (src/store/chunked/manifest-references.ts). */
const HOLDER_NAME = /^layer ([^/]+)\/(.+)$/;

export async function scrubPool(svc: ServiceContext, name: string, options: { repair?: boolean } = {}): Promise<{ job: JobInfo; report: PoolScrubReport }> {
  await requirePool(svc, name);
  // A local pool's S3 objects keep chunks apart from its qcow2 files: those are scrubbed.
  if (svc.chunkedPools === undefined || !(await svc.chunkedPools.hasChunks(name))) {
    throw new StorageError(
      'INVALID_ARGUMENT',
      `pool '${name}' is a local pool: scrub checks dedup pools' chunks, index and packs; check a local pool's layers with 'qemu-img check' on its files ('strata pool info ${name}' shows where)`,
    );
  }
  const pools = svc.chunkedPools;
  const repair = options.repair ?? false;
  const totalBytes = (await pools.usage(name)).packBytes;
  let jobId = '';
  const report = await svc.jobs.run('scrub', name, async (ctx) => {
    jobId = ctx.id;
    ctx.throwIfCancelled();
    // doneBytes of a scrub job: the pack bytes read; the total is what the index knows of.
    ctx.setTotal(totalBytes);
    let reported = 0;
    return pools.scrub(name, {
      repair,
      signal: ctx.signal,
      onProgress: (doneBytes) => {
        ctx.addDone(doneBytes - reported);
        reported = doneBytes;
      },
    });
  });
  return { job: await svc.jobs.info(jobId), report: { pool: name, report, layers: await layerOwners(svc, name, report) } };
}

/** The holders the report names, each with the volume and snapshot that own its layer. */
async function layerOwners(svc: ServiceContext, pool: string, report: ScrubReport): Promise<ScrubLayerOwner[]> {
  const named = new Set<string>();
  for (const problem of report.problems) {
    for (const holder of problem.holders ?? []) named.add(holder);
    if (problem.kind === 'holder-unreadable') named.add(problem.subject);
  }
  if (named.size === 0) return [];
  const layers = new Map((await layersOfPool(svc, pool)).map((l) => [l.fileName, l]));
  const owners: ScrubLayerOwner[] = [];
  for (const holder of [...named].sort()) {
    const match = HOLDER_NAME.exec(holder);
    if (match === null) continue; // not a layer (an S3 object's version or part): the report names it
    const layer = match[1] === pool ? layers.get(match[2] as string) : undefined;
    const volume = layer === undefined ? undefined : await svc.catalog.volumes.get(layer.ownerVolumeId);
    if (layer === undefined || volume === undefined) {
      owners.push({ holder, layer: match[2] as string, volume: undefined, snapshot: undefined, role: 'unknown' });
      continue;
    }
    const snapshot = (await snapshotsOfVolume(svc, volume.id)).find((s) => s.layerId === layer.id);
    const role = volume.activeLayerId === layer.id ? 'active' : snapshot !== undefined ? 'snapshot' : layer.internal === true ? 'internal' : 'base';
    owners.push({ holder, layer: layer.fileName, volume: volume.name, snapshot: snapshot?.name, role });
  }
  return owners;
}
