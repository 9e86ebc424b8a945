/**
 * Data in and out of volumes: copying a volume (a job), importing a raw or qcow2 stream into a
 * new volume, and exporting a volume or snapshot as a raw or qcow2 stream.
 */
import { StorageError } from '../core/errors.js';
import { alignUp, formatSizeHuman, SECTOR_SIZE_BYTES } from '../core/units.js';
import { allocAligned } from '../sys/aligned-buffer.js';
import type { HostFile } from '../core/host-file.js';
import type { LayerRef } from '../core/layer-store.js';
import { CatalogTxn } from './catalog.js';
import { chainPieces, filePieces, importProgress, spoolToFile, streamLongerThan, writePiecesToLayer } from './content.js';
import { newId, nowIso, poolKey, type ServiceContext } from './context.js';
import { COPY_CHUNK_BYTES, writeSparse } from './extents.js';
import { checkHeadNotLive, claimVolumeName, hold, unhold, withVolume, type NameClaim } from './guards.js';
import { copyPlan, dataPlan, totalOf } from './image-ops.js';
import { openUploadedImage, uploadedImageError } from './input-image.js';
import { isChunkedLayer, resealFrozen } from './sealing.js';
import { commitIntent, newIntent, newLayer, runIntent } from './intents.js';
import type { JobContext } from './jobs.js';
import { createLayerFile, layerLocation, openChain, openLayerAlone, TEMP_PREFIX } from './layers.js';
import { checkName, checkVolumeSize } from './names.js';
import { checkNameFree, checkQuota, describeVolume, layerChain, requirePool, snapshotByName } from './queries.js';
import type { FileRef, VolumeRecord } from './records.js';
import { encodeContent, readSparseStream, type ContentPiece, type TransferEncoding } from './sparse-stream.js';
import { ManagedStream } from './stream.js';
import type { JobInfo, VolumeInfo } from './types.js';

/** Raw imports of unknown size start with this virtual size and double as data arrives. */
const IMPORT_INITIAL_BYTES = 64 * 1024 * 1024;

export async function copyVolume(svc: ServiceContext, pool: string, name: string, destPool: string, destName: string): Promise<JobInfo> {
  checkName('volume', destName);
  return withVolume(
    svc,
    pool,
    name,
    async (vol) => {
      checkHeadNotLive(svc, vol, 'copy it (copy a snapshot of it instead)');
      const dest = await requirePool(svc, destPool);
      await checkNameFree(svc, destPool, destName);
      await checkQuota(svc, dest, vol.sizeBytes, `the copy '${destPool}/${destName}' of '${pool}/${name}'`);
      const claim = await claimVolumeName(svc, destPool, destName, vol.sizeBytes);
      hold(svc, vol.id, 'a copy job reads it', { job: true });
      try {
        return await svc.jobs.start('copy', `${pool}/${name}`, async (ctx) => {
          try {
            ctx.throwIfCancelled();
            await copyJob(svc, vol.id, claim, ctx);
          } finally {
            unhold(svc, vol.id);
            await claim.release();
          }
        });
      } catch (err) {
        unhold(svc, vol.id);
        await claim.release();
        throw err;
      }
    },
    { keys: [poolKey(destPool)] },
  );
}

async function copyJob(svc: ServiceContext, volumeId: string, claim: NameClaim, ctx: JobContext): Promise<void> {
  const { pool: destPool, name: destName } = claim.reservation;
  const vol = await svc.catalog.volumes.require(volumeId, 'the source volume');
  const source = await openChain(svc.layerStore, await layerChain(svc, vol.activeLayerId), { writable: false });
  const volume: VolumeRecord = { id: newId(), pool: destPool, name: destName, sizeBytes: vol.sizeBytes, activeLayerId: newId(), createdAt: nowIso() };
  const layer = newLayer(volume.activeLayerId, destPool, volume.id, undefined);
  const intent = newIntent('copy', `${destPool}/${destName}`, { createFiles: [layer] });
  try {
    await runIntent(svc, intent, async () => {
      await createLayerFile(svc.layerStore, layer, vol.sizeBytes);
      const dest = await openLayerAlone(svc.layerStore, layer, { writable: true });
      try {
        const plan = await dataPlan(source, 0, source.sizeBytes);
        ctx.setTotal(totalOf(plan));
        await copyPlan(source, dest, plan, ctx, 'skip');
      } finally {
        await dest.close();
      }
      await svc.layerStore.syncPool(destPool);
      await svc.locks.run([poolKey(destPool)], async () => {
        const pool = await requirePool(svc, destPool);
        const txn = new CatalogTxn();
        svc.catalog.pools.requireUnchanged(txn, pool);
        svc.catalog.createVolume(txn, volume, claim.reservation);
        svc.catalog.layers.create(txn, layer);
        await commitIntent(svc, txn, intent);
      });
    });
  } finally {
    await source.close();
  }
}

