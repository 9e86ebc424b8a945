/**
 * Internal snapshots (the snapshot table QEMU writes): create, apply (revert), delete.
 *
 * Each operation changes refcounts and COPIED flags across whole L1/L2 trees, which no ordering
 * of writes can keep consistent at every instant. So on v3 images the dirty bit is set durably
 * first and cleared last: a crash in between leaves an image that Strata and QEMU repair on open
 * (refcounts rebuilt from the tables). Decrements stay deferred, so no cluster is reused while a
 * durable reference to it may remain.
 */
import { StorageError } from '../../src/core/errors.js';
import { IncompatibleBit, MAX_SNAPSHOTS } from './constants.js';
import { hasIncompatible, setFeatureBit } from './header.js';
import type { Qcow2Internals } from './internals.js';
import { readL1Table, serializeL1 } from './l1-table.js';
import { forEachReference, recomputeCopiedFlags } from './references.js';
import { serializeSnapshotTable, snapshotTableSizeBytes, type SnapshotEntry } from './snapshot-table.js';
import type { Qcow2SnapshotInfo } from './types.js';

function findSnapshot(image: Qcow2Internals, idOrName: string): SnapshotEntry {
  const byId = image.snapshots.find((s) => s.id === idOrName);
  const found = byId ?? image.snapshots.find((s) => s.name === idOrName);
  if (!found) throw new StorageError('NOT_FOUND', `snapshot '${idOrName}' does not exist in ${image.file.name}`);
  return found;
}

async function setDirty(image: Qcow2Internals, dirty: boolean): Promise<void> {
  if (image.header.version < 3) return;
  // With lazy refcounts the bit may already be set by writes; leave it for close to clear. An
  // image opened dirty without repair keeps the bit: its refcounts were never verified.
  if (!dirty && (image.lazyRefcounts || image.refcountsUnverified)) return;
  if (hasIncompatible(image.header, IncompatibleBit.dirty) === dirty) return;
  image.header.incompatibleFeatures = setFeatureBit(image.header.incompatibleFeatures, IncompatibleBit.dirty, dirty);
  await image.writeHeaderNow();
}

/** Writes a new snapshot table (or none) and points the header at it; frees the old one. */
async function replaceSnapshotTable(image: Qcow2Internals, entries: SnapshotEntry[]): Promise<void> {
  const cs = image.clusterSizeBytes;
  const oldOffset = image.header.snapshotsOffset;
  const oldClusters =
    image.header.nbSnapshots > 0 ? Math.ceil(snapshotTableSizeBytes(image.snapshots) / cs) : 0;
  let newOffset = 0;
  if (entries.length > 0) {
    const bytes = serializeSnapshotTable(entries);
    const clusters = Math.ceil(bytes.length / cs);
    newOffset = await image.allocateClusters(clusters);
    const padded = new Uint8Array(clusters * cs);
    padded.set(bytes);
    await image.writebackMetadata();
    await image.file.pwrite(padded, newOffset);
    await image.file.flush();
  }
  image.header.nbSnapshots = entries.length;
  image.header.snapshotsOffset = newOffset;
  image.snapshots = entries;
  await image.writeHeaderNow();
  for (let i = 0; i < oldClusters; i++) image.refcounts.queueFree(oldOffset / cs + i);
}

async function finish(image: Qcow2Internals): Promise<void> {
  await image.writebackMetadata();
  await image.flushLocked();
  await recomputeCopiedFlags(image);
  await image.writebackMetadata();
  await setDirty(image, false);
}

