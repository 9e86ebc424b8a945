/** /v1/status and /v1/pools routes. */
import type { FastifyInstance } from 'fastify';
import type { PoolParams, RestContext } from '../context.js';
import { exportJson } from './exports.js';
import { poolScrubJson, poolScrubSchema } from '../scrub-schemas.js';
import { duJson, errorResponses, listOf, nameSchema, poolCreateBodySchema, poolDfJson, poolGcJson, poolJson, ref, type PoolCreateBody } from '../schemas.js';

const poolParams = { type: 'object', required: ['pool'], properties: { pool: nameSchema } } as const;

export function registerPoolRoutes(app: FastifyInstance, ctx: RestContext): void {
  const { service } = ctx;

  app.get('/v1/status', {
    schema: { tags: ['status'], summary: 'Health, version, data folder, pools, running jobs, NBD addresses, exports', response: { 200: ref('Status'), ...errorResponses } },
  }, async () => {
    const [pools, jobs] = await Promise.all([service.listPools(), service.listJobs()]);
    return {
      status: 'ok',
      version: ctx.version,
      pid: process.pid,
      dataDir: ctx.dataDir,
      uptimeSeconds: Math.round((Date.now() - ctx.metrics.startedAt) / 100) / 10,
      pools: pools.map((p) => p.name),
      volumes: pools.reduce((n, p) => n + p.volumeCount, 0),
      jobsRunning: jobs.filter((j) => j.state === 'running' || j.state === 'queued').length,
      nbd: ctx.exports?.nbdAddresses() ?? { listen: null, socket: null },
      exports: (ctx.exports?.list() ?? []).map(exportJson),
    };
  });

  app.get('/v1/pools', {
    schema: { tags: ['pools'], summary: 'List pools', response: { 200: listOf('Pool'), ...errorResponses } },
  }, async () => (await service.listPools()).map(poolJson));

  app.post<{ Body: PoolCreateBody }>('/v1/pools', {
    schema: {
      tags: ['pools'],
      summary: 'Create a pool (a dedup pool with `dedup`)',
      body: poolCreateBodySchema,
      response: { 201: ref('Pool'), ...errorResponses },
    },
  }, async (req, reply) => {
    const { name, quotaBytes, dedup } = req.body;
    const pool = await service.createPool(name, { ...(quotaBytes === undefined ? {} : { quotaBytes }), ...(dedup === undefined ? {} : { dedup }) });
    return reply.code(201).send(poolJson(pool));
  });

  app.get<{ Params: PoolParams }>('/v1/pools/:pool/df', {
    schema: { tags: ['pools'], summary: 'Logical and physical bytes, dedup ratio, local and tiered bytes', params: poolParams, response: { 200: ref('PoolDf'), ...errorResponses } },
  }, async (req) => poolDfJson(await service.poolDf(req.params.pool)));

  app.post<{ Params: PoolParams; Body: { graceMs?: number } }>('/v1/pools/:pool/gc', {
    schema: {
      tags: ['pools'],
      summary: "Collect a dedup pool's garbage (a gc job; answers when it has ended)",
      params: poolParams,
      body: {
        type: 'object',
        additionalProperties: false,
        properties: { graceMs: { type: 'integer', minimum: 0, description: 'how long unreferenced chunks stay (default 1 hour)' } },
      },
      response: { 200: ref('PoolGc'), ...errorResponses },
    },
    // The body is optional: a POST without one means the defaults.
    preValidation: async (req) => {
      req.body ??= {};
    },
  }, async (req) => {
    const { job, report } = await service.gcPool(req.params.pool, req.body.graceMs === undefined ? {} : { graceMs: req.body.graceMs });
    return poolGcJson(job.id, report);
  });

  app.post<{ Params: PoolParams; Body: { repair?: boolean } }>('/v1/pools/:pool/scrub', {
    schema: {
      tags: ['pools'],
      summary: "Check a dedup pool's index, packs, chunk hashes and reference counts (a scrub job; answers when it has ended)",
      params: poolParams,
      body: {
        type: 'object',
        additionalProperties: false,
        properties: { repair: { type: 'boolean', description: 'fix what can be fixed (default: only report)' } },
      },
      response: { 200: poolScrubSchema, ...errorResponses },
    },
    preValidation: async (req) => {
      req.body ??= {};
    },
  }, async (req) => {
    const { job, report } = await service.scrubPool(req.params.pool, { repair: req.body.repair === true });
    return poolScrubJson(job, report);
  });

  app.get<{ Params: PoolParams }>('/v1/pools/:pool', {
    schema: { tags: ['pools'], summary: 'Pool info', params: poolParams, response: { 200: ref('Pool'), ...errorResponses } },
  }, async (req) => poolJson(await service.poolInfo(req.params.pool)));

  app.patch<{ Params: PoolParams; Body: { quotaBytes: number | null } }>('/v1/pools/:pool', {
    schema: {
      tags: ['pools'],
      summary: 'Set or clear (null) the pool quota',
      params: poolParams,
      body: {
        type: 'object',
        required: ['quotaBytes'],
        additionalProperties: false,
        properties: { quotaBytes: { type: ['integer', 'null'], minimum: 0 } },
      },
      response: { 200: ref('Pool'), ...errorResponses },
    },
  }, async (req) => poolJson(await service.setPoolQuota(req.params.pool, req.body.quotaBytes ?? undefined)));

  app.delete<{ Params: PoolParams; Querystring: { force?: boolean } }>('/v1/pools/:pool', {
    schema: {
      tags: ['pools'],
      summary: "Delete an empty pool and its packs (force: even when its tier's packs cannot be deleted; 200 then says where they were left)",
      params: poolParams,
      querystring: { type: 'object', additionalProperties: false, properties: { force: { type: 'boolean' } } },
      response: {
        204: { type: 'null' },
        200: {
          type: 'object',
          required: ['pool', 'packsLeftIn', 'packsLeftReason'],
          additionalProperties: false,
          properties: { pool: { type: 'string' }, packsLeftIn: { type: 'string' }, packsLeftReason: { type: 'string' } },
        },
        ...errorResponses,
      },
    },
  }, async (req, reply) => {
    const report = await service.deletePool(req.params.pool, { force: req.query.force === true });
    if (report.packsLeftIn !== undefined) return reply.code(200).send(report);
    return reply.code(204).send();
  });

  app.get<{ Params: PoolParams; Querystring: { volume?: string } }>('/v1/pools/:pool/du', {
    schema: {
      tags: ['pools'],
      summary: 'Usage per volume and snapshot',
      params: poolParams,
      querystring: { type: 'object', additionalProperties: false, properties: { volume: nameSchema } },
      response: { 200: listOf('DuEntry'), ...errorResponses },
    },
  }, async (req) => (await service.du(req.params.pool, req.query.volume)).map(duJson));
}