export async function importVolume(
  svc: ServiceContext,
  pool: string,
  name: string,
  source: AsyncIterable<Uint8Array>,
  options: { format: 'raw' | 'qcow2'; sizeBytes?: number; transfer?: TransferEncoding; onProgress?: (doneBytes: number) => void; signal?: AbortSignal },
): Promise<VolumeInfo> {
  checkName('volume', name);
  if (options.format !== 'raw' && options.format !== 'qcow2') {
    throw new StorageError('INVALID_ARGUMENT', `unknown import format '${String(options.format)}': use raw or qcow2`);
  }
  const sizeBytes = options.sizeBytes === undefined ? undefined : checkVolumeSize(options.sizeBytes);
  const claim = await svc.locks.run([poolKey(pool)], async () => {
    const poolRecord = await requirePool(svc, pool);
    await checkNameFree(svc, pool, name);
    await checkQuota(svc, poolRecord, sizeBytes ?? 0, `importing '${pool}/${name}'`);
    return claimVolumeName(svc, pool, name, sizeBytes ?? 0);
  });
  try {
    const job = (ctx: JobContext) => importJob(svc, claim, source, { ...options, sizeBytes }, ctx);
    const volume = await svc.jobs.run('import', `${pool}/${name}`, job, options.signal ? { signal: options.signal } : {});
    return describeVolume(svc, volume);
  } finally {
    await claim.release();
  }
}

async function importJob(
  svc: ServiceContext,
  claim: NameClaim,
  source: AsyncIterable<Uint8Array>,
  options: { format: 'raw' | 'qcow2'; sizeBytes: number | undefined; transfer?: TransferEncoding; onProgress?: (doneBytes: number) => void },
  ctx: JobContext,
): Promise<VolumeRecord> {
  const { pool, name } = claim.reservation;
  const volumeId = newId();
  const layer = newLayer(newId(), pool, volumeId, undefined);
  const spool: FileRef = { pool, fileName: `${TEMP_PREFIX}import-${newId()}.qcow2` };
  // In a dedup pool the imported layer is frozen as the volume's base, under an empty active
  // overlay, and sealed in the background: the guest writes the overlay, the base dedups.
  const overlay = isChunkedLayer(svc, { pool }) ? newLayer(newId(), pool, volumeId, layer) : undefined;
  const created = [layer, ...(overlay === undefined ? [] : [overlay]), ...(options.format === 'qcow2' ? [spool] : [])];
  const intent = newIntent('import', `${pool}/${name}`, { createFiles: created });
  if (options.sizeBytes !== undefined) ctx.setTotal(options.sizeBytes);
  const volume = await runIntent(svc, intent, async () => {
    const sparse = options.transfer === 'sparse' ? await readSparseStream(source) : undefined;
    // A raw import into a dedup pool writes its base sealed (no local file, no seal job after).
    const sealedSize = overlay !== undefined && options.format === 'raw' ? await importRawSealed(svc, pool, name, layer, sparse ?? source, options, ctx) : undefined;
    const sizeBytes =
      sealedSize ??
      (options.format === 'qcow2'
        ? await importQcow2(svc, pool, name, spool, layer, sparse ?? source, options, ctx)
        : sparse !== undefined
          ? await importSparseRaw(svc, pool, name, layer, sparse, options, ctx)
          : await importRaw(svc, pool, name, layer, source, options, ctx));
    if (overlay !== undefined) await createLayerFile(svc.layerStore, overlay, sizeBytes, layer);
    await svc.layerStore.syncPool(pool);
    const volume: VolumeRecord = { id: volumeId, pool, name, sizeBytes, activeLayerId: (overlay ?? layer).id, createdAt: nowIso() };
    await svc.locks.run([poolKey(pool)], async () => {
      const poolRecord = await requirePool(svc, pool);
      await checkQuota(svc, poolRecord, sizeBytes, `importing '${pool}/${name}'`, { reservation: `${pool}/${name}` });
      const txn = new CatalogTxn();
      svc.catalog.pools.requireUnchanged(txn, poolRecord);
      svc.catalog.createVolume(txn, volume, claim.reservation);
      svc.catalog.layers.create(txn, overlay === undefined ? layer : { ...layer, frozen: true });
      if (overlay !== undefined) svc.catalog.layers.create(txn, overlay);
      await commitIntent(svc, txn, intent);
    });
    return volume;
  });
  if (overlay !== undefined) await resealFrozen(svc, [layer.id], `${pool}/${name}`);
  return volume;
}

