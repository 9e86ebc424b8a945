/** What the REST routes share: the volume service, the metrics and the daemon's facts. */
import type { ExportService } from './export-service.js';
import type { VolumeService } from '../../volume/types.js';
import type { ApiMetrics } from './metrics.js';
import type { UserStore } from '../../objects/users/user-store.js';
import type { ObjectModel } from '../../objects/model.js';

/** What the bucket routes ask of the object model. */
export type BucketAdmin = Pick<ObjectModel, 'listAllBuckets' | 'countObjects' | 'bucketUsagePage' | 'bucketRecord' | 'removeBucket' | 'setBucketOwner'>;

export interface RestContext {
  service: VolumeService;
  metrics: ApiMetrics;
  /** The daemon's exports (undefined in tests of the API alone). */
  exports: ExportService | undefined;
  version: string;
  dataDir: string;
  /** True once shutdown began: job watchers end their streams. */
  readonly closing: () => boolean;
  /** How often a job watch polls the job (ms). */
  jobWatchIntervalMs: number;
  /** The S3 users and access keys (undefined in tests of the API alone). */
  users: UserStore | undefined;
  /** The S3 buckets (undefined in tests of the API alone). */
  buckets: BucketAdmin | undefined;
}

export interface PoolParams {
  pool: string;
}
export interface VolumeParams extends PoolParams {
  vol: string;
}
export interface SnapshotParams extends VolumeParams {
  snap: string;
}
