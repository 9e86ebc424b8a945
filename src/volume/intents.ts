/**
 * Intents: how every multi-step change stays crash consistent. An operation writes an intent
 * before it touches files and ends with one atomic catalog transaction (runIntent, commitIntent); a failed
 * or interrupted one is rolled back (rollbackIntent) or, once committed, finished (finishIntent).
 * recovery.ts replays what a crash left with the same functions.
 */
import { countOf } from '../core/text.js';
import { CatalogTxn } from './catalog.js';
import { newId, nowIso, type ServiceContext } from './context.js';
import { resizeImage } from './image-ops.js';
import { layerFileName, layerLocation, openChain, openLayerAlone } from './layers.js';
import { layerChain } from './queries.js';
import type { FileRef, IntentRecord, LayerRecord } from './records.js';

export function newIntent(
  kind: string,
  target: string,
  parts: { createFiles?: FileRef[]; rebaseLayerIds?: string[]; writeLayerIds?: string[]; resize?: IntentRecord['resize'] },
): IntentRecord {
  return {
    id: newId(),
    kind,
    phase: 'prepared',
    target,
    createFiles: (parts.createFiles ?? []).map((f) => ({ pool: f.pool, fileName: f.fileName })),
    deleteFiles: [],
    rebaseLayerIds: parts.rebaseLayerIds ?? [],
    writeLayerIds: parts.writeLayerIds ?? [],
    ...(parts.resize ? { resize: parts.resize } : {}),
    createdAt: nowIso(),
  };
}

export function newLayer(id: string, pool: string, ownerVolumeId: string, backing: LayerRecord | undefined): LayerRecord {
  return {
    id,
    pool,
    fileName: layerFileName(id),
    ...(backing === undefined ? {} : { backingLayerId: backing.id }),
    ownerVolumeId,
    frozen: false,
    createdAt: nowIso(),
  };
}

/**
 * Commits the transaction that ends an operation: its record changes plus, atomically, either the
 * intent's removal or (when files remain to delete) the intent marked committed.
 */
export async function commitIntent(svc: ServiceContext, txn: CatalogTxn, intent: IntentRecord, deleteFiles: readonly FileRef[] = []): Promise<void> {
  if (deleteFiles.length === 0) {
    svc.catalog.intents.remove(txn, intent);
  } else {
    const committed: IntentRecord = {
      ...intent,
      phase: 'committed',
      deleteFiles: deleteFiles.map((f) => ({ pool: f.pool, fileName: f.fileName })),
    };
    svc.catalog.intents.update(txn, intent, committed);
  }
  await svc.catalog.commit(txn);
}

/**
 * Writes the intent, runs the work (which ends with commitIntent), then finishes a committed
 * intent. If the work fails before its batch landed, the intent is rolled back here (and, should
 * that fail too, by recover() at the next start). `settleUnder` runs that settling of a failed
 * intent inside something (live-copy.ts: a pause of the exports that hold the layers open).
 */
export async function runIntent<T>(
  svc: ServiceContext,
  intent: IntentRecord,
  work: () => Promise<T>,
  options: { settleUnder?: (settle: () => Promise<void>) => Promise<void> } = {},
): Promise<T> {
  await svc.catalog.change((txn) => svc.catalog.intents.create(txn, intent));
  let result: T;
  try {
    result = await work();
  } catch (err) {
    const settle = async (): Promise<void> => {
      const current = await svc.catalog.intents.get(intent.id);
      if (current?.phase === 'committed') await finishIntent(svc, current);
      // A resize cannot be undone (a shrink may have dropped data): finish it, or leave it to recover().
      else if (current?.resize) await finishResize(svc, current);
      else if (current) await rollbackIntent(svc, current);
    };
    await (options.settleUnder === undefined ? settle() : options.settleUnder(settle)).catch(() => {});
    throw err;
  }
  const current = await svc.catalog.intents.get(intent.id);
  if (current) await finishIntent(svc, current);
  return result;
}

