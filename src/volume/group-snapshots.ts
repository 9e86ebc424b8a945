/**
 * Group snapshots (docs/groups.md): one point in time for every member of a consistency group.
 *
 * Create: under the group's lock and every member's volume lock (one sorted KeyedMutex.run), each
 * member's snapshot is planned (snapshots.ts planSnapshot: name, limit, chain depth), then the
 * exports of all members are paused at once (withLiveChanges closes every gate in the same turn
 * of the event loop, then waits for the requests in flight and flushes), each member's new active
 * layer is created, and ONE catalog transaction adds every member's snapshot and the group
 * snapshot record and removes the ONE intent that names every new file. A crash before that
 * transaction leaves a prepared intent, which recovery rolls back (the new files deleted: no
 * member has the snapshot); after it, every member has it. Then the exports resume.
 *
 * A write the guest completed on member A before it started one on member B is therefore never
 * in B's snapshot without being in A's: while B's write was in flight or waiting, A's gate was
 * already closed behind A's completed write.
 *
 * Rollback: every member back to its part under one intent (refused while any member's head is
 * exported). Delete: the member snapshots one by one (each a crash-safe snapshot delete), the
 * record marked 'deleting' first and removed last, so an interrupted delete is finished by running
 * it again.
 */
import { StorageError, type ErrorFix } from '../core/errors.js';
import { CatalogTxn } from './catalog.js';
import { newId, nowIso, poolKey, type ServiceContext } from './context.js';
import { checkNotHeld, stopExportsFix } from './guards.js';
import type { GroupRecord, GroupSnapshotRecord } from './group-tables.js';
import type { GroupInfo, GroupSnapshotInfo, GroupSnapshotMemberInfo } from './group-types.js';
import { describeGroup, requireGroup, withGroupLocked } from './groups.js';
import { commitIntent, newIntent, runIntent } from './intents.js';
import { liveKey } from './live.js';
import { withLiveChanges } from './live-registry.js';
import { checkName } from './names.js';
import { childLayers } from './queries.js';
import type { SnapshotRecord, VolumeRecord } from './records.js';
import { scheduleSeal } from './sealing.js';
import {
  addRollbackRecords,
  addSnapshotRecords,
  createRollbackLayer,
  createSnapshotLayer,
  deleteSnapshotLocked,
  planRollback,
  planSnapshot,
  rollbackDeletes,
  type RollbackPlan,
  type SnapshotPlan,
} from './snapshots.js';

/** The name of a member's part of group snapshot `group@name`: recognisable in `snap list`. */
export function memberSnapshotName(group: string, name: string): string {
  const memberName = `group.${group}.${name}`;
  try {
    return checkName('snapshot', memberName);
  } catch {
    throw new StorageError('INVALID_ARGUMENT', `group snapshot '${group}@${name}': its members' snapshots would be named '${memberName}', longer than 128 characters; use a shorter snapshot name`);
  }
}

async function requireGroupSnapshot(svc: ServiceContext, group: GroupRecord, name: string): Promise<GroupSnapshotRecord> {
  const snap = await svc.catalog.groupSnapshots.lookup('name', `${group.id}/${name}`);
  if (!snap) {
    const fix: ErrorFix = { operation: 'listGroupSnapshots', group: group.name, text: "check the name; {} lists the group's snapshots" };
    throw new StorageError('NOT_FOUND', `group snapshot '${group.name}@${name}' does not exist`, { fix });
  }
  return snap;
}

async function describeGroupSnapshot(svc: ServiceContext, group: GroupRecord, record: GroupSnapshotRecord): Promise<GroupSnapshotInfo> {
  const members: GroupSnapshotMemberInfo[] = [];
  for (const part of record.members) {
    const [vol, snap] = await Promise.all([svc.catalog.volumes.get(part.volumeId), svc.catalog.snapshots.get(part.snapshotId)]);
    // A 'deleting' group snapshot has lost some parts already.
    if (vol !== undefined && snap !== undefined) members.push({ pool: vol.pool, volume: vol.name, snapshot: snap.name });
  }
  members.sort((a, b) => a.pool.localeCompare(b.pool) || a.volume.localeCompare(b.volume));
  return { id: record.id, group: group.name, name: record.name, state: record.state, members, createdAt: record.createdAt };
}

