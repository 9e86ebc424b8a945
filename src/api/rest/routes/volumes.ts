/** /v1/pools/{pool}/volumes routes (JSON ones; the byte streams are in content.ts). */
import type { FastifyInstance } from 'fastify';
import { StorageError } from '../../../core/errors.js';
import { volumeCompactJson, volumeCompactSchema, volumeSealJson, volumeSealSchema } from '../compact-schemas.js';
import type { QosSettingChange } from '../../../volume/qos/types.js';
import type { PoolParams, RestContext, VolumeParams } from '../context.js';
import { qosChangeBodySchema } from '../qos-schemas.js';
import { errorResponses, extentJson, jobJson, listOf, nameSchema, ref, volumeEvictJson, volumeJson } from '../schemas.js';

export const poolParams = { type: 'object', required: ['pool'], properties: { pool: nameSchema } } as const;
export const volumeParams = { type: 'object', required: ['pool', 'vol'], properties: { pool: nameSchema, vol: nameSchema } } as const;

const destinationBody = {
  type: 'object',
  required: ['name'],
  additionalProperties: false,
  properties: { pool: { ...nameSchema, description: 'destination pool (default: the same pool)' }, name: nameSchema },
} as const;

export function registerVolumeRoutes(app: FastifyInstance, ctx: RestContext): void {
  const { service } = ctx;

  app.post<{ Params: VolumeParams }>('/v1/pools/:pool/volumes/:vol/evict', {
    schema: {
      tags: ['volumes'],
      summary: "Move the packs of a volume's sealed layers to its pool's tier now (an evict job; answers when it has ended)",
      params: volumeParams,
      response: { 200: ref('VolumeEvict'), ...errorResponses },
    },
  }, async (req) => {
    const { job, report } = await service.evictVolume(req.params.pool, req.params.vol);
    return volumeEvictJson(job.id, report);
  });

  app.post<{ Params: VolumeParams }>('/v1/pools/:pool/volumes/:vol/seal', {
    schema: {
      tags: ['volumes'],
      summary: "Freeze a dedup pool volume's active layer now (an empty overlay goes on top) and start its seal job",
      params: volumeParams,
      response: { 200: volumeSealSchema, ...errorResponses },
    },
  }, async (req) => volumeSealJson(await service.sealVolume(req.params.pool, req.params.vol)));

  app.post<{ Params: VolumeParams }>('/v1/pools/:pool/volumes/:vol/compact', {
    schema: {
      tags: ['volumes'],
      summary: "Merge a volume's adjacent internal sealed layers by reference (a compact job; answers when it has ended)",
      params: volumeParams,
      response: { 200: volumeCompactSchema, ...errorResponses },
    },
  }, async (req) => {
    const { job, report } = await service.compactVolume(req.params.pool, req.params.vol);
    return volumeCompactJson(job.id, report);
  });

  app.get<{ Params: PoolParams }>('/v1/pools/:pool/volumes', {
    schema: { tags: ['volumes'], summary: 'List the volumes of a pool', params: poolParams, response: { 200: listOf('Volume'), ...errorResponses } },
  }, async (req) => (await service.listVolumes(req.params.pool)).map(volumeJson));

  app.post<{ Params: PoolParams; Body: { name: string; sizeBytes: number; qos?: QosSettingChange } }>('/v1/pools/:pool/volumes', {
    schema: {
      tags: ['volumes'],
      summary: 'Create a thin volume',
      params: poolParams,
      body: {
        type: 'object',
        required: ['name', 'sizeBytes'],
        additionalProperties: false,
        properties: { name: nameSchema, sizeBytes: { type: 'integer', minimum: 1 }, qos: { ...qosChangeBodySchema, description: "the new volume's own QoS limits and policy (docs/qos.md)" } },
      },
      response: { 201: ref('Volume'), ...errorResponses },
    },
  }, async (req, reply) => {
    const { name, sizeBytes, qos } = req.body;
    const vol = await service.createVolume(req.params.pool, name, sizeBytes, qos === undefined ? {} : { qos });
    return reply.code(201).send(volumeJson(vol));
  });

  app.get<{ Params: VolumeParams }>('/v1/pools/:pool/volumes/:vol', {
    schema: { tags: ['volumes'], summary: 'Volume info (provisioned vs allocated)', params: volumeParams, response: { 200: ref('Volume'), ...errorResponses } },
  }, async (req) => volumeJson(await service.volumeInfo(req.params.pool, req.params.vol)));

  app.patch<{
    Params: VolumeParams;
    Body: { sizeBytes?: number; allowShrink?: boolean; name?: string; snapshotLimit?: number | null };
  }>('/v1/pools/:pool/volumes/:vol', {
    schema: {
      tags: ['volumes'],
      summary: 'Resize, rename or set the snapshot limit (null clears it)',
      description: 'Applied in the order resize, snapshot limit, rename.',
      params: volumeParams,
      body: {
        type: 'object',
        minProperties: 1,
        additionalProperties: false,
        properties: {
          sizeBytes: { type: 'integer', minimum: 1 },
          allowShrink: { type: 'boolean' },
          name: nameSchema,
          snapshotLimit: { type: ['integer', 'null'], minimum: 0 },
        },
      },
      response: { 200: ref('Volume'), ...errorResponses },
    },
  }, async (req) => {
    const { pool } = req.params;
    let name = req.params.vol;
    const body = req.body;
    if (body.sizeBytes === undefined && body.name === undefined && body.snapshotLimit === undefined) {
      // allowShrink alone changes nothing: say so rather than succeed silently.
      throw new StorageError('INVALID_ARGUMENT', 'body must have sizeBytes, name or snapshotLimit (allowShrink only goes with sizeBytes)');
    }
    let info = undefined;
    if (body.sizeBytes !== undefined) {
      info = await service.resizeVolume(pool, name, body.sizeBytes, { allowShrink: body.allowShrink === true });
    }
    if (body.snapshotLimit !== undefined) {
      info = await service.setSnapshotLimit(pool, name, body.snapshotLimit ?? undefined);
    }
    if (body.name !== undefined && body.name !== name) {
      info = await service.renameVolume(pool, name, body.name);
      name = body.name;
    }
    return volumeJson(info ?? (await service.volumeInfo(pool, name)));
  });

  app.delete<{ Params: VolumeParams; Querystring: { force?: boolean } }>('/v1/pools/:pool/volumes/:vol', {
    schema: {
      tags: ['volumes'],
      summary: 'Delete a volume now (force: with its snapshots; clones still refuse); POST .../trash deletes it to the trash',
      params: volumeParams,
      querystring: { type: 'object', additionalProperties: false, properties: { force: { type: 'boolean' } } },
      response: { 204: { type: 'null' }, ...errorResponses },
    },
  }, async (req, reply) => {
    await service.deleteVolume(req.params.pool, req.params.vol, { force: req.query.force === true });
    ctx.metrics.forgetVolume(req.params.pool, req.params.vol);
    return reply.code(204).send();
  });

  app.post<{ Params: VolumeParams; Body: { pool?: string; name: string } }>('/v1/pools/:pool/volumes/:vol/copy', {
    schema: {
      tags: ['volumes'],
      summary: 'Copy a volume into a new independent one (a job)',
      params: volumeParams,
      body: destinationBody,
      response: { 202: ref('Job'), ...errorResponses },
    },
  }, async (req, reply) => {
    const job = await service.copyVolume(req.params.pool, req.params.vol, req.body.pool ?? req.params.pool, req.body.name);
    return reply.code(202).send(jobJson(job));
  });

  app.post<{ Params: VolumeParams }>('/v1/pools/:pool/volumes/:vol/flatten', {
    schema: {
      tags: ['volumes'],
      summary: 'Flatten a clone: copy up its parent data and drop the dependency (a job)',
      params: volumeParams,
      response: { 202: ref('Job'), ...errorResponses },
    },
  }, async (req, reply) => {
    const job = await service.flattenVolume(req.params.pool, req.params.vol);
    return reply.code(202).send(jobJson(job));
  });

  app.get<{ Params: VolumeParams; Querystring: { from?: string; to?: string } }>('/v1/pools/:pool/volumes/:vol/diff', {
    schema: {
      tags: ['volumes'],
      summary: 'Changed extents between two snapshots (from: older, absent = start of time; to: newer, absent = the live volume)',
      params: volumeParams,
      querystring: { type: 'object', additionalProperties: false, properties: { from: nameSchema, to: nameSchema } },
      response: { 200: listOf('DiffExtent'), ...errorResponses },
    },
  }, async (req) =>
    (await service.diff(req.params.pool, req.params.vol, { fromSnapshot: req.query.from, toSnapshot: req.query.to })).map(extentJson));
}

export { destinationBody };