/** Raw bytes into a new layer file, skipping blocks of zeroes. Resolves to the volume size. */
async function importRaw(
  svc: ServiceContext,
  pool: string,
  name: string,
  file: LayerRef,
  source: AsyncIterable<Uint8Array>,
  options: { sizeBytes: number | undefined; onProgress?: (doneBytes: number) => void },
  ctx: JobContext,
): Promise<number> {
  const fixed = options.sizeBytes;
  await createLayerFile(svc.layerStore, file, fixed ?? IMPORT_INITIAL_BYTES);
  const image = await openLayerAlone(svc.layerStore, file, { writable: true });
  try {
    const buf = allocAligned(COPY_CHUNK_BYTES);
    let fill = 0;
    let offset = 0;
    let received = 0;
    const flushBuffer = async () => {
      if (fill === 0) return;
      const end = offset + fill;
      if (fixed !== undefined && end > fixed) throw streamLongerThan(fixed);
      if (end > image.sizeBytes) {
        const grown = Math.max(image.sizeBytes * 2, alignUp(end, SECTOR_SIZE_BYTES));
        await checkImportQuota(svc, pool, name, alignUp(end, SECTOR_SIZE_BYTES));
        await image.resize(grown);
      }
      await writeSparse(image, offset, buf.subarray(0, fill), 'skip');
      offset = end;
      fill = 0;
    };
    for await (const chunk of source) {
      ctx.throwIfCancelled();
      for (let pos = 0; pos < chunk.length; ) {
        const n = Math.min(buf.length - fill, chunk.length - pos);
        buf.set(chunk.subarray(pos, pos + n), fill);
        fill += n;
        pos += n;
        if (fill === buf.length) await flushBuffer();
      }
      received += chunk.length;
      ctx.addDone(chunk.length);
      options.onProgress?.(received);
    }
    ctx.throwIfCancelled();
    await flushBuffer();
    const sizeBytes = fixed ?? alignUp(received, SECTOR_SIZE_BYTES);
    if (sizeBytes === 0) {
      throw new StorageError('INVALID_ARGUMENT', 'the import stream is empty', { fix: { option: 'sizeBytes', text: 'give the size with {} to create an empty volume' } });
    }
    if (image.sizeBytes !== sizeBytes) await image.resize(sizeBytes, { allowShrink: true });
    return sizeBytes;
  } finally {
    await image.close();
  }
}

/** A raw image as a sparse stream: its size is known up front, and only its data is written. */
async function importSparseRaw(
  svc: ServiceContext,
  pool: string,
  name: string,
  file: LayerRef,
  sparse: { sizeBytes: number; pieces: AsyncIterable<ContentPiece> },
  options: { sizeBytes: number | undefined; onProgress?: (doneBytes: number) => void },
  ctx: JobContext,
): Promise<number> {
  const sizeBytes = sparseImportSize(sparse, options.sizeBytes);
  await checkImportQuota(svc, pool, name, sizeBytes);
  ctx.setTotal(sparse.sizeBytes);
  await createLayerFile(svc.layerStore, file, sizeBytes);
  await writePiecesToLayer(svc.layerStore, file, sparse.pieces, importProgress(ctx, options.onProgress));
  return sizeBytes;
}

/**
 * A raw import's layer written straight into the dedup pool's chunks (ChunkedPools.writeSealed):
 * resolves to the volume size, or undefined with nothing read when the layer must be written
 * locally and sealed after (a byte stream of unknown size: its layout needs the size; a layer too
 * large to lay out in memory).
 */
