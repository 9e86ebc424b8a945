/**
 * LocalVolumeService: pools, volumes, snapshots, clones and jobs over qcow2 layer files in
 * `<data>/pools/<pool>/` and records in the catalog (docs/daemon.md describes the model).
 *
 * Concurrency: every operation that changes a volume runs under that volume's lock ("vol:<id>");
 * operations that change a pool's names or provisioned total also take "pool:<name>". Long jobs
 * (copy, flatten) and exports of a live volume put a hold on the volume instead of keeping the
 * lock: while it lasts, operations that would change the volume fail with BUSY at once.
 *
 * Crash consistency: every multi-step operation writes an intent before touching files and ends
 * with one atomic catalog batch (see runIntent); recover() rolls back or finishes what a crash left,
 * then deletes files no record references. Call recover() once at start-up, before serving.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { StorageError } from '../core/errors.js';
import { countOf } from '../core/text.js';
import { alignUp, formatSizeHuman, SECTOR_SIZE_BYTES } from '../core/units.js';
import { allocAligned } from '../sys/aligned-buffer.js';
import type { Qcow2Image } from '../../formats/qcow2/index.js';
import { LocalHostFile } from '../store/local-file.js';
import type { Catalog, CatalogOp } from '../catalog/catalog.js';
import { delOp, putOp } from '../catalog/catalog.js';
import type { FileRef, IntentRecord, LayerRecord, PoolRecord, SnapshotRecord, VolumeRecord } from '../catalog/records.js';
import {
  chainMap,
  copyBuffer,
  copyRange,
  COPY_CHUNK_BYTES,
  forEachWindow,
  isZero,
  layerMap,
  mergeRanges,
  writeSparse,
  yieldNowAndThen,
  type Range,
} from './extents.js';
import {
  allocatedBytesOf,
  backingFileName,
  backingOf,
  createLayerFile,
  DataPaths,
  fsyncDir,
  LAYER_FILE_PATTERN,
  layerFileName,
  openChain,
  openLayerAlone,
  TEMP_PREFIX,
  unlinkQuiet,
} from './layers.js';
import { JobRunner, type JobContext } from './jobs.js';
import { KeyedMutex } from './locks.js';
import { checkLimit, checkName, checkQuota, checkVolumeSize } from './names.js';
import { checkPoolQuota, type QuotaChange } from './quota.js';
import { ByteReader, encodeDiffHeader, encodeRecordHeader, readDiffHeader, readRecordHeader } from './diff-stream.js';
import { ManagedStream } from './stream.js';
import { chainPieces, filePieces, importProgress, spoolToFile, streamLongerThan, writePiecesToLayer } from './content.js';
import { encodeContent, readSparseStream, type ContentPiece, type TransferEncoding } from './sparse-stream.js';
import { openUploadedImage, uploadedImageError } from './input-image.js';
import { LiveVolume, liveKey, type LiveDevice, type LiveTarget } from './live.js';
import type {
  DiffExtent,
  DiffRange,
  DuEntry,
  JobInfo,
  PoolInfo,
  SnapshotInfo,
  VolumeInfo,
  VolumeService,
} from './types.js';

export type ChainDepthPolicy = 'refuse' | 'flatten';

export interface LocalVolumeServiceOptions {
  /** Layers a volume's chain may have, counting the active one (default 16). */
  maxChainDepth?: number;
  /** Past maxChainDepth: 'refuse' (LIMIT_EXCEEDED, the default) or 'flatten' a clone first. */
  chainDepthPolicy?: ChainDepthPolicy;
  /** Background jobs running at once (default 2); more wait as 'queued'. */
  maxConcurrentJobs?: number;
}

export interface RecoveryReport {
  jobsMarkedFailed: number;
  /** "<kind> <target>" of each intent rolled back. */
  intentsRolledBack: string[];
  /** "<kind> <target>" of each intent finished. */
  intentsFinished: string[];
  /** Paths of orphan files (and empty unknown pool folders) deleted. */
  orphansDeleted: string[];
  /** Things recovery could not fix and left alone (missing layer files, unknown files, corruption). */
  problems: string[];
}

export const DEFAULT_MAX_CHAIN_DEPTH = 16;
/** Raw imports of unknown size start with this virtual size and double as data arrives. */
const IMPORT_INITIAL_BYTES = 64 * 1024 * 1024;

const volKey = (id: string) => `vol:${id}`;
const poolKey = (name: string) => `pool:${name}`;
const POOLS_KEY = 'pools';

function newId(): string {
  return randomBytes(8).toString('hex');
}

function nowIso(): string {
  return new Date().toISOString();
}

function notFound(message: string): StorageError {
  return new StorageError('NOT_FOUND', message);
}

interface Hold {
  reason: string;
  count: number;
}

interface Reservation {
  pool: string;
  name: string;
  sizeBytes: number;
}

/** The catalog's records at one moment, indexed. */
interface CatalogView {
  volumes: VolumeRecord[];
  layers: Map<string, LayerRecord>;
  snapshots: SnapshotRecord[];
}

export class LocalVolumeService implements VolumeService {
  readonly paths: DataPaths;
  readonly jobs: JobRunner;
  private readonly locks = new KeyedMutex();
  private readonly holds = new Map<string, Hold>();
  private readonly reservations = new Map<string, Reservation>();
  /** Chains held open for exports, by liveKey (src/volume/live.ts). */
  private readonly live = new Map<string, LiveVolume>();
  readonly maxChainDepth: number;
  readonly chainDepthPolicy: ChainDepthPolicy;

  constructor(
    readonly catalog: Catalog,
    dataDir: string,
    options: LocalVolumeServiceOptions = {},
  ) {
    this.paths = new DataPaths(path.resolve(dataDir));
    this.jobs = new JobRunner(catalog, options.maxConcurrentJobs === undefined ? {} : { maxConcurrent: options.maxConcurrentJobs });
    this.maxChainDepth = options.maxChainDepth ?? DEFAULT_MAX_CHAIN_DEPTH;
    if (!Number.isSafeInteger(this.maxChainDepth) || this.maxChainDepth < 1) {
      throw new StorageError('INVALID_ARGUMENT', `maxChainDepth must be a positive integer, not ${this.maxChainDepth}`);
    }
    this.chainDepthPolicy = options.chainDepthPolicy ?? 'refuse';
  }

  /** Cancels running jobs and waits for them. The caller closes the catalog afterwards. */
  async close(): Promise<void> {
    await this.jobs.shutdown();
  }

  // =============================================================================================
  // Pools

  async createPool(name: string, options: { quotaBytes?: number } = {}): Promise<PoolInfo> {
    checkName('pool', name);
    const quotaBytes = checkQuota(options.quotaBytes);
    return this.locks.run([POOLS_KEY, poolKey(name)], async () => {
      if (await this.catalog.get('pool', name)) throw new StorageError('ALREADY_EXISTS', `pool '${name}' already exists`);
      const dir = this.paths.poolDir(name);
      await fs.mkdir(dir, { recursive: true });
      await fsyncDir(this.paths.poolsDir);
      const record: PoolRecord = { name, createdAt: nowIso(), ...(quotaBytes === undefined ? {} : { quotaBytes }) };
      await this.catalog.put('pool', record);
      return this.describePool(record);
    });
  }

  async listPools(): Promise<PoolInfo[]> {
    const pools = await this.catalog.list('pool');
    const view = await this.view();
    return Promise.all(pools.map((p) => this.describePool(p, view)));
  }

  async poolInfo(name: string): Promise<PoolInfo> {
    return this.describePool(await this.requirePool(name));
  }

  async setPoolQuota(name: string, quotaBytes: number | undefined): Promise<PoolInfo> {
    const quota = checkQuota(quotaBytes);
    return this.locks.run([poolKey(name)], async () => {
      const pool = await this.requirePool(name);
      const { quotaBytes: _old, ...rest } = pool;
      const record: PoolRecord = quota === undefined ? rest : { ...rest, quotaBytes: quota };
      await this.catalog.put('pool', record);
      return this.describePool(record);
    });
  }

  async deletePool(name: string): Promise<void> {
    await this.locks.run([POOLS_KEY, poolKey(name)], async () => {
      await this.requirePool(name);
      const view = await this.view();
      const volumes = view.volumes.filter((v) => v.pool === name);
      if (volumes.length > 0) {
        throw new StorageError('BUSY', `pool '${name}' still has ${countOf(volumes.length, 'volume')}; delete them first`);
      }
      if ([...this.reservations.values()].some((r) => r.pool === name)) {
        throw new StorageError('BUSY', `pool '${name}' has a volume being created (import or copy); try again when it is done`);
      }
      if ([...view.layers.values()].some((l) => l.pool === name)) {
        throw new StorageError('BUSY', `pool '${name}' still holds layers`);
      }
      await this.catalog.del('pool', name);
      const dir = this.paths.poolDir(name);
      for (const entry of await fs.readdir(dir).catch(() => [] as string[])) {
        if (LAYER_FILE_PATTERN.test(entry) || entry.startsWith(TEMP_PREFIX)) await unlinkQuiet(path.join(dir, entry));
      }
      await fs.rmdir(dir).catch(() => {});
    });
  }

  // =============================================================================================
  // Volumes

  async createVolume(pool: string, name: string, sizeBytes: number): Promise<VolumeInfo> {
    checkName('volume', name);
    checkVolumeSize(sizeBytes);
    return this.locks.run([poolKey(pool)], async () => {
      const poolRecord = await this.requirePool(pool);
      await this.checkNameFree(pool, name);
      await this.checkQuota(poolRecord, sizeBytes, `the new volume '${pool}/${name}'`);
      const volume: VolumeRecord = { id: newId(), pool, name, sizeBytes, activeLayerId: newId(), createdAt: nowIso() };
      const layer = this.newLayer(volume.activeLayerId, pool, volume.id, undefined);
      const intent = this.newIntent('volume-create', `${pool}/${name}`, { createFiles: [layer] });
      await this.runIntent(intent, async () => {
        await createLayerFile(this.paths.layer(layer), sizeBytes);
        await fsyncDir(this.paths.poolDir(pool));
        await this.catalog.batch(this.commitOps(intent, [putOp('volume', volume), putOp('layer', layer)]));
      });
      return this.describeVolume(volume);
    });
  }

