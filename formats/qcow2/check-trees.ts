/**
 * check()'s walk of an L1 table and its L2 tables: count the references of the L2 tables and data
 * clusters, and report what qemu-img check reports for each entry, counted the way it counts them.
 * Tables past the end of the file read as zeroes (the file does); an entry that points past the end
 * is a corruption the repair leaves in place, as qemu-img check -r all does (the data is gone).
 */
import { decodeCompressedEntry } from './compression.js';
import {
  COMPRESSED_HI_DESCRIPTOR_MASK,
  L1E_OFFSET_MASK,
  L1E_RESERVED_MASK,
} from './constants.js';
import { corruption, type ReferenceTally } from './check-tally.js';
import type { Qcow2Internals } from './internals.js';
import { entryCompressed, entryCopied, entryHostOffset, entryReservedBits, entryToBigInt, entryZeroFlag } from './l2-entry.js';
import type { CachedTable } from './table-cache.js';
import type { Qcow2CheckResult } from './types.js';

export interface TreeWalk {
  image: Qcow2Internals;
  tally: ReferenceTally;
  result: Qcow2CheckResult;
  /** 'active' or "snapshot 'name'", for messages. */
  label: string;
  /** The active tree: gathers the allocation statistics (qemu-img check does for it only). */
  active: boolean;
  /** -r all: repair what qemu-img check repairs in L2 tables. */
  fix: boolean;
}

/** L1 entries as stored (zeroes where the table lies past the end of the file). */
export async function readRawL1(image: Qcow2Internals, offset: number, entries: number): Promise<bigint[]> {
  const bytes = new Uint8Array(entries * 8);
  if (entries > 0) await image.file.pread(bytes, offset);
  const view = new DataView(bytes.buffer);
  const raw: bigint[] = new Array(entries);
  for (let i = 0; i < entries; i++) raw[i] = view.getBigUint64(i * 8);
  return raw;
}

/** Walks one L1 table given as its L2 table offsets (the active table, validated at open). */
export async function walkL1(walk: TreeWalk, l2Offsets: readonly number[]): Promise<void> {
  for (let i = 0; i < l2Offsets.length; i++) {
    const l2Offset = l2Offsets[i] ?? 0;
    if (l2Offset !== 0) await walkL2(walk, i, l2Offset);
  }
}

/** Walks one L1 table given as raw entries (a snapshot's, not validated at open). */
export async function walkRawL1(walk: TreeWalk, entries: readonly bigint[]): Promise<void> {
  for (let i = 0; i < entries.length; i++) {
    const raw = entries[i] ?? 0n;
    if (raw & L1E_RESERVED_MASK) corruption(walk.result, `ERROR found L1 entry with reserved bits set: ${raw.toString(16)} (${walk.label} L1 index ${i})`);
    const l2Offset = Number(raw & L1E_OFFSET_MASK);
    if (l2Offset !== 0) await walkL2(walk, i, l2Offset);
  }
}

