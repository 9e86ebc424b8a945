/**
 * The state LocalVolumeService's modules share (one ServiceContext per service), and the small
 * helpers all of them use: new ids and timestamps, lock keys, NOT_FOUND errors.
 *
 * Each module of src/volume takes the context as its first argument (`svc`); the facade in
 * service.ts builds it once and owns it.
 */
import { StorageError } from '../core/errors.js';
import type { LayerStore } from '../core/layer-store.js';
import type { ChunkedPools } from '../core/chunked-pools.js';
import type { PoolBuckets } from '../core/pool-buckets.js';
import type { Coordinator } from '../core/coordinator.js';
import type { VolumeCatalog } from './catalog.js';
import type { JobRunner } from './jobs.js';
import type { LiveVolume } from './live.js';
import type { KeyedMutex } from './locks.js';
import type { SharedLease } from './writers.js';
import { randomHex } from '../sys/random-hex.js';

export type ChainDepthPolicy = 'refuse' | 'flatten';

export const DEFAULT_MAX_CHAIN_DEPTH = 16;

/** A volume deleted to the trash is purged after this long unless its delete said otherwise (RBD's default too). */
export const DEFAULT_TRASH_EXPIRY_MS = 7 * 24 * 3600 * 1000;

/** A job or export that keeps other changes off a volume (see guards.ts). */
export interface Hold {
  reason: string;
  count: number;
  /** Held by a job (the job list shows it), not by a stream to a client. */
  byJob: boolean;
}

export interface ServiceContext {
  /** The records (tables over the CatalogStore). */
  readonly catalog: VolumeCatalog;
  /** Who may write a volume (a lease per volume): taken by this daemon while it writes one (writers.ts). */
  readonly coordinator: Coordinator;
  /** The coordinator's holder name for this service (a daemon id). */
  readonly writerName: string;
  /** The only way to the layer files (and temporary files) of every pool. */
  readonly layerStore: LayerStore;
  readonly jobs: JobRunner;
  readonly locks: KeyedMutex;
  /** Holds by volume id. */
  readonly holds: Map<string, Hold>;
  /** Writer leases this service holds, by volume id, shared by its writers (writers.ts). */
  readonly writers: Map<string, SharedLease>;
  /** Chains held open for exports, by liveKey (src/volume/live.ts). */
  readonly live: Map<string, LiveVolume>;
  readonly maxChainDepth: number;
  readonly chainDepthPolicy: ChainDepthPolicy;
  /** Now, in ms since the epoch: when a volume went to the trash and whether it expired (tests pass their own). */
  readonly clock: () => number;
  /** How long a volume stays in the trash unless its delete said otherwise. */
  readonly trashExpiryMs: number;
  /** The dedup pools' side of the layer store (absent: this service makes local pools only). */
  readonly chunkedPools: ChunkedPools | undefined;
  /**
   * The S3 object model's view of which buckets name a pool (deletePool refuses while one does).
   * Added after the service is built (the object model needs the service to open): empty in a
   * service without buckets.
   */
  readonly poolBuckets: PoolBuckets[];
  /** Seal jobs running or queued, by layer id (sealing.ts): stopped before a layer changes. */
  readonly seals: Map<string, SealInFlight>;
}

/** A seal job of one layer: its job id once recorded, and when its body has ended. */
export interface SealInFlight {
  readonly jobId: Promise<string>;
  readonly ended: Promise<void>;
}

export const volKey = (id: string) => `vol:${id}`;
export const poolKey = (name: string) => `pool:${name}`;
export const POOLS_KEY = 'pools';

export function newId(): string {
  return randomHex(8);
}

export function nowIso(): string {
  return new Date().toISOString();
}

export function notFound(message: string): StorageError {
  return new StorageError('NOT_FOUND', message);
}

/** NOT_FOUND for a pool, with the fix that lists the pools (the name may be mistyped). */
export function poolNotFound(pool: string): StorageError {
  return new StorageError('NOT_FOUND', `pool '${pool}' does not exist`, { fix: { operation: 'listPools', text: 'check the name; {} lists the pools' } });
}

/** NOT_FOUND for a volume of an existing pool, with the fix that lists the pool's volumes. */
export function volumeNotFound(pool: string, volume: string): StorageError {
  return new StorageError('NOT_FOUND', `volume '${pool}/${volume}' does not exist`, {
    fix: { operation: 'listVolumes', pool, text: "check the name; {} lists the pool's volumes" },
  });
}
