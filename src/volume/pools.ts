/** Pools: create, list, describe, set a quota, delete, and what their volumes occupy (du). */
import { StorageError } from '../core/errors.js';
import { countOf } from '../core/text.js';
import { notFound, nowIso, poolKey, POOLS_KEY, type ServiceContext } from './context.js';
import { LAYER_FILE_PATTERN, TEMP_PREFIX } from './layers.js';
import { checkName, checkQuota } from './names.js';
import { describePool, layerById, layersOfPool, requirePool, snapshotsOfVolume, volumesOfPool } from './queries.js';
import type { PoolRecord } from './records.js';
import type { DuEntry, PoolInfo } from './types.js';

export async function createPool(svc: ServiceContext, name: string, options: { quotaBytes?: number } = {}): Promise<PoolInfo> {
  checkName('pool', name);
  const quotaBytes = checkQuota(options.quotaBytes);
  return svc.locks.run([POOLS_KEY, poolKey(name)], async () => {
    if (await svc.catalog.pools.get(name)) throw new StorageError('ALREADY_EXISTS', `pool '${name}' already exists`);
    await svc.layerStore.createPool(name);
    const record: PoolRecord = { name, createdAt: nowIso(), ...(quotaBytes === undefined ? {} : { quotaBytes }) };
    await svc.catalog.change((txn) => svc.catalog.pools.create(txn, record));
    return describePool(svc, record);
  });
}

export async function listPools(svc: ServiceContext): Promise<PoolInfo[]> {
  const pools = await svc.catalog.pools.all();
  return Promise.all(pools.map((p) => describePool(svc, p)));
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
    await svc.catalog.change((txn) => svc.catalog.pools.update(txn, pool, record));
    return describePool(svc, record);
  });
}

export async function deletePool(svc: ServiceContext, name: string): Promise<void> {
  await svc.locks.run([POOLS_KEY, poolKey(name)], async () => {
    const pool = await requirePool(svc, name);
    const volumes = await volumesOfPool(svc, name);
    if (volumes.length > 0) {
      throw new StorageError('BUSY', `pool '${name}' still has ${countOf(volumes.length, 'volume')}; delete them first`);
    }
    if ((await svc.catalog.reservations.byIndexPrefix('name', `${name}/`)).length > 0) {
      throw new StorageError('BUSY', `pool '${name}' has a volume being created (import or copy); try again when it is done`);
    }
    const trashed = await svc.catalog.volumes.byIndexPrefix('trash', `${name}/`);
    if (trashed.length > 0) throw new StorageError('BUSY', `pool '${name}' has ${countOf(trashed.length, 'volume')} in its trash; purge them first`);
    if ((await layersOfPool(svc, name)).length > 0) {
      throw new StorageError('BUSY', `pool '${name}' still holds layers`);
    }
    await svc.catalog.change((txn) => svc.catalog.pools.remove(txn, pool));
    for (const entry of await svc.layerStore.list(name).catch(() => [] as string[])) {
      if (LAYER_FILE_PATTERN.test(entry) || entry.startsWith(TEMP_PREFIX)) await svc.layerStore.remove({ pool: name, fileName: entry });
    }
    await svc.layerStore.removePool(name).catch(() => {});
  });
}

export async function du(svc: ServiceContext, pool: string, volume?: string): Promise<DuEntry[]> {
  await requirePool(svc, pool);
  let volumes = await volumesOfPool(svc, pool);
  if (volume !== undefined) {
    const one = await svc.catalog.volumes.lookup('name', `${pool}/${volume}`);
    if (!one) throw notFound(`volume '${pool}/${volume}' does not exist`);
    volumes = [one];
  }
  volumes.sort((a, b) => a.name.localeCompare(b.name));
  const out: DuEntry[] = [];
  for (const vol of volumes) {
    for (const snap of await snapshotsOfVolume(svc, vol.id)) {
      const layer = await layerById(svc, snap.layerId);
      out.push({ name: `${pool}/${vol.name}@${snap.name}`, provisionedBytes: snap.sizeBytes, allocatedBytes: await svc.layerStore.allocatedBytes(layer) });
    }
    const active = await layerById(svc, vol.activeLayerId);
    out.push({ name: `${pool}/${vol.name}`, provisionedBytes: vol.sizeBytes, allocatedBytes: await svc.layerStore.allocatedBytes(active) });
  }
  return out;
}
