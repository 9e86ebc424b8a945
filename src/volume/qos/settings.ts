/**
 * QoS settings in the catalog (issue 15; docs/qos.md): a volume's own limits and policy, a pool's
 * default, named policies, which of them applies, and pushing a change to the exported volumes'
 * throttles at once (no reattach).
 *
 * Precedence, whole sets only: the volume's own limits, else its policy's, else the pool's own
 * limits, else the pool's policy's, else none.
 *
 * A policy in use is never deleted: attaching one rewrites its record in the same transaction (a
 * delete racing with it compares the revision it read and fails), and a delete first looks for
 * volumes and pools attaching it (the `qos-policy` indexes of both tables).
 */
import { StorageError } from '../../core/errors.js';
import { CatalogTxn } from '../catalog.js';
import { nowIso, poolKey, type ServiceContext } from '../context.js';
import { withVolume } from '../guards.js';
import { checkName } from '../names.js';
import { requirePool } from '../queries.js';
import type { PoolRecord, QosPolicyRecord, QosSetting, VolumeRecord } from '../records.js';
import { changeQosLimits, checkQosLimits, isUnlimited, type QosLimits } from './limits.js';
import type { QosInfo, QosPolicyInfo, QosSettingChange, QosSource, QosVolumeStats } from './types.js';

const policyKey = (name: string) => `qos-policy:${name}`;
/** Names listed in a "still attached" error before "and N more". */
const NAMES_SHOWN_MAX = 5;

function policyMissing(name: string): StorageError {
  return new StorageError('NOT_FOUND', `QoS policy '${name}' does not exist; create it first (strata qos policy create ${name} ...)`);
}

/** A setting after a change (undefined: nothing left); limits and the policy's name checked. */
export function changedSetting(current: QosSetting | undefined, change: QosSettingChange): QosSetting | undefined {
  const limits = change.limits === undefined ? current?.limits : change.limits === null ? undefined : changeQosLimits(current?.limits, change.limits);
  const policy = change.policy === undefined ? current?.policy : (change.policy ?? undefined);
  if (policy !== undefined) checkName('QoS policy', policy);
  const next: QosSetting = {};
  if (!isUnlimited(limits)) next.limits = limits!;
  if (policy !== undefined) next.policy = policy;
  return next.limits === undefined && next.policy === undefined ? undefined : next;
}

/**
 * Adds to txn what attaching `next`'s policy needs: the policy must exist, and its record is
 * rewritten so that a delete racing with this change fails. Nothing when the policy is unchanged.
 */
async function attachPolicy(svc: ServiceContext, txn: CatalogTxn, previous: QosSetting | undefined, next: QosSetting | undefined): Promise<void> {
  const name = next?.policy;
  if (name === undefined || name === previous?.policy) return;
  const policy = await svc.catalog.qosPolicies.get(name);
  if (policy === undefined) throw policyMissing(name);
  svc.catalog.qosPolicies.update(txn, policy, { ...policy });
}

/** A new volume's setting, checked (its policy must exist): what createVolume records. */
export async function settingForNewVolume(svc: ServiceContext, txn: CatalogTxn, change: QosSettingChange | undefined): Promise<QosSetting | undefined> {
  if (change === undefined) return undefined;
  const setting = changedSetting(undefined, change);
  await attachPolicy(svc, txn, undefined, setting);
  return setting;
}

async function resolve(svc: ServiceContext, own: QosSetting | undefined, pool: PoolRecord | undefined, isVolume: boolean): Promise<QosInfo> {
  const base = { limits: own?.limits, policy: own?.policy };
  const levels: Array<{ setting: QosSetting | undefined; limitsSource: QosSource; policySource: QosSource }> = [];
  if (isVolume) levels.push({ setting: own, limitsSource: 'volume', policySource: 'volume-policy' });
  levels.push({ setting: isVolume ? pool?.qos : own, limitsSource: 'pool', policySource: 'pool-policy' });
  for (const { setting, limitsSource, policySource } of levels) {
    if (setting?.limits !== undefined) return { ...base, effective: setting.limits, source: limitsSource, sourcePolicy: undefined };
    if (setting?.policy !== undefined) {
      // A policy is never deleted while attached; one missing anyway limits nothing.
      const policy = await svc.catalog.qosPolicies.get(setting.policy);
      if (policy !== undefined) return { ...base, effective: policy.limits, source: policySource, sourcePolicy: policy.name };
    }
  }
  return { ...base, effective: undefined, source: 'none', sourcePolicy: undefined };
}

