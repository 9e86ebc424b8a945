/**
 * The contract between the volume layer (src/volume, over its CatalogStore tables and formats/qcow2) and its
 * callers (src/api, src/daemon). Sizes are bytes; times are ISO-8601 strings; names are
 * user-chosen, ids are Strata's (stable across renames).
 *
 * Every method throws StorageError with a stable code: NOT_FOUND, ALREADY_EXISTS, INVALID_ARGUMENT,
 * BUSY (dependents exist, a job holds the volume), LIMIT_EXCEEDED (quota, chain depth, snapshot
 * limit), READ_ONLY, CANCELLED, ...
 */
import type { BlockDevice } from '../core/block-device.js';
import type { ChunkedPoolEviction, ChunkedPoolGcReport, ChunkedPoolTierStatus, ChunkHashAlgorithm, PoolTierConfig } from '../core/chunked-pools.js';
import type { ScrubReport } from '../core/scrub-report.js';
import type { DedupPoolRequest } from './pool-config.js';
import type { QosLimits } from './qos/limits.js';
import type { QosInfo, QosPolicyInfo, QosSettingChange, QosVolumeStats } from './qos/types.js';
import type { TransferEncoding } from './sparse-stream.js';
import type { GroupService } from './group-types.js';

export type * from './group-types.js';

export interface PoolInfo {
  name: string;
  /** Where an operator finds the pool on this host (a local pool's folder); absent for stores without local files. */
  location?: string;
  /** Sum of the volumes' provisioned sizes may not exceed this (undefined: no quota). */
  quotaBytes: number | undefined;
  volumeCount: number;
  provisionedBytes: number;
  /** Host bytes used by the pool's layer files. */
  allocatedBytes: number;
  /** 'local': plain qcow2 chains; 'dedup': sealed layers are chunk manifests (docs/daemon.md). */
  kind: 'local' | 'dedup';
  /** A dedup pool's configuration (undefined for a local pool). */
  dedup: PoolDedupInfo | undefined;
  createdAt: string;
}

export interface PoolDedupInfo {
  hash: ChunkHashAlgorithm;
  tier: PoolTierConfig | undefined;
  /** True when packs move to the tier (this daemon has tiering and the tier opened). */
  tierActive: boolean;
  /** The last failure to reach the tier (absent while it answers). */
  tierError?: string;
  /** The seal policy (absent: off): freeze an active layer not written for this long / allocating more than this. */
  sealAfterMs?: number;
  sealAboveBytes?: number;
}

/** `pool df`: what a pool's data is worth (logical) and what it takes (physical). */
export interface PoolDf {
  pool: string;
  kind: 'local' | 'dedup';
  volumeCount: number;
  /** Sum of the volumes' provisioned sizes. */
  logicalProvisionedBytes: number;
  /** Sum of the layers' data: a sealed layer's chunks count in full in every layer that has them. */
  logicalAllocatedBytes: number;
  /** What the pool takes: its local layer files plus its packs, local and tiered. */
  physicalBytes: number;
  /** Local layer files (active layers, and frozen ones not sealed yet). */
  layerFileBytes: number;
  /** Pack bytes, and of them on this host and in the tier (0 until tiering is wired). */
  packBytes: number;
  packLocalBytes: number;
  packRemoteBytes: number;
  /** physicalBytes on this host and in the tier. */
  localBytes: number;
  remoteBytes: number;
  uniqueChunkCount: number;
  uniqueChunkBytes: number;
  /** Each stored chunk counted once per reference. */
  referencedChunkBytes: number;
  /** referencedChunkBytes / uniqueChunkBytes (undefined with no chunk stored, or for a local pool). */
  dedupRatio: number | undefined;
  /** A tiered pool's last failure to reach its tier (absent while it answers, or without a tier). */
  tierError?: string;
}