/** Undoes a prepared intent: layer headers back to what the catalog says, created files deleted. */
export async function rollbackIntent(svc: ServiceContext, intent: IntentRecord, problems: string[] = []): Promise<void> {
  for (const id of intent.rebaseLayerIds) {
    const layer = await svc.catalog.layers.get(id);
    if (!layer) continue;
    const backing = layer.backingLayerId === undefined ? undefined : await svc.catalog.layers.get(layer.backingLayerId);
    const expected = backing === undefined ? undefined : svc.layerStore.backingName(layer, backing);
    // Read first, write only when it differs: a layer sealed meanwhile (never rewritten) opens read-only.
    const current = await openLayerAlone(svc.layerStore, layer, { writable: false });
    const stored = current.info().backingFile;
    await current.close();
    if (stored === expected) continue;
    const image = await openLayerAlone(svc.layerStore, layer, { writable: true });
    try {
      await image.setBackingFile(expected, expected === undefined ? undefined : 'qcow2');
    } finally {
      await image.close();
    }
  }
  await repairLeaks(svc, writtenLayerIds(intent), problems);
  await removeFiles(svc, intent.createFiles);
  await svc.catalog.change((txn) => svc.catalog.intents.remove(txn, intent));
}

/** Completes a committed intent: deletes the files it meant to delete. */
export async function finishIntent(svc: ServiceContext, intent: IntentRecord, problems?: string[]): Promise<void> {
  if (intent.phase !== 'committed') throw new Error(`assertion failed: intent ${intent.id} finished before it committed`);
  await removeFiles(svc, intent.deleteFiles);
  if (problems) await repairLeaks(svc, writtenLayerIds(intent), problems);
  await svc.catalog.change((txn) => svc.catalog.intents.remove(txn, intent));
}

/** The layers an intent's operation may have written (checked for leaks after a crash). */
function writtenLayerIds(intent: IntentRecord): string[] {
  return [...intent.writeLayerIds, ...intent.rebaseLayerIds, ...(intent.resize ? [intent.resize.layerId] : [])];
}

/** Removes the files (those already gone are fine), then makes their pools durable. */
async function removeFiles(svc: ServiceContext, files: readonly FileRef[]): Promise<void> {
  const pools = new Set<string>();
  for (const file of files) {
    await svc.layerStore.remove(file);
    pools.add(file.pool);
  }
  for (const pool of pools) await svc.layerStore.syncPool(pool).catch(() => {});
}

/** Layers written when a crash hit may hold leaked clusters: check and repair them. */
export async function repairLeaks(svc: ServiceContext, ids: readonly string[], problems: string[]): Promise<void> {
  for (const id of new Set(ids)) {
    const layer = await svc.catalog.layers.get(id);
    if (!layer) continue;
    // A sealed layer is immutable and was never written by the operation: nothing can leak in it.
    if (svc.chunkedPools?.isChunkedPool(layer.pool) && (await svc.chunkedPools.isSealed(layer))) continue;
    const file = layerLocation(svc.layerStore, layer);
    try {
      const image = await openLayerAlone(svc.layerStore, layer, { writable: true });
      try {
        // Past the end of the file too: a kill between a cluster's refcount and its first write.
        const result = await image.check('leaks', { pastEndOfFile: true });
        if (result.corruptions > 0) problems.push(`${file}: ${countOf(result.corruptions, 'corruption')} found; repair with 'strata img check -r all'`);
      } finally {
        await image.close();
      }
    } catch (err) {
      problems.push(`${file}: cannot check it: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
}

/**
 * Does (or, after a crash, finishes) a resize intent: the active layer to the new size, zeroes
 * where needed, then the volume record and the intent's removal in one transaction. Idempotent.
 */
export async function finishResize(svc: ServiceContext, intent: IntentRecord): Promise<void> {
  const resize = intent.resize!;
  const vol = await svc.catalog.volumes.get(resize.volumeId);
  if (!vol || vol.activeLayerId !== resize.layerId) {
    await svc.catalog.change((txn) => svc.catalog.intents.remove(txn, intent));
    return;
  }
  const image = await openChain(svc.layerStore, await layerChain(svc, resize.layerId), { writable: true });
  try {
    await resizeImage(image, resize.toBytes, resize.fromBytes);
  } finally {
    await image.close();
  }
  const txn = new CatalogTxn();
  svc.catalog.volumes.update(txn, vol, { ...vol, sizeBytes: resize.toBytes });
  await commitIntent(svc, txn, intent);
}
