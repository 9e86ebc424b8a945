/**
 * How the daemon gets its volume service: the one place that knows the concrete catalog and
 * volume classes. Tests of the daemon's own logic can pass another factory to startDaemon.
 */
import path from 'node:path';
import type { Logger } from 'pino';
import type { CatalogStore } from '../core/catalog-store.js';
import type { PoolBuckets } from '../core/pool-buckets.js';
import { LevelCatalogStore } from '../meta/level-catalog.js';
import { localDedupPoolOpener, localPoolChunks, tieredPackStore } from '../store/local-dedup-pool.js';
import type { PoolTier } from '../store/pool-tier.js';
import { LocalLayerStore } from '../store/local-layer-store.js';
import { PoolRoutingLayerStore, type PoolReferenceSource } from '../store/pool-routing-layer-store.js';
import type { ChunkRepository } from '../store/dedup/repository.js';
import { LocalVolumeService, migrateLegacyCatalog } from '../volume/index.js';
import type { ExportRecord } from '../volume/index.js';
import type { VolumeService } from '../volume/types.js';
import type { DaemonConfig } from './config.js';

/** Where the daemon keeps its export records (so exports come back after a restart). */
export interface ExportStore {
  list(): Promise<ExportRecord[]>;
  /** Records a new export (ALREADY_EXISTS if its NBD name or socket is recorded already). */
  add(record: ExportRecord): Promise<void>;
  /** Forgets an export; one already gone is fine. */
  remove(id: string): Promise<void>;
}

export interface VolumeBackend {
  readonly service: VolumeService;
  /** The catalog the service's tables live in (the S3 users share it). */
  readonly catalog: CatalogStore;
  readonly exportStore: ExportStore;
  /** Finishes or rolls back interrupted operations and removes orphan files; before serving. */
  recover(): Promise<Record<string, unknown> | void>;
  /**
   * The chunk repository of a pool for S3 objects: a dedup pool's own (shared with its sealed
   * layers), a local pool's kept in `<data>/chunks/<pool>/` (absent: buckets cannot be served).
   */
  chunkRepositoryOf?(pool: string): Promise<ChunkRepository>;
  /** Adds holders of pools' chunk references (the object model) for the audit and scrub; before recover(). */
  addReferenceSource?(source: PoolReferenceSource): void;
  /** Adds a source of pools recover() audits (references a killed process may have leaked there); before recover(). */
  addPoolsToAudit?(source: () => Promise<string[]>): void;
  /** Adds the object model's view of which buckets name a pool: a pool delete refuses while one does. */
  addPoolBuckets?(source: PoolBuckets): void;
  /** The dedup pools with a tier, for the cooling timer (absent: none can have one). */
  tieredPools?(): { pool: string; tier: PoolTier }[];
  /** Closes images and the catalog (jobs have been finished or cancelled by then). */
  close(): Promise<void>;
}

export interface VolumeBackendOptions {
  dataDir: string;
  catalogDir: string;
  poolsDir: string;
  config: DaemonConfig;
  logger: Logger;
}

/** Where dedup pools keep their packs and manifests: `<data>/chunks/<pool>/`. */
export const CHUNKS_FOLDER = 'chunks';

export type VolumeBackendFactory = (options: VolumeBackendOptions) => Promise<VolumeBackend>;

/**
 * The LevelDB CatalogStore in <data>/catalog (a catalog in the first release's layout is converted
 * as it opens) and LocalVolumeService over <data>/pools. Its layer store routes each pool: a local
 * pool to the LocalLayerStore (its layout unchanged), a dedup pool to a ChunkedLayerStore whose
 * packs and manifests are in <data>/chunks/<pool>/ and whose chunk index is in the catalog.
 * A dedup pool with a tier gets its packs through a TieredChunkStore (tieredPackStore: hot the
 * local packs, cold S3 or a folder, records in the catalog); the manifests stay local.
 */
export const openVolumeBackend: VolumeBackendFactory = async (options) => {
  const catalog = await LevelCatalogStore.open(options.catalogDir, { migrateLegacy: migrateLegacyCatalog });
  if (catalog.migrated !== undefined) {
    options.logger.info({ catalog: options.catalogDir, records: catalog.migrated }, 'converted the catalog from the first layout to tables');
  }
  let service: LocalVolumeService;
  let layerStore: PoolRoutingLayerStore;
  try {
    const local = new LocalLayerStore(path.resolve(options.poolsDir));
    const packStore = tieredPackStore({
      catalog,
      onS3Retry: (pool, event) => options.logger.warn({ pool, ...event }, 'S3 tier request retried'),
      onTierStateChange: (pool, error) =>
        error === undefined ? options.logger.info({ pool }, 'the pool tier answers again') : options.logger.warn({ pool, err: error }, 'the pool tier is failing; cold data cannot be read or moved until it answers'),
    });
    const chunksRoot = path.join(path.resolve(options.dataDir), CHUNKS_FOLDER);
    layerStore = new PoolRoutingLayerStore(local, localDedupPoolOpener({ chunksRoot, catalog, local, packStore }), {
      tieringAvailable: true,
      localPoolChunks: localPoolChunks({ chunksRoot, catalog }),
    });
    service = new LocalVolumeService(catalog, options.dataDir, {
      ...(options.config.maxChainDepth !== undefined ? { maxChainDepth: options.config.maxChainDepth } : {}),
      ...(options.config.chainDepthPolicy !== undefined ? { chainDepthPolicy: options.config.chainDepthPolicy } : {}),
      layerStore,
      chunkedPools: layerStore,
    });
  } catch (err) {
    await catalog.close();
    throw err;
  }
  let closed = false;
  return {
    service,
    catalog,
    exportStore: {
      list: () => service.catalog.exports.all(),
      add: (record) => service.catalog.change((txn) => service.catalog.exports.create(txn, record)),
      remove: async (id) => {
        const current = await service.catalog.exports.get(id);
        if (current) await service.catalog.change((txn) => service.catalog.exports.remove(txn, current));
      },
    },
    chunkRepositoryOf: (pool) => layerStore.chunkRepository(pool),
    addReferenceSource: (source) => layerStore.addReferenceSource(source),
    addPoolsToAudit: (source) => layerStore.addPoolsToAudit(source),
    addPoolBuckets: (source) => service.addPoolBuckets(source),
    tieredPools: () => layerStore.tieredPools(),
    recover: async () => {
      const report = await service.recover();
      for (const problem of report.problems) options.logger.warn({ problem }, 'recovery could not fix');
      for (const file of report.orphansDeleted) options.logger.info({ file }, 'recovery deleted an orphan file');
      for (const pool of report.referencesRepaired) options.logger.info({ pool }, 'recovery dropped chunk references no manifest holds');
      return {
        jobsMarkedFailed: report.jobsMarkedFailed,
        claimsDropped: report.claimsDropped.length,
        intentsRolledBack: report.intentsRolledBack.length,
        intentsFinished: report.intentsFinished.length,
        orphansDeleted: report.orphansDeleted.length,
        problems: report.problems.length,
        // After problems: scripts and tests read the fields above in this order.
        sealsStarted: report.sealsStarted,
        referencesRepaired: report.referencesRepaired.length,
      };
    },
    close: async () => {
      if (closed) return;
      closed = true;
      try {
        await service.close();
        await layerStore.close();
      } finally {
        await catalog.close();
      }
    },
  };
};
