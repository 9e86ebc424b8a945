/**
 * Reading the catalog for LocalVolumeService's modules: lookups by name (one index read), the
 * records related to one thing (a bounded index prefix: a pool's volumes, a volume's snapshots and
 * layers, a layer's children), chains and clone relations, name and quota checks, and the
 * PoolInfo / VolumeInfo / SnapshotInfo descriptions the API returns. Nothing here lists a whole table.
 */
import { StorageError } from '../core/errors.js';
import { poolNotFound, volumeNotFound, type ServiceContext } from './context.js';
import { checkPoolQuota, type QuotaChange } from './quota.js';
import type { LayerRecord, PoolRecord, SnapshotRecord, VolumeRecord } from './records.js';
import type { PoolInfo, SnapshotInfo, VolumeInfo } from './types.js';

export async function requirePool(svc: ServiceContext, name: string): Promise<PoolRecord> {
  const pool = await svc.catalog.pools.get(name);
  if (!pool) throw poolNotFound(name);
  return pool;
}

export async function volumeByName(svc: ServiceContext, pool: string, name: string): Promise<VolumeRecord> {
  const vol = await svc.catalog.volumes.lookup('name', `${pool}/${name}`);
  if (vol) return vol;
  await requirePool(svc, pool);
  throw volumeNotFound(pool, name);
}

export async function findSnapshot(svc: ServiceContext, vol: VolumeRecord, name: string): Promise<SnapshotRecord | undefined> {
  return svc.catalog.snapshots.lookup('name', `${vol.id}/${name}`);
}

export async function snapshotByName(svc: ServiceContext, vol: VolumeRecord, name: string): Promise<SnapshotRecord> {
  const snap = await findSnapshot(svc, vol, name);
  if (!snap) {
    throw new StorageError('NOT_FOUND', `snapshot '${vol.pool}/${vol.name}@${name}' does not exist`, {
      fix: { operation: 'listSnapshots', pool: vol.pool, volume: vol.name, text: "check the name; {} lists the volume's snapshots" },
    });
  }
  return snap;
}

/** A pool's volumes, in name order (a bounded read of the name index under "<pool>/"). */
export function volumesOfPool(svc: ServiceContext, pool: string): Promise<VolumeRecord[]> {
  return svc.catalog.volumes.byIndexPrefix('name', `${pool}/`);
}

/** A volume's snapshots, oldest first. */
export async function snapshotsOfVolume(svc: ServiceContext, volumeId: string): Promise<SnapshotRecord[]> {
  const snaps = await svc.catalog.snapshots.byIndexPrefix('name', `${volumeId}/`);
  return snaps.sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.name.localeCompare(b.name));
}

/** The layers a volume owns: its active layer and its snapshots' layers. */
export function layersOfVolume(svc: ServiceContext, volumeId: string): Promise<LayerRecord[]> {
  return svc.catalog.layers.byIndexPrefix('owner', `${volumeId}/`);
}

export function layersOfPool(svc: ServiceContext, pool: string): Promise<LayerRecord[]> {
  return svc.catalog.layers.byIndexPrefix('file', `${pool}/`);
}

/** The layers whose backing file is layer `layerId`. */
export function childLayers(svc: ServiceContext, layerId: string): Promise<LayerRecord[]> {
  return svc.catalog.layers.byIndexPrefix('backing', `${layerId}/`);
}

/** One layer's record (a record that the catalog references but does not hold is CORRUPT). */
export async function layerById(svc: ServiceContext, id: string): Promise<LayerRecord> {
  const layer = await svc.catalog.layers.get(id);
  if (!layer) throw missingLayer(id);
  return layer;
}

function missingLayer(id: string): StorageError {
  return new StorageError('CORRUPT', `the catalog references layer ${id}, which has no record`);
}

function chainLoop(layerId: string, id: string): StorageError {
  return new StorageError('CORRUPT', `the catalog's chain of layer ${layerId} loops at ${id}`);
}

/** The chain from layerId down (top first), as the catalog records it, read layer by layer. */
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
export async function boundaryLayers(svc: ServiceContext, vol: VolumeRecord): Promise<LayerRecord[]> {
  const out: LayerRecord[] = [];
  for (const layer of await layersOfVolume(svc, vol.id)) {
    if (layer.backingLayerId === undefined) continue;
    if ((await layerById(svc, layer.backingLayerId)).ownerVolumeId !== vol.id) out.push(layer);
  }
  return out;
}

/** "pool/name" of the volumes that have a layer backed by one of vol's layers. */
export async function clonesOfVolume(svc: ServiceContext, vol: VolumeRecord): Promise<string[]> {
  const owners = new Set<string>();
  for (const layer of await layersOfVolume(svc, vol.id)) {
    for (const child of await childLayers(svc, layer.id)) if (child.ownerVolumeId !== vol.id) owners.add(child.ownerVolumeId);
  }
  return volumeNames(svc, owners);
}