/** The member volume a part of a group snapshot belongs to (removeFromGroup keeps the parts to members). */
function partVolume(members: readonly VolumeRecord[], volumeId: string, record: GroupSnapshotRecord): VolumeRecord {
  const vol = members.find((v) => v.id === volumeId);
  if (!vol) throw new StorageError('CORRUPT', `group snapshot ${record.id} holds volume ${volumeId}, which is not a member of its group`);
  return vol;
}

export async function createGroupSnapshot(svc: ServiceContext, groupName: string, name: string): Promise<GroupSnapshotInfo> {
  checkName('snapshot', name);
  const memberName = memberSnapshotName(groupName, name);
  return withGroupLocked(svc, groupName, async (group, members) => {
    if (members.length === 0) {
      throw new StorageError('BUSY', `group '${groupName}' has no members; add volumes with 'group add ${groupName} POOL/VOLUME' first`);
    }
    if (await svc.catalog.groupSnapshots.lookup('name', `${group.id}/${name}`)) {
      throw new StorageError('ALREADY_EXISTS', `group snapshot '${groupName}@${name}' already exists`);
    }
    for (const vol of members) checkNotHeld(svc, vol);
    const id = newId();
    const plans: SnapshotPlan[] = [];
    for (const vol of members) plans.push(await planSnapshot(svc, vol, memberName, id));
    const record: GroupSnapshotRecord = {
      id,
      groupId: group.id,
      name,
      members: plans.map((p) => ({ volumeId: p.volume.id, snapshotId: p.snapshot.id })),
      state: 'ready',
      createdAt: nowIso(),
    };
    const intent = newIntent('group-snapshot-create', `group ${groupName}@${name}`, { createFiles: plans.map((p) => p.active) });
    await withLiveChanges(svc, plans.map((p) => p.frozen.id), () => runIntent(svc, intent, async () => {
      for (const plan of plans) await createSnapshotLayer(svc, plan);
      for (const pool of new Set(plans.map((p) => p.volume.pool))) await svc.layerStore.syncPool(pool);
      const txn = new CatalogTxn();
      svc.catalog.groups.requireUnchanged(txn, group);
      for (const plan of plans) addSnapshotRecords(svc, txn, plan);
      svc.catalog.groupSnapshots.create(txn, record);
      await commitIntent(svc, txn, intent);
    }));
    for (const plan of plans) await scheduleSeal(svc, { ...plan.frozen, frozen: true }, `${plan.volume.pool}/${plan.volume.name}@${memberName}`);
    return describeGroupSnapshot(svc, group, record);
  });
}

export async function listGroupSnapshots(svc: ServiceContext, groupName: string): Promise<GroupSnapshotInfo[]> {
  const group = await requireGroup(svc, groupName);
  const records = await svc.catalog.groupSnapshots.byIndexPrefix('name', `${group.id}/`);
  records.sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.name.localeCompare(b.name));
  return Promise.all(records.map((r) => describeGroupSnapshot(svc, group, r)));
}

export async function groupSnapshotInfo(svc: ServiceContext, groupName: string, name: string): Promise<GroupSnapshotInfo> {
  const group = await requireGroup(svc, groupName);
  return describeGroupSnapshot(svc, group, await requireGroupSnapshot(svc, group, name));
}