async function importRawSealed(
  svc: ServiceContext,
  pool: string,
  name: string,
  file: LayerRef,
  source: AsyncIterable<Uint8Array> | { sizeBytes: number; pieces: AsyncIterable<ContentPiece> },
  options: { sizeBytes: number | undefined; onProgress?: (doneBytes: number) => void },
  ctx: JobContext,
): Promise<number | undefined> {
  const sparse = 'pieces' in source ? source : undefined;
  if (sparse === undefined && options.sizeBytes === undefined) return undefined;
  const sizeBytes = sparse === undefined ? options.sizeBytes! : sparseImportSize(sparse, options.sizeBytes);
  await checkImportQuota(svc, pool, name, sizeBytes);
  if (sparse !== undefined) ctx.setTotal(sparse.sizeBytes);
  const onBytes = importProgress(ctx, options.onProgress);
  const pieces = sparse === undefined ? byteStreamPieces(source as AsyncIterable<Uint8Array>, sizeBytes, onBytes) : sparseDataPieces(sparse.pieces, onBytes);
  return (await svc.chunkedPools!.writeSealed(file, { sizeBytes, pieces }, { signal: ctx.signal })) ? sizeBytes : undefined;
}

/** A plain byte stream as data pieces, refused past sizeBytes. */
async function* byteStreamPieces(source: AsyncIterable<Uint8Array>, sizeBytes: number, onBytes: (n: number) => void): AsyncGenerator<{ offset: number; bytes: Uint8Array }> {
  let offset = 0;
  for await (const bytes of source) {
    if (offset + bytes.length > sizeBytes) throw streamLongerThan(sizeBytes);
    onBytes(bytes.length);
    yield { offset, bytes };
    offset += bytes.length;
  }
}

/** A sparse stream's data pieces (its zero runs read as zeroes: nothing to store). */
async function* sparseDataPieces(pieces: AsyncIterable<ContentPiece>, onBytes: (n: number) => void): AsyncGenerator<{ offset: number; bytes: Uint8Array }> {
  for await (const piece of pieces) {
    if (piece.kind === 'data') {
      onBytes(piece.bytes.length);
      yield piece;
    } else {
      onBytes(piece.length);
    }
  }
}

/** The volume size of a sparse raw import: the size given (at least the stream's), else the stream's. */
function sparseImportSize(sparse: { sizeBytes: number }, given: number | undefined): number {
  if (given !== undefined && given < sparse.sizeBytes) throw streamLongerThan(given);
  return checkVolumeSize(given ?? alignUp(sparse.sizeBytes, SECTOR_SIZE_BYTES));
}

/** Checks the pool's quota for an import growing to sizeBytes (its reservation counted once). */
function checkImportQuota(svc: ServiceContext, pool: string, name: string, sizeBytes: number): Promise<void> {
  return svc.locks.run([poolKey(pool)], async () => {
    await checkQuota(svc, await requirePool(svc, pool), sizeBytes, `importing '${pool}/${name}'`, { reservation: `${pool}/${name}` });
  });
}

