/** /v1/pools/{pool}/volumes/{vol}/snapshots routes. */
import type { FastifyInstance } from 'fastify';
import { StorageError } from '../../../core/errors.js';
import type { SnapshotParams, RestContext, VolumeParams } from '../context.js';
import { errorResponses, listOf, nameSchema, ref, snapshotJson, volumeJson } from '../schemas.js';
import { destinationBody, volumeParams } from './volumes.js';

const snapshotParams = {
  type: 'object',
  required: ['pool', 'vol', 'snap'],
  properties: { pool: nameSchema, vol: nameSchema, snap: nameSchema },
} as const;

const BASE = '/v1/pools/:pool/volumes/:vol/snapshots';

export function registerSnapshotRoutes(app: FastifyInstance, ctx: RestContext): void {
  const { service } = ctx;

  app.get<{ Params: VolumeParams }>(BASE, {
    schema: { tags: ['snapshots'], summary: 'List the snapshots of a volume (oldest first)', params: volumeParams, response: { 200: listOf('Snapshot'), ...errorResponses } },
  }, async (req) => (await service.listSnapshots(req.params.pool, req.params.vol)).map(snapshotJson));

  app.post<{ Params: VolumeParams; Body: { name: string } }>(BASE, {
    schema: {
      tags: ['snapshots'],
      summary: 'Take a snapshot (O(1))',
      params: volumeParams,
      body: { type: 'object', required: ['name'], additionalProperties: false, properties: { name: nameSchema } },
      response: { 201: ref('Snapshot'), ...errorResponses },
    },
  }, async (req, reply) => {
    const snap = await service.createSnapshot(req.params.pool, req.params.vol, req.body.name);
    return reply.code(201).send(snapshotJson(snap));
  });

  app.get<{ Params: SnapshotParams }>(`${BASE}/:snap`, {
    schema: { tags: ['snapshots'], summary: 'Snapshot info', params: snapshotParams, response: { 200: ref('Snapshot'), ...errorResponses } },
  }, async (req) => snapshotJson(await service.snapshotInfo(req.params.pool, req.params.vol, req.params.snap)));

  app.patch<{ Params: SnapshotParams; Body: { name?: string; protected?: boolean } }>(`${BASE}/:snap`, {
    schema: {
      tags: ['snapshots'],
      summary: 'Rename, protect or unprotect a snapshot',
      description: 'protected is applied before the rename.',
      params: snapshotParams,
      body: {
        type: 'object',
        minProperties: 1,
        additionalProperties: false,
        properties: { name: nameSchema, protected: { type: 'boolean' } },
      },
      response: { 200: ref('Snapshot'), ...errorResponses },
    },
  }, async (req) => {
    const { pool, vol } = req.params;
    let name = req.params.snap;
    let info = undefined;
    if (req.body.protected === true) info = await service.protectSnapshot(pool, vol, name);
    else if (req.body.protected === false) info = await service.unprotectSnapshot(pool, vol, name);
    if (req.body.name !== undefined && req.body.name !== name) {
      info = await service.renameSnapshot(pool, vol, name, req.body.name);
      name = req.body.name;
    }
    return snapshotJson(info ?? (await service.snapshotInfo(pool, vol, name)));
  });

  app.delete<{ Params: SnapshotParams }>(`${BASE}/:snap`, {
    schema: {
      tags: ['snapshots'],
      summary: 'Delete a snapshot (its data is merged into its children)',
      params: snapshotParams,
      response: { 204: { type: 'null' }, ...errorResponses },
    },
  }, async (req, reply) => {
    await service.deleteSnapshot(req.params.pool, req.params.vol, req.params.snap);
    return reply.code(204).send();
  });

  app.post<{ Params: SnapshotParams }>(`${BASE}/:snap/rollback`, {
    schema: {
      tags: ['snapshots'],
      summary: "Roll the volume back to the snapshot (the volume's changes since are dropped)",
      params: snapshotParams,
      response: { 200: ref('Volume'), ...errorResponses },
    },
  }, async (req) => volumeJson(await service.rollbackSnapshot(req.params.pool, req.params.vol, req.params.snap)));

  app.post<{ Params: SnapshotParams; Body: { pool?: string; name: string } }>(`${BASE}/:snap/clones`, {
    schema: {
      tags: ['snapshots'],
      summary: 'Clone a protected snapshot into a new volume',
      params: snapshotParams,
      body: destinationBody,
      response: { 201: ref('Volume'), ...errorResponses },
    },
  }, async (req, reply) => {
    const { pool, vol, snap } = req.params;
    const clone = await service.cloneSnapshot(pool, vol, snap, req.body.pool ?? pool, req.body.name);
    return reply.code(201).send(volumeJson(clone));
  });

  app.get<{ Params: SnapshotParams }>(`${BASE}/:snap/children`, {
    schema: {
      tags: ['snapshots'],
      summary: 'The clones of a snapshot',
      params: snapshotParams,
      response: { 200: listOf('Volume'), ...errorResponses },
    },
  }, async (req) => {
    const info = await service.snapshotInfo(req.params.pool, req.params.vol, req.params.snap);
    const clones = [];
    for (const child of info.children) {
      const slash = child.indexOf('/');
      if (slash < 0) throw new StorageError('CORRUPT', `snapshot ${info.name} lists a malformed child '${child}'`);
      try {
        clones.push(volumeJson(await service.volumeInfo(child.slice(0, slash), child.slice(slash + 1))));
      } catch (err) {
        // A clone deleted between the two calls is simply no longer a child.
        if (!(err instanceof StorageError && err.code === 'NOT_FOUND')) throw err;
      }
    }
    return clones;
  });
}
