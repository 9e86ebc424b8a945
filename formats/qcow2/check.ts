/**
 * Consistency check and repair, like `qemu-img check` (and counted as it counts, so the two report
 * the same corruptions, leaks and statistics): count every reference to every host cluster from
 * the metadata, compare with the stored refcounts, then check the COPIED flags. On request
 * (pastEndOfFile, for crash recovery) also the refcounts past the end of the file.
 *
 *   stored > referenced  -> leak (harmless: space not reused until repaired)
 *   stored < referenced  -> corruption (a write could overwrite live data)
 *
 * Repair 'leaks' lowers leaked refcounts in place. Repair 'all' also sets the other refcounts that
 * are wrong in place or, where that cannot be trusted (a referenced cluster with refcount 0, a
 * broken refcount table entry), rebuilds the whole refcount structure; then it fixes the COPIED
 * flags. What qemu-img check -r all leaves alone stays: references past the end of the file (the
 * data is gone; the entry is reported again), reserved bits, unaligned data clusters.
 */
import { IncompatibleBit } from './constants.js';
import { checkCopiedFlags } from './check-copied.js';
import { ReferenceTally, corruption, newCheckResult } from './check-tally.js';
import { readRawL1, walkL1, walkRawL1 } from './check-trees.js';
import { hasIncompatible, setFeatureBit } from './header.js';
import type { Qcow2Internals } from './internals.js';
import { snapshotTableSizeBytes } from './snapshot-table.js';
import type { CheckRepairMode, Qcow2CheckOptions, Qcow2CheckResult } from './types.js';

interface Counted {
  result: Qcow2CheckResult;
  tally: ReferenceTally;
  /** Clusters of the refcount structure as counted: a rebuild replaces them. */
  refcountStructure: number[];
  /** Only a rebuild can repair what was found (qemu-img check's criterion). */
  rebuildNeeded: boolean;
}

/** Where the check takes the file to end. */
async function fileEndBytes(image: Qcow2Internals): Promise<number> {
  const fileSizeBytes = await image.file.sizeBytes();
  // A writable image may have clusters allocated past the end that no write has reached yet.
  const roundedBytes = Math.ceil(fileSizeBytes / image.clusterSizeBytes) * image.clusterSizeBytes;
  return image.hostHighWaterBytes > roundedBytes ? image.hostHighWaterBytes : fileSizeBytes;
}

