/**
 * Consistency groups (docs/groups.md): create, list, describe, delete; add and remove member
 * volumes (in any pools). A group is a catalog record; membership is a record per volume, keyed
 * by the volume's id (renames keep it; one group per volume). A volume in a group cannot be
 * deleted or moved to the trash: `group remove` it first (checkNotInGroup). Group snapshots are
 * group-snapshots.ts.
 *
 * Locks: "group:<id>" orders the changes of one group; member operations take the members'
 * volume locks too, all in one KeyedMutex.run (sorted keys: no deadlock with other operations).
 */
import { StorageError } from '../core/errors.js';
import { CatalogTxn } from './catalog.js';
import { newId, notFound, nowIso, volKey, type ServiceContext } from './context.js';
import { withVolume } from './guards.js';
import type { GroupMemberRecord, GroupRecord } from './group-tables.js';
import type { GroupInfo, GroupMemberInfo } from './group-types.js';
import { checkName } from './names.js';
import type { VolumeRecord } from './records.js';

/** Members a group may have: a group snapshot is one catalog transaction of ~6 records per member. */
export const MAX_GROUP_MEMBERS = 32;

export const groupKey = (id: string) => `group:${id}`;
const GROUP_NAMES_KEY = 'groups';

export async function requireGroup(svc: ServiceContext, name: string): Promise<GroupRecord> {
  const group = await svc.catalog.groups.lookup('name', name);
  if (!group) throw new StorageError('NOT_FOUND', `group '${name}' does not exist`, { fix: { operation: 'listGroups', text: 'check the name; {} lists the groups' } });
  return group;
}

/** A group's membership records, in volume id order (the order group operations lock and pause in). */
export async function memberRecords(svc: ServiceContext, groupId: string): Promise<GroupMemberRecord[]> {
  const members = await svc.catalog.groupMembers.byIndexPrefix('group', `${groupId}/`);
  return members.sort((a, b) => a.volumeId.localeCompare(b.volumeId));
}

/** The member volumes' records, in volume id order (a member whose record is gone is CORRUPT: deletes refuse members). */
export async function memberVolumes(svc: ServiceContext, groupId: string): Promise<VolumeRecord[]> {
  const out: VolumeRecord[] = [];
  for (const m of await memberRecords(svc, groupId)) {
    const vol = await svc.catalog.volumes.get(m.volumeId);
    if (!vol) throw new StorageError('CORRUPT', `group member ${m.volumeId} has no volume record`);
    out.push(vol);
  }
  return out;
}

/**
 * Runs fn under the group's lock and every member's volume lock (taken together, in sorted
 * order), with the group and its members read again under them. Membership can change between
 * the first read and the locks (another add or remove): then the locks are taken again.
 */
export async function withGroupLocked<T>(
  svc: ServiceContext,
  name: string,
  fn: (group: GroupRecord, members: VolumeRecord[]) => Promise<T>,
  extraKeys: (members: VolumeRecord[]) => string[] = () => [],
): Promise<T> {
  for (;;) {
    const group = await requireGroup(svc, name);
    const before = await memberVolumes(svc, group.id);
    const keys = [groupKey(group.id), ...before.map((v) => volKey(v.id)), ...extraKeys(before)];
    const result = await svc.locks.run(keys, async () => {
      const current = await requireGroup(svc, name);
      const members = await memberVolumes(svc, current.id);
      const same = current.id === group.id && members.length === before.length && members.every((m, i) => m.id === before[i]!.id);
      return same ? { done: true as const, value: await fn(current, members) } : { done: false as const };
    });
    if (result.done) return result.value;
  }
}

export async function describeGroup(svc: ServiceContext, group: GroupRecord): Promise<GroupInfo> {
  const members: GroupMemberInfo[] = (await memberVolumes(svc, group.id)).map((v) => ({ pool: v.pool, volume: v.name, volumeId: v.id }));
  members.sort((a, b) => a.pool.localeCompare(b.pool) || a.volume.localeCompare(b.volume));
  const snapshotCount = (await svc.catalog.groupSnapshots.byIndexPrefix('name', `${group.id}/`)).length;
  return { id: group.id, name: group.name, members, snapshotCount, createdAt: group.createdAt };
}

/** Refuses (BUSY, naming `group remove`) to delete or trash a volume that is in a group. */
export async function checkNotInGroup(svc: ServiceContext, vol: VolumeRecord, what: string): Promise<void> {
  const member = await svc.catalog.groupMembers.get(vol.id);
  if (member === undefined) return;
  const group = await svc.catalog.groups.get(member.groupId);
  const name = group?.name ?? member.groupId;
  throw new StorageError('BUSY', `volume '${vol.pool}/${vol.name}' is in group '${name}'; take it out of the group to ${what}`, {
    fix: { operation: 'removeFromGroup', group: name, pool: vol.pool, volume: vol.name, text: 'remove it with {} first' },
  });
}