export type PoolGcReport = ChunkedPoolGcReport & { pool: string; graceMs: number };
/** What a pool delete did; packsLeftIn: where packs stayed that a forced delete could not delete. */
export interface PoolDeleteReport {
  pool: string;
  packsLeftIn?: string;
  packsLeftReason?: string;
}

export type VolumeEvictReport = ChunkedPoolEviction & { pool: string; volume: string };

/** What `volume seal` did: the active layer frozen (an internal layer) and its seal job started. */
export interface VolumeSealReport {
  pool: string;
  volume: string;
  frozenLayerId: string;
  sealJobId: string | null;
  /** The chain's depth after the freeze (the new overlay included). */
  chainDepth: number;
}

/** What a compaction did: pairs of adjacent internal sealed layers merged, and the chain's depth. */
export interface VolumeCompactReport {
  pool: string;
  volume: string;
  mergedPairs: number;
  chainDepthBefore: number;
  chainDepthAfter: number;
}

/** One pass of the dedup pools' seal policy: the volumes whose active layers it froze. */
export interface SealPolicyPass {
  frozen: { volume: string; reason: 'size' | 'idle'; layerId: string }[];
  failed: { volume: string; error: string }[];
}

/** A layer a scrub's report names (a holder of lost chunks, an unreadable manifest) and who owns it. */
export interface ScrubLayerOwner {
  /** As the report names it: "layer <pool>/<file>". */
  holder: string;
  layer: string;
  /** The owning volume's name (undefined: no layer record has that file: removed meanwhile). */
  volume: string | undefined;
  snapshot: string | undefined;
  /** The volume's active layer, a snapshot's layer, an imported volume's base, or no record. */
  role: 'active' | 'snapshot' | 'base' | 'internal' | 'unknown';
}

/** A dedup pool's scrub: the report as the repository made it, and the owners of the layers it names. */
export interface PoolScrubReport {
  pool: string;
  report: ScrubReport;
  layers: ScrubLayerOwner[];
}

export interface VolumeInfo {
  id: string;
  pool: string;
  name: string;
  /** Virtual size (what the guest sees). */
  provisionedBytes: number;
  /** Host bytes of the layers only this volume uses (its active layer and snapshot layers). */
  allocatedBytes: number;
  snapshotCount: number;
  /** Set for clones that still depend on their parent snapshot. */
  parent: { pool: string; volume: string; snapshot: string } | undefined;
  /** Layers from the active one down to the bottom of the chain (1 for a fresh volume). */
  chainDepth: number;
  /**
   * Where an operator finds the active layer on this host (a local pool's file, for `qemu-img info
   * --backing-chain`); absent for stores without local files.
   */
  location?: string;
  snapshotLimit: number | undefined;
  createdAt: string;
}

export interface SnapshotInfo {
  id: string;
  pool: string;
  volume: string;
  name: string;
  /** Virtual size of the volume when the snapshot was taken. */
  sizeBytes: number;
  protected: boolean;
  /** Clones made from this snapshot (pool/volume). */
  children: string[];
  /** Where an operator finds the snapshot's layer on this host (a local pool's file); absent for stores without local files. */
  location?: string;
  createdAt: string;
}

/** A volume in its pool's trash (RBD's `rbd trash`): purged when it expires, or restored. */
export interface TrashEntry {
  /** The volume's id: what restore and purge take (its name may be in use again). */
  id: string;
  pool: string;
  /** The name it had when it was deleted. */
  name: string;
  /** Its virtual size. */
  sizeBytes: number;
  snapshotCount: number;
  deletedAt: string;
  expiresAt: string;
}

/** What one pass over the expired trash did (purgeExpiredTrash). */
export interface ExpiredTrashPass {
  purged: TrashEntry[];
  /** Expired entries that could not be purged (clones of their snapshots remain, a job holds them). */
  refused: { entry: TrashEntry; reason: string }[];
  /** Where the next pass continues (undefined: every expired entry has been looked at; start over). */
  nextAfter: string | undefined;
}

