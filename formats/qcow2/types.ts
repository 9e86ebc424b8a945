/**
 * The public shapes of formats/qcow2: what callers (the CLI, the volume layer, tests) pass in and
 * get back. Field names follow qemu-img's JSON where qemu-img has the field, camel-cased here and
 * mapped back to qemu-img's spelling at the CLI edge.
 */
import type { ImageOpenOptions } from '../../src/core/image.js';

export type Qcow2Compat = '0.10' | '1.1';
export type Qcow2CompressionType = 'zlib' | 'zstd';

export interface Qcow2CreateOptions {
  sizeBytes: number;
  /** 512 B to 2 MiB, a power of two; default 64 KiB. */
  clusterSizeBytes?: number;
  /** 1, 2, 4, 8, 16, 32 or 64; default 16. compat 0.10 allows only 16. */
  refcountBits?: number;
  /** default '1.1' (qcow2 version 3); '0.10' writes version 2. */
  compat?: Qcow2Compat;
  lazyRefcounts?: boolean;
  /** Extended L2 entries with 32 subclusters; needs compat 1.1 and clusters of at least 16 KiB. */
  extendedL2?: boolean;
  /** default 'zlib'; 'zstd' sets the compression-type incompatible bit (compat 1.1 only). */
  compressionType?: Qcow2CompressionType;
  backingFile?: string;
  backingFormat?: string;
}

export interface Qcow2OpenOptions extends ImageOpenOptions {
  /** L2 table cache size; default covers the whole image up to 32 MiB of tables. */
  l2CacheBytes?: number;
  /** Refcount block cache size; default covers the whole image up to 8 MiB of blocks. */
  refcountCacheBytes?: number;
  /**
   * What to do when the dirty bit is set and the image is opened writable: 'repair' (the default,
   * as QEMU does) rebuilds refcounts; 'ignore' leaves them (used by check, which reports instead).
   */
  dirtyPolicy?: 'repair' | 'ignore';
  /**
   * Open for check() only (strata img check): tables that lie past the end of the file (a
   * truncated file, an offset past its end) read as zeroes, as QEMU reads them, instead of failing
   * the open with CORRUPT; check() then reports every such reference. Nothing else may use it.
   */
  forCheck?: boolean;
}

/** One run of a layer's map: qemu-img map's fields for this layer only. */
export interface Qcow2MapExtent {
  guestOffset: number;
  lengthBytes: number;
  /** data: stored in this layer; zero: reads as zeroes here; unallocated: defer to backing. */
  kind: 'data' | 'zero' | 'unallocated';
  /** Host offset of the data for uncompressed data extents (contiguous over the run). */
  hostOffset?: number;
  compressed?: boolean;
}

export interface Qcow2SnapshotInfo {
  id: string;
  name: string;
  /** Guest-visible size at the time of the snapshot. */
  diskSizeBytes: number;
  vmStateSizeBytes: number;
  dateSec: number;
  dateNsec: number;
  vmClockNsec: number;
  icount: number | undefined;
}

export interface Qcow2Info {
  virtualSizeBytes: number;
  clusterSizeBytes: number;
  version: 2 | 3;
  compat: Qcow2Compat;
  compressionType: Qcow2CompressionType;
  lazyRefcounts: boolean;
  refcountBits: number;
  corrupt: boolean;
  dirty: boolean;
  extendedL2: boolean;
  backingFile: string | undefined;
  backingFormat: string | undefined;
  /** The data-file extension's file name, if the image uses an external data file. */
  dataFile: string | undefined;
  snapshots: Qcow2SnapshotInfo[];
  /** Names from the feature-name table, and unknown bits, for diagnostics. */
  unknownIncompatibleBits: number[];
}

export type CheckRepairMode = 'leaks' | 'all';

export interface Qcow2CheckOptions {
  /**
   * Also compare the refcounts of clusters past the end of the file, which qemu-img check does
   * not look at: one that nothing refers to is a leak (reported and repaired as one). A kill
   * between a new cluster's refcount and its first write leaves one, and the allocator skips it,
   * so the next allocation grows the file past it and qemu-img check then reports the leak. Off
   * by default, so that check reports what qemu-img check reports (a truncated file's lost
   * clusters are not leaks to it); crash recovery turns it on.
   */
  pastEndOfFile?: boolean;
}

export interface Qcow2CheckResult {
  checkErrors: number;
  corruptions: number;
  leaks: number;
  corruptionsFixed: number;
  leaksFixed: number;
  imageEndOffset: number;
  totalClusters: number;
  allocatedClusters: number;
  fragmentedClusters: number;
  compressedClusters: number;
  /** Human-readable findings, one per problem ("Leaked cluster 5 refcount=1 reference=0"). */
  messages: string[];
}
