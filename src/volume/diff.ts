/**
 * Diffs between two points of a volume's lineage: the changed extents, a diff stream of them
 * (export-diff), and applying such a stream to a volume (import-diff). diff-stream.ts is the format.
 */
import { StorageError } from '../core/errors.js';
import { allocAligned } from '../sys/aligned-buffer.js';
import type { Qcow2Image } from '../../formats/qcow2/index.js';
import { poolKey, type ServiceContext } from './context.js';
import { ByteReader, encodeDiffHeader, encodeRecordHeader, readDiffHeader, readRecordHeader } from './diff-stream.js';
import { chainMap, COPY_CHUNK_BYTES, forEachWindow, isZero, layerMap, mergeRanges, type Range } from './extents.js';
import { checkHeadNotLive, hold, unhold, withVolume } from './guards.js';
import { openChain, backingOf } from './layers.js';
import { checkName, checkVolumeSize } from './names.js';
import { describeVolume, findSnapshot, layerChain, snapshotByName } from './queries.js';
import { createSnapshotLocked, ensureSnapshotAllowed } from './snapshots.js';
import { ManagedStream } from './stream.js';
import type { LayerRecord, VolumeRecord } from './records.js';
import type { DiffExtent, DiffRange, VolumeInfo } from './types.js';
import { resizeLocked } from './volumes.js';
import { withVolumeWriter } from './writers.js';

export async function diff(svc: ServiceContext, pool: string, volume: string, range: DiffRange): Promise<DiffExtent[]> {
  return withVolume(
    svc,
    pool,
    volume,
    async (vol) => {
      if (range.toSnapshot === undefined) checkHeadNotLive(svc, vol, 'diff against it (diff against a snapshot of it)');
      const point = await diffPoints(svc, vol, range);
      const image = await openChain(svc.layerStore, point.chain, { writable: false });
      try {
        return await diffExtents(image, point.pathDepth, point.fromSizeBytes);
      } finally {
        await image.close();
      }
    },
    { allowHeld: true },
  );
}

export async function exportDiff(svc: ServiceContext, pool: string, volume: string, range: DiffRange): Promise<AsyncIterable<Uint8Array>> {
  return withVolume(
    svc,
    pool,
    volume,
    async (vol) => {
      if (range.toSnapshot === undefined) checkHeadNotLive(svc, vol, 'export a diff of it (diff to a snapshot of it)');
      const point = await diffPoints(svc, vol, range);
      const image = await openChain(svc.layerStore, point.chain, { writable: false });
      const live = range.toSnapshot === undefined;
      let extents: DiffExtent[];
      try {
        extents = await diffExtents(image, point.pathDepth, point.fromSizeBytes);
      } catch (err) {
        await image.close();
        throw err;
      }
      if (live) hold(svc, vol.id, 'a diff export streams it', { job: false });
      const header = encodeDiffHeader({ sizeBytes: image.sizeBytes, from: range.fromSnapshot ?? null, to: range.toSnapshot ?? null });
      return new ManagedStream(diffStream(image, header, extents), async () => {
        try {
          await image.close();
        } finally {
          if (live) unhold(svc, vol.id);
        }
      });
    },
    { allowHeld: true },
  );
}

export async function importDiff(svc: ServiceContext, pool: string, volume: string, source: AsyncIterable<Uint8Array>): Promise<VolumeInfo> {
  return withVolume(
    svc,
    pool,
    volume,
    async (vol) => {
      checkHeadNotLive(svc, vol, 'apply a diff to it');
      const reader = new ByteReader(source);
      try {
        const header = await readDiffHeader(reader);
        if (header.from !== null) await snapshotByName(svc, vol, header.from);
        if (header.to !== null) {
          checkName('snapshot', header.to);
          if (await findSnapshot(svc, vol, header.to)) {
            throw new StorageError('ALREADY_EXISTS', `snapshot '${pool}/${volume}@${header.to}' already exists`);
          }
          await ensureSnapshotAllowed(svc, vol, { dryRun: true });
        }
        checkVolumeSize(header.sizeBytes);
        let current = vol;
        if (header.sizeBytes !== vol.sizeBytes) current = await resizeLocked(svc, vol, header.sizeBytes);
        await withVolumeWriter(svc, current.id, async () => {
          const image = await openChain(svc.layerStore, await layerChain(svc, current.activeLayerId), { writable: true });
          try {
            await applyDiffRecords(reader, image, header.sizeBytes);
            await image.flush();
          } finally {
            await image.close();
          }
        });
        if (header.to !== null) await createSnapshotLocked(svc, current, header.to);
        return describeVolume(svc, await svc.catalog.volumes.require(vol.id, `volume '${pool}/${volume}'`));
      } finally {
        await reader.close().catch(() => {});
      }
    },
    { keys: [poolKey(pool)] },
  );
}