export type JobKind = 'flatten' | 'copy' | 'import' | 'export' | 'snapshot-delete' | 'seal' | 'gc' | 'scrub' | 'evict' | 'compact' | ExternalJobKind;
/** Jobs whose work another part of the daemon owns (VolumeService.runJob): 'bucket-purge', the object model's. */
export type ExternalJobKind = 'bucket-purge';

/** What such a job's work gets: its cancellation and its progress (in bytes, or whatever unit the kind documents). */
export interface JobProgress {
  readonly signal: AbortSignal;
  setTotal(totalBytes: number): void;
  addDone(bytes: number): void;
}
export type JobState = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled';

export interface JobInfo {
  id: string;
  kind: JobKind;
  /** What the job works on, e.g. "pool/volume". */
  target: string;
  state: JobState;
  doneBytes: number;
  totalBytes: number;
  error: { code: string; message: string } | undefined;
  createdAt: string;
  finishedAt: string | undefined;
}

/** One changed range between two points in a volume's history. */
export interface DiffExtent {
  offset: number;
  length: number;
  /** zero: the range reads as zeroes at the newer point; data: it holds data. */
  kind: 'data' | 'zero';
}

/** Where a diff starts and ends: a snapshot name, or undefined for the start of time / live volume. */
export interface DiffRange {
  fromSnapshot: string | undefined;
  toSnapshot: string | undefined;
}

export interface DuEntry {
  /** "pool/volume" or "pool/volume@snapshot" */
  name: string;
  provisionedBytes: number;
  /** Host bytes of the layer that belongs to this entry. */
  allocatedBytes: number;
}

/** How an export opens a volume or snapshot (openDevice). */
export interface OpenDeviceOptions {
  snapshot?: string;
  readOnly?: boolean;
  /** The export this device serves: a refusal while it lasts names it as the thing to stop (BUSY's fix). */
  export?: { id: string; type: 'nbd' | 'vhost-user' };
}

/** Consistency groups and their snapshots: GroupService (group-types.ts). */

export interface VolumeService extends GroupService {
  // Pools
  /** dedup: a dedup pool (its configuration checked by checkDedupPoolConfig); absent: a local pool. */
  createPool(name: string, options?: { quotaBytes?: number; dedup?: DedupPoolRequest }): Promise<PoolInfo>;
  /** Logical and physical bytes of a pool (dedup ratio, packs, tiers). */
  poolDf(name: string): Promise<PoolDf>;
  /** Collects a dedup pool's garbage (a 'gc' job the caller awaits); graceMs: default 1 hour. */
  gcPool(name: string, options?: { graceMs?: number }): Promise<{ job: JobInfo; report: PoolGcReport }>;
  /** Scrubs a dedup pool (a 'scrub' job the caller awaits; docs/dedup.md); repair: fix what can be. */
  scrubPool(name: string, options?: { repair?: boolean }): Promise<{ job: JobInfo; report: PoolScrubReport }>;
  /** Moves the packs of a volume's sealed layers to its pool's tier now (an 'evict' job the caller awaits). */
  evictVolume(pool: string, volume: string): Promise<{ job: JobInfo; report: VolumeEvictReport }>;
  /** Freezes a dedup pool volume's active layer now (an internal layer) and starts its seal job. */
  sealVolume(pool: string, volume: string): Promise<VolumeSealReport>;
  /** Merges the volume's adjacent internal sealed layers by reference (a 'compact' job the caller awaits). */
  compactVolume(pool: string, volume: string): Promise<{ job: JobInfo; report: VolumeCompactReport }>;
  /** One bounded pass of the dedup pools' seal policy (the daemon's timer calls it). */
  applySealPolicy(): Promise<SealPolicyPass>;
  /** The tiers of the tiered dedup pools, for /metrics. */
  poolTiers(): Promise<{ pool: string; tier: ChunkedPoolTierStatus }[]>;
  listPools(): Promise<PoolInfo[]>;
  poolInfo(name: string): Promise<PoolInfo>;
  setPoolQuota(name: string, quotaBytes: number | undefined): Promise<PoolInfo>;
  /**
   * Refused (BUSY) while the pool has volumes; a dedup pool's packs go first, and when they cannot
   * (its tier does not answer) the pool stays, unless force (the report then says what was left).
   */
  deletePool(name: string, options?: { force?: boolean }): Promise<PoolDeleteReport>;

