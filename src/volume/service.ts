/**
 * LocalVolumeService: pools, volumes, snapshots, clones and jobs over qcow2 layer files in a
 * LayerStore (by default a LocalLayerStore: `<data>/pools/<pool>/`) and records in tables over a
 * CatalogStore (catalog.ts; docs/daemon.md describes the model). A volume's layers are written only
 * under its writer lease from the Coordinator (writers.ts).
 *
 * This class is a facade: it builds the shared state (context.ts) once and delegates each
 * operation to the module that owns it: pools.ts, volumes.ts, trash.ts, snapshots.ts, clones.ts,
 * transfer.ts (import/export/copy), diff.ts, recovery.ts, live-registry.ts (exports); queries.ts,
 * guards.ts, intents.ts and image-ops.ts are the helpers they share.
 *
 * Concurrency: every operation that changes a volume runs under that volume's lock ("vol:<id>");
 * operations that change a pool's names or provisioned total also take "pool:<name>". Long jobs
 * (copy, flatten) and exports of a live volume put a hold on the volume instead of keeping the
 * lock: while it lasts, operations that would change the volume fail with BUSY at once.
 *
 * Crash consistency: every multi-step operation writes an intent before touching files and ends
 * with one atomic catalog transaction that compares the records it read (see runIntent in
 * intents.ts); recover() checks the catalog's layout, rolls back or finishes what a crash left,
 * then deletes files no record references. Call recover() once at start-up, before serving.
 */
import path from 'node:path';
import { StorageError } from '../core/errors.js';
import type { LayerStore } from '../core/layer-store.js';
import { LocalLayerStore } from '../store/local-layer-store.js';
import type { CatalogStore } from '../core/catalog-store.js';
import type { ChunkedPools, ChunkedPoolTierStatus } from '../core/chunked-pools.js';
import type { PoolBuckets } from '../core/pool-buckets.js';
import { compactVolume } from './compact.js';
import { evictVolume } from './evict.js';
import { sealVolumeNow } from './freeze.js';
import { applySealPolicy } from './seal-policy.js';
import type { Coordinator } from '../core/coordinator.js';
import { VolumeCatalog } from './catalog.js';
import * as clones from './clones.js';
import { LocalCoordinator } from './coordinator-local.js';
import { DEFAULT_MAX_CHAIN_DEPTH, DEFAULT_TRASH_EXPIRY_MS, type ChainDepthPolicy, type ServiceContext } from './context.js';
import * as diffs from './diff.js';
import { JobRunner } from './jobs.js';
import type { LiveDevice, LiveVolume } from './live.js';
import { openDevice } from './live-registry.js';
import { KeyedMutex } from './locks.js';
import * as groupSnapshots from './group-snapshots.js';
import * as groups from './groups.js';
import type { GroupInfo, GroupSnapshotInfo } from './group-types.js';
import * as pools from './pools.js';
import { scrubPool } from './pool-scrub.js';
import { recover, type RecoveryReport } from './recovery.js';
import * as snapshots from './snapshots.js';
import type { TransferEncoding } from './sparse-stream.js';
import * as transfer from './transfer.js';
import * as trash from './trash.js';
import type { DiffExtent, DiffRange, DuEntry, ExpiredTrashPass, ExternalJobKind, JobInfo, JobProgress, PoolDeleteReport, PoolDf, PoolGcReport, PoolInfo, PoolScrubReport, SealPolicyPass, VolumeCompactReport, VolumeEvictReport, VolumeSealReport, SnapshotInfo, TrashEntry, VolumeInfo, VolumeService, OpenDeviceOptions } from './types.js';
import type { DedupPoolRequest } from './pool-config.js';
import { attachChunkedPools, resumeSeals } from './sealing.js';
import type { QosLimits } from './qos/limits.js';
import * as qos from './qos/settings.js';
import type { QosInfo, QosPolicyInfo, QosSettingChange, QosVolumeStats } from './qos/types.js';
import * as volumes from './volumes.js';

export { DEFAULT_MAX_CHAIN_DEPTH, DEFAULT_TRASH_EXPIRY_MS, type ChainDepthPolicy } from './context.js';
export { resizeImage } from './image-ops.js';
export type { RecoveryReport } from './recovery.js';