export async function createGroup(svc: ServiceContext, name: string): Promise<GroupInfo> {
  checkName('group', name);
  return svc.locks.run([GROUP_NAMES_KEY], async () => {
    if (await svc.catalog.groups.lookup('name', name)) throw new StorageError('ALREADY_EXISTS', `group '${name}' already exists`);
    const group: GroupRecord = { id: newId(), name, createdAt: nowIso() };
    await svc.catalog.change((txn) => svc.catalog.groups.create(txn, group));
    return describeGroup(svc, group);
  });
}

export async function listGroups(svc: ServiceContext): Promise<GroupInfo[]> {
  const groups = await svc.catalog.groups.byIndexPrefix('name', '');
  return Promise.all(groups.sort((a, b) => a.name.localeCompare(b.name)).map((g) => describeGroup(svc, g)));
}

export async function groupInfo(svc: ServiceContext, name: string): Promise<GroupInfo> {
  return describeGroup(svc, await requireGroup(svc, name));
}

export async function deleteGroup(svc: ServiceContext, name: string): Promise<void> {
  await withGroupLocked(svc, name, async (group) => {
    const snapshots = await svc.catalog.groupSnapshots.byIndexPrefix('name', `${group.id}/`);
    if (snapshots.length > 0) {
      const names = snapshots.map((s) => `${name}@${s.name}`).sort();
      throw new StorageError('BUSY', `group '${name}' has group snapshots (${names.join(', ')}); delete them first with 'group snap delete'`);
    }
    const members = await memberRecords(svc, group.id);
    await svc.catalog.change((txn) => {
      for (const m of members) svc.catalog.groupMembers.remove(txn, m);
      svc.catalog.groups.remove(txn, group);
    });
  });
}

/**
 * Runs fn under the volume's lock and the group's (membership changes: the volume's record and
 * the group's read again under them). A held volume may change groups: nothing of its data changes.
 */
async function withGroupAndVolume<T>(svc: ServiceContext, name: string, pool: string, volume: string, fn: (group: GroupRecord, vol: VolumeRecord) => Promise<T>): Promise<T> {
  const group = await requireGroup(svc, name);
  return withVolume(svc, pool, volume, async (vol) => fn(await requireGroup(svc, name), vol), { keys: [groupKey(group.id)], allowHeld: true });
}

export async function addToGroup(svc: ServiceContext, name: string, pool: string, volume: string): Promise<GroupInfo> {
  return withGroupAndVolume(svc, name, pool, volume, async (current, vol) => {
    const existing = await svc.catalog.groupMembers.get(vol.id);
    if (existing !== undefined) {
      if (existing.groupId === current.id) return describeGroup(svc, current);
      const other = await svc.catalog.groups.get(existing.groupId);
      throw new StorageError('BUSY', `volume '${pool}/${volume}' is already in group '${other?.name ?? existing.groupId}'; a volume is in one group at most`, {
        fix: { operation: 'removeFromGroup', group: other?.name ?? existing.groupId, pool, volume, text: 'remove it from there first with {}' },
      });
    }
    const count = (await memberRecords(svc, current.id)).length;
    if (count >= MAX_GROUP_MEMBERS) {
      throw new StorageError('LIMIT_EXCEEDED', `group '${name}' has ${count} members, the most a group may have; make another group`);
    }
    const txn = new CatalogTxn();
    svc.catalog.groups.requireUnchanged(txn, current);
    svc.catalog.groupMembers.create(txn, { volumeId: vol.id, groupId: current.id, addedAt: nowIso() });
    await svc.catalog.commit(txn);
    return describeGroup(svc, current);
  });
}

export async function removeFromGroup(svc: ServiceContext, name: string, pool: string, volume: string): Promise<GroupInfo> {
  return withGroupAndVolume(svc, name, pool, volume, async (current, vol) => {
    const member = await svc.catalog.groupMembers.get(vol.id);
    if (member === undefined || member.groupId !== current.id) {
      throw notFound(`volume '${pool}/${volume}' is not in group '${name}' (see 'group info ${name}')`);
    }
    // Its parts of the group's snapshots become its own snapshots; a group snapshot left with
    // no member goes.
    const txn = new CatalogTxn();
    svc.catalog.groupMembers.remove(txn, member);
    for (const groupSnap of await svc.catalog.groupSnapshots.byIndexPrefix('name', `${current.id}/`)) {
      const part = groupSnap.members.find((m) => m.volumeId === vol.id);
      if (part === undefined) continue;
      const members = groupSnap.members.filter((m) => m !== part);
      if (members.length === 0) svc.catalog.groupSnapshots.remove(txn, groupSnap);
      else svc.catalog.groupSnapshots.update(txn, groupSnap, { ...groupSnap, members });
      const snap = await svc.catalog.snapshots.get(part.snapshotId);
      if (snap !== undefined) {
        const { groupSnapshotId: _owner, ...own } = snap;
        svc.catalog.snapshots.update(txn, snap, own);
      }
    }
    await svc.catalog.commit(txn);
    return describeGroup(svc, current);
  });
}
