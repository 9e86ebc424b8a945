/**
 * Consistency check and repair, like `qemu-img check`: count every reference to every host
 * cluster from the metadata, compare with the stored refcounts, and check COPIED flags.
 *
 *   stored > referenced  -> leak (harmless: space not reused until repaired)
 *   stored < referenced  -> corruption (a write could overwrite live data)
 *
 * Repair 'leaks' lowers leaked refcounts in place. Repair 'all' also fixes invalid L2 entries and
 * COPIED flags, then rebuilds the refcount structure from scratch at the end of the file (the
 * one repair that is right whatever state the old refcount blocks were in).
 */
import { StorageError } from '../../src/core/errors.js';
import { IncompatibleBit } from './constants.js';
import { hasIncompatible, setFeatureBit } from './header.js';
import { readL1Table, type Qcow2Image } from './image.js';
import { entryCompressed, entryHostOffset, entryReservedBits, entryZeroFlag } from './l2-entry.js';
import { compressedHostClusters, recomputeCopiedFlags } from './references.js';
import { snapshotTableSizeBytes } from './snapshot-table.js';
import type { CheckRepairMode, Qcow2CheckResult } from './types.js';

/** Refuse to check images whose file would need an absurd per-cluster array. */
const MAX_CHECKED_CLUSTERS = 1 << 28;

interface Tally {
  /** References per host cluster. */
  references: Uint32Array;
  clusterCount: number;
  result: Qcow2CheckResult;
}

function newResult(): Qcow2CheckResult {
  return {
    checkErrors: 0,
    corruptions: 0,
    leaks: 0,
    corruptionsFixed: 0,
    leaksFixed: 0,
    imageEndOffset: 0,
    totalClusters: 0,
    allocatedClusters: 0,
    fragmentedClusters: 0,
    compressedClusters: 0,
    messages: [],
  };
}

function reference(t: Tally, hostOffset: number, lengthBytes: number, what: string, cs: number): boolean {
  if (hostOffset % cs !== 0) {
    t.result.corruptions++;
    t.result.messages.push(`ERROR ${what} at offset ${hostOffset} is not cluster-aligned`);
    return false;
  }
  const first = hostOffset / cs;
  const count = Math.max(1, Math.ceil(lengthBytes / cs));
  if (first + count > t.clusterCount) {
    t.result.corruptions++;
    t.result.messages.push(`ERROR ${what} at offset ${hostOffset} lies past the end of the image file`);
    return false;
  }
  for (let c = first; c < first + count; c++) t.references[c]!++;
  return true;
}

/**
 * Counts the references of one L1 tree. With `active`, also gathers allocation statistics and
 * (when repairing all) fixes invalid entries in place.
 */
async function tallyL1Tree(
  image: Qcow2Image,
  t: Tally,
  l1Offsets: readonly number[],
  label: string,
  active: boolean,
  fix: boolean,
): Promise<void> {
  const cs = image.clusterSizeBytes;
  for (let i = 0; i < l1Offsets.length; i++) {
    const l2Offset = l1Offsets[i] ?? 0;
    if (l2Offset === 0) continue;
    // As qemu-img check: contiguity is judged within one L2 table only.
    let previousHost = -1;
    if (!reference(t, l2Offset, cs, `${label} L2 table (L1 index ${i})`, cs)) {
      if (active && fix) {
        image.l1Offsets[i] = 0;
        image.l1Copied[i] = false;
        image.l1Dirty = true;
        t.result.corruptionsFixed++;
      }
      continue;
    }
    const table = await image.l2Cache.get(l2Offset);
    for (let slot = 0; slot < image.l2Entries; slot++) {
      const position = slot * image.l2EntryBytes;
      const hi = table.view.getUint32(position);
      const lo = table.view.getUint32(position + 4);
      const guestCluster = i * image.l2Entries + slot;
      if (entryCompressed(hi)) {
        let clusters: number[];
        try {
          clusters = compressedHostClusters(image, hi, lo);
        } catch {
          clusters = [];
        }
        const ok =
          clusters.length > 0 &&
          clusters.every((c) => reference(t, c * cs, cs, `${label} compressed cluster ${guestCluster}`, cs));
        if (!ok && clusters.length === 0) {
          t.result.corruptions++;
          t.result.messages.push(`ERROR ${label} compressed cluster ${guestCluster} has an invalid descriptor`);
        }
        if (active) {
          t.result.allocatedClusters++;
          t.result.compressedClusters++;
          // As qemu-img check: compressed clusters count as fragmented.
          t.result.fragmentedClusters++;
        }
        if (!ok && active && fix) dropEntry(image, table, position, t);
        continue;
      }
      const host = entryHostOffset(hi, lo);
      let bad = entryReservedBits(hi, lo);
      if (bad) {
        t.result.corruptions++;
        t.result.messages.push(`ERROR ${label} L2 entry for cluster ${guestCluster} has reserved bits set`);
      }
      if (image.extendedL2) {
        const zeroBits = table.view.getUint32(position + 8);
        const allocBits = table.view.getUint32(position + 12);
        if ((zeroBits & allocBits) !== 0 || (host === 0 && allocBits !== 0) || entryZeroFlag(lo)) {
          t.result.corruptions++;
          t.result.messages.push(`ERROR ${label} extended L2 bitmap for cluster ${guestCluster} is invalid`);
          bad = true;
        }
      }
      if (host !== 0 && !bad) {
        bad = !reference(t, host, cs, `${label} data cluster ${guestCluster}`, cs);
      }
      if (bad) {
        if (active && fix) dropEntry(image, table, position, t);
        continue;
      }
      if (host !== 0 && active) {
        t.result.allocatedClusters++;
        if (previousHost >= 0 && host !== previousHost + cs) t.result.fragmentedClusters++;
        previousHost = host;
      }
    }
  }
}