export interface LocalVolumeServiceOptions {
  /** Layers a volume's chain may have, counting the active one (default 16). */
  maxChainDepth?: number;
  /** Past maxChainDepth: 'refuse' (LIMIT_EXCEEDED, the default) or 'flatten' a clone first. */
  chainDepthPolicy?: ChainDepthPolicy;
  /** Background jobs running at once (default 2); more wait as 'queued'. */
  maxConcurrentJobs?: number;
  /** Where the layer files live (default: a LocalLayerStore over `<data>/pools`). */
  layerStore?: LayerStore;
  /** Who may write a volume (default: a LocalCoordinator, leases in this process). */
  coordinator?: Coordinator;
  /** This service's name as a lease holder (default 'strata'). */
  writerName?: string;
  /** How long a volume deleted to the trash stays there unless its delete says (default 7 days). */
  trashExpiryMs?: number;
  /** Now, in ms since the epoch, for trash times and expiry (default Date.now; tests pass their own clock). */
  clock?: () => number;
  /**
   * The dedup pools' side of layerStore (the same object in a daemon: a PoolRoutingLayerStore).
   * Absent: only local pools can be made.
   */
  chunkedPools?: ChunkedPools;
}

export class LocalVolumeService implements VolumeService {
  readonly layerStore: LayerStore;
  readonly jobs: JobRunner;
  readonly maxChainDepth: number;
  readonly chainDepthPolicy: ChainDepthPolicy;
  /** The default coordinator when the caller passed none (closed with the service). */
  private readonly ownCoordinator: Coordinator | undefined;
  /** The records, as tables over the CatalogStore the caller opened (and closes). */
  readonly catalog: VolumeCatalog;
  /** What the modules share: built once here, passed to each as `svc`. */
  private readonly svc: ServiceContext;
  /** When this service started (ms since the epoch): the seal policy's quiet time starts here at the latest. */
  private readonly startedAtMs = Date.now();

  constructor(
    store: CatalogStore,
    dataDir: string,
    options: LocalVolumeServiceOptions = {},
  ) {
    this.layerStore = options.layerStore ?? new LocalLayerStore(path.join(path.resolve(dataDir), 'pools'));
    this.catalog = new VolumeCatalog(store);
    const coordinator = options.coordinator ?? new LocalCoordinator();
    this.ownCoordinator = options.coordinator === undefined ? coordinator : undefined;
    this.jobs = new JobRunner(this.catalog, options.maxConcurrentJobs === undefined ? {} : { maxConcurrent: options.maxConcurrentJobs });
    this.maxChainDepth = options.maxChainDepth ?? DEFAULT_MAX_CHAIN_DEPTH;
    if (!Number.isSafeInteger(this.maxChainDepth) || this.maxChainDepth < 1) {
      throw new StorageError('INVALID_ARGUMENT', `maxChainDepth must be a positive integer, not ${this.maxChainDepth}`);
    }
    this.chainDepthPolicy = options.chainDepthPolicy ?? 'refuse';
    this.svc = {
      catalog: this.catalog,
      coordinator,
      writerName: options.writerName ?? 'strata',
      layerStore: this.layerStore,
      jobs: this.jobs,
      locks: new KeyedMutex(),
      holds: new Map(),
      writers: new Map(),
      live: new Map<string, LiveVolume>(),
      maxChainDepth: this.maxChainDepth,
      chainDepthPolicy: this.chainDepthPolicy,
      clock: options.clock ?? Date.now,
      trashExpiryMs: options.trashExpiryMs ?? DEFAULT_TRASH_EXPIRY_MS,
      chunkedPools: options.chunkedPools,
      poolBuckets: [],
      seals: new Map(),
    };
  }

  /**
   * Lets the S3 object model say which buckets name a pool: deletePool then refuses (BUSY) while
   * one does. Added once the object model is open (it opens over this service).
   */
  addPoolBuckets(source: PoolBuckets): void {
    this.svc.poolBuckets.push(source);
  }

  /**
   * Cancels running jobs and waits for them, then closes the coordinator if the service made its
   * own. The caller closes the catalog store (and a coordinator it passed) afterwards.
   */
  async close(): Promise<void> {
    await this.jobs.shutdown();
    await this.ownCoordinator?.close();
  }

  // Pools (pools.ts)

  createPool(name: string, options: { quotaBytes?: number; dedup?: DedupPoolRequest } = {}): Promise<PoolInfo> {
    return pools.createPool(this.svc, name, options);
  }

  poolDf(name: string): Promise<PoolDf> {
    return pools.poolDf(this.svc, name);
  }