export async function rollbackGroupSnapshot(svc: ServiceContext, groupName: string, name: string): Promise<GroupInfo> {
  return withGroupLocked(
    svc,
    groupName,
    async (group, members) => {
      const record = await requireGroupSnapshot(svc, group, name);
      if (record.state === 'deleting') {
        throw new StorageError('BUSY', `group snapshot '${groupName}@${name}' is being deleted; run 'group snap delete ${groupName}@${name}' again to finish`);
      }
      const parts = record.members.map((part) => ({ vol: partVolume(members, part.volumeId, record), snapshotId: part.snapshotId }));
      const exported = parts.flatMap(({ vol }) => {
        const head = svc.live.get(liveKey({ volumeId: vol.id, snapshotId: undefined }));
        return head === undefined ? [] : [{ name: `${vol.pool}/${vol.name}`, head }];
      });
      if (exported.length > 0) {
        const names = exported.map((e) => e.name).sort().join(', ');
        const message = `group '${groupName}' has exported members (${names}); stop their exports to roll it back (the guests would see their disks change under them)`;
        throw new StorageError('BUSY', message, { fix: stopExportsFix(exported.map((e) => e.head)) });
      }
      const plans: RollbackPlan[] = [];
      for (const { vol, snapshotId } of parts) {
        checkNotHeld(svc, vol);
        const snap = await svc.catalog.snapshots.require(snapshotId, `the snapshot of '${vol.pool}/${vol.name}' in group snapshot '${groupName}@${name}'`);
        plans.push(await planRollback(svc, vol, snap));
      }
      const intent = newIntent('group-rollback', `group ${groupName}@${name}`, { createFiles: plans.map((p) => p.active) });
      await runIntent(svc, intent, async () => {
        for (const plan of plans) await createRollbackLayer(svc, plan);
        for (const pool of new Set(plans.map((p) => p.volume.pool))) await svc.layerStore.syncPool(pool);
        const txn = new CatalogTxn();
        svc.catalog.groupSnapshots.requireUnchanged(txn, record);
        for (const plan of plans) addRollbackRecords(svc, txn, plan);
        await commitIntent(svc, txn, intent, plans.flatMap(rollbackDeletes));
      });
      return describeGroup(svc, group);
    },
    (members) => members.map((v) => poolKey(v.pool)),
  );
}

export async function deleteGroupSnapshot(svc: ServiceContext, groupName: string, name: string): Promise<void> {
  await withGroupLocked(svc, groupName, async (group, members) => {
    const record = await requireGroupSnapshot(svc, group, name);
    // Everything that would refuse a member's delete is checked before the first one goes.
    const parts: { vol: VolumeRecord; snap: SnapshotRecord }[] = [];
    for (const part of record.members) {
      const vol = partVolume(members, part.volumeId, record);
      const snap = await svc.catalog.snapshots.get(part.snapshotId);
      if (snap === undefined) continue; // deleted by an earlier, interrupted delete
      await checkMemberDeletable(svc, vol, snap);
      parts.push({ vol, snap });
    }
    let current = record;
    if (record.state !== 'deleting') {
      current = { ...record, state: 'deleting' };
      await svc.catalog.change((txn) => svc.catalog.groupSnapshots.update(txn, record, current));
    }
    for (const { vol, snap } of parts) {
      await svc.jobs.run('snapshot-delete', `${vol.pool}/${vol.name}@${snap.name}`, (ctx) => deleteSnapshotLocked(svc, vol, snap, ctx));
    }
    await svc.catalog.change((txn) => svc.catalog.groupSnapshots.remove(txn, current));
  });
}

async function checkMemberDeletable(svc: ServiceContext, vol: VolumeRecord, snap: SnapshotRecord): Promise<void> {
  checkNotHeld(svc, vol);
  const label = `'${vol.pool}/${vol.name}@${snap.name}'`;
  if (snap.protected) {
    throw new StorageError('BUSY', `member snapshot ${label} is protected`, {
      fix: { operation: 'unprotectSnapshot', pool: vol.pool, volume: vol.name, snapshot: snap.name, text: 'unprotect it first with {}' },
    });
  }
  if (svc.live.has(liveKey({ volumeId: vol.id, snapshotId: snap.id }))) {
    throw new StorageError('BUSY', `member snapshot ${label} is exported; stop its exports first`);
  }
  const clones = (await childLayers(svc, snap.layerId)).filter((c) => c.ownerVolumeId !== vol.id);
  if (clones.length > 0) throw new StorageError('BUSY', `member snapshot ${label} has clones; flatten or delete them first`);
}
