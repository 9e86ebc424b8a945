/**
 * The REST API, a fastify plugin: bearer-token auth on /v1, JSON schemas on every route, one
 * error mapping, request metrics, the OpenAPI document at /openapi.json and Prometheus metrics at
 * /metrics. The routes call the VolumeService and nothing else.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import swagger from '@fastify/swagger';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { createApiApp } from '../app.js';
import type { Logger } from 'pino';
import type { ExportService } from './export-service.js';
import type { VolumeService } from '../../volume/types.js';
import type { RestContext } from './context.js';
import { UnauthorizedError, isClientAbort, mapError } from './errors.js';
import { ApiMetrics, renderGauge, type GaugeSample } from './metrics.js';
import { collectTierMetrics } from './tier-metrics.js';
import { collectQosMetrics } from './qos-metrics.js';
import { collectExportMetrics } from './export-metrics.js';
import { registerContentRoutes } from './routes/content.js';
import { registerExportRoutes } from './routes/exports.js';
import { registerGroupRoutes } from './routes/groups.js';
import { registerJobRoutes } from './routes/jobs.js';
import { registerPoolRoutes } from './routes/pools.js';
import { registerQosRoutes } from './routes/qos.js';
import { registerSnapshotRoutes } from './routes/snapshots.js';
import { registerTrashRoutes } from './routes/trash.js';
import { registerUserRoutes } from './routes/users.js';
import { registerBucketRoutes } from './routes/buckets.js';
import { registerVolumeRoutes } from './routes/volumes.js';
import type { UserStore } from '../../objects/users/user-store.js';
import type { BucketAdmin } from './context.js';
import { SHARED_SCHEMAS } from './schemas.js';

export { HTTP_STATUS, mapError } from './errors.js';
export { ApiMetrics } from './metrics.js';

export interface RestApiOptions {
  service: VolumeService;
  /** The bearer token every /v1 request must carry. */
  token: string;
  logger: Logger;
  version: string;
  dataDir: string;
  metrics?: ApiMetrics;
  exports?: ExportService;
  /** True once the daemon is shutting down (job watches end). */
  closing?: () => boolean;
  /** Whether /metrics needs the token (default 'token'; the daemon opens it when it listens on loopback only). */
  metricsAuth?: 'token' | 'none';
  jobWatchIntervalMs?: number;
  /** The S3 users and access keys (/v1/users); absent: those routes answer UNSUPPORTED. */
  users?: UserStore;
  /** The S3 buckets (/v1/buckets); absent: those routes answer UNSUPPORTED. */
  buckets?: BucketAdmin;
}

/** Served without the token: the API description (it names no pool or volume). */
const OPENAPI_ROUTE = '/openapi.json';
/** Prometheus metrics: without the token only with metricsAuth 'none' (they name pools and volumes). */
const METRICS_ROUTE = '/metrics';

