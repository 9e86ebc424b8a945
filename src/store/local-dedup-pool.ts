/**
 * The stores of a dedup pool on this host: a LocalChunkStore in `<chunksRoot>/<pool>/` holding
 * the pool's packs (`packs/<id>`) and its sealed layers' manifests
 * (`layer-manifests/<pool>/<file>`), the DedupChunkRepository over it with its index in the
 * daemon's CatalogStore, and the ChunkedLayerStore whose active layers stay in the local layer
 * store. Interrupted puts a killed process left are removed before anything is put.
 *
 * Tiering plugs in at `packStore`: the repository's packs may go through a tiering ChunkStore
 * wrapped around the local one (the manifests stay local: they are small and read on every open).
 */
import { stat } from 'node:fs/promises';
import path from 'node:path';
import type { CatalogStore } from '../core/catalog-store.js';
import type { ChunkStore } from '../core/chunk-store.js';
import type { DedupPoolConfig } from '../core/chunked-pools.js';
import type { LayerStore } from '../core/layer-store.js';
import { ChunkedLayerStore } from './chunked/chunked-layer-store.js';
import { chunkHasher } from './dedup/chunk-hasher.js';
import { DedupChunkRepository } from './dedup/dedup-repository.js';
import { LOCAL_CHUNK_TEMP_FOLDER, LocalChunkStore } from './local-chunk-store.js';
import { removeEmptyTree } from './local-folder.js';
import { checkComponent } from './local-layer-store.js';
import type { S3RetryEvent } from './s3/config.js';
import type { ChunkedPoolOpener, ChunkedPoolStores, LocalPoolChunks } from './pool-routing-layer-store.js';
import { fileTierFolder, openPoolTier, type PoolTier } from './pool-tier.js';

/**
 * The packStore of a daemon: a pool with a tier gets its packs through the pool's
 * TieredChunkStore (pool-tier.ts); a pool without one keeps them in its local store.
 */
export function tieredPackStore(options: {
  catalog: CatalogStore;
  onS3Retry?: (pool: string, event: S3RetryEvent) => void;
  /** A pool's tier started failing (error) or answers again (undefined): see PoolTierOptions. */
  onTierStateChange?: (pool: string, error: string | undefined) => void;
}): NonNullable<LocalDedupPoolOptions['packStore']> {
  return async (pool, config, local) => {
    if (config.tier === undefined) return { store: local };
    const { onS3Retry, onTierStateChange } = options;
    const tier = await openPoolTier({
      pool,
      tier: config.tier,
      local,
      catalog: options.catalog,
      ...(onS3Retry === undefined ? {} : { onS3Retry: (event: S3RetryEvent) => onS3Retry(pool, event) }),
      ...(onTierStateChange === undefined ? {} : { onTierStateChange: (error: string | undefined) => onTierStateChange(pool, error) }),
    });
    return {
      store: tier.store,
      remoteBytes: async () => {
        const stats = tier.store.stats();
        return stats.coldBytes - stats.cacheBytes;
      },
      tier,
    };
  };
}

export interface LocalDedupPoolOptions {
  /** `<data>/chunks`: one folder per dedup pool. */
  readonly chunksRoot: string;
  readonly catalog: CatalogStore;
  /** The store of active layers (the daemon's LocalLayerStore). */
  readonly local: LayerStore;
  /**
   * The ChunkStore the repository keeps packs in, given the pool's local one (default: that one).
   * A tiering store wraps it here (the daemon: openPoolTier for a pool with a tier); its
   * remoteBytes feeds `pool df`, and `tier` is what evict, the cooling timer and /metrics use.
   */
  readonly packStore?: (pool: string, config: DedupPoolConfig, local: ChunkStore) => Promise<{ store: ChunkStore; remoteBytes?: () => Promise<number>; tier?: PoolTier }>;
}

