/**
 * The trash routes (RBD's `rbd trash`): delete a volume to its pool's trash, list, restore and
 * purge. DELETE /v1/pools/{pool}/volumes/{vol} stays the delete that takes effect at once.
 */
import type { FastifyInstance } from 'fastify';
import type { PoolParams, RestContext, VolumeParams } from '../context.js';
import { errorResponses, listOf, nameSchema, ref, trashJson, volumeJson } from '../schemas.js';
import { poolParams, volumeParams } from './volumes.js';

const MS_PER_SECOND = 1000;

interface TrashParams extends PoolParams {
  id: string;
}

const trashParams = {
  type: 'object',
  required: ['pool', 'id'],
  properties: { pool: nameSchema, id: { type: 'string', pattern: '^[A-Za-z0-9]{1,128}$', description: 'the id trash listings give' } },
} as const;

export function registerTrashRoutes(app: FastifyInstance, ctx: RestContext): void {
  const { service } = ctx;

  app.post<{ Params: VolumeParams; Body: { expiresInSeconds?: number } | undefined }>('/v1/pools/:pool/volumes/:vol/trash', {
    schema: {
      tags: ['trash'],
      summary: "Delete a volume to its pool's trash: its name is free at once; its snapshots stay readable by its clones until it is purged",
      description: 'Refused (409 BUSY) while the volume is exported. expiresInSeconds: when the daemon purges it (default 7 days).',
      params: volumeParams,
      body: { type: ['object', 'null'], additionalProperties: false, properties: { expiresInSeconds: { type: 'number', minimum: 0 } } },
      response: { 200: ref('TrashEntry'), ...errorResponses },
    },
  }, async (req) => {
    const seconds = req.body?.expiresInSeconds;
    const entry = await service.trashVolume(req.params.pool, req.params.vol, seconds === undefined ? {} : { expiresInMs: seconds * MS_PER_SECOND });
    ctx.metrics.forgetVolume(req.params.pool, req.params.vol);
    return trashJson(entry);
  });

  app.get('/v1/trash', {
    schema: { tags: ['trash'], summary: "Every pool's trash, oldest deletion first", response: { 200: listOf('TrashEntry'), ...errorResponses } },
  }, async () => (await service.listTrash()).map(trashJson));

  app.get<{ Params: PoolParams }>('/v1/pools/:pool/trash', {
    schema: { tags: ['trash'], summary: "A pool's trash, oldest deletion first", params: poolParams, response: { 200: listOf('TrashEntry'), ...errorResponses } },
  }, async (req) => (await service.listTrash(req.params.pool)).map(trashJson));

  app.post<{ Params: TrashParams; Body: { name?: string } | undefined }>('/v1/pools/:pool/trash/:id/restore', {
    schema: {
      tags: ['trash'],
      summary: 'Restore a volume from the trash, under its old name or a new one',
      description: 'A taken name is 409 ALREADY_EXISTS (pass "name").',
      params: trashParams,
      body: { type: ['object', 'null'], additionalProperties: false, properties: { name: nameSchema } },
      response: { 200: ref('Volume'), ...errorResponses },
    },
  }, async (req) => {
    const name = req.body?.name;
    return volumeJson(await service.restoreVolume(req.params.pool, req.params.id, name === undefined ? {} : { name }));
  });

  app.delete<{ Params: TrashParams }>('/v1/pools/:pool/trash/:id', {
    schema: {
      tags: ['trash'],
      summary: 'Purge a volume from the trash now (409 BUSY while its snapshots have clones, naming them)',
      params: trashParams,
      response: { 204: { type: 'null' }, ...errorResponses },
    },
  }, async (req, reply) => {
    await service.purgeTrash(req.params.pool, req.params.id);
    return reply.code(204).send();
  });

  app.post<{ Params: PoolParams; Body: { expired?: boolean } | undefined }>('/v1/pools/:pool/trash/purge', {
    schema: {
      tags: ['trash'],
      summary: "Purge a pool's trash (expired: only what has expired); returns what was purged",
      description: 'Refused (409 BUSY) before anything is purged when a volume to purge has clones.',
      params: poolParams,
      body: { type: ['object', 'null'], additionalProperties: false, properties: { expired: { type: 'boolean' } } },
      response: { 200: listOf('TrashEntry'), ...errorResponses },
    },
  }, async (req) => (await service.purgePoolTrash(req.params.pool, { expiredOnly: req.body?.expired === true })).map(trashJson));
}