/** A qcow2 stream: spooled to a temp file in the pool, opened with the engine, copied sparsely. */
async function importQcow2(
  svc: ServiceContext,
  pool: string,
  name: string,
  spool: LayerRef,
  file: LayerRef,
  source: AsyncIterable<Uint8Array> | { sizeBytes: number; pieces: AsyncIterable<ContentPiece> },
  options: { sizeBytes: number | undefined; onProgress?: (doneBytes: number) => void },
  ctx: JobContext,
): Promise<number> {
  const received = await spoolToFile(svc.layerStore, spool, source, importProgress(ctx, options.onProgress));
  ctx.throwIfCancelled();
  // Damage found in the upload (at open or while copying) is the uploader's: InvalidImageError.
  const spooled = await openUploadedImage(svc.layerStore, spool);
  const asUploadError = (err: unknown) => uploadedImageError(err, layerLocation(svc.layerStore, spool));
  try {
    const info = spooled.info();
    if (info.backingFile !== undefined) {
      // The backing file is not uploaded with the image: the volume would lack the data it holds.
      throw new StorageError('INVALID_ARGUMENT', `the uploaded qcow2 image has backing file '${info.backingFile}': only standalone images can be imported`, {
        fix: {
          literal: true,
          text: "make a standalone copy with 'qemu-img convert -O qcow2 IMAGE STANDALONE.qcow2' (it reads the backing chain into the copy) and import that, or merge the backing file into the image itself with 'qemu-img rebase -b \"\" IMAGE'",
        },
      });
    }
    const virtual = alignUp(spooled.sizeBytes, SECTOR_SIZE_BYTES);
    if (options.sizeBytes !== undefined && options.sizeBytes < spooled.sizeBytes) {
      throw new StorageError('INVALID_ARGUMENT', `the size given, ${formatSizeHuman(options.sizeBytes)}, is smaller than the image's virtual size ${formatSizeHuman(spooled.sizeBytes)}`, {
        fix: { option: 'sizeBytes', text: 'give a size of at least the virtual size with {}, or none' },
      });
    }
    const sizeBytes = checkVolumeSize(options.sizeBytes ?? virtual);
    await checkImportQuota(svc, pool, name, sizeBytes);
    await createLayerFile(svc.layerStore, file, sizeBytes);
    const dest = await openLayerAlone(svc.layerStore, file, { writable: true });
    try {
      const plan = await dataPlan(spooled, 0, spooled.sizeBytes).catch((err: unknown) => Promise.reject(asUploadError(err)));
      ctx.setTotal(received + totalOf(plan));
      await copyPlan(spooled, dest, plan, ctx, 'skip', asUploadError);
    } finally {
      await dest.close();
    }
    return sizeBytes;
  } finally {
    await spooled.close();
    await svc.layerStore.remove(spool);
  }
}

export async function exportVolume(
  svc: ServiceContext,
  pool: string,
  name: string,
  options: { format: 'raw' | 'qcow2'; snapshot?: string; transfer?: TransferEncoding },
): Promise<{ sizeBytes: number; stream: AsyncIterable<Uint8Array> }> {
  const transfer = options.transfer ?? 'bytes';
  if (options.format !== 'raw' && options.format !== 'qcow2') {
    throw new StorageError('INVALID_ARGUMENT', `unknown export format '${String(options.format)}': use raw or qcow2`);
  }
  return withVolume(
    svc,
    pool,
    name,
    async (vol) => {
      const layerId = options.snapshot === undefined ? vol.activeLayerId : (await snapshotByName(svc, vol, options.snapshot)).layerId;
      if (options.snapshot === undefined) checkHeadNotLive(svc, vol, 'export it here (export a snapshot of it, or read it over NBD)');
      const image = await openChain(svc.layerStore, await layerChain(svc, layerId), { writable: false });
      if (options.format === 'raw') {
        // A live volume stays held while it streams (its active layer must not change under the
        // reader); a snapshot's layers read the same whatever happens to the volume meanwhile.
        const live = options.snapshot === undefined;
        if (live) hold(svc, vol.id, 'an export streams it', { job: false });
        const stream = new ManagedStream(encodeContent(chainPieces(image), image.sizeBytes, transfer), async () => {
          try {
            await image.close();
          } finally {
            if (live) unhold(svc, vol.id);
          }
        });
        return { sizeBytes: image.sizeBytes, stream };
      }
      // qcow2: convert into a standalone temp file (under the lock), then stream that file. The
      // file is unlinked as soon as it is open, so nothing is left behind whatever happens.
      const temp: LayerRef = { pool: vol.pool, fileName: `${TEMP_PREFIX}export-${newId()}.qcow2` };
      let exported: HostFile | undefined;
      try {
        await svc.jobs.run('export', `${pool}/${name}${options.snapshot === undefined ? '' : `@${options.snapshot}`}`, async (ctx) => {
          await createLayerFile(svc.layerStore, temp, image.sizeBytes);
          const dest = await openLayerAlone(svc.layerStore, temp, { writable: true });
          try {
            const plan = await dataPlan(image, 0, image.sizeBytes);
            ctx.setTotal(totalOf(plan));
            await copyPlan(image, dest, plan, ctx, 'skip');
          } finally {
            await dest.close();
          }
        });
        exported = await svc.layerStore.open(temp, { readOnly: true });
      } finally {
        await image.close();
        await svc.layerStore.remove(temp);
      }
      const opened = exported!;
      const sizeBytes = await opened.sizeBytes();
      return { sizeBytes, stream: new ManagedStream(encodeContent(filePieces(opened, sizeBytes), sizeBytes, transfer), () => opened.close()) };
    },
    { allowHeld: true },
  );
}