export async function createInternalSnapshot(image: Qcow2Internals, name: string): Promise<Qcow2SnapshotInfo> {
  if (name.length === 0) throw new StorageError('INVALID_ARGUMENT', 'a snapshot needs a name');
  if (image.snapshots.some((s) => s.name === name)) {
    throw new StorageError('ALREADY_EXISTS', `snapshot '${name}' already exists in ${image.file.name}`);
  }
  if (image.snapshots.length >= MAX_SNAPSHOTS) {
    throw new StorageError('LIMIT_EXCEEDED', `an image holds at most ${MAX_SNAPSHOTS} snapshots`);
  }
  const cs = image.clusterSizeBytes;
  await image.writebackMetadata();
  await setDirty(image, true);
  // Every cluster the active tree reaches gains the snapshot's reference.
  await forEachReference(image, image.l1Offsets, async (cluster) => {
    await image.refcounts.add(cluster, 1);
  });
  await recomputeCopiedFlags(image);
  // The snapshot's own copy of the L1 table (entries without COPIED: everything is shared now).
  const l1Size = image.l1Offsets.length;
  const l1Clusters = Math.ceil((l1Size * 8) / cs);
  let l1Offset = 0;
  if (l1Clusters > 0) {
    l1Offset = await image.allocateClusters(l1Clusters);
    await image.writebackMetadata();
    const l1Bytes = new Uint8Array(l1Clusters * cs);
    l1Bytes.set(serializeL1(image.l1Offsets, []));
    await image.file.pwrite(l1Bytes, l1Offset);
    await image.file.flush();
  }

  const now = Date.now();
  const maxId = image.snapshots.reduce((max, s) => Math.max(max, Number.parseInt(s.id, 10) || 0), 0);
  const entry: SnapshotEntry = {
    l1TableOffset: l1Offset,
    l1Size,
    id: String(maxId + 1),
    name,
    dateSec: Math.floor(now / 1000),
    dateNsec: (now % 1000) * 1_000_000,
    vmClockNsec: 0n,
    vmStateSizeBytes: 0,
    diskSizeBytes: image.sizeBytes,
    // qemu-img snapshot -c records icount 0 when not replaying; match it so listings agree.
    icount: 0n,
    knownExtraDataSize: 24,
    extraData: new Uint8Array(0),
  };
  await replaceSnapshotTable(image, [...image.snapshots, entry]);
  await finish(image);
  return image.listSnapshots().find((s) => s.id === entry.id)!;
}

/**
 * The common start of apply and delete: find the snapshot, read its L1 table, write back our
 * caches and set the dirty bit for the tree-wide refcount changes that follow.
 */
async function beginSnapshotTreeChange(image: Qcow2Internals, idOrName: string): Promise<{ snapshot: SnapshotEntry; snapshotL1: number[] }> {
  const snapshot = findSnapshot(image, idOrName);
  const fileSizeBytes = await image.file.sizeBytes();
  const { offsets } = await readL1Table(image.file, snapshot.l1TableOffset, snapshot.l1Size, image.clusterSizeBytes, fileSizeBytes);
  await image.writebackMetadata();
  await setDirty(image, true);
  return { snapshot, snapshotL1: offsets };
}

export async function applyInternalSnapshot(image: Qcow2Internals, idOrName: string): Promise<void> {
  const { snapshot, snapshotL1 } = await beginSnapshotTreeChange(image, idOrName);
  if (snapshotL1.length > image.l1Offsets.length) await image.growL1(snapshotL1.length);
  await forEachReference(image, snapshotL1, async (cluster) => {
    await image.refcounts.add(cluster, 1);
  });
  const oldL1 = image.l1Offsets.slice();
  await forEachReference(image, oldL1, (cluster) => image.refcounts.queueFree(cluster));
  const newOffsets = image.l1Offsets.map((_, i) => snapshotL1[i] ?? 0);
  image.l1Offsets = newOffsets;
  image.l1Copied = newOffsets.map(() => false);
  image.l1Dirty = true;
  const diskSize = snapshot.diskSizeBytes ?? image.sizeBytes;
  if (diskSize !== image.sizeBytes) {
    image.sizeBytes = diskSize;
    image.header.sizeBytes = diskSize;
    image.headerDirty = true;
  }
  await finish(image);
}

export async function deleteInternalSnapshot(image: Qcow2Internals, idOrName: string): Promise<void> {
  const { snapshot, snapshotL1 } = await beginSnapshotTreeChange(image, idOrName);
  const cs = image.clusterSizeBytes;
  await replaceSnapshotTable(
    image,
    image.snapshots.filter((s) => s !== snapshot),
  );
  await forEachReference(image, snapshotL1, (cluster) => image.refcounts.queueFree(cluster));
  const l1Clusters = Math.ceil((snapshot.l1Size * 8) / cs);
  if (snapshot.l1TableOffset > 0) {
    for (let i = 0; i < l1Clusters; i++) image.refcounts.queueFree(snapshot.l1TableOffset / cs + i);
  }
  await finish(image);
}