async function walkL2(walk: TreeWalk, l1Index: number, l2Offset: number): Promise<void> {
  const { image, tally, result } = walk;
  const cs = image.clusterSizeBytes;
  // Past the end by a cluster or more: the whole table reads as zeroes, so it holds nothing.
  if (!tally.add(l2Offset, cs, `${walk.label} L2 table, L1 index ${l1Index}`)) return;
  if (l2Offset % cs !== 0) {
    corruption(result, `ERROR l2_offset=${l2Offset.toString(16)}: Table is not cluster aligned; L1 entry corrupted (${walk.label} L1 index ${l1Index})`);
    return;
  }
  const table = await image.l2Cache.get(l2Offset);
  // As qemu-img check: contiguity is judged within one L2 table only.
  let nextContiguous = 0;
  for (let slot = 0; slot < image.l2Entries; slot++) {
    const position = slot * image.l2EntryBytes;
    const hi = table.view.getUint32(position);
    const lo = table.view.getUint32(position + 4);
    const guestCluster = l1Index * image.l2Entries + slot;
    if (entryCompressed(hi)) {
      walkCompressed(walk, table, position, guestCluster);
      continue;
    }
    if (entryReservedBits(hi, lo)) {
      corruption(result, `ERROR found l2 entry with reserved bits set: ${entryToBigInt(hi, lo).toString(16)} (${walk.label} guest cluster ${guestCluster})`);
    }
    const host = entryHostOffset(hi, lo);
    let containsData = !entryZeroFlag(lo);
    if (image.extendedL2) {
      const zeroBits = table.view.getUint32(position + 8);
      const allocBits = table.view.getUint32(position + 12);
      containsData = allocBits !== 0;
      if (host === 0 && allocBits !== 0) {
        corruption(result, `ERROR: Unallocated cluster has non-zero subcluster allocation map (${walk.label} guest cluster ${guestCluster})`);
        continue;
      }
      if ((zeroBits & allocBits) !== 0) {
        corruption(result, `ERROR offset=${host.toString(16)}: Allocated cluster has corrupted subcluster allocation bitmap (${walk.label} guest cluster ${guestCluster})`);
      }
      // Strata's reader refuses bit 0 (the zero flag of standard entries) in extended entries.
      if (entryZeroFlag(lo)) corruption(result, `ERROR extended L2 entry with bit 0 set (${walk.label} guest cluster ${guestCluster})`);
    }
    if (host === 0) continue;
    if (host % cs !== 0) {
      if (!containsData) {
        // A preallocated zero cluster: it can become a plain zero cluster, as qemu-img repairs it.
        const verb = walk.fix ? 'Repairing' : 'ERROR';
        corruption(result, `${verb} offset=${host.toString(16)}: Preallocated cluster is not properly aligned; L2 entry corrupted.`);
        if (walk.fix) {
          makePlainZero(image, table, position);
          result.corruptions--;
          result.corruptionsFixed++;
          continue;
        }
      } else {
        corruption(result, `ERROR offset=${host.toString(16)}: Data cluster is not properly aligned; L2 entry corrupted.`);
      }
    }
    if (walk.active) {
      result.allocatedClusters++;
      if (nextContiguous !== 0 && host !== nextContiguous) result.fragmentedClusters++;
      nextContiguous = host + cs;
    }
    tally.add(host, cs, `${walk.label} data cluster, guest cluster ${guestCluster}`);
  }
}

function walkCompressed(walk: TreeWalk, table: CachedTable, position: number, guestCluster: number): void {
  const { image, result } = walk;
  const hi = table.view.getUint32(position);
  const lo = table.view.getUint32(position + 4);
  // As qemu-img check: reported, never repaired (the flag is ignored on compressed clusters).
  if (entryCopied(hi)) {
    corruption(result, `ERROR: entry ${entryToBigInt(hi, lo).toString(16)}: copied flag must never be set for compressed clusters (${walk.label} guest cluster ${guestCluster})`);
  }
  if (image.extendedL2 && (table.view.getUint32(position + 8) !== 0 || table.view.getUint32(position + 12) !== 0)) {
    corruption(result, `ERROR compressed cluster ${guestCluster} with non-zero subcluster allocation bitmap (${walk.label})`);
    return;
  }
  try {
    const entry = decodeCompressedEntry(entryToBigInt(hi & COMPRESSED_HI_DESCRIPTOR_MASK, lo), image.clusterBits);
    walk.tally.add(entry.hostOffset, entry.maxLengthBytes, `${walk.label} compressed cluster, guest cluster ${guestCluster}`);
  } catch {
    // An offset no file can reach: as a region past the end of the file.
    corruption(result, `ERROR ${walk.label} compressed cluster ${guestCluster} has an invalid descriptor`);
  }
  if (walk.active) {
    result.allocatedClusters++;
    result.compressedClusters++;
    // As qemu-img check: compressed clusters count as fragmented.
    result.fragmentedClusters++;
  }
}

/** Turns an entry into a plain zero cluster (reads as zeroes, no host cluster). */
function makePlainZero(image: Qcow2Internals, table: CachedTable, position: number): void {
  table.view.setUint32(position, 0);
  // Extended L2: no host cluster and no allocated subclusters; the zero bits (unchanged) say zero.
  table.view.setUint32(position + 4, image.extendedL2 ? 0 : 1);
  table.dirty = true;
}
