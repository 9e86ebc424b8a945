/**
 * The state LocalVolumeService's modules share (one ServiceContext per service), and the small
 * helpers all of them use: new ids and timestamps, lock keys, NOT_FOUND errors.
 *
 * Each module of src/volume takes the context as its first argument (`svc`); the facade in
 * service.ts builds it once and owns it.
 */
import { randomBytes } from 'node:crypto';
import { StorageError } from '../core/errors.js';
import type { LayerStore } from '../core/layer-store.js';
import type { Catalog } from '../catalog/catalog.js';
import type { LayerRecord, SnapshotRecord, VolumeRecord } from '../catalog/records.js';
import type { JobRunner } from './jobs.js';
import type { LiveVolume } from './live.js';
import type { KeyedMutex } from './locks.js';

export type ChainDepthPolicy = 'refuse' | 'flatten';

export const DEFAULT_MAX_CHAIN_DEPTH = 16;

/** A job or export that keeps other changes off a volume (see guards.ts). */
export interface Hold {
  reason: string;
  count: number;
}

/** A volume name (and its size, for quotas) taken while an import or copy creates it. */
export interface Reservation {
  pool: string;
  name: string;
  sizeBytes: number;
}

export interface ServiceContext {
  readonly catalog: Catalog;
  /** The only way to the layer files (and temporary files) of every pool. */
  readonly layerStore: LayerStore;
  readonly jobs: JobRunner;
  readonly locks: KeyedMutex;
  /** Holds by volume id. */
  readonly holds: Map<string, Hold>;
  /** Reservations by "pool/name". */
  readonly reservations: Map<string, Reservation>;
  /** Chains held open for exports, by liveKey (src/volume/live.ts). */
  readonly live: Map<string, LiveVolume>;
  readonly maxChainDepth: number;
  readonly chainDepthPolicy: ChainDepthPolicy;
}

/** The catalog's records at one moment, indexed. */
export interface CatalogView {
  volumes: VolumeRecord[];
  layers: Map<string, LayerRecord>;
  snapshots: SnapshotRecord[];
}

export const volKey = (id: string) => `vol:${id}`;
export const poolKey = (name: string) => `pool:${name}`;
export const POOLS_KEY = 'pools';

export function newId(): string {
  return randomBytes(8).toString('hex');
}

export function nowIso(): string {
  return new Date().toISOString();
}

export function notFound(message: string): StorageError {
  return new StorageError('NOT_FOUND', message);
}
