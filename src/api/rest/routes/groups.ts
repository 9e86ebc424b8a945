/**
 * /v1/groups: consistency groups (docs/groups.md): create, list, describe, delete; members added
 * and removed; group snapshots taken, listed, rolled back and deleted.
 */
import type { FastifyInstance } from 'fastify';
import type { RestContext } from '../context.js';
import { GROUP_SCHEMAS, groupJson, groupSnapshotJson } from '../group-schemas.js';
import { errorResponses, listOf, nameSchema, ref } from '../schemas.js';

interface GroupParams {
  group: string;
}
interface MemberParams extends GroupParams {
  pool: string;
  vol: string;
}
interface GroupSnapParams extends GroupParams {
  snap: string;
}

const groupParams = { type: 'object', required: ['group'], properties: { group: nameSchema } } as const;
const memberParams = { type: 'object', required: ['group', 'pool', 'vol'], properties: { group: nameSchema, pool: nameSchema, vol: nameSchema } } as const;
const snapParams = { type: 'object', required: ['group', 'snap'], properties: { group: nameSchema, snap: nameSchema } } as const;
const nameBody = { type: 'object', required: ['name'], additionalProperties: false, properties: { name: nameSchema } } as const;

export function registerGroupRoutes(app: FastifyInstance, ctx: RestContext): void {
  for (const schema of GROUP_SCHEMAS) app.addSchema(schema);
  const { service } = ctx;

  app.get('/v1/groups', {
    schema: { tags: ['groups'], summary: 'List the consistency groups', response: { 200: listOf('Group'), ...errorResponses } },
  }, async () => (await service.listGroups()).map(groupJson));

  app.post<{ Body: { name: string } }>('/v1/groups', {
    schema: { tags: ['groups'], summary: 'Create a consistency group (empty)', body: nameBody, response: { 201: ref('Group'), ...errorResponses } },
  }, async (req, reply) => reply.code(201).send(groupJson(await service.createGroup(req.body.name))));

  app.get<{ Params: GroupParams }>('/v1/groups/:group', {
    schema: { tags: ['groups'], summary: 'A group: its members and how many group snapshots it has', params: groupParams, response: { 200: ref('Group'), ...errorResponses } },
  }, async (req) => groupJson(await service.groupInfo(req.params.group)));

  app.delete<{ Params: GroupParams }>('/v1/groups/:group', {
    schema: {
      tags: ['groups'],
      summary: 'Delete a group (its volumes stay, out of any group)',
      description: 'Refused (409 BUSY) while it has group snapshots: delete them first.',
      params: groupParams,
      response: { 204: { type: 'null' }, ...errorResponses },
    },
  }, async (req, reply) => {
    await service.deleteGroup(req.params.group);
    return reply.code(204).send();
  });

  app.post<{ Params: GroupParams; Body: { pool: string; volume: string } }>('/v1/groups/:group/members', {
    schema: {
      tags: ['groups'],
      summary: 'Add a volume (of any pool) to a group',
      description: 'A volume is in one group at most (409 BUSY naming the other). A member cannot be deleted or moved to the trash until it is removed.',
      params: groupParams,
      body: { type: 'object', required: ['pool', 'volume'], additionalProperties: false, properties: { pool: nameSchema, volume: nameSchema } },
      response: { 200: ref('Group'), ...errorResponses },
    },
  }, async (req) => groupJson(await service.addToGroup(req.params.group, req.body.pool, req.body.volume)));

  app.delete<{ Params: MemberParams }>('/v1/groups/:group/members/:pool/:vol', {
    schema: {
      tags: ['groups'],
      summary: "Remove a volume from a group: its parts of the group's snapshots become its own snapshots",
      params: memberParams,
      response: { 200: ref('Group'), ...errorResponses },
    },
  }, async (req) => groupJson(await service.removeFromGroup(req.params.group, req.params.pool, req.params.vol)));

  app.get<{ Params: GroupParams }>('/v1/groups/:group/snapshots', {
    schema: { tags: ['groups'], summary: "A group's snapshots, oldest first", params: groupParams, response: { 200: listOf('GroupSnapshot'), ...errorResponses } },
  }, async (req) => (await service.listGroupSnapshots(req.params.group)).map(groupSnapshotJson));

  app.post<{ Params: GroupParams; Body: { name: string } }>('/v1/groups/:group/snapshots', {
    schema: {
      tags: ['groups'],
      summary: "Take a group snapshot: every member's exports pause at once, each member gets snapshot group.<group>.<name>, then they resume",
      description: 'Crash consistent: after a crash either every member has the snapshot or none has.',
      params: groupParams,
      body: nameBody,
      response: { 201: ref('GroupSnapshot'), ...errorResponses },
    },
  }, async (req, reply) => reply.code(201).send(groupSnapshotJson(await service.createGroupSnapshot(req.params.group, req.body.name))));

  app.get<{ Params: GroupSnapParams }>('/v1/groups/:group/snapshots/:snap', {
    schema: { tags: ['groups'], summary: 'A group snapshot and its members\' snapshots', params: snapParams, response: { 200: ref('GroupSnapshot'), ...errorResponses } },
  }, async (req) => groupSnapshotJson(await service.groupSnapshotInfo(req.params.group, req.params.snap)));

  app.post<{ Params: GroupSnapParams }>('/v1/groups/:group/snapshots/:snap/rollback', {
    schema: {
      tags: ['groups'],
      summary: 'Roll every member back to the group snapshot (one intent: all or none)',
      description: "Refused (409 BUSY) while any member's head is exported.",
      params: snapParams,
      response: { 200: ref('Group'), ...errorResponses },
    },
  }, async (req) => groupJson(await service.rollbackGroupSnapshot(req.params.group, req.params.snap)));

  app.delete<{ Params: GroupSnapParams }>('/v1/groups/:group/snapshots/:snap', {
    schema: {
      tags: ['groups'],
      summary: "Delete a group snapshot and its members' snapshots",
      description: "An interrupted delete leaves it 'deleting': delete it again to finish.",
      params: snapParams,
      response: { 204: { type: 'null' }, ...errorResponses },
    },
  }, async (req, reply) => {
    await service.deleteGroupSnapshot(req.params.group, req.params.snap);
    return reply.code(204).send();
  });
}