  async listVolumes(pool: string): Promise<VolumeInfo[]> {
    await this.requirePool(pool);
    const view = await this.view();
    const volumes = view.volumes.filter((v) => v.pool === pool).sort((a, b) => a.name.localeCompare(b.name));
    return Promise.all(volumes.map((v) => this.describeVolume(v, view)));
  }

  async volumeInfo(pool: string, name: string): Promise<VolumeInfo> {
    return this.describeVolume(await this.volumeByName(pool, name));
  }

  async resizeVolume(pool: string, name: string, sizeBytes: number, options: { allowShrink?: boolean } = {}): Promise<VolumeInfo> {
    checkVolumeSize(sizeBytes);
    return this.withVolume(
      pool,
      name,
      async (vol) => {
        if (sizeBytes < vol.sizeBytes && !options.allowShrink) {
          throw new StorageError(
            'INVALID_ARGUMENT',
            `shrinking '${pool}/${name}' from ${formatSizeHuman(vol.sizeBytes)} to ${formatSizeHuman(sizeBytes)} loses the data past the new end`,
            { fix: { option: 'allowShrink', text: 'pass {} to shrink it anyway' } },
          );
        }
        if (sizeBytes < vol.sizeBytes) this.checkHeadNotLive(vol, 'shrink it');
        const resized = await this.withLiveChanges([vol.activeLayerId], () => this.resizeLocked(vol, sizeBytes));
        return this.describeVolume(resized);
      },
      { keys: [poolKey(pool)] },
    );
  }

  async renameVolume(pool: string, name: string, newName: string): Promise<VolumeInfo> {
    checkName('volume', newName);
    return this.withVolume(
      pool,
      name,
      async (vol) => {
        if (newName === vol.name) return this.describeVolume(vol);
        this.checkNotLive(vol, 'rename it (exports are named after it)');
        await this.checkNameFree(pool, newName);
        const renamed = { ...vol, name: newName };
        await this.catalog.put('volume', renamed);
        return this.describeVolume(renamed);
      },
      { keys: [poolKey(pool)] },
    );
  }

  async deleteVolume(pool: string, name: string, options: { force?: boolean } = {}): Promise<void> {
    await this.withVolume(pool, name, async (vol) => {
      this.checkNotLive(vol, 'delete it');
      const view = await this.view();
      const snapshots = view.snapshots.filter((s) => s.volumeId === vol.id);
      const clones = this.clonesOfVolume(vol, view);
      if (clones.length > 0) {
        throw new StorageError(
          'BUSY',
          `volume '${pool}/${name}' has clones (${clones.join(', ')}); flatten or delete them first`,
        );
      }
      if (snapshots.length > 0 && !options.force) {
        const them = snapshots.length === 1 ? 'it' : 'them';
        throw new StorageError('BUSY', `volume '${pool}/${name}' has ${countOf(snapshots.length, 'snapshot')}`, {
          fix: { option: 'force', text: `delete ${them} first, or pass {} to delete ${them} with the volume` },
        });
      }
      const layers = [...view.layers.values()].filter((l) => l.ownerVolumeId === vol.id);
      const intent = this.newIntent('volume-delete', `${pool}/${name}`, {});
      const ops: CatalogOp[] = [
        delOp('volume', vol.id),
        ...snapshots.map((s) => delOp('snapshot', s.id)),
        ...layers.map((l) => delOp('layer', l.id)),
      ];
      await this.runIntent(intent, async () => {
        await this.catalog.batch(this.commitOps(intent, ops, layers));
      });
    });
  }

  async copyVolume(pool: string, name: string, destPool: string, destName: string): Promise<JobInfo> {
    checkName('volume', destName);
    return this.withVolume(
      pool,
      name,
      async (vol) => {
        this.checkHeadNotLive(vol, 'copy it (copy a snapshot of it instead)');
        const dest = await this.requirePool(destPool);
        await this.checkNameFree(destPool, destName);
        await this.checkQuota(dest, vol.sizeBytes, `the copy '${destPool}/${destName}' of '${pool}/${name}'`);
        const release = this.reserve(destPool, destName, vol.sizeBytes);
        this.hold(vol.id, 'a copy job reads it');
        try {
          return await this.jobs.start('copy', `${pool}/${name}`, async (ctx) => {
            try {
              ctx.throwIfCancelled();
              await this.copyJob(vol.id, destPool, destName, ctx);
            } finally {
              this.unhold(vol.id);
              release();
            }
          });
        } catch (err) {
          this.unhold(vol.id);
          release();
          throw err;
        }
      },
      { keys: [poolKey(destPool)] },
    );
  }

  private async copyJob(volumeId: string, destPool: string, destName: string, ctx: JobContext): Promise<void> {
    const vol = await this.catalog.require('volume', volumeId, 'the source volume');
    const view = await this.view();
    const source = await openChain(this.paths, this.chainOf(view.layers, vol.activeLayerId), { writable: false });
    const volume: VolumeRecord = { id: newId(), pool: destPool, name: destName, sizeBytes: vol.sizeBytes, activeLayerId: newId(), createdAt: nowIso() };
    const layer = this.newLayer(volume.activeLayerId, destPool, volume.id, undefined);
    const intent = this.newIntent('copy', `${destPool}/${destName}`, { createFiles: [layer] });
    try {
      await this.runIntent(intent, async () => {
        await createLayerFile(this.paths.layer(layer), vol.sizeBytes);
        const dest = await openLayerAlone(this.paths.layer(layer), { writable: true });
        try {
          const plan = await this.dataPlan(source, 0, source.sizeBytes);
          ctx.setTotal(totalOf(plan));
          await this.copyPlan(source, dest, plan, ctx, 'skip');
        } finally {
          await dest.close();
        }
        await fsyncDir(this.paths.poolDir(destPool));
        await this.locks.run([poolKey(destPool)], async () => {
          await this.requirePool(destPool);
          await this.checkNameFree(destPool, destName, true);
          await this.catalog.batch(this.commitOps(intent, [putOp('volume', volume), putOp('layer', layer)]));
        });
      });
    } finally {
      await source.close();
    }
  }

  // =============================================================================================
  // Snapshots

  async createSnapshot(pool: string, volume: string, name: string): Promise<SnapshotInfo> {
    checkName('snapshot', name);
    return this.withVolume(pool, volume, async (vol) => {
      const snap = await this.createSnapshotLocked(vol, name);
      return this.describeSnapshot(snap);
    });
  }

