/**
 * Reading the catalog for LocalVolumeService's modules: the view of all volumes, layers and
 * snapshots, lookups by name, chains and clone relations, name and quota checks, and the
 * PoolInfo / VolumeInfo / SnapshotInfo descriptions the API returns.
 */
import { StorageError } from '../core/errors.js';
import type { LayerRecord, PoolRecord, SnapshotRecord, VolumeRecord } from '../catalog/records.js';
import { notFound, type CatalogView, type ServiceContext } from './context.js';
import { checkPoolQuota, type QuotaChange } from './quota.js';
import type { PoolInfo, SnapshotInfo, VolumeInfo } from './types.js';

export async function catalogView(svc: ServiceContext): Promise<CatalogView> {
  const [volumes, layers, snapshots] = await Promise.all([
    svc.catalog.list('volume'),
    svc.catalog.list('layer'),
    svc.catalog.list('snapshot'),
  ]);
  return { volumes, layers: new Map(layers.map((l) => [l.id, l])), snapshots };
}

export async function requirePool(svc: ServiceContext, name: string): Promise<PoolRecord> {
  const pool = await svc.catalog.get('pool', name);
  if (!pool) throw notFound(`pool '${name}' does not exist`);
  return pool;
}

export async function volumeByName(svc: ServiceContext, pool: string, name: string): Promise<VolumeRecord> {
  await requirePool(svc, pool);
  const vol = (await svc.catalog.list('volume')).find((v) => v.pool === pool && v.name === name);
  if (!vol) throw notFound(`volume '${pool}/${name}' does not exist`);
  return vol;
}

export async function findSnapshot(svc: ServiceContext, vol: VolumeRecord, name: string): Promise<SnapshotRecord | undefined> {
  return (await svc.catalog.list('snapshot')).find((s) => s.volumeId === vol.id && s.name === name);
}

export async function snapshotByName(svc: ServiceContext, vol: VolumeRecord, name: string): Promise<SnapshotRecord> {
  const snap = await findSnapshot(svc, vol, name);
  if (!snap) throw notFound(`snapshot '${vol.pool}/${vol.name}@${name}' does not exist`);
  return snap;
}

export function requireLayer(layers: Map<string, LayerRecord>, id: string): LayerRecord {
  const layer = layers.get(id);
  if (!layer) throw missingLayer(id);
  return layer;
}

/** One layer's record, read directly (no view): for callers that need that layer only. */
export async function layerById(svc: ServiceContext, id: string): Promise<LayerRecord> {
  const layer = await svc.catalog.get('layer', id);
  if (!layer) throw missingLayer(id);
  return layer;
}

function missingLayer(id: string): StorageError {
  return new StorageError('CORRUPT', `the catalog references layer ${id}, which has no record`);
}

function chainLoop(layerId: string, id: string): StorageError {
  return new StorageError('CORRUPT', `the catalog's chain of layer ${layerId} loops at ${id}`);
}

/** The chain from layerId down (top first), as the catalog records it. */
export function chainOf(layers: Map<string, LayerRecord>, layerId: string): LayerRecord[] {
  const chain: LayerRecord[] = [];
  const seen = new Set<string>();
  for (let id: string | undefined = layerId; id !== undefined; ) {
    if (seen.has(id)) throw chainLoop(layerId, id);
    seen.add(id);
    const layer = requireLayer(layers, id);
    chain.push(layer);
    id = layer.backingLayerId;
  }
  return chain;
}

/**
 * chainOf, read layer by layer from the catalog: for callers that need one chain, a few reads
 * instead of a view listing every volume, layer and snapshot.
 */
export async function layerChain(svc: ServiceContext, layerId: string): Promise<LayerRecord[]> {
  const chain: LayerRecord[] = [];
  const seen = new Set<string>();
  for (let id: string | undefined = layerId; id !== undefined; ) {
    if (seen.has(id)) throw chainLoop(layerId, id);
    seen.add(id);
    const layer = await layerById(svc, id);
    chain.push(layer);
    id = layer.backingLayerId;
  }
  return chain;
}

/** Layers of vol backed by another volume's layer: non-empty exactly when vol is a clone. */
export function boundaryLayers(vol: VolumeRecord, view: CatalogView): LayerRecord[] {
  return [...view.layers.values()].filter((l) => {
    if (l.ownerVolumeId !== vol.id || l.backingLayerId === undefined) return false;
    return view.layers.get(l.backingLayerId)?.ownerVolumeId !== vol.id;
  });
}

