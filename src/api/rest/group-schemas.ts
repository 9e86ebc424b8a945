/**
 * JSON schemas of the consistency group routes (/v1/groups; docs/groups.md): groups and their
 * group snapshots. Kept beside schemas.ts (same conventions: the schema is the one source of the
 * TypeScript type; mappers turn the service's answers into it).
 */
import type { FromSchema } from 'json-schema-to-ts';
import type { GroupInfo, GroupSnapshotInfo } from '../../volume/types.js';

const isoTime = { type: 'string', description: 'ISO-8601 time' } as const;

export const groupSchema = {
  $id: 'Group',
  type: 'object',
  description: 'a consistency group: volumes (in any pools) whose group snapshots are one point in time for all of them',
  required: ['id', 'name', 'members', 'snapshotCount', 'createdAt'],
  properties: {
    id: { type: 'string' },
    name: { type: 'string' },
    members: {
      type: 'array',
      description: 'in pool/volume order; membership follows a volume through renames',
      items: {
        type: 'object',
        required: ['pool', 'volume', 'volumeId'],
        properties: { pool: { type: 'string' }, volume: { type: 'string' }, volumeId: { type: 'string' } },
      },
    },
    snapshotCount: { type: 'integer', minimum: 0 },
    createdAt: isoTime,
  },
} as const;

export const groupSnapshotSchema = {
  $id: 'GroupSnapshot',
  type: 'object',
  description: "one instant of every member: each member's part is its snapshot group.<group>.<name>",
  required: ['id', 'group', 'name', 'state', 'members', 'createdAt'],
  properties: {
    id: { type: 'string' },
    group: { type: 'string' },
    name: { type: 'string' },
    state: { type: 'string', enum: ['ready', 'deleting'], description: "deleting: a delete did not finish; delete it again (rollback is refused)" },
    members: {
      type: 'array',
      items: {
        type: 'object',
        required: ['pool', 'volume', 'snapshot'],
        properties: { pool: { type: 'string' }, volume: { type: 'string' }, snapshot: { type: 'string', description: "the member's snapshot name" } },
      },
    },
    createdAt: isoTime,
  },
} as const;

export type GroupJson = FromSchema<typeof groupSchema>;
export type GroupSnapshotJson = FromSchema<typeof groupSnapshotSchema>;

export const GROUP_SCHEMAS = [groupSchema, groupSnapshotSchema];

export function groupJson(g: GroupInfo): GroupJson {
  return { ...g, members: g.members.map((m) => ({ ...m })) };
}

export function groupSnapshotJson(s: GroupSnapshotInfo): GroupSnapshotJson {
  return { ...s, members: s.members.map((m) => ({ ...m })) };
}