  async listSnapshots(pool: string, volume: string): Promise<SnapshotInfo[]> {
    const vol = await this.volumeByName(pool, volume);
    const view = await this.view();
    const snaps = view.snapshots
      .filter((s) => s.volumeId === vol.id)
      .sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.name.localeCompare(b.name));
    return Promise.all(snaps.map((s) => this.describeSnapshot(s, view)));
  }

  async snapshotInfo(pool: string, volume: string, name: string): Promise<SnapshotInfo> {
    const vol = await this.volumeByName(pool, volume);
    return this.describeSnapshot(await this.snapshotByName(vol, name));
  }

  async renameSnapshot(pool: string, volume: string, name: string, newName: string): Promise<SnapshotInfo> {
    checkName('snapshot', newName);
    return this.withVolume(pool, volume, async (vol) => {
      const snap = await this.snapshotByName(vol, name);
      if (newName === name) return this.describeSnapshot(snap);
      if (this.live.has(liveKey({ volumeId: vol.id, snapshotId: snap.id }))) {
        throw new StorageError('BUSY', `snapshot '${pool}/${volume}@${name}' is exported; stop its exports to rename it (exports are named after it)`);
      }
      if (await this.findSnapshot(vol, newName)) {
        throw new StorageError('ALREADY_EXISTS', `snapshot '${pool}/${volume}@${newName}' already exists`);
      }
      const renamed = { ...snap, name: newName };
      await this.catalog.put('snapshot', renamed);
      return this.describeSnapshot(renamed);
    });
  }

  async rollbackSnapshot(pool: string, volume: string, name: string): Promise<VolumeInfo> {
    return this.withVolume(
      pool,
      volume,
      async (vol) => {
        const snap = await this.snapshotByName(vol, name);
        this.checkHeadNotLive(vol, 'roll it back (the guest would see its disk change under it)');
        if (snap.sizeBytes > vol.sizeBytes) {
          const what = `rolling '${pool}/${volume}' back to its ${formatSizeHuman(snap.sizeBytes)} snapshot '${name}'`;
          await this.checkQuota(await this.requirePool(pool), snap.sizeBytes, what, { volumeId: vol.id });
        }
        const view = await this.view();
        const oldActive = this.requireLayer(view.layers, vol.activeLayerId);
        const snapLayer = this.requireLayer(view.layers, snap.layerId);
        if ([...view.layers.values()].some((l) => l.backingLayerId === oldActive.id)) {
          throw new Error(`assertion failed: active layer ${oldActive.id} is some layer's backing file`);
        }
        const active = this.newLayer(newId(), vol.pool, vol.id, snapLayer);
        const updated: VolumeRecord = { ...vol, activeLayerId: active.id, sizeBytes: snap.sizeBytes };
        const intent = this.newIntent('rollback', `${pool}/${volume}@${name}`, { createFiles: [active] });
        await this.runIntent(intent, async () => {
          await createLayerFile(this.paths.layer(active), snap.sizeBytes, backingFileName(active, snapLayer));
          await fsyncDir(this.paths.poolDir(vol.pool));
          const ops = [putOp('layer', active), delOp('layer', oldActive.id), putOp('volume', updated)];
          await this.catalog.batch(this.commitOps(intent, ops, [oldActive]));
        });
        return this.describeVolume(updated);
      },
      { keys: [poolKey(pool)] },
    );
  }

  async deleteSnapshot(pool: string, volume: string, name: string): Promise<void> {
    await this.withVolume(pool, volume, async (vol) => {
      const snap = await this.snapshotByName(vol, name);
      if (snap.protected) {
        throw new StorageError('BUSY', `snapshot '${pool}/${volume}@${name}' is protected`, {
          fix: { operation: 'unprotectSnapshot', pool, volume, snapshot: name, text: 'unprotect it first with {}' },
        });
      }
      const exported = this.live.get(liveKey({ volumeId: vol.id, snapshotId: snap.id }));
      if (exported !== undefined) {
        throw new StorageError('BUSY', `snapshot '${pool}/${volume}@${name}' is exported; stop its exports first`);
      }
      await this.jobs.run('snapshot-delete', `${pool}/${volume}@${name}`, (ctx) => this.deleteSnapshotLocked(vol, snap, ctx));
    });
  }

  async protectSnapshot(pool: string, volume: string, name: string): Promise<SnapshotInfo> {
    return this.withVolume(pool, volume, async (vol) => {
      const snap = await this.snapshotByName(vol, name);
      const updated = { ...snap, protected: true };
      if (!snap.protected) await this.catalog.put('snapshot', updated);
      return this.describeSnapshot(updated);
    });
  }

  async unprotectSnapshot(pool: string, volume: string, name: string): Promise<SnapshotInfo> {
    return this.withVolume(pool, volume, async (vol) => {
      const snap = await this.snapshotByName(vol, name);
      const children = this.childrenOf(snap, await this.view());
      if (children.length > 0) {
        throw new StorageError(
          'BUSY',
          `snapshot '${pool}/${volume}@${name}' has clones (${children.join(', ')}); flatten or delete them first`,
        );
      }
      const updated = { ...snap, protected: false };
      if (snap.protected) await this.catalog.put('snapshot', updated);
      return this.describeSnapshot(updated);
    });
  }

  async setSnapshotLimit(pool: string, volume: string, limit: number | undefined): Promise<VolumeInfo> {
    const checked = checkLimit('snapshot limit', limit);
    return this.withVolume(pool, volume, async (vol) => {
      const count = (await this.catalog.list('snapshot')).filter((s) => s.volumeId === vol.id).length;
      if (checked !== undefined && count > checked) {
        throw new StorageError('BUSY', `volume '${pool}/${volume}' already has ${countOf(count, 'snapshot')}, more than the limit ${checked}; delete some first`);
      }
      const { snapshotLimit: _old, ...rest } = vol;
      const updated: VolumeRecord = checked === undefined ? rest : { ...rest, snapshotLimit: checked };
      await this.catalog.put('volume', updated);
      return this.describeVolume(updated);
    });
  }

  async cloneSnapshot(pool: string, volume: string, snapshot: string, destPool: string, destName: string): Promise<VolumeInfo> {
    checkName('volume', destName);
    const clone = await this.withVolume(
      pool,
      volume,
      async (vol) => {
        const snap = await this.snapshotByName(vol, snapshot);
        if (!snap.protected) {
          throw new StorageError('BUSY', `snapshot '${pool}/${volume}@${snapshot}' is not protected, and only protected snapshots can be cloned`, {
            fix: { operation: 'protectSnapshot', pool, volume, snapshot, text: 'protect it first with {}' },
          });
        }
        const dest = await this.requirePool(destPool);
        await this.checkNameFree(destPool, destName);
        await this.checkQuota(dest, snap.sizeBytes, `the clone '${destPool}/${destName}' of '${pool}/${volume}@${snapshot}'`);
        const view = await this.view();
        const base = this.requireLayer(view.layers, snap.layerId);
        const depth = this.chainOf(view.layers, base.id).length + 1;
        if (depth > this.maxChainDepth && this.chainDepthPolicy === 'refuse') {
          throw new StorageError(
            'LIMIT_EXCEEDED',
            `a clone of '${pool}/${volume}@${snapshot}' would have a chain of ${depth} layers (maxChainDepth ${this.maxChainDepth}); ` +
              `flatten '${pool}/${volume}' or delete some of its snapshots first`,
          );
        }
        const record: VolumeRecord = { id: newId(), pool: destPool, name: destName, sizeBytes: snap.sizeBytes, activeLayerId: newId(), createdAt: nowIso() };
        const layer = this.newLayer(record.activeLayerId, destPool, record.id, base);
        const intent = this.newIntent('clone', `${destPool}/${destName}`, { createFiles: [layer] });
        await this.runIntent(intent, async () => {
          await createLayerFile(this.paths.layer(layer), snap.sizeBytes, backingFileName(layer, base));
          await fsyncDir(this.paths.poolDir(destPool));
          await this.catalog.batch(this.commitOps(intent, [putOp('volume', record), putOp('layer', layer)]));
        });
        return { record, flatten: depth > this.maxChainDepth };
      },
      { keys: [poolKey(destPool)] },
    );
    if (clone.flatten) {
      // Policy 'flatten': the new clone would be too deep, so it is flattened before it is returned.
      await this.withVolume(destPool, destName, async (vol) => {
        await this.jobs.run('flatten', `${destPool}/${destName}`, (ctx) => this.flattenLocked(vol, ctx));
      });
    }
    return this.volumeInfo(destPool, destName);
  }

  async flattenVolume(pool: string, name: string): Promise<JobInfo> {
    return this.withVolume(pool, name, async (vol) => {
      if (this.boundaryLayers(vol, await this.view()).length === 0) {
        throw new StorageError('BUSY', `volume '${pool}/${name}' is not a clone; there is nothing to flatten`);
      }
      this.hold(vol.id, 'a flatten job runs on it');
      try {
        return await this.jobs.start('flatten', `${pool}/${name}`, async (ctx) => {
          try {
            ctx.throwIfCancelled();
            const current = await this.catalog.require('volume', vol.id, `volume '${pool}/${name}'`);
            // The hold keeps other changes away; the lock is taken only for the commit.
            await this.flattenLocked(current, ctx, { lockForCommit: true });
          } finally {
            this.unhold(vol.id);
          }
        });
      } catch (err) {
        this.unhold(vol.id);
        throw err;
      }
    });
  }

  // =============================================================================================
  // Data in and out

  async importVolume(
    pool: string,
    name: string,
    source: AsyncIterable<Uint8Array>,
    options: { format: 'raw' | 'qcow2'; sizeBytes?: number; transfer?: TransferEncoding; onProgress?: (doneBytes: number) => void; signal?: AbortSignal },
  ): Promise<VolumeInfo> {
    checkName('volume', name);
    if (options.format !== 'raw' && options.format !== 'qcow2') {
      throw new StorageError('INVALID_ARGUMENT', `unknown import format '${String(options.format)}': use raw or qcow2`);
    }
    const sizeBytes = options.sizeBytes === undefined ? undefined : checkVolumeSize(options.sizeBytes);
    const release = await this.locks.run([poolKey(pool)], async () => {
      const poolRecord = await this.requirePool(pool);
      await this.checkNameFree(pool, name);
      await this.checkQuota(poolRecord, sizeBytes ?? 0, `importing '${pool}/${name}'`);
      return this.reserve(pool, name, sizeBytes ?? 0);
    });
    try {
      const job = (ctx: JobContext) => this.importJob(pool, name, source, { ...options, sizeBytes }, ctx);
      const volume = await this.jobs.run('import', `${pool}/${name}`, job, options.signal ? { signal: options.signal } : {});
      return this.describeVolume(volume);
    } finally {
      release();
    }
  }

  private async importJob(
    pool: string,
    name: string,
    source: AsyncIterable<Uint8Array>,
    options: { format: 'raw' | 'qcow2'; sizeBytes: number | undefined; transfer?: TransferEncoding; onProgress?: (doneBytes: number) => void },
    ctx: JobContext,
  ): Promise<VolumeRecord> {
    const volumeId = newId();
    const layer = this.newLayer(newId(), pool, volumeId, undefined);
    const spool: FileRef = { pool, fileName: `${TEMP_PREFIX}import-${newId()}.qcow2` };
    const intent = this.newIntent('import', `${pool}/${name}`, { createFiles: options.format === 'qcow2' ? [layer, spool] : [layer] });
    if (options.sizeBytes !== undefined) ctx.setTotal(options.sizeBytes);
    return this.runIntent(intent, async () => {
      const sparse = options.transfer === 'sparse' ? await readSparseStream(source) : undefined;
      const sizeBytes =
        options.format === 'qcow2'
          ? await this.importQcow2(pool, name, this.paths.file(spool), this.paths.layer(layer), sparse ?? source, options, ctx)
          : sparse !== undefined
            ? await this.importSparseRaw(pool, name, this.paths.layer(layer), sparse, options, ctx)
            : await this.importRaw(pool, name, this.paths.layer(layer), source, options, ctx);
      await fsyncDir(this.paths.poolDir(pool));
      const volume: VolumeRecord = { id: volumeId, pool, name, sizeBytes, activeLayerId: layer.id, createdAt: nowIso() };
      await this.locks.run([poolKey(pool)], async () => {
        await this.checkQuota(await this.requirePool(pool), sizeBytes, `importing '${pool}/${name}'`, { reservation: `${pool}/${name}` });
        await this.catalog.batch(this.commitOps(intent, [putOp('volume', volume), putOp('layer', layer)]));
      });
      return volume;
    });
  }

  /** Raw bytes into a new layer file, skipping blocks of zeroes. Resolves to the volume size. */
  private async importRaw(
    pool: string,
    name: string,
    file: string,
    source: AsyncIterable<Uint8Array>,
    options: { sizeBytes: number | undefined; onProgress?: (doneBytes: number) => void },
    ctx: JobContext,
  ): Promise<number> {
    const fixed = options.sizeBytes;
    await createLayerFile(file, fixed ?? IMPORT_INITIAL_BYTES);
    const image = await openLayerAlone(file, { writable: true });
    try {
      const buf = allocAligned(COPY_CHUNK_BYTES);
      let fill = 0;
      let offset = 0;
      let received = 0;
      const flushBuffer = async () => {
        if (fill === 0) return;
        const end = offset + fill;
        if (fixed !== undefined && end > fixed) throw streamLongerThan(fixed);
        if (end > image.sizeBytes) {
          const grown = Math.max(image.sizeBytes * 2, alignUp(end, SECTOR_SIZE_BYTES));
          await this.checkImportQuota(pool, name, alignUp(end, SECTOR_SIZE_BYTES));
          await image.resize(grown);
        }
        await writeSparse(image, offset, buf.subarray(0, fill), 'skip');
        offset = end;
        fill = 0;
      };
      for await (const chunk of source) {
        ctx.throwIfCancelled();
        for (let pos = 0; pos < chunk.length; ) {
          const n = Math.min(buf.length - fill, chunk.length - pos);
          buf.set(chunk.subarray(pos, pos + n), fill);
          fill += n;
          pos += n;
          if (fill === buf.length) await flushBuffer();
        }
        received += chunk.length;
        ctx.addDone(chunk.length);
        options.onProgress?.(received);
      }
      ctx.throwIfCancelled();
      await flushBuffer();
      const sizeBytes = fixed ?? alignUp(received, SECTOR_SIZE_BYTES);
      if (sizeBytes === 0) {
        throw new StorageError('INVALID_ARGUMENT', 'the import stream is empty', { fix: { option: 'sizeBytes', text: 'give the size with {} to create an empty volume' } });
      }
      if (image.sizeBytes !== sizeBytes) await image.resize(sizeBytes, { allowShrink: true });
      return sizeBytes;
    } finally {
      await image.close();
    }
  }

  /** A raw image as a sparse stream: its size is known up front, and only its data is written. */
  private async importSparseRaw(
    pool: string,
    name: string,
    file: string,
    sparse: { sizeBytes: number; pieces: AsyncIterable<ContentPiece> },
    options: { sizeBytes: number | undefined; onProgress?: (doneBytes: number) => void },
    ctx: JobContext,
  ): Promise<number> {
    if (options.sizeBytes !== undefined && options.sizeBytes < sparse.sizeBytes) throw streamLongerThan(options.sizeBytes);
    const sizeBytes = checkVolumeSize(options.sizeBytes ?? alignUp(sparse.sizeBytes, SECTOR_SIZE_BYTES));
    await this.checkImportQuota(pool, name, sizeBytes);
    ctx.setTotal(sparse.sizeBytes);
    await createLayerFile(file, sizeBytes);
    await writePiecesToLayer(file, sparse.pieces, importProgress(ctx, options.onProgress));
    return sizeBytes;
  }

  /** Checks the pool's quota for an import growing to sizeBytes (its reservation counted once). */
  private checkImportQuota(pool: string, name: string, sizeBytes: number): Promise<void> {
    return this.locks.run([poolKey(pool)], async () => {
      await this.checkQuota(await this.requirePool(pool), sizeBytes, `importing '${pool}/${name}'`, { reservation: `${pool}/${name}` });
    });
  }

  /** A qcow2 stream: spooled to a temp file in the pool, opened with the engine, copied sparsely. */
  private async importQcow2(
    pool: string,
    name: string,
    spoolFile: string,
    file: string,
    source: AsyncIterable<Uint8Array> | { sizeBytes: number; pieces: AsyncIterable<ContentPiece> },
    options: { sizeBytes: number | undefined; onProgress?: (doneBytes: number) => void },
    ctx: JobContext,
  ): Promise<number> {
    const received = await spoolToFile(spoolFile, source, importProgress(ctx, options.onProgress));
    ctx.throwIfCancelled();
    // Damage found in the upload (at open or while copying) is the uploader's: InvalidImageError.
    const spooled = await openUploadedImage(spoolFile);
    const asUploadError = (err: unknown) => uploadedImageError(err, spoolFile);
    try {
      const info = spooled.info();
      if (info.backingFile !== undefined) {
        throw new StorageError(
          'INVALID_ARGUMENT',
          `the uploaded qcow2 image has backing file '${info.backingFile}'; convert it to a standalone image first (qemu-img convert)`,
        );
      }
      const virtual = alignUp(spooled.sizeBytes, SECTOR_SIZE_BYTES);
      if (options.sizeBytes !== undefined && options.sizeBytes < spooled.sizeBytes) {
        throw new StorageError('INVALID_ARGUMENT', `the size given, ${formatSizeHuman(options.sizeBytes)}, is smaller than the image's virtual size ${formatSizeHuman(spooled.sizeBytes)}`, {
          fix: { option: 'sizeBytes', text: 'give a size of at least the virtual size with {}, or none' },
        });
      }
      const sizeBytes = checkVolumeSize(options.sizeBytes ?? virtual);
      await this.checkImportQuota(pool, name, sizeBytes);
      await createLayerFile(file, sizeBytes);
      const dest = await openLayerAlone(file, { writable: true });
      try {
        const plan = await this.dataPlan(spooled, 0, spooled.sizeBytes).catch((err: unknown) => Promise.reject(asUploadError(err)));
        ctx.setTotal(received + totalOf(plan));
        await this.copyPlan(spooled, dest, plan, ctx, 'skip', asUploadError);
      } finally {
        await dest.close();
      }
      return sizeBytes;
    } finally {
      await spooled.close();
      await unlinkQuiet(spoolFile);
    }
  }

  async exportVolume(
    pool: string,
    name: string,
    options: { format: 'raw' | 'qcow2'; snapshot?: string; transfer?: TransferEncoding },
  ): Promise<{ sizeBytes: number; stream: AsyncIterable<Uint8Array> }> {
    const transfer = options.transfer ?? 'bytes';
    if (options.format !== 'raw' && options.format !== 'qcow2') {
      throw new StorageError('INVALID_ARGUMENT', `unknown export format '${String(options.format)}': use raw or qcow2`);
    }
    return this.withVolume(
      pool,
      name,
      async (vol) => {
        const layerId = options.snapshot === undefined ? vol.activeLayerId : (await this.snapshotByName(vol, options.snapshot)).layerId;
        if (options.snapshot === undefined) this.checkHeadNotLive(vol, 'export it here (export a snapshot of it, or read it over NBD)');
        const view = await this.view();
        const image = await openChain(this.paths, this.chainOf(view.layers, layerId), { writable: false });
        if (options.format === 'raw') {
          // A live volume stays held while it streams (its active layer must not change under the
          // reader); a snapshot's layers read the same whatever happens to the volume meanwhile.
          const live = options.snapshot === undefined;
          if (live) this.hold(vol.id, 'an export streams it');
          const stream = new ManagedStream(encodeContent(chainPieces(image), image.sizeBytes, transfer), async () => {
            try {
              await image.close();
            } finally {
              if (live) this.unhold(vol.id);
            }
          });
          return { sizeBytes: image.sizeBytes, stream };
        }
        // qcow2: convert into a standalone temp file (under the lock), then stream that file. The
        // file is unlinked as soon as it is open, so nothing is left behind whatever happens.
        const temp = path.join(this.paths.poolDir(vol.pool), `${TEMP_PREFIX}export-${newId()}.qcow2`);
        let exported: LocalHostFile | undefined;
        try {
          await this.jobs.run('export', `${pool}/${name}${options.snapshot === undefined ? '' : `@${options.snapshot}`}`, async (ctx) => {
            await createLayerFile(temp, image.sizeBytes);
            const dest = await openLayerAlone(temp, { writable: true });
            try {
              const plan = await this.dataPlan(image, 0, image.sizeBytes);
              ctx.setTotal(totalOf(plan));
              await this.copyPlan(image, dest, plan, ctx, 'skip');
            } finally {
              await dest.close();
            }
          });
          exported = await LocalHostFile.open(temp, { readOnly: true });
        } finally {
          await image.close();
          await unlinkQuiet(temp);
        }
        const opened = exported!;
        const sizeBytes = await opened.sizeBytes();
        return { sizeBytes, stream: new ManagedStream(encodeContent(filePieces(opened, sizeBytes), sizeBytes, transfer), () => opened.close()) };
      },
      { allowHeld: true },
    );
  }

  async du(pool: string, volume?: string): Promise<DuEntry[]> {
    await this.requirePool(pool);
    const view = await this.view();
    let volumes = view.volumes.filter((v) => v.pool === pool);
    if (volume !== undefined) {
      volumes = volumes.filter((v) => v.name === volume);
      if (volumes.length === 0) throw notFound(`volume '${pool}/${volume}' does not exist`);
    }
    volumes.sort((a, b) => a.name.localeCompare(b.name));
    const out: DuEntry[] = [];
    for (const vol of volumes) {
      const snaps = view.snapshots
        .filter((s) => s.volumeId === vol.id)
        .sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.name.localeCompare(b.name));
      for (const snap of snaps) {
        const layer = this.requireLayer(view.layers, snap.layerId);
        out.push({ name: `${pool}/${vol.name}@${snap.name}`, provisionedBytes: snap.sizeBytes, allocatedBytes: await allocatedBytesOf(this.paths.layer(layer)) });
      }
      const active = this.requireLayer(view.layers, vol.activeLayerId);
      out.push({ name: `${pool}/${vol.name}`, provisionedBytes: vol.sizeBytes, allocatedBytes: await allocatedBytesOf(this.paths.layer(active)) });
    }
    return out;
  }

  // =============================================================================================
  // Diff

  async diff(pool: string, volume: string, range: DiffRange): Promise<DiffExtent[]> {
    return this.withVolume(
      pool,
      volume,
      async (vol) => {
        if (range.toSnapshot === undefined) this.checkHeadNotLive(vol, 'diff against it (diff against a snapshot of it)');
        const point = await this.diffPoints(vol, range);
        const image = await openChain(this.paths, point.chain, { writable: false });
        try {
          return await diffExtents(image, point.pathDepth, point.fromSizeBytes);
        } finally {
          await image.close();
        }
      },
      { allowHeld: true },
    );
  }

  async exportDiff(pool: string, volume: string, range: DiffRange): Promise<AsyncIterable<Uint8Array>> {
    return this.withVolume(
      pool,
      volume,
      async (vol) => {
        if (range.toSnapshot === undefined) this.checkHeadNotLive(vol, 'export a diff of it (diff to a snapshot of it)');
        const point = await this.diffPoints(vol, range);
        const image = await openChain(this.paths, point.chain, { writable: false });
        const live = range.toSnapshot === undefined;
        let extents: DiffExtent[];
        try {
          extents = await diffExtents(image, point.pathDepth, point.fromSizeBytes);
        } catch (err) {
          await image.close();
          throw err;
        }
        if (live) this.hold(vol.id, 'a diff export streams it');
        const header = encodeDiffHeader({ sizeBytes: image.sizeBytes, from: range.fromSnapshot ?? null, to: range.toSnapshot ?? null });
        return new ManagedStream(diffStream(image, header, extents), async () => {
          try {
            await image.close();
          } finally {
            if (live) this.unhold(vol.id);
          }
        });
      },
      { allowHeld: true },
    );
  }

  async importDiff(pool: string, volume: string, source: AsyncIterable<Uint8Array>): Promise<VolumeInfo> {
    return this.withVolume(
      pool,
      volume,
      async (vol) => {
        this.checkHeadNotLive(vol, 'apply a diff to it');
        const reader = new ByteReader(source);
        try {
          const header = await readDiffHeader(reader);
          if (header.from !== null) await this.snapshotByName(vol, header.from);
          if (header.to !== null) {
            checkName('snapshot', header.to);
            if (await this.findSnapshot(vol, header.to)) {
              throw new StorageError('ALREADY_EXISTS', `snapshot '${pool}/${volume}@${header.to}' already exists`);
            }
            await this.ensureSnapshotAllowed(vol, { dryRun: true });
          }
          checkVolumeSize(header.sizeBytes);
          let current = vol;
          if (header.sizeBytes !== vol.sizeBytes) current = await this.resizeLocked(vol, header.sizeBytes);
          const view = await this.view();
          const image = await openChain(this.paths, this.chainOf(view.layers, current.activeLayerId), { writable: true });
          try {
            await applyDiffRecords(reader, image, header.sizeBytes);
            await image.flush();
          } finally {
            await image.close();
          }
          if (header.to !== null) await this.createSnapshotLocked(current, header.to);
          return this.describeVolume(await this.catalog.require('volume', vol.id));
        } finally {
          await reader.close().catch(() => {});
        }
      },
      { keys: [poolKey(pool)] },
    );
  }

  // =============================================================================================
  // Jobs

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

  // =============================================================================================
  // Recovery

  /**
   * Start-up: marks interrupted jobs failed, rolls back or finishes leftover intents, then deletes
   * orphan files (layer files no record references, temp files) and reports what it could not fix.
   * Call once, before serving anything.
   */
  async recover(): Promise<RecoveryReport> {
    const report: RecoveryReport = { jobsMarkedFailed: 0, intentsRolledBack: [], intentsFinished: [], orphansDeleted: [], problems: [] };
    await fs.mkdir(this.paths.poolsDir, { recursive: true });
    report.jobsMarkedFailed = await this.jobs.recover();
    const intents = (await this.catalog.list('intent')).sort((a, b) => b.createdAt.localeCompare(a.createdAt));
    for (const intent of intents) {
      const label = `${intent.kind} ${intent.target}`;
      try {
        await this.recoverIntent(intent, label, report);
      } catch (err) {
        report.problems.push(`${label}: recovery failed, will retry at the next start: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    await this.scanFiles(report);
    return report;
  }

  private async recoverIntent(intent: IntentRecord, label: string, report: RecoveryReport): Promise<void> {
    if (intent.phase === 'committed') {
      await this.finishIntent(intent, report.problems);
      report.intentsFinished.push(label);
    } else if (intent.resize) {
      const layer = await this.catalog.get('layer', intent.resize.layerId);
      if (layer) await this.repairLeaks([layer.id], new Map([[layer.id, layer]]), report.problems);
      await this.finishResize(intent);
      report.intentsFinished.push(label);
    } else {
      await this.rollbackIntent(intent, report.problems);
      report.intentsRolledBack.push(label);
    }
  }

  /** Deletes files in the pools folder that no record references; notes missing layer files. */
  private async scanFiles(report: RecoveryReport): Promise<void> {
    const pools = new Set((await this.catalog.list('pool')).map((p) => p.name));
    const layers = await this.catalog.list('layer');
    const known = new Set(layers.map((l) => `${l.pool}/${l.fileName}`));
    for (const entry of await fs.readdir(this.paths.poolsDir, { withFileTypes: true })) {
      const dir = path.join(this.paths.poolsDir, entry.name);
      if (!entry.isDirectory()) {
        report.problems.push(`unexpected file ${dir} (left alone)`);
        continue;
      }
      const isPool = pools.has(entry.name);
      let foreign = 0;
      for (const file of await fs.readdir(dir)) {
        if (isPool && known.has(`${entry.name}/${file}`)) continue;
        if (LAYER_FILE_PATTERN.test(file) || file.startsWith(TEMP_PREFIX)) {
          await unlinkQuiet(path.join(dir, file));
          report.orphansDeleted.push(path.join(dir, file));
        } else {
          foreign++;
          report.problems.push(`unknown file ${path.join(dir, file)} (left alone)`);
        }
      }
      if (!isPool && foreign === 0) {
        await fs.rmdir(dir);
        report.orphansDeleted.push(dir);
      }
      await fsyncDir(dir).catch(() => {});
    }
    for (const pool of pools) await fs.mkdir(this.paths.poolDir(pool), { recursive: true });
    for (const layer of layers) {
      try {
        await fs.access(this.paths.layer(layer));
      } catch {
        report.problems.push(`layer file ${this.paths.layer(layer)} of volume ${layer.ownerVolumeId} is missing`);
      }
    }
  }

  /** Undoes a prepared intent: layer headers back to what the catalog says, created files deleted. */
  private async rollbackIntent(intent: IntentRecord, problems: string[] = []): Promise<void> {
    const layers = new Map((await this.catalog.list('layer')).map((l) => [l.id, l]));
    for (const id of intent.rebaseLayerIds) {
      const layer = layers.get(id);
      if (!layer) continue;
      const backing = layer.backingLayerId === undefined ? undefined : layers.get(layer.backingLayerId);
      const expected = backing === undefined ? undefined : backingFileName(layer, backing);
      const image = await openLayerAlone(this.paths.layer(layer), { writable: true });
      try {
        if (image.info().backingFile !== expected) await image.setBackingFile(expected, expected === undefined ? undefined : 'qcow2');
      } finally {
        await image.close();
      }
    }
    await this.repairLeaks([...intent.writeLayerIds, ...intent.rebaseLayerIds, ...(intent.resize ? [intent.resize.layerId] : [])], layers, problems);
    const dirs = new Set<string>();
    for (const file of intent.createFiles) {
      await unlinkQuiet(this.paths.file(file));
      dirs.add(this.paths.poolDir(file.pool));
    }
    for (const dir of dirs) await fsyncDir(dir).catch(() => {});
    await this.catalog.del('intent', intent.id);
  }

  /** Completes a committed intent: deletes the files it meant to delete. */
  private async finishIntent(intent: IntentRecord, problems?: string[]): Promise<void> {
    if (intent.phase !== 'committed') throw new Error(`assertion failed: intent ${intent.id} finished before it committed`);
    const dirs = new Set<string>();
    for (const file of intent.deleteFiles) {
      await unlinkQuiet(this.paths.file(file));
      dirs.add(this.paths.poolDir(file.pool));
    }
    for (const dir of dirs) await fsyncDir(dir).catch(() => {});
    if (problems) {
      const layers = new Map((await this.catalog.list('layer')).map((l) => [l.id, l]));
      await this.repairLeaks([...intent.writeLayerIds, ...intent.rebaseLayerIds, ...(intent.resize ? [intent.resize.layerId] : [])], layers, problems);
    }
    await this.catalog.del('intent', intent.id);
  }

  /** Layers written when a crash hit may hold leaked clusters: check and repair them. */
  private async repairLeaks(ids: string[], layers: Map<string, LayerRecord>, problems: string[]): Promise<void> {
    for (const id of new Set(ids)) {
      const layer = layers.get(id);
      if (!layer) continue;
      const file = this.paths.layer(layer);
      try {
        const image = await openLayerAlone(file, { writable: true });
        try {
          const result = await image.check('leaks');
          if (result.corruptions > 0) problems.push(`${file}: ${countOf(result.corruptions, 'corruption')} found; repair with 'strata img check -r all'`);
        } finally {
          await image.close();
        }
      } catch (err) {
        problems.push(`${file}: cannot check it: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
  }

  // =============================================================================================
  // Operations with the volume lock held

  /** Resizes the volume's active layer (zeroing what a larger backing file would show). */
  private async resizeLocked(vol: VolumeRecord, sizeBytes: number): Promise<VolumeRecord> {
    if (sizeBytes === vol.sizeBytes) return vol;
    if (sizeBytes > vol.sizeBytes) {
      await this.checkQuota(await this.requirePool(vol.pool), sizeBytes, `growing '${vol.pool}/${vol.name}' to ${formatSizeHuman(sizeBytes)}`, { volumeId: vol.id });
    }
    const intent = this.newIntent('resize', `${vol.pool}/${vol.name}`, {
      resize: { volumeId: vol.id, layerId: vol.activeLayerId, fromBytes: vol.sizeBytes, toBytes: sizeBytes },
    });
    await this.runIntent(intent, () => this.finishResize(intent));
    return { ...vol, sizeBytes };
  }

  /**
   * Does (or, after a crash, finishes) a resize intent: the active layer to the new size, zeroes
   * where needed, then the volume record and the intent's removal in one batch. Idempotent.
   */
  private async finishResize(intent: IntentRecord): Promise<void> {
    const resize = intent.resize!;
    const vol = await this.catalog.get('volume', resize.volumeId);
    if (!vol || vol.activeLayerId !== resize.layerId) {
      await this.catalog.del('intent', intent.id);
      return;
    }
    const view = await this.view();
    const image = await openChain(this.paths, this.chainOf(view.layers, resize.layerId), { writable: true });
    try {
      await resizeImage(image, resize.toBytes, resize.fromBytes);
    } finally {
      await image.close();
    }
    await this.catalog.batch(this.commitOps(intent, [putOp('volume', { ...vol, sizeBytes: resize.toBytes })]));
  }

  private async checkSnapshotLimit(vol: VolumeRecord): Promise<void> {
    if (vol.snapshotLimit === undefined) return;
    const count = (await this.catalog.list('snapshot')).filter((s) => s.volumeId === vol.id).length;
    if (count >= vol.snapshotLimit) {
      throw new StorageError('LIMIT_EXCEEDED', `volume '${vol.pool}/${vol.name}' has ${countOf(count, 'snapshot')}, its limit`, {
        fix: { operation: 'setSnapshotLimit', pool: vol.pool, volume: vol.name, text: 'delete one, or raise the limit with {}' },
      });
    }
  }

  /**
   * Snapshot limit and chain depth (flattening a clone first under policy 'flatten'). With dryRun,
   * only throws what a snapshot would be refused for, and flattens nothing.
   */
  private async ensureSnapshotAllowed(vol: VolumeRecord, options: { dryRun?: boolean } = {}): Promise<VolumeRecord> {
    await this.checkSnapshotLimit(vol);
    let view = await this.view();
    let depth = this.chainOf(view.layers, vol.activeLayerId).length + 1;
    if (depth <= this.maxChainDepth) return vol;
    if (this.chainDepthPolicy === 'flatten' && this.boundaryLayers(vol, view).length > 0) {
      if (options.dryRun) return vol;
      await this.jobs.run('flatten', `${vol.pool}/${vol.name}`, (ctx) => this.flattenLocked(vol, ctx));
      view = await this.view();
      depth = this.chainOf(view.layers, vol.activeLayerId).length + 1;
      if (depth <= this.maxChainDepth) return (await this.catalog.get('volume', vol.id)) ?? vol;
    }
    const isClone = this.boundaryLayers(vol, view).length > 0;
    throw new StorageError(
      'LIMIT_EXCEEDED',
      `a snapshot would make the chain of '${vol.pool}/${vol.name}' ${depth} layers deep (maxChainDepth ${this.maxChainDepth}); ` +
        (isClone ? 'flatten the volume or delete some of its snapshots first' : 'delete some of its snapshots first'),
    );
  }

  private async createSnapshotLocked(vol: VolumeRecord, name: string): Promise<SnapshotRecord> {
    checkName('snapshot', name);
    if (await this.findSnapshot(vol, name)) {
      throw new StorageError('ALREADY_EXISTS', `snapshot '${vol.pool}/${vol.name}@${name}' already exists`);
    }
    const current = await this.ensureSnapshotAllowed(vol);
    const view = await this.view();
    const frozen = this.requireLayer(view.layers, current.activeLayerId);
    const active = this.newLayer(newId(), current.pool, current.id, frozen);
    const snap: SnapshotRecord = {
      id: newId(),
      volumeId: current.id,
      pool: current.pool,
      name,
      layerId: frozen.id,
      sizeBytes: current.sizeBytes,
      protected: false,
      createdAt: nowIso(),
    };
    const intent = this.newIntent('snapshot-create', `${current.pool}/${current.name}@${name}`, { createFiles: [active] });
    // An export of the volume is paused (its requests in flight complete, its chain is flushed and
    // closed) while the new active layer goes on top, then reopened on it: the snapshot holds
    // exactly the writes completed before it.
    await this.withLiveChanges([frozen.id], () => this.runIntent(intent, async () => {
      // The frozen layer is closed (no writer has it open), so everything written is already durable.
      await createLayerFile(this.paths.layer(active), current.sizeBytes, backingFileName(active, frozen));
      await fsyncDir(this.paths.poolDir(current.pool));
      await this.catalog.batch(
        this.commitOps(intent, [
          putOp('layer', { ...frozen, frozen: true }),
          putOp('layer', active),
          putOp('snapshot', snap),
          putOp('volume', { ...current, activeLayerId: active.id }),
        ]),
      );
    }));
    return snap;
  }

  /**
   * Deletes snapshot S (layer L): each child layer C of L gets L's data copied up where C has
   * none, then C is rebased onto L's parent G; then L goes. What every layer reads is unchanged.
   */
  private async deleteSnapshotLocked(vol: VolumeRecord, snap: SnapshotRecord, ctx: JobContext): Promise<void> {
    const view = await this.view();
    const layer = this.requireLayer(view.layers, snap.layerId);
    const children = [...view.layers.values()].filter((l) => l.backingLayerId === layer.id);
    const foreign = children.filter((c) => c.ownerVolumeId !== vol.id);
    if (foreign.length > 0) {
      throw new StorageError('BUSY', `snapshot '${vol.pool}/${vol.name}@${snap.name}' has clones; flatten or delete them first`);
    }
    const parent = layer.backingLayerId === undefined ? undefined : this.requireLayer(view.layers, layer.backingLayerId);
    const ids = children.map((c) => c.id);
    const intent = this.newIntent('snapshot-delete', `${vol.pool}/${vol.name}@${snap.name}`, { rebaseLayerIds: ids, writeLayerIds: ids });
    let totalBytes = 0;
    // Exports whose chains hold a rewritten layer pause for the whole merge (their requests wait).
    await this.withLiveChanges([layer.id, ...ids], () => this.runIntent(intent, async () => {
      for (const child of children) {
        ctx.throwIfCancelled();
        const image = await openChain(this.paths, this.chainOf(view.layers, child.id), { writable: true });
        try {
          const merged = backingOf(image)!;
          const parentSize = backingOf(merged)?.sizeBytes ?? 0;
          const plan: PlanStep[] = [];
          await forEachWindow(0, image.sizeBytes, async (start, end) => {
            for (const u of await layerMap(image, start, end)) {
              if (u.kind !== 'unallocated') continue;
              const uEnd = u.offset + u.length;
              const inMerged = Math.min(uEnd, merged.sizeBytes);
              if (u.offset < inMerged) {
                for (const x of await layerMap(merged, u.offset, inMerged)) {
                  if (x.kind === 'data') plan.push({ offset: x.offset, length: x.length, kind: 'data' });
                  else if (x.kind === 'zero') plan.push({ offset: x.offset, length: x.length, kind: 'zero' });
                }
              }
              // Past L's end C read zeroes; G may be longer and would show its data there.
              const zeroStart = Math.max(u.offset, merged.sizeBytes);
              const zeroEnd = Math.min(uEnd, parentSize);
              if (zeroStart < zeroEnd) plan.push({ offset: zeroStart, length: zeroEnd - zeroStart, kind: 'zero' });
            }
          });
          totalBytes += totalOfKind(plan, 'data');
          ctx.setTotal(totalBytes);
          await this.copyPlan(merged, image, plan, ctx, 'write-zeroes');
          await image.flush();
          ctx.throwIfCancelled();
          await image.setBackingFile(parent === undefined ? undefined : backingFileName(child, parent), parent === undefined ? undefined : 'qcow2');
        } finally {
          await image.close();
        }
      }
      await fsyncDir(this.paths.poolDir(vol.pool));
      const ops: CatalogOp[] = [delOp('snapshot', snap.id), delOp('layer', layer.id)];
      for (const child of children) {
        const { backingLayerId: _old, ...rest } = child;
        ops.push(putOp('layer', parent === undefined ? rest : { ...rest, backingLayerId: parent.id }));
      }
      await this.catalog.batch(this.commitOps(intent, ops, [layer]));
    }));
  }

  /**
   * Flattens a clone: every layer of the volume whose backing layer belongs to another volume gets
   * the data its backing chain supplies copied up, then loses its backing file.
   */
  private async flattenLocked(vol: VolumeRecord, ctx: JobContext, options: { lockForCommit?: boolean } = {}): Promise<void> {
    const view = await this.view();
    const boundary = this.boundaryLayers(vol, view);
    if (boundary.length === 0) return;
    const ids = boundary.map((l) => l.id);
    const intent = this.newIntent('flatten', `${vol.pool}/${vol.name}`, { rebaseLayerIds: ids, writeLayerIds: ids });
    // Exports of the volume pause for the whole copy-up (their requests wait; see docs/daemon.md).
    await this.withLiveChanges(ids, () => this.runIntent(intent, async () => {
      const images: { layer: LayerRecord; image: Qcow2Image; plan: PlanStep[] }[] = [];
      try {
        for (const layer of boundary) {
          const image = await openChain(this.paths, this.chainOf(view.layers, layer.id), { writable: true });
          images.push({ layer, image, plan: [] });
          const entry = images[images.length - 1]!;
          const backing = backingOf(image)!;
          await forEachWindow(0, image.sizeBytes, async (start, end) => {
            for (const u of await layerMap(image, start, end)) {
              if (u.kind !== 'unallocated') continue;
              for (const x of await chainMap(backing, u.offset, u.offset + u.length)) if (x.kind === 'data') entry.plan.push(x);
            }
          });
        }
        ctx.setTotal(images.reduce((sum, e) => sum + totalOf(e.plan), 0));
        for (const { image, plan } of images) {
          await this.copyPlan(backingOf(image)!, image, plan, ctx, 'skip');
          await image.flush();
        }
        ctx.throwIfCancelled();
        // Headers and catalog change together under the volume's lock, so that nothing opening the
        // chain (an export, a diff) sees one without the other.
        const commit = async () => {
          for (const { image } of images) await image.setBackingFile(undefined, undefined);
          const ops = boundary.map((layer) => {
            const { backingLayerId: _old, ...rest } = layer;
            return putOp('layer', rest);
          });
          await this.catalog.batch(this.commitOps(intent, ops));
        };
        if (options.lockForCommit) await this.locks.run([volKey(vol.id)], commit);
        else await commit();
      } finally {
        for (const { image } of images) await image.close();
      }
    }));
  }

  // =============================================================================================
  // Copy plans

  /** The data extents of what `image`'s chain reads over [start, end) (zeroes need no copy). */
  private async dataPlan(image: Qcow2Image, start: number, end: number): Promise<PlanStep[]> {
    const plan: PlanStep[] = [];
    await forEachWindow(start, end - start, async (s, e) => {
      for (const x of await chainMap(image, s, e)) if (x.kind === 'data') plan.push(x);
    });
    return plan;
  }

  /**
   * Copies plan steps from `source` (as its chain reads) into `dest`; 'zero' steps write zeroes.
   * sourceError maps failures to read the source (an upload's damage is not the pool's).
   */
  private async copyPlan(
    source: Qcow2Image,
    dest: Qcow2Image,
    plan: PlanStep[],
    ctx: JobContext,
    zeroBlocks: 'skip' | 'write-zeroes',
    sourceError?: (err: unknown) => unknown,
  ): Promise<void> {
    const buffer = copyBuffer();
    const readSource = sourceError
      ? (offset: number, buf: Uint8Array) => source.read(offset, buf).catch((err: unknown) => Promise.reject(sourceError(err)))
      : (offset: number, buf: Uint8Array) => source.read(offset, buf);
    for (const step of plan) {
      ctx.throwIfCancelled();
      await yieldNowAndThen();
      if (step.kind === 'zero') {
        await dest.writeZeroes(step.offset, step.length);
        continue;
      }
      await copyRange(readSource, dest, step.offset, step.length, {
        signal: ctx.signal,
        onBytes: (n) => ctx.addDone(n),
        zeroBlocks,
      }, buffer);
    }
  }

  // =============================================================================================
  // Intents

  private newIntent(
    kind: string,
    target: string,
    parts: { createFiles?: FileRef[]; rebaseLayerIds?: string[]; writeLayerIds?: string[]; resize?: IntentRecord['resize'] },
  ): IntentRecord {
    return {
      id: newId(),
      kind,
      phase: 'prepared',
      target,
      createFiles: (parts.createFiles ?? []).map((f) => ({ pool: f.pool, fileName: f.fileName })),
      deleteFiles: [],
      rebaseLayerIds: parts.rebaseLayerIds ?? [],
      writeLayerIds: parts.writeLayerIds ?? [],
      ...(parts.resize ? { resize: parts.resize } : {}),
      createdAt: nowIso(),
    };
  }

  /**
   * The catalog batch that ends an operation: its record changes plus, atomically, either the
   * intent's removal or (when files remain to delete) the intent marked committed.
   */
  private commitOps(intent: IntentRecord, ops: CatalogOp[], deleteFiles: FileRef[] = []): CatalogOp[] {
    if (deleteFiles.length === 0) return [...ops, delOp('intent', intent.id)];
    const committed: IntentRecord = {
      ...intent,
      phase: 'committed',
      deleteFiles: deleteFiles.map((f) => ({ pool: f.pool, fileName: f.fileName })),
    };
    return [...ops, putOp('intent', committed)];
  }

  /**
   * Writes the intent, runs the work (which ends with a commitOps batch), then finishes a committed
   * intent. If the work fails before its batch landed, the intent is rolled back here (and, should
   * that fail too, by recover() at the next start).
   */
  private async runIntent<T>(intent: IntentRecord, work: () => Promise<T>): Promise<T> {
    await this.catalog.put('intent', intent);
    let result: T;
    try {
      result = await work();
    } catch (err) {
      const current = await this.catalog.get('intent', intent.id).catch(() => undefined);
      if (current?.phase === 'committed') await this.finishIntent(current).catch(() => {});
      // A resize cannot be undone (a shrink may have dropped data): finish it, or leave it to recover().
      else if (current?.resize) await this.finishResize(current).catch(() => {});
      else if (current) await this.rollbackIntent(current).catch(() => {});
      throw err;
    }
    const current = await this.catalog.get('intent', intent.id);
    if (current) await this.finishIntent(current);
    return result;
  }

  // =============================================================================================
  // Lookups and descriptions

  private async view(): Promise<CatalogView> {
    const [volumes, layers, snapshots] = await Promise.all([
      this.catalog.list('volume'),
      this.catalog.list('layer'),
      this.catalog.list('snapshot'),
    ]);
    return { volumes, layers: new Map(layers.map((l) => [l.id, l])), snapshots };
  }

  private async requirePool(name: string): Promise<PoolRecord> {
    const pool = await this.catalog.get('pool', name);
    if (!pool) throw notFound(`pool '${name}' does not exist`);
    return pool;
  }

  private async volumeByName(pool: string, name: string): Promise<VolumeRecord> {
    await this.requirePool(pool);
    const vol = (await this.catalog.list('volume')).find((v) => v.pool === pool && v.name === name);
    if (!vol) throw notFound(`volume '${pool}/${name}' does not exist`);
    return vol;
  }

  private async findSnapshot(vol: VolumeRecord, name: string): Promise<SnapshotRecord | undefined> {
    return (await this.catalog.list('snapshot')).find((s) => s.volumeId === vol.id && s.name === name);
  }

  private async snapshotByName(vol: VolumeRecord, name: string): Promise<SnapshotRecord> {
    const snap = await this.findSnapshot(vol, name);
    if (!snap) throw notFound(`snapshot '${vol.pool}/${vol.name}@${name}' does not exist`);
    return snap;
  }

  private requireLayer(layers: Map<string, LayerRecord>, id: string): LayerRecord {
    const layer = layers.get(id);
    if (!layer) throw new StorageError('CORRUPT', `the catalog references layer ${id}, which has no record`);
    return layer;
  }

  /** The chain from layerId down (top first), as the catalog records it. */
  private chainOf(layers: Map<string, LayerRecord>, layerId: string): LayerRecord[] {
    const chain: LayerRecord[] = [];
    const seen = new Set<string>();
    for (let id: string | undefined = layerId; id !== undefined; ) {
      if (seen.has(id)) throw new StorageError('CORRUPT', `the catalog's chain of layer ${layerId} loops at ${id}`);
      seen.add(id);
      const layer = this.requireLayer(layers, id);
      chain.push(layer);
      id = layer.backingLayerId;
    }
    return chain;
  }

  /** Layers of vol backed by another volume's layer: non-empty exactly when vol is a clone. */
  private boundaryLayers(vol: VolumeRecord, view: CatalogView): LayerRecord[] {
    return [...view.layers.values()].filter((l) => {
      if (l.ownerVolumeId !== vol.id || l.backingLayerId === undefined) return false;
      return view.layers.get(l.backingLayerId)?.ownerVolumeId !== vol.id;
    });
  }

  /** "pool/name" of the volumes that have a layer backed by one of vol's layers. */
  private clonesOfVolume(vol: VolumeRecord, view: CatalogView): string[] {
    const owners = new Set<string>();
    for (const layer of view.layers.values()) {
      if (layer.ownerVolumeId === vol.id || layer.backingLayerId === undefined) continue;
      if (view.layers.get(layer.backingLayerId)?.ownerVolumeId === vol.id) owners.add(layer.ownerVolumeId);
    }
    return this.volumeNames(owners, view);
  }

  /** "pool/name" of the clones of a snapshot. */
  private childrenOf(snap: SnapshotRecord, view: CatalogView): string[] {
    const owners = new Set<string>();
    for (const layer of view.layers.values()) {
      if (layer.backingLayerId === snap.layerId && layer.ownerVolumeId !== snap.volumeId) owners.add(layer.ownerVolumeId);
    }
    return this.volumeNames(owners, view);
  }

  private volumeNames(ids: Set<string>, view: CatalogView): string[] {
    return view.volumes
      .filter((v) => ids.has(v.id))
      .map((v) => `${v.pool}/${v.name}`)
      .sort();
  }

  private async checkNameFree(pool: string, name: string, ownReservation = false): Promise<void> {
    const taken = (await this.catalog.list('volume')).some((v) => v.pool === pool && v.name === name);
    if (taken || (!ownReservation && this.reservations.has(`${pool}/${name}`))) {
      throw new StorageError('ALREADY_EXISTS', `volume '${pool}/${name}' already exists`);
    }
  }

  /** Refuses (LIMIT_EXCEEDED) a change that takes the pool past its quota (quota.ts). */
  private async checkQuota(pool: PoolRecord, sizeBytes: number, what: string, replaces: QuotaChange['replaces'] = {}): Promise<void> {
    if (pool.quotaBytes !== undefined) checkPoolQuota(pool, await this.catalog.list('volume'), this.reservations, { sizeBytes, what, replaces });
  }

  /** Reserves a volume name (and its size, for quotas) while an import or copy creates it. */
  private reserve(pool: string, name: string, sizeBytes: number): () => void {
    const key = `${pool}/${name}`;
    this.reservations.set(key, { pool, name, sizeBytes });
    let released = false;
    return () => {
      if (!released) this.reservations.delete(key);
      released = true;
    };
  }

  // =============================================================================================
  // Live devices (exports)

  /**
   * Opens a volume (read-write unless readOnly) or one of its snapshots (always read-only) for an
   * export. Every export of the same volume or snapshot shares one open chain. The device stays
   * valid across snapshot create, snapshot delete and flatten (it pauses while they change its
   * files); while the volume's head is exported, operations that would change what the guest sees
   * or read the head under it (rollback, delete, shrink, copy, export, diffs to the head) are BUSY.
   */
  async openDevice(pool: string, volume: string, options: { snapshot?: string; readOnly?: boolean } = {}): Promise<LiveDevice> {
    return this.withVolume(pool, volume, async (vol) => {
      const snap = options.snapshot === undefined ? undefined : await this.snapshotByName(vol, options.snapshot);
      const target: LiveTarget = { volumeId: vol.id, snapshotId: snap?.id };
      const key = liveKey(target);
      let live = this.live.get(key);
      if (live === undefined) {
        // A daemon killed while the volume was exported read-write leaves, at worst, leaked
        // clusters in its active layer (the write ordering guarantees no more): reclaim them
        // before serving it again. Nothing else has the layer open (we hold the volume's lock).
        if (snap === undefined) await this.repairLeaks([vol.activeLayerId], (await this.view()).layers, []);
        const opened = await this.openLive(target);
        live = new LiveVolume(target, snap === undefined, opened, (t) => this.openLive(t), () => {
          if (this.live.get(key) === live) this.live.delete(key);
        });
        this.live.set(key, live);
      }
      return live.handle(options.readOnly === true || snap !== undefined);
    });
  }

  /** The chain a live target is now, opened (the head writable). */
  private async openLive(target: LiveTarget): Promise<{ image: Qcow2Image; layerIds: string[] }> {
    const vol = await this.catalog.get('volume', target.volumeId);
    if (!vol) throw notFound(`volume ${target.volumeId} no longer exists`);
    let layerId = vol.activeLayerId;
    if (target.snapshotId !== undefined) {
      const snap = await this.catalog.get('snapshot', target.snapshotId);
      if (!snap) throw notFound(`snapshot ${target.snapshotId} no longer exists`);
      layerId = snap.layerId;
    }
    const view = await this.view();
    const chain = this.chainOf(view.layers, layerId);
    const image = await openChain(this.paths, chain, { writable: target.snapshotId === undefined });
    return { image, layerIds: chain.map((l) => l.id) };
  }

  /** Pauses the exports whose chains hold any of these layers while fn changes them. */
  private async withLiveChanges<T>(layerIds: readonly string[], fn: () => Promise<T>): Promise<T> {
    const ids = new Set(layerIds);
    const affected = [...this.live.values()].filter((l) => l.layerIds.some((id) => ids.has(id)));
    const paused: LiveVolume[] = [];
    try {
      for (const live of affected) {
        paused.push(live); // resumed even if its pause fails (its requests must not wait forever)
        await live.pause();
      }
      return await fn();
    } finally {
      for (const live of paused) await live.resume();
    }
  }

  private checkHeadNotLive(vol: VolumeRecord, what: string): void {
    const live = this.live.get(liveKey({ volumeId: vol.id, snapshotId: undefined }));
    if (live !== undefined) {
      throw new StorageError('BUSY', `volume '${vol.pool}/${vol.name}' is exported; stop its exports to ${what}`);
    }
  }

  private checkNotLive(vol: VolumeRecord, what: string): void {
    for (const live of this.live.values()) {
      if (live.target.volumeId === vol.id) {
        throw new StorageError('BUSY', `volume '${vol.pool}/${vol.name}' (or a snapshot of it) is exported; stop its exports to ${what}`);
      }
    }
  }

  private hold(volumeId: string, reason: string): void {
    const hold = this.holds.get(volumeId);
    if (hold) hold.count++;
    else this.holds.set(volumeId, { reason, count: 1 });
  }

  private unhold(volumeId: string): void {
    const hold = this.holds.get(volumeId);
    if (!hold) return;
    if (--hold.count === 0) this.holds.delete(volumeId);
  }

  private checkNotHeld(vol: VolumeRecord): void {
    const hold = this.holds.get(vol.id);
    if (hold) throw new StorageError('BUSY', `volume '${vol.pool}/${vol.name}' is busy: ${hold.reason}; try again when it is done`);
  }

  /**
   * Runs fn with the volume's lock (and any extra keys). Unless allowHeld, fails with BUSY at once
   * while a job or export holds the volume.
   */
  private async withVolume<T>(
    pool: string,
    name: string,
    fn: (vol: VolumeRecord) => Promise<T>,
    options: { keys?: string[]; allowHeld?: boolean } = {},
  ): Promise<T> {
    const found = await this.volumeByName(pool, name);
    if (!options.allowHeld) this.checkNotHeld(found);
    return this.locks.run([volKey(found.id), ...(options.keys ?? [])], async () => {
      const vol = await this.catalog.get('volume', found.id);
      if (!vol) throw notFound(`volume '${pool}/${name}' does not exist`);
      if (!options.allowHeld) this.checkNotHeld(vol);
      return fn(vol);
    });
  }

  private newLayer(id: string, pool: string, ownerVolumeId: string, backing: LayerRecord | undefined): LayerRecord {
    return {
      id,
      pool,
      fileName: layerFileName(id),
      ...(backing === undefined ? {} : { backingLayerId: backing.id }),
      ownerVolumeId,
      frozen: false,
      createdAt: nowIso(),
    };
  }

  private async describePool(pool: PoolRecord, given?: CatalogView): Promise<PoolInfo> {
    const view = given ?? (await this.view());
    const volumes = view.volumes.filter((v) => v.pool === pool.name);
    let allocatedBytes = 0;
    for (const layer of view.layers.values()) if (layer.pool === pool.name) allocatedBytes += await allocatedBytesOf(this.paths.layer(layer));
    return {
      name: pool.name,
      path: this.paths.poolDir(pool.name),
      quotaBytes: pool.quotaBytes,
      volumeCount: volumes.length,
      provisionedBytes: volumes.reduce((sum, v) => sum + v.sizeBytes, 0),
      allocatedBytes,
      createdAt: pool.createdAt,
    };
  }

  private async describeVolume(vol: VolumeRecord, given?: CatalogView): Promise<VolumeInfo> {
    const view = given ?? (await this.view());
    let allocatedBytes = 0;
    for (const layer of view.layers.values()) if (layer.ownerVolumeId === vol.id) allocatedBytes += await allocatedBytesOf(this.paths.layer(layer));
    const chain = this.chainOf(view.layers, vol.activeLayerId);
    const foreign = chain.find((l) => l.ownerVolumeId !== vol.id);
    let parent: VolumeInfo['parent'];
    if (foreign) {
      const snap = view.snapshots.find((s) => s.layerId === foreign.id);
      const owner = view.volumes.find((v) => v.id === foreign.ownerVolumeId);
      if (snap && owner) parent = { pool: owner.pool, volume: owner.name, snapshot: snap.name };
    }
    return {
      id: vol.id,
      pool: vol.pool,
      name: vol.name,
      provisionedBytes: vol.sizeBytes,
      allocatedBytes,
      snapshotCount: view.snapshots.filter((s) => s.volumeId === vol.id).length,
      parent,
      chainDepth: chain.length,
      activeLayerPath: this.paths.layer(this.requireLayer(view.layers, vol.activeLayerId)),
      snapshotLimit: vol.snapshotLimit,
      createdAt: vol.createdAt,
    };
  }

  private async describeSnapshot(snap: SnapshotRecord, given?: CatalogView): Promise<SnapshotInfo> {
    const view = given ?? (await this.view());
    const vol = view.volumes.find((v) => v.id === snap.volumeId);
    return {
      id: snap.id,
      pool: snap.pool,
      volume: vol?.name ?? snap.volumeId,
      name: snap.name,
      sizeBytes: snap.sizeBytes,
      protected: snap.protected,
      children: this.childrenOf(snap, view),
      layerPath: this.paths.layer(this.requireLayer(view.layers, snap.layerId)),
      createdAt: snap.createdAt,
    };
  }

  /** Resolves a diff's two points on one lineage. */
  private async diffPoints(vol: VolumeRecord, range: DiffRange): Promise<{ chain: LayerRecord[]; pathDepth: number; fromSizeBytes: number }> {
    const view = await this.view();
    const to = range.toSnapshot === undefined ? undefined : await this.snapshotByName(vol, range.toSnapshot);
    const from = range.fromSnapshot === undefined ? undefined : await this.snapshotByName(vol, range.fromSnapshot);
    const chain = this.chainOf(view.layers, to?.layerId ?? vol.activeLayerId);
    if (from === undefined) return { chain, pathDepth: chain.length, fromSizeBytes: 0 };
    const index = chain.findIndex((l) => l.id === from.layerId);
    if (index < 0) {
      throw new StorageError(
        'INVALID_ARGUMENT',
        `snapshot '${from.name}' is not an ancestor of ${to === undefined ? 'the volume' : `snapshot '${to.name}'`} (after a rollback they are on different branches)`,
      );
    }
    return { chain, pathDepth: index, fromSizeBytes: from.sizeBytes };
  }
}

// ===============================================================================================
// Helpers over opened images

interface PlanStep {
  offset: number;
  length: number;
  kind: 'data' | 'zero';
}

function totalOf(plan: readonly Range[]): number {
  return plan.reduce((sum, r) => sum + r.length, 0);
}

function totalOfKind(plan: readonly PlanStep[], kind: 'data' | 'zero'): number {
  return plan.reduce((sum, r) => sum + (r.kind === kind ? r.length : 0), 0);
}

/**
 * Resizes an active layer from fromBytes (its size before, also when finishing an interrupted
 * resize). Growing zeroes what would otherwise appear: bytes left past the old end in its last
 * cluster, and a backing file's data past the old end (as QEMU does since 5.1).
 */
export async function resizeImage(image: Qcow2Image, sizeBytes: number, fromBytes: number = image.sizeBytes): Promise<void> {
  const old = fromBytes;
  if (image.sizeBytes !== sizeBytes) await image.resize(sizeBytes, { allowShrink: true });
  if (sizeBytes <= old) return;
  const backingSize = backingOf(image)?.sizeBytes ?? 0;
  const zeroEnd = Math.min(sizeBytes, Math.max(alignUp(old, image.clusterSizeBytes), backingSize));
  if (zeroEnd > old) await image.writeZeroes(old, zeroEnd - old);
}

/**
 * The changed extents between two points: the union of the allocation maps of the `pathDepth`
 * layers from the top down (plus, past a layer's end, what it hides of the older point), each
 * reported as data or zero by what the top reads.
 */
async function diffExtents(image: Qcow2Image, pathDepth: number, fromSizeBytes: number): Promise<DiffExtent[]> {
  const path: Qcow2Image[] = [];
  for (let layer: Qcow2Image | undefined = image; layer !== undefined && path.length < pathDepth; layer = backingOf(layer)) path.push(layer);
  const out: DiffExtent[] = [];
  await forEachWindow(0, image.sizeBytes, async (start, end) => {
    const ranges: Range[] = [];
    for (const layer of path) {
      for (const x of await layerMap(layer, start, end)) if (x.kind !== 'unallocated') ranges.push(x);
      const hiddenStart = Math.max(start, layer.sizeBytes);
      const hiddenEnd = Math.min(end, fromSizeBytes);
      if (hiddenStart < hiddenEnd) ranges.push({ offset: hiddenStart, length: hiddenEnd - hiddenStart });
    }
    for (const r of mergeRanges(ranges)) {
      for (const x of await chainMap(image, r.offset, r.offset + r.length)) {
        const last = out[out.length - 1];
        if (last && last.kind === x.kind && last.offset + last.length === x.offset) last.length += x.length;
        else out.push({ offset: x.offset, length: x.length, kind: x.kind });
      }
    }
  });
  return out;
}

async function* diffStream(image: Qcow2Image, header: Uint8Array, extents: DiffExtent[]): AsyncGenerator<Uint8Array, void, undefined> {
  yield header;
  for (const extent of extents) {
    if (extent.kind === 'zero') {
      yield encodeRecordHeader('z', extent.offset, extent.length);
      continue;
    }
    const end = extent.offset + extent.length;
    for (let pos = extent.offset; pos < end; ) {
      const n = Math.min(end, Math.floor(pos / COPY_CHUNK_BYTES) * COPY_CHUNK_BYTES + COPY_CHUNK_BYTES) - pos;
      const buf = allocAligned(n);
      await image.read(pos, buf);
      if (isZero(buf)) {
        yield encodeRecordHeader('z', pos, n);
      } else {
        yield encodeRecordHeader('d', pos, n);
        yield buf;
      }
      pos += n;
    }
  }
  yield encodeRecordHeader('e', 0, 0);
}

/** Applies diff records to an opened (writable) chain top. */
async function applyDiffRecords(reader: ByteReader, image: Qcow2Image, sizeBytes: number): Promise<void> {
  for (;;) {
    const record = await readRecordHeader(reader, sizeBytes);
    if (record.kind === 'e') break;
    if (record.kind === 'z') {
      if (record.length > 0) await image.writeZeroes(record.offset, record.length, { mayUnmap: true });
      continue;
    }
    for (let done = 0; done < record.length; ) {
      const n = Math.min(COPY_CHUNK_BYTES, record.length - done);
      const data = await reader.readExact(n, 'a data record');
      if (data === undefined) throw new StorageError('INVALID_ARGUMENT', 'invalid diff stream: the stream ends inside a data record');
      await image.write(record.offset + done, data);
      done += n;
    }
  }
  if (!(await reader.atEnd())) throw new StorageError('INVALID_ARGUMENT', "invalid diff stream: bytes follow the end record ('e')");
}