/** Counts every reference, in qemu-img check's order, reporting what is wrong on the way. */
async function countReferences(image: Qcow2Internals, repair: CheckRepairMode | undefined): Promise<Counted> {
  const cs = image.clusterSizeBytes;
  const result = newCheckResult();
  const tally = new ReferenceTally(cs, await fileEndBytes(image), result);
  result.totalClusters = Math.ceil(image.sizeBytes / cs);
  const fix = repair === 'all';

  tally.add(0, cs, 'header');
  tally.add(image.header.l1TableOffset, image.header.l1Size * 8, 'active L1 table');
  await walkL1({ image, tally, result, label: 'active', active: true, fix }, image.l1Offsets);
  for (const snapshot of image.snapshots) {
    const label = `snapshot '${snapshot.name}'`;
    tally.add(snapshot.l1TableOffset, snapshot.l1Size * 8, `L1 table of ${label}`);
    const entries = await readRawL1(image, snapshot.l1TableOffset, snapshot.l1Size);
    await walkRawL1({ image, tally, result, label, active: false, fix }, entries);
  }
  if (image.header.nbSnapshots > 0) {
    tally.add(image.header.snapshotsOffset, snapshotTableSizeBytes(image.snapshots), 'snapshot table');
  }

  const refcounts = image.refcounts;
  const refcountStructure: number[] = [];
  if (tally.add(refcounts.tableOffset, refcounts.tableClusters * cs, 'refcount table')) {
    for (let i = 0; i < refcounts.tableClusters; i++) refcountStructure.push(refcounts.tableOffset / cs + i);
  }
  let rebuildNeeded = false;
  for (const broken of refcounts.brokenEntries) {
    switch (broken.kind) {
      case 'reserved-bits':
        corruption(result, `ERROR refcount table entry ${broken.index} has reserved bits set`);
        rebuildNeeded = true;
        break;
      case 'unaligned':
        corruption(result, `ERROR refcount block ${broken.index} is not cluster aligned; refcount table entry corrupted`);
        rebuildNeeded = true;
        break;
      case 'outside-file':
        // qemu-img check -r all grows the file to hold the block; a rebuild repairs it here.
        corruption(result, `${fix ? 'Repairing' : 'ERROR'} refcount block ${broken.index} is outside image`);
        if (fix) rebuildNeeded = true;
        break;
      case 'overlaps-metadata':
        // Counted as qemu-img counts it (the cluster then has two references), and part of the
        // old structure a rebuild drops.
        if (tally.add(broken.offset, cs, `refcount block ${broken.index}`)) refcountStructure.push(broken.offset / cs);
        corruption(result, `ERROR refcount block ${broken.index} ${broken.reason}`);
        rebuildNeeded = true;
        break;
    }
  }
  for (const [index, offset] of refcounts.table.entries()) {
    if (offset === 0 || !tally.add(offset, cs, `refcount block ${index}`)) continue;
    refcountStructure.push(offset / cs);
  }
  // Counted after everything else: a block something else also references is broken.
  for (const [index, offset] of refcounts.table.entries()) {
    if (offset === 0 || tally.count(offset / cs) === 1) continue;
    corruption(result, `ERROR refcount block ${index} refcount=${tally.count(offset / cs)}`);
    rebuildNeeded = true;
  }
  return { result, tally, refcountStructure, rebuildNeeded };
}

interface Mismatch {
  cluster: number;
  stored: number;
  referenced: number;
}

/** Compares the counts with the stored refcounts; returns the mismatches and the last cluster in use. */
async function compareRefcounts(image: Qcow2Internals, counted: Counted, options: Qcow2CheckOptions = {}): Promise<{ mismatches: Mismatch[]; highestCluster: number }> {
  const { tally, result } = counted;
  const mismatches: Mismatch[] = [];
  let highestCluster = 0;
  for (let cluster = 0; cluster < tally.clusterCount; cluster++) {
    const stored = await image.refcounts.storedRefcount(cluster);
    const referenced = tally.count(cluster);
    if (stored > 0 || referenced > 0) highestCluster = cluster;
    if (stored === referenced) continue;
    mismatches.push({ cluster, stored, referenced });
    // A zero refcount says the block does not count this cluster at all: only a rebuild is safe.
    if (stored === 0) counted.rebuildNeeded = true;
    if (stored > referenced) {
      result.leaks++;
      result.messages.push(`Leaked cluster ${cluster} refcount=${stored} reference=${referenced}`);
    } else {
      corruption(result, `ERROR cluster ${cluster} refcount=${stored} reference=${referenced}`);
    }
  }
  if (options.pastEndOfFile) await compareRefcountsPastEnd(image, tally, mismatches, result);
  return { mismatches, highestCluster };
}

/**
 * Refcounts of clusters past the end of the file that nothing refers to are leaks (a reference
 * there, in a truncated file, is a corruption reported above): see Qcow2CheckOptions.pastEndOfFile.
 * They are not counted in the image end offset (qemu-img's, which ends with the file).
 */