/**
 * Pack files a pool keeps open for reads. Random 4 KiB reads of a sealed layer touch every pack of
 * it; with 64 open, a 1 GiB layer's ~250 packs missed the cache on most reads, and the open +
 * fstat + close of a miss cost more than the read (profile in docs/dedup.md). 512 cover 2 GiB of
 * packs read at random; Node raises the soft open-files limit to the hard one at start.
 */
export const PACK_FILES_OPEN_MAX = 512;

export function localDedupPoolOpener(options: LocalDedupPoolOptions): ChunkedPoolOpener {
  return async (pool: string, config: DedupPoolConfig): Promise<ChunkedPoolStores> => {
    checkComponent('pool name', pool);
    // This store is the one writer of the pool's folder, so it may keep packs open between reads,
    // and its folders between fsyncs.
    const local = new LocalChunkStore(path.join(options.chunksRoot, pool), { openFilesMax: PACK_FILES_OPEN_MAX, holdFolders: true });
    await local.removeInterruptedPuts();
    const packs = options.packStore === undefined ? { store: local } : await options.packStore(pool, config, local);
    // No read cache in the repository: its one reader here is the layer store, whose ChunkCache
    // already keeps the chunks sealed layers read; a second LRU below it held and copied them twice.
    const repository = await DedupChunkRepository.open({ chunkStore: packs.store, catalog: options.catalog, hasher: chunkHasher(config.hash), pool, readCacheBytes: 0 });
    const layers = new ChunkedLayerStore({ local: options.local, repository, manifests: local });
    return {
      layers,
      repository,
      manifests: local,
      ...(packs.remoteBytes === undefined ? {} : { remoteBytes: packs.remoteBytes }),
      ...(packs.tier === undefined ? {} : { tier: packs.tier }),
      // The tier first (it writes its queued records, reading nothing more), then the packs' store.
      close: async () => {
        await packs.tier?.close();
        await local.close();
      },
      // The pool's folder (its packs already collected) and a file:// tier's temporary folder;
      // the tier's own folder is the operator's and stays.
      removeEmptyFolders: async () => {
        await removeEmptyTree(path.join(options.chunksRoot, pool));
        const tierFolder = config.tier === undefined ? undefined : fileTierFolder(config.tier.url);
        if (tierFolder !== undefined) await removeEmptyTree(path.join(tierFolder, LOCAL_CHUNK_TEMP_FOLDER));
      },
    };
  };
}

/**
 * The chunks a local pool keeps apart from its qcow2 files (its S3 objects'): a
 * DedupChunkRepository over a LocalChunkStore in `<chunksRoot>/<pool>/` (the folder a dedup pool
 * keeps its packs in), its index under the pool's name in the catalog (no dedup pool holds that
 * name while the local pool exists). Objects thus dedup among themselves, with the default hash.
 */
export function localPoolChunks(options: { chunksRoot: string; catalog: CatalogStore }): LocalPoolChunks {
  const stores = new Map<string, LocalChunkStore>();
  return {
    exists: async (pool) => {
      checkComponent('pool name', pool);
      return (await stat(path.join(options.chunksRoot, pool)).catch(() => undefined))?.isDirectory() === true;
    },
    open: async (pool) => {
      checkComponent('pool name', pool);
      // The repository is the one writer of this folder (a dedup pool of this name cannot exist
      // alongside), so packs may stay open between reads: an object GET reads one 64 KiB chunk a
      // call, and opening, fstat-ing and closing its pack each time was 13% of the daemon's CPU.
      // Its folders stay open between fsyncs likewise (a put's folder fsync: one pool call, not 3).
      const chunks = new LocalChunkStore(path.join(options.chunksRoot, pool), { openFilesMax: PACK_FILES_OPEN_MAX, holdFolders: true });
      await stores.get(pool)?.close();
      stores.set(pool, chunks);
      await chunks.removeInterruptedPuts();
      return DedupChunkRepository.open({ chunkStore: chunks, catalog: options.catalog, pool });
    },
    close: async (pool) => {
      const chunks = stores.get(pool);
      stores.delete(pool);
      await chunks?.close();
    },
  };
}
