/**
 * The S3 object model of `strata serve`: an ObjectModel over the daemon's catalog, served to the
 * S3 endpoint through S3ObjectService. New buckets go to the default pool unless CreateBucket
 * names another one.
 *
 * Where a bucket's chunks go (docs/s3.md): the backend's chunk repository of the bucket's pool.
 * A dedup pool's is the one its sealed layers use, so an object shares chunks with volumes; a
 * local pool keeps one apart from its qcow2 files, in `<data>/chunks/<pool>/`. The model is built
 * before the volume service recovers and is always registered as a holder of pool references
 * (also with the S3 endpoint off): the pools' reference audit and scrub then count what objects
 * use, and never take it as leaked.
 */
import path from 'node:path';
import type { Logger } from 'pino';
import type { CatalogStore } from '../core/catalog-store.js';
import { StorageError } from '../core/errors.js';
import type { BucketsOfPool } from '../core/pool-buckets.js';
import { ObjectModel } from '../objects/model.js';
import type { ObjectService } from '../objects/object-service.js';
import type { RecoveryReport } from '../objects/recovery.js';
import { s3ObjectService } from '../objects/s3-object-service.js';
import type { ChunkRepository } from '../store/dedup/repository.js';
import { LocalChunkStore } from '../store/local-chunk-store.js';
import type { VolumeService } from '../volume/types.js';
import type { VolumeBackend } from './backend.js';

/** Where manifests too large for a catalog value go: `<data>/objects/object-manifests/<id>`. */
export const OBJECTS_FOLDER = 'objects';

export interface DaemonObjectStore {
  readonly model: ObjectModel;
  readonly service: ObjectService;
  /** Finishes what a killed process left; after the volume service recovered, before serving. */
  recover(): Promise<RecoveryReport>;
  /** Waits for the clean-up still running after answered requests (before the catalog closes), then closes the manifest store. */
  close(): Promise<void>;
}

/** Builds the model and registers it as a holder of the pools' chunk references (before the backend recovers). */
export async function openDaemonObjectStore(options: {
  dataDir: string;
  catalog: CatalogStore;
  volumes: VolumeService;
  backend: Pick<VolumeBackend, 'chunkRepositoryOf' | 'addReferenceSource' | 'addPoolBuckets' | 'addPoolsToAudit'>;
  bucketPool: string;
  logger: Logger;
}): Promise<DaemonObjectStore> {
  const repositories = new Map<string, Promise<ChunkRepository>>();
  const openRepository = async (pool: string): Promise<ChunkRepository> => {
    await options.volumes.poolInfo(pool); // NOT_FOUND for a pool that does not exist
    const chunkRepositoryOf = options.backend.chunkRepositoryOf;
    if (chunkRepositoryOf === undefined) throw new StorageError('UNSUPPORTED', 'this daemon was built without chunk repositories: S3 buckets cannot be served');
    return chunkRepositoryOf(pool);
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
  options.backend.addReferenceSource?.((pool) => model.referenceHolders(pool));
  // A release a kill cut off may have dropped one call's references or not: the pool's start-up
  // audit (before model.recover() runs the rest) settles the count against what is held.
  options.backend.addPoolsToAudit?.(() => model.poolsWithPendingReleases());
  options.backend.addPoolBuckets?.({
    bucketsOf: (pool, limit) => bucketsOfPool(model, pool, limit),
    // The repository opened for a deleted pool would otherwise keep serving a CreateBucket naming it.
    poolDeleted: (pool) => {
      repositories.delete(pool);
    },
  });
  return {
    model,
    service: s3ObjectService(model, { bucketPool: options.bucketPool }),
    recover: async () => {
      const started = Date.now();
      const report = await model.recover();
      options.logger.info({ ms: Date.now() - started, ...report }, 'recovered the S3 objects');
      return report;
    },
    close: async () => {
      await model.close();
      await manifestStore.close();
    },
  };
}

/**
 * The buckets that name `pool`, read from the catalog (not the bucket cache: a bucket created a
 * moment ago counts). Buckets have no index by pool: every bucket is read, a catalog page at a
 * time; a pool delete is rare and the bucket table is small beside the objects.
 */
async function bucketsOfPool(model: ObjectModel, pool: string, limit: number): Promise<BucketsOfPool> {
  const names: string[] = [];
  let count = 0;
  let after: string | undefined;
  do {
    const page = await model.listAllBuckets(after === undefined ? {} : { after });
    for (const bucket of page.buckets) {
      if (bucket.pool !== pool) continue;
      count += 1;
      if (names.length < limit) names.push(bucket.name);
    }
    after = page.nextAfter;
  } while (after !== undefined);
  return { count, names };
}
