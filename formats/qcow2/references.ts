/**
 * Walking the clusters an L1 table references (its L2 tables, and the data clusters those point
 * at), shared by internal snapshots (which change refcounts of whole trees) and check.
 */
import {
  COMPRESSED_HI_DESCRIPTOR_MASK,
} from './constants.js';
import { decodeCompressedEntry } from './compression.js';
import { entryCompressed, entryHostOffset, entryToBigInt } from './l2-entry.js';
import { checkCopiedFlags } from './check-copied.js';
import { newCheckResult } from './check-tally.js';
import type { Qcow2Internals } from './internals.js';

/** Host clusters holding a compressed cluster's data (it may straddle two host clusters). */
export function compressedHostClusters(image: Qcow2Internals, hi: number, lo: number): number[] {
  const entry = decodeCompressedEntry(entryToBigInt(hi & COMPRESSED_HI_DESCRIPTOR_MASK, lo), image.clusterBits);
  const firstByte = Math.floor(entry.hostOffset / 512) * 512;
  const first = Math.floor(firstByte / image.clusterSizeBytes);
  const last = Math.floor((firstByte + entry.sectorCount * 512 - 1) / image.clusterSizeBytes);
  const clusters: number[] = [];
  for (let c = first; c <= last; c++) clusters.push(c);
  return clusters;
}

/**
 * Calls visit once per reference (an L2 table, or a data cluster) reachable from the L1 table
 * given by its L2 offsets. A cluster referenced twice is visited twice.
 */
export async function forEachReference(
  image: Qcow2Internals,
  l1Offsets: readonly number[],
  visit: (clusterIndex: number) => void | Promise<void>,
): Promise<void> {
  const cs = image.clusterSizeBytes;
  for (const l2Offset of l1Offsets) {
    if (!l2Offset) continue;
    await visit(l2Offset / cs);
    const table = await image.l2Cache.get(l2Offset);
    for (let slot = 0; slot < image.l2Entries; slot++) {
      const position = slot * image.l2EntryBytes;
      const hi = table.view.getUint32(position);
      const lo = table.view.getUint32(position + 4);
      if (entryCompressed(hi)) {
        for (const c of compressedHostClusters(image, hi, lo)) await visit(c);
        continue;
      }
      const host = entryHostOffset(hi, lo);
      if (host !== 0) await visit(Math.floor(host / cs));
    }
  }
}

/**
 * Sets COPIED flags in the active L1 table and its L2 tables from the current refcounts: set
 * exactly where the refcount is 1 (check -r all's COPIED repair; changed tables are written back).
 */
export async function recomputeCopiedFlags(image: Qcow2Internals): Promise<void> {
  await checkCopiedFlags(image, newCheckResult(), true);
}