  // Volumes
  /** qos: the new volume's own limits and policy (docs/qos.md). */
  createVolume(pool: string, name: string, sizeBytes: number, options?: { qos?: QosSettingChange }): Promise<VolumeInfo>;
  listVolumes(pool: string): Promise<VolumeInfo[]>;
  volumeInfo(pool: string, name: string): Promise<VolumeInfo>;
  /** Shrinking needs allowShrink (data past the new end is lost). */
  resizeVolume(pool: string, name: string, sizeBytes: number, options?: { allowShrink?: boolean }): Promise<VolumeInfo>;
  renameVolume(pool: string, name: string, newName: string): Promise<VolumeInfo>;
  /** Refused (BUSY) while it has snapshots or clones, unless force (which deletes its snapshots; clones still refuse). */
  deleteVolume(pool: string, name: string, options?: { force?: boolean }): Promise<void>;
  /**
   * Moves a volume to its pool's trash for expiresInMs (default 7 days): its name is free at once,
   * its snapshots and layers stay (clones of them keep reading). Refused (BUSY) while it is exported.
   */
  trashVolume(pool: string, name: string, options?: { expiresInMs?: number }): Promise<TrashEntry>;
  /** One pool's trash, or every pool's, oldest deletion first. */
  listTrash(pool?: string): Promise<TrashEntry[]>;
  /** Brings a volume back from the trash, under its old name or `name` (ALREADY_EXISTS when it is taken). */
  restoreVolume(pool: string, id: string, options?: { name?: string }): Promise<VolumeInfo>;
  /** Deletes a volume in the trash now (BUSY while its snapshots have clones, naming them). */
  purgeTrash(pool: string, id: string): Promise<TrashEntry>;
  /** Deletes every entry of a pool's trash, or the expired ones; refused (BUSY) before any is deleted if one has clones. */
  purgePoolTrash(pool: string, options?: { expiredOnly?: boolean }): Promise<TrashEntry[]>;
  /** Purges up to `limit` expired entries, in expiry order from after `after` (the daemon's timer). */
  purgeExpiredTrash(options: { limit: number; after?: string }): Promise<ExpiredTrashPass>;
  /** Full independent copy (a job). */
  copyVolume(pool: string, name: string, destPool: string, destName: string): Promise<JobInfo>;

  // Snapshots
  createSnapshot(pool: string, volume: string, name: string): Promise<SnapshotInfo>;
  listSnapshots(pool: string, volume: string): Promise<SnapshotInfo[]>;
  snapshotInfo(pool: string, volume: string, name: string): Promise<SnapshotInfo>;
  renameSnapshot(pool: string, volume: string, name: string, newName: string): Promise<SnapshotInfo>;
  rollbackSnapshot(pool: string, volume: string, name: string): Promise<VolumeInfo>;
  deleteSnapshot(pool: string, volume: string, name: string): Promise<void>;
  protectSnapshot(pool: string, volume: string, name: string): Promise<SnapshotInfo>;
  unprotectSnapshot(pool: string, volume: string, name: string): Promise<SnapshotInfo>;
  setSnapshotLimit(pool: string, volume: string, limit: number | undefined): Promise<VolumeInfo>;
  cloneSnapshot(pool: string, volume: string, snapshot: string, destPool: string, destName: string): Promise<VolumeInfo>;
  flattenVolume(pool: string, name: string): Promise<JobInfo>;

