/**
 * Qcow2Internals: what check and repair, internal snapshots and reference walking need of an open
 * image, and nothing more. Qcow2Image implements it; those modules name this interface (a type-only
 * import), never the class, so the image can import them and the module graph stays acyclic.
 *
 * Everything here runs with the image's metadata lock held and no request in flight (inside
 * Qcow2Image.exclusive, or while opening).
 */
import type { HostFile } from '../../src/core/host-file.js';
import type { Qcow2Header } from './header.js';
import type { Refcounts } from './refcounts.js';
import type { SnapshotEntry } from './snapshot-table.js';
import type { TableCache } from './table-cache.js';
import type { Qcow2SnapshotInfo } from './types.js';

export interface Qcow2Internals {
  readonly file: HostFile;
  /** The parsed header; callers change its fields, then write it with writeHeaderNow (or set headerDirty). */
  readonly header: Qcow2Header;
  /** Virtual size; applying a snapshot of another size changes it (with header.sizeBytes). */
  sizeBytes: number;
  readonly readOnly: boolean;

  // Cluster geometry.
  readonly clusterBits: number;
  readonly clusterSizeBytes: number;
  readonly extendedL2: boolean;
  /** Bytes per L2 entry: 8, or 16 with extended L2. */
  readonly l2EntryBytes: number;
  /** Entries per L2 table. */
  readonly l2Entries: number;

  // The active L1 table (host offsets of its L2 tables, 0 = none, and their COPIED flags), held in
  // memory and written back by writebackMetadata once l1Dirty is set.
  l1Offsets: number[];
  l1Copied: boolean[];
  l1Dirty: boolean;
  headerDirty: boolean;
  /** L2 tables by host offset (write-back: mark a changed table dirty). */
  readonly l2Cache: TableCache;
  readonly refcounts: Refcounts;
  /** The internal snapshot table as read (replaced whole when it changes). */
  snapshots: SnapshotEntry[];
  /** Host offset past every cluster ever allocated or present. */
  readonly hostHighWaterBytes: number;
  readonly lazyRefcounts: boolean;
  /** Opened dirty and not repaired: the dirty bit must stay set. */
  readonly refcountsUnverified: boolean;

  /** Allocates count contiguous clusters (refcount 1); returns the host offset of the first. */
  allocateClusters(count: number): Promise<number>;
  /** Moves the active L1 table to one of `entries` entries, durably. */
  growL1(entries: number): Promise<void>;
  /** Writes dirty metadata back in dependency order, with host flushes between stages. */
  writebackMetadata(): Promise<void>;
  /** Write-back, then applies the deferred frees (nothing is in flight). */
  flushLocked(): Promise<void>;
  /** Writes the header from `header` and flushes. */
  writeHeaderNow(): Promise<void>;
  listSnapshots(): Qcow2SnapshotInfo[];
}