function digest(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

/** Compares the presented token with the expected one in time independent of where they differ. */
function tokenMatches(presented: string, expectedDigest: Buffer): boolean {
  return timingSafeEqual(digest(presented), expectedDigest);
}

/** A fastify instance serving the REST API alone (what the daemon and the tests start). */
export async function buildRestApi(options: RestApiOptions): Promise<FastifyInstance> {
  const app = createApiApp(options.logger);
  await app.register(restApi, options);
  return app;
}

/**
 * The REST API as an encapsulated fastify plugin: its token check, error handler, not-found
 * handler, schemas and routes apply inside it only, so another API (the S3 endpoint) can be
 * registered beside it with its own authentication and errors.
 */
export async function restApi(app: FastifyInstance, options: RestApiOptions): Promise<void> {
  const metrics = options.metrics ?? new ApiMetrics();
  const expected = digest(options.token);
  const publicRoutes: ReadonlySet<string> = new Set(options.metricsAuth === 'none' ? [OPENAPI_ROUTE, METRICS_ROUTE] : [OPENAPI_ROUTE]);
  const errorCodes = new WeakMap<FastifyRequest, string>();


  const ctx: RestContext = {
    service: options.service,
    metrics,
    exports: options.exports,
    version: options.version,
    dataDir: options.dataDir,
    closing: options.closing ?? (() => false),
    jobWatchIntervalMs: options.jobWatchIntervalMs ?? 200,
    users: options.users,
    buckets: options.buckets,
  };

  // JSON only (fastify also parses text/plain by default): anything else is a 415.
  app.removeContentTypeParser('text/plain');
  for (const schema of SHARED_SCHEMAS) app.addSchema(schema);
  // Response schemas document the API (OpenAPI); responses are plain JSON.stringify of the
  // mappers' output, which saves compiling a serializer per route at start-up.
  app.setSerializerCompiler(() => (data) => JSON.stringify(data));

  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'Strata storage daemon',
        description: 'Pools, thin qcow2 volumes, snapshots, clones and jobs. Errors: {"error":{"code","message","hint"?,"fix"?}}.',
        version: options.version,
      },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'the token in <data>/token' } } },
      security: [{ bearer: [] }],
      tags: [
        { name: 'status' },
        { name: 'pools' },
        { name: 'volumes' },
        { name: 'trash', description: "deleted volumes kept in their pool's trash until they expire" },
        { name: 'snapshots' },
        { name: 'groups', description: 'consistency groups: volumes snapshotted at one instant' },
        { name: 'content', description: 'byte streams: import/export, diff streams' },
        { name: 'jobs' },
        { name: 'exports', description: 'NBD exports and vhost-user-blk attachments' },
        { name: 'users', description: 'S3 users and their access keys' },
        { name: 'buckets', description: 'S3 buckets as an operator sees them: every owner, object counts, usage' },
        { name: 'qos', description: 'per-volume limits on IOPS and bytes per second, pool defaults and named policies (docs/qos.md)' },
      ],
    },
    refResolver: { buildLocalReference: (json, _baseUri, _fragment, i) => (typeof json.$id === 'string' ? json.$id : `def-${i}`) },
  });

  // Everything needs the token except the public documents (an allowlist: a path that does not
  // route, however it is spelled, is refused before the 404).
  app.addHook('onRequest', async (req) => {
    const route = req.routeOptions.url;
    if (route !== undefined && publicRoutes.has(route)) return;
    const header = req.headers.authorization;
    if (header === undefined) throw new UnauthorizedError("missing 'Authorization: Bearer <token>' header (the token is in <data>/token)");
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (!match || !tokenMatches(match[1] as string, expected)) throw new UnauthorizedError('the bearer token is not valid');
  });

  app.addHook('onResponse', async (req, reply) => {
    const route = req.routeOptions.url ?? 'unmatched';
    const method = req.method;
    const status = String(reply.statusCode);
    metrics.requests.inc({ method, route, status });
    metrics.latency.observe({ method, route }, reply.elapsedTime / 1000);
    if (reply.statusCode >= 400) metrics.errors.inc({ method, route, code: errorCodes.get(req) ?? status });
    const params = req.params as { pool?: unknown; vol?: unknown } | undefined;
    if (reply.statusCode < 400 && typeof params?.pool === 'string' && typeof params.vol === 'string' && method !== 'DELETE' && !route.endsWith('/trash')) {
      metrics.volumeOperations.inc({ pool: params.pool, volume: params.vol, operation: `${method} ${route.replace('/v1/pools/:pool/volumes/:vol', '') || '/'}` });
    }
    // What may have freed space in a pool (a volume, snapshot or trash entry deleted, a GC): guests
    // whose writes wait for space there try again now rather than at their next retry.
    if (reply.statusCode < 400 && typeof params?.pool === 'string' && (method === 'DELETE' || /\/(gc|purge)$/.test(route))) {
      ctx.exports?.spaceMayBeFree?.(params.pool);
    }
    // An UNAVAILABLE is no failure of the daemon (the client is told to come back) but leaves the
    // operator a service to look at: a warning.
    const level = reply.statusCode < 500 ? 'info' : errorCodes.get(req) === 'UNAVAILABLE' ? 'warn' : 'error';
    req.log[level]({ method, url: req.url, status: reply.statusCode, ms: Math.round(reply.elapsedTime * 10) / 10 }, 'request');
  });

  app.setErrorHandler(async (err, req, reply) => {
    const mapped = mapError(err);
    errorCodes.set(req, mapped.body.error.code);
    if (mapped.internal) req.log.error({ err, url: req.url }, 'request failed');
    else if (mapped.retryAfterSeconds !== undefined) req.log.warn({ code: mapped.body.error.code, message: mapped.body.error.message, url: req.url }, 'request failed for now');
    else if (isClientAbort(err)) req.log.info({ url: req.url }, 'request aborted by the client');
    else req.log.debug({ code: mapped.body.error.code, message: mapped.body.error.message }, 'request refused');
    if (reply.sent || reply.raw.headersSent) return;
    if (mapped.status === 401) reply.header('www-authenticate', 'Bearer realm="strata"');
    if (mapped.retryAfterSeconds !== undefined) reply.header('retry-after', String(mapped.retryAfterSeconds));
    return reply.code(mapped.status).type('application/json').send(mapped.body);
  });

  app.setNotFoundHandler(async (req, reply) => {
    errorCodes.set(req, 'NOT_FOUND');
    return reply.code(404).send({ error: { code: 'NOT_FOUND', message: `no route ${req.method} ${req.url.split('?')[0]} (see /openapi.json)` } });
  });

  registerPoolRoutes(app, ctx);
  registerVolumeRoutes(app, ctx);
  registerTrashRoutes(app, ctx);
  registerSnapshotRoutes(app, ctx);
  registerGroupRoutes(app, ctx);
  registerJobRoutes(app, ctx);
  registerExportRoutes(app, ctx);
  registerContentRoutes(app, ctx);
  registerUserRoutes(app, ctx);
  registerBucketRoutes(app, ctx);
  registerQosRoutes(app, ctx);

  app.get(OPENAPI_ROUTE, { schema: { hide: true } }, async () => app.swagger());

  app.get(METRICS_ROUTE, { schema: { hide: true } }, async (_req, reply) => {
    const extra = await collectGauges(options.service).catch((err: unknown) => {
      app.log.warn({ err }, 'metrics: could not collect volume gauges');
      return [] as string[];
    });
    extra.push(...(await collectTierMetrics(options.service).catch((err: unknown) => {
      app.log.warn({ err }, 'metrics: could not collect tier metrics');
      return [] as string[];
    })));
    extra.push(...(await collectQosMetrics(options.service).catch((err: unknown) => {
      app.log.warn({ err }, 'metrics: could not collect QoS metrics');
      return [] as string[];
    })));
    if (options.exports !== undefined) extra.push(...collectExportMetrics(options.exports));
    return reply.type('text/plain; version=0.0.4; charset=utf-8').send(metrics.render(extra));
  });
}