/** The limits that apply to a volume now (undefined: none). */
export async function effectiveLimits(svc: ServiceContext, vol: VolumeRecord): Promise<QosLimits | undefined> {
  return (await resolve(svc, vol.qos, await svc.catalog.pools.get(vol.pool), true)).effective;
}

/** Gives every exported volume (or those of `volumeId`) the limits that apply to it now. */
async function refreshLive(svc: ServiceContext, volumeId?: string): Promise<void> {
  for (const live of [...svc.live.values()]) {
    if (volumeId !== undefined && live.target.volumeId !== volumeId) continue;
    const vol = await svc.catalog.volumes.get(live.target.volumeId);
    if (vol !== undefined) live.throttle.setLimits(await effectiveLimits(svc, vol));
  }
}

// Volumes

export async function volumeQos(svc: ServiceContext, pool: string, volume: string): Promise<QosInfo> {
  return withVolume(svc, pool, volume, async (vol) => resolve(svc, vol.qos, await svc.catalog.pools.get(vol.pool), true), { allowHeld: true });
}

/** Changes a volume's own QoS (change: limits field by field, the policy); exported devices follow at once. */
export async function setVolumeQos(svc: ServiceContext, pool: string, volume: string, change: QosSettingChange): Promise<QosInfo> {
  return withVolume(
    svc,
    pool,
    volume,
    async (vol) => {
      const setting = changedSetting(vol.qos, change);
      const { qos: _old, ...rest } = vol;
      const next: VolumeRecord = setting === undefined ? rest : { ...rest, qos: setting };
      const txn = new CatalogTxn();
      await attachPolicy(svc, txn, vol.qos, setting);
      svc.catalog.volumes.update(txn, vol, next);
      await svc.catalog.commit(txn);
      await refreshLive(svc, vol.id);
      return resolve(svc, setting, await svc.catalog.pools.get(vol.pool), true);
    },
    { allowHeld: true },
  );
}

/** Removes a volume's own limits and policy: its pool's default applies. */
export function clearVolumeQos(svc: ServiceContext, pool: string, volume: string): Promise<QosInfo> {
  return setVolumeQos(svc, pool, volume, { limits: null, policy: null });
}

// Pools

export async function poolQos(svc: ServiceContext, name: string): Promise<QosInfo> {
  return resolve(svc, (await requirePool(svc, name)).qos, undefined, false);
}

/** Changes a pool's default QoS; its exported volumes that have none of their own follow at once. */
export async function setPoolQos(svc: ServiceContext, name: string, change: QosSettingChange): Promise<QosInfo> {
  return svc.locks.run([poolKey(name)], async () => {
    const pool = await requirePool(svc, name);
    const setting = changedSetting(pool.qos, change);
    const { qos: _old, ...rest } = pool;
    const txn = new CatalogTxn();
    await attachPolicy(svc, txn, pool.qos, setting);
    svc.catalog.pools.update(txn, pool, setting === undefined ? rest : { ...rest, qos: setting });
    await svc.catalog.commit(txn);
    await refreshLive(svc);
    return resolve(svc, setting, undefined, false);
  });
}

export function clearPoolQos(svc: ServiceContext, name: string): Promise<QosInfo> {
  return setPoolQos(svc, name, { limits: null, policy: null });
}

// Policies

async function describePolicy(svc: ServiceContext, policy: QosPolicyRecord): Promise<QosPolicyInfo> {
  const [volumes, pools] = await Promise.all([
    svc.catalog.volumes.byIndexPrefix('qos-policy', `${policy.name}/`),
    svc.catalog.pools.byIndexPrefix('qos-policy', `${policy.name}/`),
  ]);
  return { name: policy.name, limits: policy.limits, volumeCount: volumes.length, poolCount: pools.length, createdAt: policy.createdAt };
}

