/**
 * /v1/jobs: list, info, watch (?watch=true: one JSON line per change until the job ends, as
 * application/x-ndjson) and cancel.
 */
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance } from 'fastify';
import type { JobInfo } from '../../../volume/types.js';
import type { RestContext } from '../context.js';
import { TERMINAL_JOB_STATES, errorResponses, jobJson, listOf, ref } from '../schemas.js';

const jobParams = { type: 'object', required: ['id'], properties: { id: { type: 'string', minLength: 1, maxLength: 128 } } } as const;

/** A watch ends after this long even if the job does not (the client reconnects). */
const WATCH_MAX_MS = 24 * 3600 * 1000;

export function registerJobRoutes(app: FastifyInstance, ctx: RestContext): void {
  const { service } = ctx;

  app.get('/v1/jobs', {
    schema: { tags: ['jobs'], summary: 'List jobs (running and recent)', response: { 200: listOf('Job'), ...errorResponses } },
  }, async () => (await service.listJobs()).map(jobJson));

  app.get<{ Params: { id: string }; Querystring: { watch?: boolean } }>('/v1/jobs/:id', {
    schema: {
      tags: ['jobs'],
      summary: 'Job info; with watch=true a stream of JSON lines, one per change, ending when the job ends',
      params: jobParams,
      querystring: { type: 'object', additionalProperties: false, properties: { watch: { type: 'boolean' } } },
      produces: ['application/json', 'application/x-ndjson'],
      response: { 200: ref('Job'), ...errorResponses },
    },
  }, async (req, reply) => {
    const first = await service.jobInfo(req.params.id);
    if (req.query.watch !== true) return jobJson(first);
    const id = req.params.id;
    const interval = ctx.jobWatchIntervalMs;
    async function* lines(): AsyncGenerator<string> {
      let last = '';
      let job: JobInfo = first;
      const deadline = Date.now() + WATCH_MAX_MS;
      for (;;) {
        const text = JSON.stringify(jobJson(job));
        if (text !== last) {
          last = text;
          yield `${text}\n`;
        }
        if (TERMINAL_JOB_STATES.has(job.state) || ctx.closing() || Date.now() > deadline) return;
        await sleep(interval);
        job = await service.jobInfo(id);
      }
    }
    reply.header('content-type', 'application/x-ndjson');
    return reply.send(Readable.from(lines()));
  });

  app.delete<{ Params: { id: string } }>('/v1/jobs/:id', {
    schema: { tags: ['jobs'], summary: 'Cancel a job (a finished job is returned unchanged)', params: jobParams, response: { 200: ref('Job'), ...errorResponses } },
  }, async (req) => jobJson(await service.cancelJob(req.params.id)));
}