/** "pool/name" of the clones of a snapshot. */
export async function childrenOf(svc: ServiceContext, snap: SnapshotRecord): Promise<string[]> {
  const owners = new Set<string>();
  for (const child of await childLayers(svc, snap.layerId)) if (child.ownerVolumeId !== snap.volumeId) owners.add(child.ownerVolumeId);
  return volumeNames(svc, owners);
}

async function volumeNames(svc: ServiceContext, ids: Set<string>): Promise<string[]> {
  const names: string[] = [];
  for (const id of ids) {
    const vol = await svc.catalog.volumes.get(id);
    if (vol) names.push(vol.trash === undefined ? `${vol.pool}/${vol.name}` : `${vol.pool}/${vol.name} (in the trash as ${vol.id})`);
  }
  return names.sort();
}

/** Refuses (ALREADY_EXISTS) a volume name taken by a volume or claimed by an import or copy. */
export async function checkNameFree(svc: ServiceContext, pool: string, name: string): Promise<void> {
  const taken = (await svc.catalog.volumes.lookup('name', `${pool}/${name}`)) ?? (await svc.catalog.reservations.lookup('name', `${pool}/${name}`));
  if (taken) throw new StorageError('ALREADY_EXISTS', `volume '${pool}/${name}' already exists`);
}

/** Refuses (LIMIT_EXCEEDED) a change that takes the pool past its quota (quota.ts). */
export async function checkQuota(svc: ServiceContext, pool: PoolRecord, sizeBytes: number, what: string, replaces: QuotaChange['replaces'] = {}): Promise<void> {
  if (pool.quotaBytes === undefined) return;
  const claims = await svc.catalog.reservations.byIndexPrefix('name', `${pool.name}/`);
  checkPoolQuota(pool, await volumesOfPool(svc, pool.name), claims, { sizeBytes, what, replaces });
}

function describeDedup(svc: ServiceContext, name: string, dedup: NonNullable<PoolRecord['dedup']>): PoolInfo['dedup'] {
  const status = dedup.tier === undefined ? undefined : svc.chunkedPools?.tierStatus?.(name);
  const tierActive = status !== undefined && svc.chunkedPools?.tieringAvailable() === true;
  return {
    hash: dedup.hash,
    tier: dedup.tier,
    tierActive,
    ...(status?.error === undefined ? {} : { tierError: status.error }),
    ...(dedup.sealAfterMs === undefined ? {} : { sealAfterMs: dedup.sealAfterMs }),
    ...(dedup.sealAboveBytes === undefined ? {} : { sealAboveBytes: dedup.sealAboveBytes }),
  };
}

export async function describePool(svc: ServiceContext, pool: PoolRecord): Promise<PoolInfo> {
  const volumes = await volumesOfPool(svc, pool.name);
  let allocatedBytes = 0;
  for (const layer of await layersOfPool(svc, pool.name)) allocatedBytes += await svc.layerStore.allocatedBytes(layer);
  return {
    name: pool.name,
    location: svc.layerStore.poolLocation(pool.name),
    quotaBytes: pool.quotaBytes,
    volumeCount: volumes.length,
    provisionedBytes: volumes.reduce((sum, v) => sum + v.sizeBytes, 0),
    allocatedBytes,
    kind: pool.dedup === undefined ? 'local' : 'dedup',
    dedup:
      pool.dedup === undefined
        ? undefined
        : describeDedup(svc, pool.name, pool.dedup),
    createdAt: pool.createdAt,
  };
}

export async function describeVolume(svc: ServiceContext, vol: VolumeRecord): Promise<VolumeInfo> {
  let allocatedBytes = 0;
  for (const layer of await layersOfVolume(svc, vol.id)) allocatedBytes += await svc.layerStore.allocatedBytes(layer);
  const chain = await layerChain(svc, vol.activeLayerId);
  const foreign = chain.find((l) => l.ownerVolumeId !== vol.id);
  let parent: VolumeInfo['parent'];
  if (foreign) {
    const snap = await svc.catalog.snapshots.lookup('layer', foreign.id);
    const owner = await svc.catalog.volumes.get(foreign.ownerVolumeId);
    if (snap && owner) parent = { pool: owner.pool, volume: owner.name, snapshot: snap.name };
  }
  return {
    id: vol.id,
    pool: vol.pool,
    name: vol.name,
    provisionedBytes: vol.sizeBytes,
    allocatedBytes,
    snapshotCount: (await svc.catalog.snapshots.byIndexPrefix('name', `${vol.id}/`)).length,
    parent,
    chainDepth: chain.length,
    location: svc.layerStore.location(chain[0]!),
    snapshotLimit: vol.snapshotLimit,
    createdAt: vol.createdAt,
  };
}

export async function describeSnapshot(svc: ServiceContext, snap: SnapshotRecord): Promise<SnapshotInfo> {
  const vol = await svc.catalog.volumes.get(snap.volumeId);
  return {
    id: snap.id,
    pool: snap.pool,
    volume: vol?.name ?? snap.volumeId,
    name: snap.name,
    sizeBytes: snap.sizeBytes,
    protected: snap.protected,
    children: await childrenOf(svc, snap),
    location: svc.layerStore.location(await layerById(svc, snap.layerId)),
    createdAt: snap.createdAt,
  };
}