  gcPool(name: string, options: { graceMs?: number } = {}): Promise<{ job: JobInfo; report: PoolGcReport }> {
    return pools.gcPool(this.svc, name, options);
  }

  scrubPool(name: string, options: { repair?: boolean } = {}): Promise<{ job: JobInfo; report: PoolScrubReport }> {
    return scrubPool(this.svc, name, options);
  }

  evictVolume(pool: string, volume: string): Promise<{ job: JobInfo; report: VolumeEvictReport }> {
    return evictVolume(this.svc, pool, volume);
  }

  sealVolume(pool: string, volume: string): Promise<VolumeSealReport> {
    return sealVolumeNow(this.svc, pool, volume);
  }

  compactVolume(pool: string, volume: string): Promise<{ job: JobInfo; report: VolumeCompactReport }> {
    return compactVolume(this.svc, pool, volume);
  }

  applySealPolicy(): Promise<SealPolicyPass> {
    return applySealPolicy(this.svc, { startedAtMs: this.startedAtMs });
  }

  async poolTiers(): Promise<{ pool: string; tier: ChunkedPoolTierStatus }[]> {
    const out: { pool: string; tier: ChunkedPoolTierStatus }[] = [];
    for (const pool of await this.svc.catalog.pools.all()) {
      const tier = pool.dedup?.tier === undefined ? undefined : this.svc.chunkedPools?.tierStatus?.(pool.name);
      if (tier !== undefined) out.push({ pool: pool.name, tier });
    }
    return out;
  }

  listPools(): Promise<PoolInfo[]> {
    return pools.listPools(this.svc);
  }

  poolInfo(name: string): Promise<PoolInfo> {
    return pools.poolInfo(this.svc, name);
  }

  setPoolQuota(name: string, quotaBytes: number | undefined): Promise<PoolInfo> {
    return pools.setPoolQuota(this.svc, name, quotaBytes);
  }

  deletePool(name: string, options: { force?: boolean } = {}): Promise<PoolDeleteReport> {
    return pools.deletePool(this.svc, name, options);
  }

  du(pool: string, volume?: string): Promise<DuEntry[]> {
    return pools.du(this.svc, pool, volume);
  }

  // Volumes (volumes.ts)

  createVolume(pool: string, name: string, sizeBytes: number, options: { qos?: QosSettingChange } = {}): Promise<VolumeInfo> {
    return volumes.createVolume(this.svc, pool, name, sizeBytes, options);
  }

  listVolumes(pool: string): Promise<VolumeInfo[]> {
    return volumes.listVolumes(this.svc, pool);
  }

  volumeInfo(pool: string, name: string): Promise<VolumeInfo> {
    return volumes.volumeInfo(this.svc, pool, name);
  }

  resizeVolume(pool: string, name: string, sizeBytes: number, options: { allowShrink?: boolean } = {}): Promise<VolumeInfo> {
    return volumes.resizeVolume(this.svc, pool, name, sizeBytes, options);
  }

  renameVolume(pool: string, name: string, newName: string): Promise<VolumeInfo> {
    return volumes.renameVolume(this.svc, pool, name, newName);
  }

  deleteVolume(pool: string, name: string, options: { force?: boolean } = {}): Promise<void> {
    return volumes.deleteVolume(this.svc, pool, name, options);
  }

  // The trash (trash.ts)

  trashVolume(pool: string, name: string, options: { expiresInMs?: number } = {}): Promise<TrashEntry> {
    return trash.trashVolume(this.svc, pool, name, options);
  }

  listTrash(pool?: string): Promise<TrashEntry[]> {
    return trash.listTrash(this.svc, pool);
  }

  restoreVolume(pool: string, id: string, options: { name?: string } = {}): Promise<VolumeInfo> {
    return trash.restoreVolume(this.svc, pool, id, options);
  }

  purgeTrash(pool: string, id: string): Promise<TrashEntry> {
    return trash.purgeTrash(this.svc, pool, id);
  }

  purgePoolTrash(pool: string, options: { expiredOnly?: boolean } = {}): Promise<TrashEntry[]> {
    return trash.purgePoolTrash(this.svc, pool, options);
  }

  purgeExpiredTrash(options: { limit: number; after?: string }): Promise<ExpiredTrashPass> {
    return trash.purgeExpiredTrash(this.svc, options);
  }

  // Snapshots (snapshots.ts)

  createSnapshot(pool: string, volume: string, name: string): Promise<SnapshotInfo> {
    return snapshots.createSnapshot(this.svc, pool, volume, name);
  }

