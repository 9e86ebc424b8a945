/** Pools: create, list, describe, set a quota, delete, and what their volumes occupy (du). */
import { StorageError } from '../core/errors.js';
import { countOf } from '../core/text.js';
import type { PoolRecord } from '../catalog/records.js';
import { notFound, nowIso, poolKey, POOLS_KEY, type ServiceContext } from './context.js';
import { LAYER_FILE_PATTERN, TEMP_PREFIX } from './layers.js';
import { checkName, checkQuota } from './names.js';
import { catalogView, describePool, requireLayer, requirePool } from './queries.js';
import type { DuEntry, PoolInfo } from './types.js';

export async function createPool(svc: ServiceContext, name: string, options: { quotaBytes?: number } = {}): Promise<PoolInfo> {
  checkName('pool', name);
  const quotaBytes = checkQuota(options.quotaBytes);
  return svc.locks.run([POOLS_KEY, poolKey(name)], async () => {
    if (await svc.catalog.get('pool', name)) throw new StorageError('ALREADY_EXISTS', `pool '${name}' already exists`);
    await svc.layerStore.createPool(name);
    const record: PoolRecord = { name, createdAt: nowIso(), ...(quotaBytes === undefined ? {} : { quotaBytes }) };
    await svc.catalog.put('pool', record);
    return describePool(svc, record);
  });
}

export async function listPools(svc: ServiceContext): Promise<PoolInfo[]> {
  const pools = await svc.catalog.list('pool');
  const view = await catalogView(svc);
  return Promise.all(pools.map((p) => describePool(svc, p, view)));
}

export async function poolInfo(svc: ServiceContext, name: string): Promise<PoolInfo> {
  return describePool(svc, await requirePool(svc, name));
}

export async function setPoolQuota(svc: ServiceContext, name: string, quotaBytes: number | undefined): Promise<PoolInfo> {
  const quota = checkQuota(quotaBytes);
  return svc.locks.run([poolKey(name)], async () => {
    const pool = await requirePool(svc, name);
    const { quotaBytes: _old, ...rest } = pool;
    const record: PoolRecord = quota === undefined ? rest : { ...rest, quotaBytes: quota };
    await svc.catalog.put('pool', record);
    return describePool(svc, record);
  });
}

export async function deletePool(svc: ServiceContext, name: string): Promise<void> {
  await svc.locks.run([POOLS_KEY, poolKey(name)], async () => {
    await requirePool(svc, name);
    const view = await catalogView(svc);
    const volumes = view.volumes.filter((v) => v.pool === name);
    if (volumes.length > 0) {
      throw new StorageError('BUSY', `pool '${name}' still has ${countOf(volumes.length, 'volume')}; delete them first`);
    }
    if ([...svc.reservations.values()].some((r) => r.pool === name)) {
      throw new StorageError('BUSY', `pool '${name}' has a volume being created (import or copy); try again when it is done`);
    }
    if ([...view.layers.values()].some((l) => l.pool === name)) {
      throw new StorageError('BUSY', `pool '${name}' still holds layers`);
    }
    await svc.catalog.del('pool', name);
    for (const entry of await svc.layerStore.list(name).catch(() => [] as string[])) {
      if (LAYER_FILE_PATTERN.test(entry) || entry.startsWith(TEMP_PREFIX)) await svc.layerStore.remove({ pool: name, fileName: entry });
    }
    await svc.layerStore.removePool(name).catch(() => {});
  });
}

export async function du(svc: ServiceContext, pool: string, volume?: string): Promise<DuEntry[]> {
  await requirePool(svc, pool);
  const view = await catalogView(svc);
  let volumes = view.volumes.filter((v) => v.pool === pool);
  if (volume !== undefined) {
    volumes = volumes.filter((v) => v.name === volume);
    if (volumes.length === 0) throw notFound(`volume '${pool}/${volume}' does not exist`);
  }
  volumes.sort((a, b) => a.name.localeCompare(b.name));
  const out: DuEntry[] = [];
  for (const vol of volumes) {
    const snaps = view.snapshots
      .filter((s) => s.volumeId === vol.id)
      .sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.name.localeCompare(b.name));
    for (const snap of snaps) {
      const layer = requireLayer(view.layers, snap.layerId);
      out.push({ name: `${pool}/${vol.name}@${snap.name}`, provisionedBytes: snap.sizeBytes, allocatedBytes: await svc.layerStore.allocatedBytes(layer) });
    }
    const active = requireLayer(view.layers, vol.activeLayerId);
    out.push({ name: `${pool}/${vol.name}`, provisionedBytes: vol.sizeBytes, allocatedBytes: await svc.layerStore.allocatedBytes(active) });
  }
  return out;
}