async function compareRefcountsPastEnd(image: Qcow2Internals, tally: ReferenceTally, mismatches: Mismatch[], result: Qcow2CheckResult): Promise<void> {
  const refcounts = image.refcounts;
  const fileClusters = tally.clusterCount;
  const perBlock = refcounts.entriesPerBlock;
  const broken = new Set(refcounts.brokenEntries.map((entry) => entry.index));
  for (let tableIndex = Math.floor(fileClusters / perBlock); tableIndex < refcounts.table.length; tableIndex++) {
    if ((refcounts.table[tableIndex] ?? 0) === 0 || broken.has(tableIndex)) continue;
    const blockEnd = (tableIndex + 1) * perBlock;
    for (let cluster = Math.max(fileClusters, tableIndex * perBlock); cluster < blockEnd; cluster++) {
      const stored = await refcounts.storedRefcount(cluster);
      // A truncated file: the metadata still refers to it (a corruption, reported above).
      if (stored === 0 || tally.referencedPastEnd.has(cluster)) continue;
      mismatches.push({ cluster, stored, referenced: 0 });
      result.leaks++;
      result.messages.push(`Leaked cluster ${cluster} refcount=${stored} reference=0 (past the end of the file)`);
    }
  }
}

/** Replaces the refcount structure with one built from the counts; returns the check of the result. */
async function rebuildRefcounts(image: Qcow2Internals, counted: Counted): Promise<{ after: Counted; highestCluster: number }> {
  await image.writebackMetadata();
  // The rebuilt table and blocks replace the old ones, which then hold nothing: counting them
  // would leave every repaired image with leaks.
  for (const cluster of counted.refcountStructure) counted.tally.remove(cluster);
  await image.refcounts.rebuild(counted.tally.references(), new Set(counted.refcountStructure));
  image.header.refcountTableOffset = image.refcounts.tableOffset;
  image.header.refcountTableClusters = image.refcounts.tableClusters;
  await image.writebackMetadata();
  // As qemu-img check: count again; what is still found is what the repair could not fix.
  const after = await countReferences(image, undefined);
  const { highestCluster } = await compareRefcounts(image, after);
  return { after, highestCluster };
}

export async function checkImage(image: Qcow2Internals, repair?: CheckRepairMode, options: Qcow2CheckOptions = {}): Promise<Qcow2CheckResult> {
  // Work from what is on disk: make sure our own caches are written first.
  // Queued frees too: a dropped reference whose free is still pending would count as a leak, a
  // 'leaks' repair would lower it, and the pending free then fail the next flush (below zero).
  if (!image.readOnly) await image.flushLocked();
  const counted = await countReferences(image, repair);
  const result = counted.result;
  let { mismatches, highestCluster } = await compareRefcounts(image, counted, options);

  if (repair === 'all' && counted.rebuildNeeded) {
    result.messages.push('Rebuilding refcount structure');
    const rebuilt = await rebuildRefcounts(image, counted);
    const remaining = rebuilt.after.result;
    result.corruptionsFixed += Math.max(0, result.corruptions - remaining.corruptions);
    result.leaksFixed += result.leaks;
    result.corruptions = remaining.corruptions;
    result.leaks = remaining.leaks;
    highestCluster = rebuilt.highestCluster;
    mismatches = [];
  } else if (repair !== undefined) {
    // (Refcounts cannot be set in place while the table has entries it does not trust.)
    if (counted.rebuildNeeded || (mismatches.length > 0 && image.refcounts.brokenEntries.length > 0)) {
      // -r leaks cannot do it, and lowering leaks around it is not safe: as qemu-img check, fail.
      result.checkErrors++;
      result.messages.push('ERROR need to rebuild refcount structures');
      return result;
    }
    for (const m of mismatches) {
      if (m.stored < m.referenced && repair !== 'all') continue;
      await image.refcounts.set(m.cluster, m.referenced);
      if (m.stored > m.referenced) {
        result.leaks--;
        result.leaksFixed++;
      } else {
        result.corruptions--;
        result.corruptionsFixed++;
      }
    }
    if (mismatches.length > 0) await image.writebackMetadata();
  }
  // As qemu-img check: -r leaks fixes COPIED flags too, when nothing else is left to fix.
  const repairCopied = repair === 'all' || (repair === 'leaks' && result.corruptions === 0 && result.leaks === 0);
  await checkCopiedFlags(image, result, repairCopied);
  result.imageEndOffset = (highestCluster + 1) * image.clusterSizeBytes;

  if (repair && !image.readOnly) {
    await image.writebackMetadata();
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
