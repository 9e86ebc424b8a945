/**
 * The records and tables of consistency groups (groups.ts, group-snapshots.ts; docs/groups.md):
 * a group, its members (volumes, by id, so renames keep them; a volume is in one group at most)
 * and its group snapshots (one point in time for every member, each member's part an ordinary
 * snapshot record marked with the group snapshot's id).
 */
import type { CatalogValue } from '../core/catalog-store.js';
import type { TableSchema } from '../meta/table.js';
import { objects, oneOf, storedObject, text } from './record-parse.js';

export interface GroupRecord {
  id: string;
  /** Unique among groups (groups span pools, so the name is not a pool's). */
  name: string;
  createdAt: string;
}

/** A volume's membership: the record's id is the volume's id, so a volume is in one group at most. */
export interface GroupMemberRecord {
  volumeId: string;
  groupId: string;
  addedAt: string;
}

/** One member's part of a group snapshot. */
export interface GroupSnapshotMember {
  volumeId: string;
  snapshotId: string;
}

export interface GroupSnapshotRecord {
  id: string;
  groupId: string;
  name: string;
  /** The members' snapshots, in volume id order (the order they were paused and taken in). */
  members: GroupSnapshotMember[];
  /**
   * 'ready'; 'deleting' once `group snap delete` began removing the member snapshots (each
   * removal is crash safe on its own; the record goes last, so a delete killed part-way is
   * finished by running it again).
   */
  state: 'ready' | 'deleting';
  createdAt: string;
}

export const GROUP_SNAPSHOT_STATES = ['ready', 'deleting'] as const;

export const groupSchema: TableSchema<GroupRecord> = {
  name: 'group',
  id: (g) => g.id,
  parse: (value: CatalogValue) => {
    const o = storedObject(value);
    return { id: text(o, 'id'), name: text(o, 'name'), createdAt: text(o, 'createdAt') };
  },
  indexes: { name: (g) => g.name },
};

export const groupMemberSchema: TableSchema<GroupMemberRecord> = {
  name: 'group-member',
  id: (m) => m.volumeId,
  parse: (value: CatalogValue) => {
    const o = storedObject(value);
    return { volumeId: text(o, 'volumeId'), groupId: text(o, 'groupId'), addedAt: text(o, 'addedAt') };
  },
  /** "<group id>/<volume id>": a group's members are the prefix "<group id>/". */
  indexes: { group: (m) => `${m.groupId}/${m.volumeId}` },
};

export const groupSnapshotSchema: TableSchema<GroupSnapshotRecord> = {
  name: 'group-snapshot',
  id: (s) => s.id,
  parse: (value: CatalogValue) => {
    const o = storedObject(value);
    return {
      id: text(o, 'id'),
      groupId: text(o, 'groupId'),
      name: text(o, 'name'),
      members: objects(o, 'members').map((m) => ({ volumeId: text(m, 'volumeId'), snapshotId: text(m, 'snapshotId') })),
      state: oneOf(o, 'state', GROUP_SNAPSHOT_STATES),
      createdAt: text(o, 'createdAt'),
    };
  },
  /** "<group id>/<name>": a group's snapshots are the prefix "<group id>/". */
  indexes: { name: (s) => `${s.groupId}/${s.name}` },
};
