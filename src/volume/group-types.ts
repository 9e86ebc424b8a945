/**
 * The consistency groups' part of the volume service contract (docs/groups.md): groups of volumes
 * (in any pools) whose group snapshots are one point in time for every member.
 */

export interface GroupMemberInfo {
  pool: string;
  volume: string;
  /** The volume's id (membership follows the volume through renames). */
  volumeId: string;
}

export interface GroupInfo {
  id: string;
  name: string;
  /** In pool/volume order. */
  members: GroupMemberInfo[];
  snapshotCount: number;
  createdAt: string;
}

export interface GroupSnapshotMemberInfo {
  pool: string;
  volume: string;
  /** The member's snapshot: `group.<group>.<snapshot>` on the volume. */
  snapshot: string;
}

export interface GroupSnapshotInfo {
  id: string;
  group: string;
  name: string;
  /** 'deleting': a delete began and did not finish (run it again); rollback is refused. */
  state: 'ready' | 'deleting';
  /** The members it holds, in pool/volume order (a volume added to the group later is not one). */
  members: GroupSnapshotMemberInfo[];
  createdAt: string;
}

export interface GroupService {
  createGroup(name: string): Promise<GroupInfo>;
  listGroups(): Promise<GroupInfo[]>;
  groupInfo(name: string): Promise<GroupInfo>;
  /** Refused (BUSY) while it has group snapshots; its volumes stay, out of any group. */
  deleteGroup(name: string): Promise<void>;
  /** A volume is in one group at most (BUSY naming the other one). */
  addToGroup(group: string, pool: string, volume: string): Promise<GroupInfo>;
  /**
   * Takes the volume out; its member snapshots of the group's snapshots become its own snapshots
   * (keeping their names), and the group snapshots no longer hold it.
   */
  removeFromGroup(group: string, pool: string, volume: string): Promise<GroupInfo>;
  /**
   * Pauses every member's exports at once (their requests in flight complete), snapshots each
   * member, resumes them: one instant for all. Under one intent: after a crash either every
   * member has its snapshot or none has.
   */
  createGroupSnapshot(group: string, name: string): Promise<GroupSnapshotInfo>;
  listGroupSnapshots(group: string): Promise<GroupSnapshotInfo[]>;
  groupSnapshotInfo(group: string, name: string): Promise<GroupSnapshotInfo>;
  /** Rolls every member back under one intent; refused (BUSY) while any member's head is exported. */
  rollbackGroupSnapshot(group: string, name: string): Promise<GroupInfo>;
  /** Deletes every member snapshot, then the group snapshot (run again to finish one left 'deleting'). */
  deleteGroupSnapshot(group: string, name: string): Promise<void>;
}