  listSnapshots(pool: string, volume: string): Promise<SnapshotInfo[]> {
    return snapshots.listSnapshots(this.svc, pool, volume);
  }

  snapshotInfo(pool: string, volume: string, name: string): Promise<SnapshotInfo> {
    return snapshots.snapshotInfo(this.svc, pool, volume, name);
  }

  renameSnapshot(pool: string, volume: string, name: string, newName: string): Promise<SnapshotInfo> {
    return snapshots.renameSnapshot(this.svc, pool, volume, name, newName);
  }

  rollbackSnapshot(pool: string, volume: string, name: string): Promise<VolumeInfo> {
    return snapshots.rollbackSnapshot(this.svc, pool, volume, name);
  }

  deleteSnapshot(pool: string, volume: string, name: string): Promise<void> {
    return snapshots.deleteSnapshot(this.svc, pool, volume, name);
  }

  protectSnapshot(pool: string, volume: string, name: string): Promise<SnapshotInfo> {
    return snapshots.protectSnapshot(this.svc, pool, volume, name);
  }

  unprotectSnapshot(pool: string, volume: string, name: string): Promise<SnapshotInfo> {
    return snapshots.unprotectSnapshot(this.svc, pool, volume, name);
  }

  setSnapshotLimit(pool: string, volume: string, limit: number | undefined): Promise<VolumeInfo> {
    return snapshots.setSnapshotLimit(this.svc, pool, volume, limit);
  }

  // Consistency groups (groups.ts, group-snapshots.ts)

  createGroup(name: string): Promise<GroupInfo> {
    return groups.createGroup(this.svc, name);
  }

  listGroups(): Promise<GroupInfo[]> {
    return groups.listGroups(this.svc);
  }

  groupInfo(name: string): Promise<GroupInfo> {
    return groups.groupInfo(this.svc, name);
  }

  deleteGroup(name: string): Promise<void> {
    return groups.deleteGroup(this.svc, name);
  }

  addToGroup(group: string, pool: string, volume: string): Promise<GroupInfo> {
    return groups.addToGroup(this.svc, group, pool, volume);
  }

  removeFromGroup(group: string, pool: string, volume: string): Promise<GroupInfo> {
    return groups.removeFromGroup(this.svc, group, pool, volume);
  }

  createGroupSnapshot(group: string, name: string): Promise<GroupSnapshotInfo> {
    return groupSnapshots.createGroupSnapshot(this.svc, group, name);
  }

  listGroupSnapshots(group: string): Promise<GroupSnapshotInfo[]> {
    return groupSnapshots.listGroupSnapshots(this.svc, group);
  }

  groupSnapshotInfo(group: string, name: string): Promise<GroupSnapshotInfo> {
    return groupSnapshots.groupSnapshotInfo(this.svc, group, name);
  }

  rollbackGroupSnapshot(group: string, name: string): Promise<GroupInfo> {
    return groupSnapshots.rollbackGroupSnapshot(this.svc, group, name);
  }

  deleteGroupSnapshot(group: string, name: string): Promise<void> {
    return groupSnapshots.deleteGroupSnapshot(this.svc, group, name);
  }

  // Clones (clones.ts)

  cloneSnapshot(pool: string, volume: string, snapshot: string, destPool: string, destName: string): Promise<VolumeInfo> {
    return clones.cloneSnapshot(this.svc, pool, volume, snapshot, destPool, destName);
  }

  flattenVolume(pool: string, name: string): Promise<JobInfo> {
    return clones.flattenVolume(this.svc, pool, name);
  }

  // Data in and out (transfer.ts)

  copyVolume(pool: string, name: string, destPool: string, destName: string): Promise<JobInfo> {
    return transfer.copyVolume(this.svc, pool, name, destPool, destName);
  }

  importVolume(
    pool: string,
    name: string,
    source: AsyncIterable<Uint8Array>,
    options: { format: 'raw' | 'qcow2'; sizeBytes?: number; transfer?: TransferEncoding; onProgress?: (doneBytes: number) => void; signal?: AbortSignal },
  ): Promise<VolumeInfo> {
    return transfer.importVolume(this.svc, pool, name, source, options);
  }

  exportVolume(
    pool: string,
    name: string,
    options: { format: 'raw' | 'qcow2'; snapshot?: string; transfer?: TransferEncoding },
  ): Promise<{ sizeBytes: number; stream: AsyncIterable<Uint8Array> }> {
    return transfer.exportVolume(this.svc, pool, name, options);
  }

