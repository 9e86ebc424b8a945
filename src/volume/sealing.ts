/**
 * Sealing in dedup pools (docs/daemon.md, "Dedup pools"): snapshots, imports and clone parents
 * are sealed, i.e. their frozen layer becomes a chunk manifest in the pool's repository, in a
 * background job ('seal', with progress) after the operation that froze it.
 *
 * A seal job writes an intent naming the layer, seals it through ChunkedPools (chunks referenced,
 * manifest stored, and only then the local file removed), removes the intent, and reopens the
 * live chains that hold the layer so they read the manifest and the local file's space is freed
 * (until then a chain keeps reading the file it had open). A SIGKILL at any point leaves the layer
 * a local file or a manifest, never neither; recovery (recoverSeal) drops a local copy a sealed
 * layer still has, audits the pool's reference counts so that references a killed seal added are
 * dropped, and the seal is started again at start-up (resumeSeals).
 *
 * A layer frozen by the seal policy or `volume seal` (freeze.ts) is compacted with an internal
 * layer under it once sealed: the seal job starts a 'compact' job for its volume.
 *
 * Whatever changes or removes a frozen layer stops its seal first (stopSeals, under the volume's
 * lock) and unseals it when it must write into it (prepareToWrite); the seal job itself takes no
 * lock, so a long seal never blocks the volume.
 */
import { StorageError } from '../core/errors.js';
import { scheduleCompaction } from './compact.js';
import { newId, nowIso, type ServiceContext } from './context.js';
import type { JobContext } from './jobs.js';
import { withLiveChanges } from './live-registry.js';
import type { IntentRecord, LayerRecord } from './records.js';
import type { JobInfo } from './types.js';

/** True when the layer's pool is a dedup pool (its frozen layers are sealed). */
export function isChunkedLayer(svc: ServiceContext, layer: { pool: string }): boolean {
  return svc.chunkedPools?.isChunkedPool(layer.pool) === true;
}

/** True when the layer is a chunk manifest. */
export async function isSealedLayer(svc: ServiceContext, layer: LayerRecord): Promise<boolean> {
  return isChunkedLayer(svc, layer) && (await svc.chunkedPools!.isSealed(layer));
}

/**
 * Starts a background seal of a frozen layer of a dedup pool (nothing for a local pool, an
 * active layer, or a layer whose seal is under way). Resolves once the job is recorded.
 */
export async function scheduleSeal(svc: ServiceContext, layer: LayerRecord, target: string): Promise<JobInfo | undefined> {
  if (!layer.frozen || !isChunkedLayer(svc, layer) || svc.seals.has(layer.id)) return undefined;
  let ended!: () => void;
  let recorded!: (id: string) => void;
  const entry = { jobId: new Promise<string>((resolve) => (recorded = resolve)), ended: new Promise<void>((resolve) => (ended = resolve)) };
  svc.seals.set(layer.id, entry);
  const forget = () => {
    if (svc.seals.get(layer.id) === entry) svc.seals.delete(layer.id);
    ended();
  };
  try {
    const job = await svc.jobs.start('seal', target, async (ctx) => {
      try {
        ctx.throwIfCancelled();
        await sealLayer(svc, layer.id, ctx);
      } finally {
        forget();
      }
    });
    recorded(job.id);
    return job;
  } catch (err) {
    recorded('');
    forget();
    throw err;
  }
}

/** Stops the seals of these layers and waits until they have ended (each leaves its layer whole). */
export async function stopSeals(svc: ServiceContext, layerIds: readonly string[]): Promise<void> {
  for (const id of layerIds) {
    const entry = svc.seals.get(id);
    if (entry === undefined) continue;
    const jobId = await entry.jobId;
    if (jobId !== '') await svc.jobs.cancel(jobId).catch(() => {});
    await entry.ended;
  }
}

/**
 * Before an operation writes into these layers (copy-up, a new backing file): stops their seals
 * and makes the sealed ones local files again. Call under the volume's lock; reseal the frozen
 * ones afterwards (resealFrozen).
 */
export async function prepareToWrite(svc: ServiceContext, layers: readonly LayerRecord[]): Promise<void> {
  await stopSeals(svc, layers.map((l) => l.id));
  for (const layer of layers) if (await isSealedLayer(svc, layer)) await svc.chunkedPools!.unseal(layer);
}

/**
 * Runs an operation that may unseal these layers to write them (prepareToWrite), then starts the
 * seal of the frozen ones again, whether it succeeded or was rolled back.
 */
