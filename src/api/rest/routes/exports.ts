/** /v1/exports: volumes and snapshots served over NBD or vhost-user-blk (docs/daemon.md, "Exports"). */
import type { FastifyInstance } from 'fastify';
import { StorageError } from '../../../core/errors.js';
import type { ExportInfo, ExportRequest } from '../export-service.js';
import type { RestContext } from '../context.js';
import { errorResponses, listOf, nameSchema, ref } from '../schemas.js';

const exportParams = { type: 'object', required: ['id'], properties: { id: { type: 'string', minLength: 1, maxLength: 64 } } } as const;

interface CreateBody {
  type: 'nbd' | 'vhost-user';
  pool: string;
  volume: string;
  snapshot?: string;
  readOnly?: boolean;
  name?: string;
  socketPath?: string;
  queueCount?: number;
  onNoSpace?: 'wait' | 'error';
}

export function exportJson(e: ExportInfo) {
  return {
    ...e,
    snapshot: e.snapshot ?? null,
    name: e.name ?? null,
    socketPath: e.socketPath ?? null,
    queueCount: e.queueCount ?? null,
  };
}

function toRequest(body: CreateBody): ExportRequest {
  const invalid = (message: string) => new StorageError('INVALID_ARGUMENT', message);
  if (body.type === 'nbd') {
    if (body.socketPath !== undefined || body.queueCount !== undefined) throw invalid("socketPath and queueCount are for type 'vhost-user', not 'nbd'");
    if (body.onNoSpace !== undefined) {
      throw invalid("onNoSpace is for type 'vhost-user': an NBD client gets ENOSPC and decides itself (QEMU: werror=enospc pauses the VM)");
    }
    return {
      type: 'nbd',
      pool: body.pool,
      volume: body.volume,
      ...(body.snapshot !== undefined ? { snapshot: body.snapshot } : {}),
      ...(body.readOnly !== undefined ? { readOnly: body.readOnly } : {}),
      ...(body.name !== undefined ? { name: body.name } : {}),
    };
  }
  if (body.socketPath === undefined) throw invalid("type 'vhost-user' needs socketPath (the unix socket QEMU connects to)");
  if (body.name !== undefined) throw invalid("name is for type 'nbd'");
  return {
    type: 'vhost-user',
    pool: body.pool,
    volume: body.volume,
    // A snapshot is attached read-only (the guest sees VIRTIO_BLK_F_RO).
    ...(body.snapshot !== undefined ? { snapshot: body.snapshot } : {}),
    socketPath: body.socketPath,
    ...(body.queueCount !== undefined ? { queueCount: body.queueCount } : {}),
    ...(body.readOnly !== undefined ? { readOnly: body.readOnly } : {}),
    ...(body.onNoSpace !== undefined ? { onNoSpace: body.onNoSpace } : {}),
  };
}

export function registerExportRoutes(app: FastifyInstance, ctx: RestContext): void {
  const exports = () => {
    if (ctx.exports === undefined) throw new StorageError('UNSUPPORTED', 'this server has no exports');
    return ctx.exports;
  };

  app.get('/v1/exports', {
    schema: { tags: ['exports'], summary: 'List exports (NBD and vhost-user-blk)', response: { 200: listOf('Export'), ...errorResponses } },
  }, async () => exports().list().map(exportJson));

  app.post<{ Body: CreateBody }>('/v1/exports', {
    schema: {
      tags: ['exports'],
      summary: 'Export a volume or snapshot over NBD, or attach one over vhost-user-blk (a snapshot read-only)',
      body: {
        type: 'object',
        required: ['type', 'pool', 'volume'],
        additionalProperties: false,
        properties: {
          type: { type: 'string', enum: ['nbd', 'vhost-user'] },
          pool: nameSchema,
          volume: nameSchema,
          snapshot: { ...nameSchema, description: 'a snapshot of the volume instead of its head (served read-only)' },
          readOnly: { type: 'boolean' },
          name: { type: 'string', maxLength: 4096, description: "NBD export name (default 'pool/volume' or 'pool/volume@snapshot'; '' makes it the default export, what clients that name none get)" },
          socketPath: { type: 'string', minLength: 1, maxLength: 4096, description: 'vhost-user: the unix socket QEMU connects to' },
          queueCount: { type: 'integer', minimum: 1, maximum: 16, description: 'vhost-user: virtqueues (default 1)' },
          onNoSpace: {
            type: 'string',
            enum: ['wait', 'error'],
            description: "vhost-user: a guest's write the pool has no room for waits until space is freed ('wait') or fails with IOERR ('error'); default: the daemon's vhostOnNoSpace ('wait')",
          },
        },
      },
      response: { 201: ref('Export'), ...errorResponses },
    },
  }, async (req, reply) => reply.code(201).send(exportJson(await exports().create(toRequest(req.body)))));

  app.get<{ Params: { id: string } }>('/v1/exports/:id', {
    schema: { tags: ['exports'], summary: 'Export info', params: exportParams, response: { 200: ref('Export'), ...errorResponses } },
  }, async (req) => exportJson(exports().info(req.params.id)));

  app.delete<{ Params: { id: string } }>('/v1/exports/:id', {
    schema: { tags: ['exports'], summary: 'Stop an export (clients are disconnected once their requests in flight finish)', params: exportParams, response: { 204: { type: 'null' }, ...errorResponses } },
  }, async (req, reply) => {
    await exports().remove(req.params.id);
    return reply.code(204).send();
  });
}