  // Diff (diff.ts)

  diff(pool: string, volume: string, range: DiffRange): Promise<DiffExtent[]> {
    return diffs.diff(this.svc, pool, volume, range);
  }

  exportDiff(pool: string, volume: string, range: DiffRange): Promise<AsyncIterable<Uint8Array>> {
    return diffs.exportDiff(this.svc, pool, volume, range);
  }

  importDiff(pool: string, volume: string, source: AsyncIterable<Uint8Array>): Promise<VolumeInfo> {
    return diffs.importDiff(this.svc, pool, volume, source);
  }

  // QoS (qos/settings.ts)

  volumeQos(pool: string, volume: string): Promise<QosInfo> {
    return qos.volumeQos(this.svc, pool, volume);
  }

  setVolumeQos(pool: string, volume: string, change: QosSettingChange): Promise<QosInfo> {
    return qos.setVolumeQos(this.svc, pool, volume, change);
  }

  clearVolumeQos(pool: string, volume: string): Promise<QosInfo> {
    return qos.clearVolumeQos(this.svc, pool, volume);
  }

  poolQos(pool: string): Promise<QosInfo> {
    return qos.poolQos(this.svc, pool);
  }

  setPoolQos(pool: string, change: QosSettingChange): Promise<QosInfo> {
    return qos.setPoolQos(this.svc, pool, change);
  }

  clearPoolQos(pool: string): Promise<QosInfo> {
    return qos.clearPoolQos(this.svc, pool);
  }

  createQosPolicy(name: string, limits: QosLimits): Promise<QosPolicyInfo> {
    return qos.createQosPolicy(this.svc, name, limits);
  }

  listQosPolicies(): Promise<QosPolicyInfo[]> {
    return qos.listQosPolicies(this.svc);
  }

  qosPolicyInfo(name: string): Promise<QosPolicyInfo> {
    return qos.qosPolicyInfo(this.svc, name);
  }

  setQosPolicy(name: string, limits: { readonly [field: string]: number | null | undefined }): Promise<QosPolicyInfo> {
    return qos.setQosPolicy(this.svc, name, limits);
  }

  deleteQosPolicy(name: string): Promise<void> {
    return qos.deleteQosPolicy(this.svc, name);
  }

  qosStats(): Promise<QosVolumeStats[]> {
    return qos.qosStats(this.svc);
  }

  // Jobs (jobs.ts)

  async runJob<T>(kind: ExternalJobKind, target: string, work: (job: JobProgress) => Promise<T>): Promise<{ job: JobInfo; value: T }> {
    let jobId = '';
    const value = await this.jobs.run(kind, target, (ctx) => {
      jobId = ctx.id;
      ctx.throwIfCancelled();
      return work(ctx);
    });
    return { job: await this.jobs.info(jobId), value };
  }

  listJobs(): Promise<JobInfo[]> {
    return this.jobs.list();
  }

  jobInfo(id: string): Promise<JobInfo> {
    return this.jobs.info(id);
  }

  cancelJob(id: string): Promise<JobInfo> {
    return this.jobs.cancel(id);
  }

  /** Resolves once the job has finished, with its final state. */
  waitForJob(id: string): Promise<JobInfo> {
    return this.jobs.wait(id);
  }

  // Recovery (recovery.ts)

  /**
   * Start-up: marks interrupted jobs failed, rolls back or finishes leftover intents, then deletes
   * orphan files (layer files no record references, temp files) and reports what it could not fix.
   * Call once, before serving anything.
   */
  async recover(): Promise<RecoveryReport> {
    await this.catalog.checkSchema();
    await attachChunkedPools(this.svc);
    const report = await recover(this.svc);
    report.sealsStarted = await resumeSeals(this.svc);
    return report;
  }

  // Live devices (live-registry.ts)

  /**
   * Opens a volume (read-write unless readOnly) or one of its snapshots (always read-only) for an
   * export. Every export of the same volume or snapshot shares one open chain. The device stays
   * valid across snapshot create, snapshot delete and flatten (it pauses while they change its
   * files); while the volume's head is exported, operations that would change what the guest sees
   * or read the head under it (rollback, delete, shrink, copy, export, diffs to the head) are BUSY.
   */
  openDevice(pool: string, volume: string, options: OpenDeviceOptions = {}): Promise<LiveDevice> {
    return openDevice(this.svc, pool, volume, options);
  }
}