export async function withResealing<T>(svc: ServiceContext, layerIds: readonly string[], target: string, operation: () => Promise<T>): Promise<T> {
  try {
    return await operation();
  } finally {
    await resealFrozen(svc, layerIds, target).catch(() => undefined);
  }
}

/** Starts the seal of each frozen layer (after an operation that rewrote or created them). */
export async function resealFrozen(svc: ServiceContext, layerIds: readonly string[], target: string): Promise<void> {
  for (const id of layerIds) {
    const layer = await svc.catalog.layers.get(id);
    if (layer !== undefined && !(await isSealedLayer(svc, layer))) await scheduleSeal(svc, layer, target);
  }
}

/**
 * Start-up, after recovery: a seal job for each frozen layer of the dedup pools that is still a
 * local file (snapshots taken just before a stop, seals that were killed or failed).
 */
export async function resumeSeals(svc: ServiceContext): Promise<number> {
  if (svc.chunkedPools === undefined) return 0;
  let started = 0;
  for (const pool of await svc.catalog.pools.all()) {
    if (!isChunkedLayer(svc, { pool: pool.name })) continue;
    for (const layer of await svc.catalog.layers.byIndexPrefix('file', `${pool.name}/`)) {
      if (!layer.frozen || (await svc.chunkedPools.isSealed(layer))) continue;
      if ((await scheduleSeal(svc, layer, `${pool.name}/${layer.fileName}`)) !== undefined) started++;
    }
  }
  return started;
}

/** The body of a seal job. */
async function sealLayer(svc: ServiceContext, layerId: string, ctx: JobContext): Promise<void> {
  const pools = svc.chunkedPools!;
  const layer = await svc.catalog.layers.get(layerId);
  if (layer === undefined || !layer.frozen) return; // deleted, or never frozen: nothing to seal
  const file = { pool: layer.pool, fileName: layer.fileName };
  const intent: IntentRecord = {
    id: newId(),
    kind: 'seal',
    phase: 'prepared',
    target: `${layer.pool}/${layer.fileName}`,
    createFiles: [],
    deleteFiles: [],
    rebaseLayerIds: [],
    writeLayerIds: [],
    seal: { layerId, file },
    createdAt: nowIso(),
  };
  await svc.catalog.change((txn) => svc.catalog.intents.create(txn, intent));
  let reported = 0;
  try {
    await pools.seal(file, {
      signal: ctx.signal,
      onProgress: (doneBytes, totalBytes) => {
        ctx.setTotal(totalBytes);
        ctx.addDone(doneBytes - reported);
        reported = doneBytes;
      },
    });
  } finally {
    const current = await svc.catalog.intents.get(intent.id);
    if (current !== undefined) await svc.catalog.change((txn) => svc.catalog.intents.remove(txn, current));
  }
  // Chains holding the layer still read its (now unlinked) local file: reopen them on the manifest.
  await withLiveChanges(svc, [layerId], async () => {});
  // A layer the seal policy froze may now merge with the one under it (compact.ts).
  if (layer.internal === true) await scheduleCompaction(svc, layer.ownerVolumeId);
}

/**
 * Recovery of a seal intent a crash left: the layer is a local file or a manifest (the seal stores
 * the manifest before it removes the file); a sealed one loses the local copy it may still have.
 * References the killed seal added are dropped by the pool's audit (recovery.ts); the seal itself
 * is started again by resumeSeals.
 */
export async function recoverSeal(svc: ServiceContext, intent: IntentRecord, problems: string[]): Promise<void> {
  const seal = intent.seal!;
  const pools = svc.chunkedPools;
  if (pools === undefined || !pools.isChunkedPool(seal.file.pool)) {
    problems.push(`seal of ${intent.target}: its pool is not an attached dedup pool; the seal intent was dropped`);
  } else if ((await svc.catalog.layers.get(seal.layerId)) !== undefined && (await pools.isSealed(seal.file))) {
    await pools.seal(seal.file);
  }
  await svc.catalog.change((txn) => svc.catalog.intents.remove(txn, intent));
}

/** Attaches every dedup pool of the catalog to the layer store (start-up, before recovery uses them). */
export async function attachChunkedPools(svc: ServiceContext): Promise<void> {
  for (const pool of await svc.catalog.pools.all()) {
    if (pool.dedup === undefined) continue;
    if (svc.chunkedPools === undefined) {
      throw new StorageError('UNSUPPORTED', `pool '${pool.name}' is a dedup pool, but this service was built without chunked pools`);
    }
    await svc.chunkedPools.attachPool(pool.name, pool.dedup);
  }
}