/** "pool/name" of the volumes that have a layer backed by one of vol's layers. */
export function clonesOfVolume(vol: VolumeRecord, view: CatalogView): string[] {
  const owners = new Set<string>();
  for (const layer of view.layers.values()) {
    if (layer.ownerVolumeId === vol.id || layer.backingLayerId === undefined) continue;
    if (view.layers.get(layer.backingLayerId)?.ownerVolumeId === vol.id) owners.add(layer.ownerVolumeId);
  }
  return volumeNames(owners, view);
}

/** "pool/name" of the clones of a snapshot. */
export function childrenOf(snap: SnapshotRecord, view: CatalogView): string[] {
  const owners = new Set<string>();
  for (const layer of view.layers.values()) {
    if (layer.backingLayerId === snap.layerId && layer.ownerVolumeId !== snap.volumeId) owners.add(layer.ownerVolumeId);
  }
  return volumeNames(owners, view);
}

function volumeNames(ids: Set<string>, view: CatalogView): string[] {
  return view.volumes
    .filter((v) => ids.has(v.id))
    .map((v) => `${v.pool}/${v.name}`)
    .sort();
}

export async function checkNameFree(svc: ServiceContext, pool: string, name: string, ownReservation = false): Promise<void> {
  const taken = (await svc.catalog.list('volume')).some((v) => v.pool === pool && v.name === name);
  if (taken || (!ownReservation && svc.reservations.has(`${pool}/${name}`))) {
    throw new StorageError('ALREADY_EXISTS', `volume '${pool}/${name}' already exists`);
  }
}

/** Refuses (LIMIT_EXCEEDED) a change that takes the pool past its quota (quota.ts). */
export async function checkQuota(svc: ServiceContext, pool: PoolRecord, sizeBytes: number, what: string, replaces: QuotaChange['replaces'] = {}): Promise<void> {
  if (pool.quotaBytes !== undefined) checkPoolQuota(pool, await svc.catalog.list('volume'), svc.reservations, { sizeBytes, what, replaces });
}

export async function describePool(svc: ServiceContext, pool: PoolRecord, given?: CatalogView): Promise<PoolInfo> {
  const view = given ?? (await catalogView(svc));
  const volumes = view.volumes.filter((v) => v.pool === pool.name);
  let allocatedBytes = 0;
  for (const layer of view.layers.values()) if (layer.pool === pool.name) allocatedBytes += await svc.layerStore.allocatedBytes(layer);
  return {
    name: pool.name,
    location: svc.layerStore.poolLocation(pool.name),
    quotaBytes: pool.quotaBytes,
    volumeCount: volumes.length,
    provisionedBytes: volumes.reduce((sum, v) => sum + v.sizeBytes, 0),
    allocatedBytes,
    createdAt: pool.createdAt,
  };
}

export async function describeVolume(svc: ServiceContext, vol: VolumeRecord, given?: CatalogView): Promise<VolumeInfo> {
  const view = given ?? (await catalogView(svc));
  let allocatedBytes = 0;
  for (const layer of view.layers.values()) if (layer.ownerVolumeId === vol.id) allocatedBytes += await svc.layerStore.allocatedBytes(layer);
  const chain = chainOf(view.layers, vol.activeLayerId);
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
    location: svc.layerStore.location(requireLayer(view.layers, vol.activeLayerId)),
    snapshotLimit: vol.snapshotLimit,
    createdAt: vol.createdAt,
  };
}

export async function describeSnapshot(svc: ServiceContext, snap: SnapshotRecord, given?: CatalogView): Promise<SnapshotInfo> {
  const view = given ?? (await catalogView(svc));
  const vol = view.volumes.find((v) => v.id === snap.volumeId);
  return {
    id: snap.id,
    pool: snap.pool,
    volume: vol?.name ?? snap.volumeId,
    name: snap.name,
    sizeBytes: snap.sizeBytes,
    protected: snap.protected,
    children: childrenOf(snap, view),
    location: svc.layerStore.location(requireLayer(view.layers, snap.layerId)),
    createdAt: snap.createdAt,
  };
}

