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
import path from 'node:path';
import type { CatalogStore } from '../core/catalog-store.js';
import type { ChunkStore } from '../core/chunk-store.js';
import type { DedupPoolConfig } from '../core/chunked-pools.js';
import type { LayerStore } from '../core/layer-store.js';
import { ChunkedLayerStore } from './chunked/chunked-layer-store.js';
import { chunkHasher } from './dedup/chunk-hasher.js';
import { DedupChunkRepository } from './dedup/dedup-repository.js';
import { LocalChunkStore } from './local-chunk-store.js';
import { checkComponent } from './local-layer-store.js';
import type { ChunkedPoolOpener, ChunkedPoolStores } from './pool-routing-layer-store.js';

export interface LocalDedupPoolOptions {
  /** `<data>/chunks`: one folder per dedup pool. */
  readonly chunksRoot: string;
  readonly catalog: CatalogStore;
  /** The store of active layers (the daemon's LocalLayerStore). */
  readonly local: LayerStore;
  /**
   * The ChunkStore the repository keeps packs in, given the pool's local one (default: that one).
   * A tiering store wraps it here; its remoteBytes feeds `pool df`.
   */
  readonly packStore?: (pool: string, config: DedupPoolConfig, local: ChunkStore) => Promise<{ store: ChunkStore; remoteBytes?: () => Promise<number> }>;
}

export function localDedupPoolOpener(options: LocalDedupPoolOptions): ChunkedPoolOpener {
  return async (pool: string, config: DedupPoolConfig): Promise<ChunkedPoolStores> => {
    checkComponent('pool name', pool);
    const local = new LocalChunkStore(path.join(options.chunksRoot, pool));
    await local.removeInterruptedPuts();
    const packs = options.packStore === undefined ? { store: local } : await options.packStore(pool, config, local);
    const repository = await DedupChunkRepository.open({ chunkStore: packs.store, catalog: options.catalog, hasher: chunkHasher(config.hash), pool });
    const layers = new ChunkedLayerStore({ local: options.local, repository, manifests: local });
    return { layers, repository, manifests: local, ...(packs.remoteBytes === undefined ? {} : { remoteBytes: packs.remoteBytes }) };
  };
}