/** Resolves a diff's two points on one lineage. */
async function diffPoints(svc: ServiceContext, vol: VolumeRecord, range: DiffRange): Promise<{ chain: LayerRecord[]; pathDepth: number; fromSizeBytes: number }> {
  const to = range.toSnapshot === undefined ? undefined : await snapshotByName(svc, vol, range.toSnapshot);
  const from = range.fromSnapshot === undefined ? undefined : await snapshotByName(svc, vol, range.fromSnapshot);
  const chain = await layerChain(svc, to?.layerId ?? vol.activeLayerId);
  if (from === undefined) return { chain, pathDepth: chain.length, fromSizeBytes: 0 };
  const index = chain.findIndex((l) => l.id === from.layerId);
  if (index < 0) {
    throw new StorageError(
      'INVALID_ARGUMENT',
      `snapshot '${from.name}' is not an ancestor of ${to === undefined ? 'the volume' : `snapshot '${to.name}'`} (after a rollback they are on different branches)`,
    );
  }
  return { chain, pathDepth: index, fromSizeBytes: from.sizeBytes };
}

/**
 * The changed extents between two points: the union of the allocation maps of the `pathDepth`
 * layers from the top down (plus, past a layer's end, what it hides of the older point), each
 * reported as data or zero by what the top reads.
 */
async function diffExtents(image: Qcow2Image, pathDepth: number, fromSizeBytes: number): Promise<DiffExtent[]> {
  const path: Qcow2Image[] = [];
  for (let layer: Qcow2Image | undefined = image; layer !== undefined && path.length < pathDepth; layer = backingOf(layer)) path.push(layer);
  const out: DiffExtent[] = [];
  await forEachWindow(0, image.sizeBytes, async (start, end) => {
    const ranges: Range[] = [];
    for (const layer of path) {
      for (const x of await layerMap(layer, start, end)) if (x.kind !== 'unallocated') ranges.push(x);
      const hiddenStart = Math.max(start, layer.sizeBytes);
      const hiddenEnd = Math.min(end, fromSizeBytes);
      if (hiddenStart < hiddenEnd) ranges.push({ offset: hiddenStart, length: hiddenEnd - hiddenStart });
    }
    for (const r of mergeRanges(ranges)) {
      for (const x of await chainMap(image, r.offset, r.offset + r.length)) {
        const last = out[out.length - 1];
        if (last && last.kind === x.kind && last.offset + last.length === x.offset) last.length += x.length;
        else out.push({ offset: x.offset, length: x.length, kind: x.kind });
      }
    }
  });
  return out;
}

async function* diffStream(image: Qcow2Image, header: Uint8Array, extents: DiffExtent[]): AsyncGenerator<Uint8Array, void, undefined> {
  yield header;
  for (const extent of extents) {
    if (extent.kind === 'zero') {
      yield encodeRecordHeader('z', extent.offset, extent.length);
      continue;
    }
    const end = extent.offset + extent.length;
    for (let pos = extent.offset; pos < end; ) {
      const n = Math.min(end, Math.floor(pos / COPY_CHUNK_BYTES) * COPY_CHUNK_BYTES + COPY_CHUNK_BYTES) - pos;
      const buf = allocAligned(n);
      await image.read(pos, buf);
      if (isZero(buf)) {
        yield encodeRecordHeader('z', pos, n);
      } else {
        yield encodeRecordHeader('d', pos, n);
        yield buf;
      }
      pos += n;
    }
  }
  yield encodeRecordHeader('e', 0, 0);
}

/** Applies diff records to an opened (writable) chain top. */
async function applyDiffRecords(reader: ByteReader, image: Qcow2Image, sizeBytes: number): Promise<void> {
  for (;;) {
    const record = await readRecordHeader(reader, sizeBytes);
    if (record.kind === 'e') break;
    if (record.kind === 'z') {
      if (record.length > 0) await image.writeZeroes(record.offset, record.length, { mayUnmap: true });
      continue;
    }
    for (let done = 0; done < record.length; ) {
      const n = Math.min(COPY_CHUNK_BYTES, record.length - done);
      const data = await reader.readExact(n, 'a data record');
      if (data === undefined) throw new StorageError('INVALID_ARGUMENT', 'invalid diff stream: the stream ends inside a data record');
      await image.write(record.offset + done, data);
      done += n;
    }
  }
  if (!(await reader.atEnd())) throw new StorageError('INVALID_ARGUMENT', "invalid diff stream: bytes follow the end record ('e')");
}