/** Gauges read from the service at scrape time: jobs by state, per pool and per volume sizes. */
async function collectGauges(service: VolumeService): Promise<string[]> {
  const [pools, jobs] = await Promise.all([service.listPools(), service.listJobs()]);
  const byState = new Map<string, number>();
  for (const state of ['queued', 'running', 'succeeded', 'failed', 'cancelled']) byState.set(state, 0);
  for (const job of jobs) byState.set(job.state, (byState.get(job.state) ?? 0) + 1);
  const poolProvisioned: GaugeSample[] = [];
  const poolAllocated: GaugeSample[] = [];
  const poolQuota: GaugeSample[] = [];
  const poolVolumes: GaugeSample[] = [];
  const volProvisioned: GaugeSample[] = [];
  const volAllocated: GaugeSample[] = [];
  const volSnapshots: GaugeSample[] = [];
  const volDepth: GaugeSample[] = [];
  for (const pool of pools) {
    const labels = { pool: pool.name };
    poolProvisioned.push({ labels, value: pool.provisionedBytes });
    poolAllocated.push({ labels, value: pool.allocatedBytes });
    poolVolumes.push({ labels, value: pool.volumeCount });
    if (pool.quotaBytes !== undefined) poolQuota.push({ labels, value: pool.quotaBytes });
    for (const vol of await service.listVolumes(pool.name)) {
      const vl = { pool: pool.name, volume: vol.name };
      volProvisioned.push({ labels: vl, value: vol.provisionedBytes });
      volAllocated.push({ labels: vl, value: vol.allocatedBytes });
      volSnapshots.push({ labels: vl, value: vol.snapshotCount });
      volDepth.push({ labels: vl, value: vol.chainDepth });
    }
  }
  return [
    renderGauge('strata_jobs', 'Jobs known to the daemon, by state.', [...byState].map(([state, value]) => ({ labels: { state }, value }))),
    renderGauge('strata_pool_volumes', 'Volumes in a pool.', poolVolumes),
    renderGauge('strata_pool_provisioned_bytes', 'Sum of the provisioned sizes of a pool\'s volumes.', poolProvisioned),
    renderGauge('strata_pool_allocated_bytes', 'Host bytes used by a pool\'s layer files.', poolAllocated),
    renderGauge('strata_pool_quota_bytes', 'Pool quota (pools without one are absent).', poolQuota),
    renderGauge('strata_volume_provisioned_bytes', 'Virtual size of a volume.', volProvisioned),
    renderGauge('strata_volume_allocated_bytes', 'Host bytes of the layers only this volume uses.', volAllocated),
    renderGauge('strata_volume_snapshots', 'Snapshots of a volume.', volSnapshots),
    renderGauge('strata_volume_chain_depth', 'Layers in a volume\'s chain.', volDepth),
  ];
}