/** Replaces an unusable L2 entry with one that reads as zeroes (the data is gone either way). */
function dropEntry(image: Qcow2Image, table: { view: DataView; dirty: boolean }, position: number, t: Tally): void {
  const v3 = image.header.version >= 3;
  table.view.setUint32(position, 0);
  table.view.setUint32(position + 4, v3 && !image.extendedL2 ? 1 : 0);
  if (image.extendedL2) {
    table.view.setUint32(position + 8, 0xffffffff);
    table.view.setUint32(position + 12, 0);
  }
  table.dirty = true;
  t.result.corruptionsFixed++;
}

export async function checkImage(image: Qcow2Image, repair?: CheckRepairMode): Promise<Qcow2CheckResult> {
  const cs = image.clusterSizeBytes;
  const fix = repair === 'all';
  // Work from what is on disk: make sure our own caches are written first.
  // Queued frees too: a dropped reference whose free is still pending would count as a leak, a
  // 'leaks' repair would lower it, and the pending free then fail the next flush (below zero).
  if (!image.readOnly) await image.flushLocked();
  const fileSizeBytes = await image.file.sizeBytes();
  const clusterCount = Math.ceil(Math.max(fileSizeBytes, image.hostHighWaterBytes) / cs);
  if (clusterCount > MAX_CHECKED_CLUSTERS) {
    throw new StorageError('LIMIT_EXCEEDED', `image file has ${clusterCount} clusters; check handles at most ${MAX_CHECKED_CLUSTERS}`);
  }
  const t: Tally = { references: new Uint32Array(clusterCount), clusterCount, result: newResult() };
  const result = t.result;
  result.totalClusters = Math.ceil(image.sizeBytes / cs);

  // Fixed metadata.
  reference(t, 0, cs, 'header', cs);
  if (image.header.l1Size > 0) reference(t, image.header.l1TableOffset, image.header.l1Size * 8, 'active L1 table', cs);
  // The refcount structure's own clusters, as counted: a rebuild replaces them (see below).
  const refcountStructure: number[] = [];
  if (reference(t, image.refcounts.tableOffset, image.refcounts.tableClusters * cs, 'refcount table', cs)) {
    for (let i = 0; i < image.refcounts.tableClusters; i++) refcountStructure.push(image.refcounts.tableOffset / cs + i);
  }
  for (const [index, offset] of image.refcounts.table.entries()) {
    if (offset !== 0 && reference(t, offset, cs, `refcount block ${index}`, cs)) refcountStructure.push(offset / cs);
  }
  for (const broken of image.refcounts.brokenEntries) {
    result.corruptions++;
    result.messages.push(`ERROR refcount block ${broken.index}: ${broken.reason}`);
  }
  if (image.header.nbSnapshots > 0) {
    reference(t, image.header.snapshotsOffset, snapshotTableSizeBytes(image.snapshots), 'snapshot table', cs);
  }

  // Snapshot trees, then the active tree.
  for (const snapshot of image.snapshots) {
    if (snapshot.l1Size === 0) continue;
    if (!reference(t, snapshot.l1TableOffset, snapshot.l1Size * 8, `L1 table of snapshot '${snapshot.name}'`, cs)) continue;
    let offsets: number[];
    try {
      ({ offsets } = await readL1Table(image.file, snapshot.l1TableOffset, snapshot.l1Size, cs, fileSizeBytes));
    } catch (err) {
      // As qemu-img check: a broken snapshot L1 table is a finding to report, not the end of the check.
      if (!(err instanceof StorageError) || err.code !== 'CORRUPT') throw err;
      result.corruptions++;
      result.messages.push(`ERROR L1 table of snapshot '${snapshot.name}': ${err.message}`);
      continue;
    }
    await tallyL1Tree(image, t, offsets, `snapshot '${snapshot.name}'`, false, false);
  }
  await tallyL1Tree(image, t, image.l1Offsets.slice(), 'active', true, fix);

  // Compare with stored refcounts.
  const mismatches: { cluster: number; stored: number; referenced: number }[] = [];
  const coveredClusters = image.refcounts.table.length * image.refcounts.entriesPerBlock;
  // Past the end of the file, look only as far as the refcount block covering the file's last
  // cluster (where a crash can leave leaked allocations): a hostile table entry at a high index
  // would otherwise have us visit billions of clusters.
  const epb = image.refcounts.entriesPerBlock;
  const scanEnd = Math.min(image.refcounts.highestBlockEnd(), Math.ceil(clusterCount / epb) * epb);
  const lastCluster = Math.min(coveredClusters, Math.max(clusterCount, scanEnd));
  for (let cluster = 0; cluster < Math.max(lastCluster, clusterCount); cluster++) {
    const stored = cluster < coveredClusters ? await image.refcounts.storedRefcount(cluster) : 0;
    const referenced = cluster < clusterCount ? t.references[cluster]! : 0;
    if (stored === referenced) continue;
    mismatches.push({ cluster, stored, referenced });
    if (stored > referenced) {
      result.leaks++;
      result.messages.push(`Leaked cluster ${cluster} refcount=${stored} reference=${referenced}`);
    } else {
      result.corruptions++;
      result.messages.push(`ERROR cluster ${cluster} refcount=${stored} reference=${referenced}`);
    }
  }

  // COPIED flags of the active tree must say exactly "refcount is 1".
  let copiedErrors = 0;
  for (let i = 0; i < image.l1Offsets.length; i++) {
    const l2Offset = image.l1Offsets[i] ?? 0;
    if (l2Offset === 0 || l2Offset / cs >= clusterCount) continue;
    // As qemu-img check: against the stored refcount (a leak with COPIED clear is no corruption).
    const refcount = await image.refcounts.storedRefcount(l2Offset / cs);
    if ((refcount === 1) !== (image.l1Copied[i] ?? false)) {
      copiedErrors++;
      result.messages.push(`ERROR OFLAG_COPIED L2 cluster: l1_index=${i} refcount=${refcount}`);
    }
    const table = await image.l2Cache.get(l2Offset);
    for (let slot = 0; slot < image.l2Entries; slot++) {
      const position = slot * image.l2EntryBytes;
      const hi = table.view.getUint32(position);
      const lo = table.view.getUint32(position + 4);
      const copied = (hi & 0x80000000) !== 0;
      if (entryCompressed(hi)) {
        if (copied) {
          copiedErrors++;
          result.messages.push(`ERROR compressed cluster ${i * image.l2Entries + slot} has OFLAG_COPIED set`);
        }
        continue;
      }
      const host = entryHostOffset(hi, lo);
      if (host === 0 || host % cs !== 0 || host / cs >= clusterCount) continue;
      const refs = await image.refcounts.storedRefcount(host / cs);
      if ((refs === 1) !== copied) {
        copiedErrors++;
        result.messages.push(`ERROR OFLAG_COPIED data cluster: guest cluster ${i * image.l2Entries + slot} refcount=${refs}`);
      }
    }
  }
  result.corruptions += copiedErrors;

  let end = 0;
  for (let c = clusterCount - 1; c >= 0; c--) {
    if (t.references[c]! > 0) {
      end = (c + 1) * cs;
      break;
    }
  }
  result.imageEndOffset = Math.max(end, fileSizeBytes > 0 ? Math.min(fileSizeBytes, end || fileSizeBytes) : 0);

  if (repair === 'leaks' && result.leaks > 0 && image.refcounts.brokenEntries.length === 0) {
    for (const m of mismatches) {
      if (m.stored > m.referenced && m.cluster < coveredClusters) {
        await image.refcounts.set(m.cluster, m.referenced);
        result.leaksFixed++;
      }
    }
    result.leaks -= result.leaksFixed;
    await image.writebackMetadata();
  }
  if (fix && (mismatches.length > 0 || copiedErrors > 0 || result.corruptionsFixed > 0 || image.refcounts.brokenEntries.length > 0)) {
    const leaksBefore = result.leaks;
    const corruptionsBefore = result.corruptions;
    await image.writebackMetadata();
    // The rebuilt table and blocks replace the old ones, which then hold nothing: counting them
    // would leave every repaired image with leaks.
    for (const cluster of refcountStructure) t.references[cluster]!--;
    await image.refcounts.rebuild(t.references);
    image.header.refcountTableOffset = image.refcounts.tableOffset;
    image.header.refcountTableClusters = image.refcounts.tableClusters;
    await recomputeCopiedFlags(image);
    await image.writebackMetadata();
    result.leaksFixed += leaksBefore;
    result.corruptionsFixed = corruptionsBefore;
    result.leaks = 0;
    result.corruptions = 0;
  }
  if (repair && !image.readOnly) {
    // A repaired image is consistent: the dirty and corrupt bits can go.
    let changed = false;
    for (const bit of [IncompatibleBit.dirty, IncompatibleBit.corrupt]) {
      if (result.corruptions === 0 && hasIncompatible(image.header, bit)) {
        if (bit === IncompatibleBit.dirty && image.lazyRefcounts && result.leaks > 0) continue;
        image.header.incompatibleFeatures = setFeatureBit(image.header.incompatibleFeatures, bit, false);
        changed = true;
      }
    }
    if (changed) await image.writeHeaderNow();
  }
  return result;
}