export async function createQosPolicy(svc: ServiceContext, name: string, limits: Readonly<Record<string, unknown>>): Promise<QosPolicyInfo> {
  checkName('QoS policy', name);
  const checked = checkQosLimits(limits);
  if (isUnlimited(checked)) throw new StorageError('INVALID_ARGUMENT', `QoS policy '${name}' sets no limit: give at least one (e.g. --read-iops 500)`);
  const record: QosPolicyRecord = { name, limits: checked, createdAt: nowIso() };
  return svc.locks.run([policyKey(name)], async () => {
    if ((await svc.catalog.qosPolicies.get(name)) !== undefined) throw new StorageError('ALREADY_EXISTS', `QoS policy '${name}' already exists; change it with 'strata qos policy set' or choose another name`);
    const txn = new CatalogTxn();
    svc.catalog.qosPolicies.create(txn, record);
    txn.claimedIndexKeys.set(svc.catalog.qosPolicies.table.recordKey(name), `QoS policy '${name}'`);
    await svc.catalog.commit(txn);
    return describePolicy(svc, record);
  });
}

export async function listQosPolicies(svc: ServiceContext): Promise<QosPolicyInfo[]> {
  const policies = (await svc.catalog.qosPolicies.all()).sort((a, b) => a.name.localeCompare(b.name));
  return Promise.all(policies.map((p) => describePolicy(svc, p)));
}

export async function qosPolicyInfo(svc: ServiceContext, name: string): Promise<QosPolicyInfo> {
  const policy = await svc.catalog.qosPolicies.get(name);
  if (policy === undefined) throw policyMissing(name);
  return describePolicy(svc, policy);
}

/** Changes a policy's limits (field by field); every exported volume it applies to follows at once. */
export async function setQosPolicy(svc: ServiceContext, name: string, limits: { readonly [field: string]: number | null | undefined }): Promise<QosPolicyInfo> {
  return svc.locks.run([policyKey(name)], async () => {
    const policy = await svc.catalog.qosPolicies.get(name);
    if (policy === undefined) throw policyMissing(name);
    const next = changeQosLimits(policy.limits, limits);
    if (isUnlimited(next)) throw new StorageError('INVALID_ARGUMENT', `QoS policy '${name}' would set no limit: keep at least one, or delete the policy`);
    const record: QosPolicyRecord = { ...policy, limits: next };
    await svc.catalog.change((txn) => svc.catalog.qosPolicies.update(txn, policy, record));
    await refreshLive(svc);
    return describePolicy(svc, record);
  });
}

/** Deletes a policy; BUSY naming the volumes and pools that still attach it. */
export async function deleteQosPolicy(svc: ServiceContext, name: string): Promise<void> {
  await svc.locks.run([policyKey(name)], async () => {
    const policy = await svc.catalog.qosPolicies.get(name);
    if (policy === undefined) throw policyMissing(name);
    const volumes = await svc.catalog.volumes.byIndexPrefix('qos-policy', `${name}/`);
    const pools = await svc.catalog.pools.byIndexPrefix('qos-policy', `${name}/`);
    const users = [...volumes.map((v) => `volume ${v.pool}/${v.name}${v.trash === undefined ? '' : ' (in the trash)'}`), ...pools.map((p) => `pool ${p.name}`)];
    if (users.length > 0) {
      const shown = users.slice(0, NAMES_SHOWN_MAX).join(', ') + (users.length > NAMES_SHOWN_MAX ? ` and ${users.length - NAMES_SHOWN_MAX} more` : '');
      throw new StorageError(
        'BUSY',
        `QoS policy '${name}' is attached to ${shown}; detach it first (strata volume qos set POOL/VOLUME --no-policy, strata pool qos set POOL --no-policy)`,
      );
    }
    await svc.catalog.change((txn) => svc.catalog.qosPolicies.remove(txn, policy));
  });
}

/** The throttles of the exported volumes, summed per volume (a snapshot's export counts with its volume). */
export async function qosStats(svc: ServiceContext): Promise<QosVolumeStats[]> {
  const byVolume = new Map<string, QosVolumeStats>();
  for (const live of [...svc.live.values()]) {
    const stats = live.throttle.stats();
    let entry = byVolume.get(live.target.volumeId);
    if (entry === undefined) {
      const vol = await svc.catalog.volumes.get(live.target.volumeId);
      if (vol === undefined) continue;
      entry = { pool: vol.pool, volume: vol.name, limited: false, queued: 0, throttledRequests: 0, throttledSeconds: 0 };
      byVolume.set(live.target.volumeId, entry);
    }
    entry.limited ||= live.throttle.limited;
    entry.queued += stats.queued;
    entry.throttledRequests += stats.throttledRequests;
    entry.throttledSeconds += stats.throttledMs / 1000;
  }
  return [...byVolume.values()].sort((a, b) => `${a.pool}/${a.volume}`.localeCompare(`${b.pool}/${b.volume}`));
}
