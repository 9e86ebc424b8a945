/**
 * A qcow2 image laid out whole from its cluster map, without its data: the metadata clusters
 * (header, refcount table and blocks, L1 table, the L2 tables the map needs) come first, then one
 * host cluster per data cluster, in map order. The caller supplies the data clusters' bytes (or,
 * where a file is a list of chunks, names chunks that already hold them: a compaction by
 * reference). Every cluster has refcount 1, so every L1 and L2 entry carries the COPIED flag, as
 * a freshly written image has; zero clusters are plain zero entries (no host cluster).
 */
import { StorageError } from '../../src/core/errors.js';
import { MAX_L1_TABLE_BYTES, OFLAG_COPIED, OFLAG_ZERO } from './constants.js';
import { newImageHeader, refcountStructureClusters, resolveCreateOptions, setRefcountsToOne } from './create.js';
import { serializeHeader } from './header.js';

/** A run of guest clusters that read as data (each its own host cluster) or as zeroes. */
export interface Qcow2LayoutRun {
  guestCluster: number;
  clusterCount: number;
  kind: 'data' | 'zero';
}

export interface Qcow2LayoutOptions {
  sizeBytes: number;
  clusterSizeBytes: number;
  backingFile?: string | undefined;
  backingFormat?: string | undefined;
  /** Ascending, not overlapping, inside the image; clusters in no run are unallocated. */
  runs: readonly Qcow2LayoutRun[];
}

export interface Qcow2Layout {
  clusterSizeBytes: number;
  /** The file's first clusters: header, refcount structures, L1 and L2 tables. */
  metadata: Uint8Array;
  /** Host cluster of the first data cluster (= metadata clusters); the rest follow in run order. */
  firstDataCluster: number;
  dataClusterCount: number;
  fileSizeBytes: number;
}

/** Metadata a layout may build in memory (an image of 4 TiB fully mapped at 64 KiB clusters). */
export const LAYOUT_METADATA_BYTES_MAX = 512 * 1024 * 1024;

const L2_ENTRY_BYTES = 8;

export function layoutQcow2(options: Qcow2LayoutOptions): Qcow2Layout {
  const o = resolveCreateOptions({
    sizeBytes: options.sizeBytes,
    clusterSizeBytes: options.clusterSizeBytes,
    ...(options.backingFile === undefined ? {} : { backingFile: options.backingFile, backingFormat: options.backingFormat }),
  });
  const cs = o.clusterSizeBytes;
  const l2Entries = cs / L2_ENTRY_BYTES;
  const guestClusters = Math.ceil(o.sizeBytes / cs);
  const l1Size = Math.ceil(guestClusters / l2Entries);
  if (l1Size * 8 > MAX_L1_TABLE_BYTES) throw new StorageError('INVALID_ARGUMENT', `image size ${o.sizeBytes} is too large for cluster_size ${cs}`);
  const l1Clusters = Math.max(1, Math.ceil((l1Size * 8) / cs));
  // The L2 tables the runs touch, in L1 order; and the data clusters.
  const l2Tables: number[] = [];
  let dataClusterCount = 0;
  let previousEnd = 0;
  for (const run of options.runs) {
    const end = run.guestCluster + run.clusterCount;
    if (!Number.isSafeInteger(run.guestCluster) || run.clusterCount < 1 || run.guestCluster < previousEnd || end > guestClusters) {
      throw new Error(`assertion failed: layout run ${run.guestCluster}+${run.clusterCount} is ascending and inside ${guestClusters} clusters`);
    }
    previousEnd = end;
    for (let t = Math.floor(run.guestCluster / l2Entries); t <= Math.floor((end - 1) / l2Entries); t++) if (l2Tables.at(-1) !== t) l2Tables.push(t);
    if (run.kind === 'data') dataClusterCount += run.clusterCount;
  }
  const fixedClusters = 1 + l1Clusters + l2Tables.length + dataClusterCount;
  const { tableClusters, blockClusters } = refcountStructureClusters(fixedClusters, cs, o.refcountBits);
  const metadataClusters = 1 + tableClusters + blockClusters + l1Clusters + l2Tables.length;
  if (metadataClusters * cs > LAYOUT_METADATA_BYTES_MAX) {
    throw new StorageError('UNSUPPORTED', `laying out a ${o.sizeBytes}-byte image needs ${metadataClusters * cs} bytes of metadata, over the ${LAYOUT_METADATA_BYTES_MAX} a layout builds in memory`);
  }
  const totalClusters = metadataClusters + dataClusterCount;
  const metadata = new Uint8Array(metadataClusters * cs);
  const view = new DataView(metadata.buffer);
  const tableOffset = cs;
  const blocksOffset = tableOffset + tableClusters * cs;
  const l1Offset = blocksOffset + blockClusters * cs;
  const l2Offset = l1Offset + l1Clusters * cs;

  const header = newImageHeader(o, { l1Size, l1TableOffset: l1Offset, refcountTableOffset: tableOffset, refcountTableClusters: tableClusters });
  metadata.set(serializeHeader(header), 0);
  for (let i = 0; i < blockClusters; i++) view.setBigUint64(tableOffset + i * 8, BigInt(blocksOffset + i * cs));
  setRefcountsToOne(metadata.subarray(blocksOffset, l1Offset), totalClusters, o.refcountBits);
  const l2Places = new Map<number, number>();
  l2Tables.forEach((table, i) => {
    const offset = l2Offset + i * cs;
    l2Places.set(table, offset);
    view.setBigUint64(l1Offset + table * 8, BigInt(offset) | OFLAG_COPIED);
  });
  let hostCluster = metadataClusters;
  for (const run of options.runs) {
    for (let guest = run.guestCluster; guest < run.guestCluster + run.clusterCount; guest++) {
      const entryOffset = l2Places.get(Math.floor(guest / l2Entries))! + (guest % l2Entries) * L2_ENTRY_BYTES;
      const entry = run.kind === 'zero' ? OFLAG_ZERO : BigInt(hostCluster++ * cs) | OFLAG_COPIED;
      view.setBigUint64(entryOffset, entry);
    }
  }
  return { clusterSizeBytes: cs, metadata, firstDataCluster: metadataClusters, dataClusterCount, fileSizeBytes: totalClusters * cs };
}
