/**
 * The S3 object model of `strata serve`: an ObjectModel over the daemon's catalog, served to the
 * S3 endpoint through S3ObjectService. New buckets go to the default pool.
 *
 * Where a bucket's chunks go (docs/s3.md): a local pool has no chunk repository of its own, so
 * the objects of a local pool get one, a DedupChunkRepository over `<data>/chunks/<pool>/`
 * (where a dedup pool would keep its packs), opened on first use; its chunk index is the pool's
 * name in the catalog, which no dedup pool holds while the local pool exists. Buckets in a dedup
 * pool are refused for now: that pool's start-up audit and `pool scrub --repair` count only the
 * sealed layers' references and would drop the objects' ones.
 */
import path from 'node:path';
import type { Logger } from 'pino';
import type { CatalogStore } from '../core/catalog-store.js';
import { StorageError } from '../core/errors.js';
import { ObjectModel } from '../objects/model.js';
import type { ObjectService } from '../objects/object-service.js';
import { s3ObjectService } from '../objects/s3-object-service.js';
import { DedupChunkRepository } from '../store/dedup/dedup-repository.js';
import type { ChunkRepository } from '../store/dedup/repository.js';
import { LocalChunkStore } from '../store/local-chunk-store.js';
import type { VolumeService } from '../volume/types.js';
import { CHUNKS_FOLDER } from './backend.js';

/** Where manifests too large for a catalog value go: `<data>/objects/object-manifests/<id>`. */
export const OBJECTS_FOLDER = 'objects';

export interface DaemonObjectStore {
  readonly model: ObjectModel;
  readonly service: ObjectService;
  /** Waits for the clean-up still running after answered requests (before the catalog closes). */
  close(): Promise<void>;
}

/** Builds the model and recovers what a killed process left (call before the S3 listener opens). */
export async function openDaemonObjectStore(options: { dataDir: string; catalog: CatalogStore; volumes: VolumeService; bucketPool: string; logger: Logger }): Promise<DaemonObjectStore> {
  const repositories = new Map<string, Promise<ChunkRepository>>();
  const openRepository = async (pool: string): Promise<ChunkRepository> => {
    const info = await options.volumes.poolInfo(pool); // NOT_FOUND for a pool that does not exist
    if (info.kind !== 'local') {
      throw new StorageError('UNSUPPORTED', `pool '${pool}' is a dedup pool: S3 buckets are kept in local pools for now (docs/s3.md)`);
    }
    const chunks = new LocalChunkStore(path.join(path.resolve(options.dataDir), CHUNKS_FOLDER, pool));
    await chunks.removeInterruptedPuts();
    return DedupChunkRepository.open({ chunkStore: chunks, catalog: options.catalog, pool });
  };
  const repositoryOf = (pool: string): Promise<ChunkRepository> => {
    let opening = repositories.get(pool);
    if (opening === undefined) {
      opening = openRepository(pool);
      repositories.set(pool, opening);
      // A failed opening is not kept: the next request tries again.
      opening.catch(() => repositories.delete(pool));
    }
    return opening;
  };
  const manifestStore = new LocalChunkStore(path.join(path.resolve(options.dataDir), OBJECTS_FOLDER));
  await manifestStore.removeInterruptedPuts();
  const model = new ObjectModel({
    catalog: options.catalog,
    manifestStore,
    repositoryOf,
    onDeferredError: (err) => options.logger.warn({ err }, 's3 clean-up after a committed change failed; recovery at the next start finishes it'),
    // A PUT is answered once its commit is durable; dropping its markers follows (bench/RESULTS.md, S3).
    cleanupInBackground: true,
  });
  const started = Date.now();
  const report = await model.recover();
  options.logger.info({ ms: Date.now() - started, ...report }, 'recovered the S3 objects');
  return { model, service: s3ObjectService(model, { bucketPool: options.bucketPool }), close: () => model.idle() };
}