  // Data in and out (streams of bytes; progress is reported through onProgress)
  /**
   * Creates a volume from a raw or qcow2 image (qcow2 is spooled to the pool, then copied in
   * sparsely), sent as plain bytes or as a sparse stream (transfer 'sparse', sparse-stream.ts).
   * `signal` cancels the import job; its reason (a CANCELLED error) becomes the job's.
   */
  importVolume(
    pool: string,
    name: string,
    source: AsyncIterable<Uint8Array>,
    options: { format: 'raw' | 'qcow2'; sizeBytes?: number; transfer?: TransferEncoding; onProgress?: (doneBytes: number) => void; signal?: AbortSignal },
  ): Promise<VolumeInfo>;
  /**
   * The volume's (or a snapshot's) contents as raw bytes or as a standalone qcow2 image: every
   * byte (transfer 'bytes', the default), or a sparse stream whose zero runs are not sent.
   * sizeBytes is the image's length (of the bytes, not of the sparse stream).
   */
  exportVolume(
    pool: string,
    name: string,
    options: { format: 'raw' | 'qcow2'; snapshot?: string; transfer?: TransferEncoding },
  ): Promise<{ sizeBytes: number; stream: AsyncIterable<Uint8Array> }>;
  /** Per-layer and total host usage (Ceph's `rbd du`). */
  du(pool: string, volume?: string): Promise<DuEntry[]>;

  // Diff
  diff(pool: string, volume: string, range: DiffRange): Promise<DiffExtent[]>;
  /** The changed extents with their data, in Strata's diff stream format (docs/daemon.md). */
  exportDiff(pool: string, volume: string, range: DiffRange): Promise<AsyncIterable<Uint8Array>>;
  /** Applies a diff stream; the volume must hold the stream's from-snapshot; creates its to-snapshot. */
  importDiff(pool: string, volume: string, source: AsyncIterable<Uint8Array>): Promise<VolumeInfo>;

  // Live devices
  /**
   * Opens a volume (read-write unless readOnly) or a snapshot (read-only) for an export; close()
   * releases it. Shared by every export of the same target, valid across snapshot create, snapshot
   * delete and flatten (which pause it); while a volume's head is open, rollback, delete, rename,
   * shrink, copy, export and diffs to the head are refused (BUSY).
   */
  openDevice(pool: string, volume: string, options?: OpenDeviceOptions): Promise<BlockDevice>;

  // QoS (docs/qos.md): changes apply to exported volumes at once
  volumeQos(pool: string, volume: string): Promise<QosInfo>;
  setVolumeQos(pool: string, volume: string, change: QosSettingChange): Promise<QosInfo>;
  clearVolumeQos(pool: string, volume: string): Promise<QosInfo>;
  poolQos(pool: string): Promise<QosInfo>;
  setPoolQos(pool: string, change: QosSettingChange): Promise<QosInfo>;
  clearPoolQos(pool: string): Promise<QosInfo>;
  createQosPolicy(name: string, limits: QosLimits): Promise<QosPolicyInfo>;
  listQosPolicies(): Promise<QosPolicyInfo[]>;
  qosPolicyInfo(name: string): Promise<QosPolicyInfo>;
  /** Limits field by field (null removes one). */
  setQosPolicy(name: string, limits: { readonly [field: string]: number | null | undefined }): Promise<QosPolicyInfo>;
  /** Refused (BUSY) while a volume or pool attaches it. */
  deleteQosPolicy(name: string): Promise<void>;
  /** The exported volumes' throttles, for /metrics. */
  qosStats(): Promise<QosVolumeStats[]>;

  // Jobs
  /**
   * Runs work another part of the daemon owns (the object model's bucket purge) as a job the
   * caller awaits, listed, followed and cancelled like the others; resolves with the job as it
   * ended and what the work returned.
   */
  runJob<T>(kind: ExternalJobKind, target: string, work: (job: JobProgress) => Promise<T>): Promise<{ job: JobInfo; value: T }>;
  listJobs(): Promise<JobInfo[]>;
  jobInfo(id: string): Promise<JobInfo>;
  cancelJob(id: string): Promise<JobInfo>;
}
