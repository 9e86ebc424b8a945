/**
 * The byte-stream routes: content import/export and diff-stream export/import. Bodies are raw
 * octet streams read straight from the socket (no body size limit, back-pressure through the
 * async iteration), and responses are streams pulled as the socket drains.
 */
import { Readable } from 'node:stream';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { StorageError } from '../../../core/errors.js';
import type { RestContext, VolumeParams } from '../context.js';
import { isClientAbort } from '../errors.js';
import { errorResponses, nameSchema, ref, volumeJson } from '../schemas.js';
import { volumeParams } from './volumes.js';
import { TRANSFER_ENCODINGS, type TransferEncoding } from '../../../volume/sparse-stream.js';

const octetStream = { 'application/octet-stream': { schema: { type: 'string', format: 'binary' } } } as const;

const transferSchema = {
  type: 'string',
  enum: TRANSFER_ENCODINGS,
  default: 'bytes',
  description: "'bytes': every byte of the image; 'sparse': a strata-sparse stream, whose runs of zeroes are named, not sent (docs/daemon.md)",
} as const;

/** Passes chunks through, counting them. */
async function* counted(source: AsyncIterable<Uint8Array>, count: (n: number) => void): AsyncGenerator<Uint8Array> {
  for await (const chunk of source) {
    count(chunk.length);
    yield chunk;
  }
}

/**
 * An upload's body as a byte source, and a signal that fires when the client disconnects before
 * the body ended (Ctrl-C on `strata volume import`): the import job then ends cancelled, saying
 * the client disconnected, instead of failed with the socket's "aborted".
 */
function uploadSource(req: FastifyRequest): { source: AsyncIterable<Uint8Array>; signal: AbortSignal } {
  const controller = new AbortController();
  const disconnect = () => {
    if (!controller.signal.aborted) controller.abort(new StorageError('CANCELLED', 'the client disconnected before the upload ended'));
  };
  req.raw.once('close', () => {
    if (!req.raw.complete) disconnect();
  });
  async function* read(): AsyncGenerator<Uint8Array> {
    try {
      for await (const chunk of req.raw) yield chunk as Uint8Array;
    } catch (err) {
      if (!isClientAbort(err)) throw err;
      disconnect();
      throw controller.signal.reason;
    }
  }
  return { source: read(), signal: controller.signal };
}

// When an upload is refused before its body was read to the end, the error response goes out at
// once and Node's server discards the rest of the body (the CLI stops sending when it sees the
// response); closing the connection instead would make clients see EPIPE rather than the error.

export function registerContentRoutes(app: FastifyInstance, ctx: RestContext): void {
  const { service, metrics } = ctx;
  const countIn = (pool: string, volume: string) => (n: number) => {
    metrics.importedBytes.inc({}, n);
    metrics.volumeImportedBytes.inc({ pool, volume }, n);
  };
  const countOut = (pool: string, volume: string) => (n: number) => {
    metrics.exportedBytes.inc({}, n);
    metrics.volumeExportedBytes.inc({ pool, volume }, n);
  };

  // Within this plugin every request body is left unread for the handler to stream.
  void app.register(async (scope) => {
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', (_req, _payload, done) => done(null, undefined));

    scope.put<{ Params: VolumeParams; Querystring: { format: 'raw' | 'qcow2'; sizeBytes?: number; transfer: TransferEncoding } }>(
      '/v1/pools/:pool/volumes/:vol/content',
      {
        schema: {
          tags: ['content'],
          summary: 'Import a raw or qcow2 image (the request body) into a new volume {vol}',
          description: 'Send the bytes as application/octet-stream; there is no size limit. qcow2 is spooled to the pool, then copied in sparsely.',
          params: volumeParams,
          querystring: {
            type: 'object',
            additionalProperties: false,
            properties: {
              format: { type: 'string', enum: ['raw', 'qcow2'], default: 'raw' },
              sizeBytes: { type: 'integer', minimum: 1, description: 'virtual size (raw: default the stream length rounded up)' },
              transfer: transferSchema,
            },
          },
          consumes: ['application/octet-stream'],
          response: { 201: ref('Volume'), ...errorResponses },
        },
      },
      async (req, reply) => {
        const { pool, vol } = req.params;
        const upload = uploadSource(req);
        const info = await service.importVolume(pool, vol, counted(upload.source, countIn(pool, vol)), {
          format: req.query.format,
          transfer: req.query.transfer,
          ...(req.query.sizeBytes !== undefined ? { sizeBytes: req.query.sizeBytes } : {}),
          signal: upload.signal,
        });
        return reply.code(201).send(volumeJson(info));
      },
    );

    scope.put<{ Params: VolumeParams }>(
      '/v1/pools/:pool/volumes/:vol/diff-stream',
      {
        schema: {
          tags: ['content'],
          summary: "Import a diff stream (export-diff's output): applies it and takes its to-snapshot",
          params: volumeParams,
          consumes: ['application/octet-stream'],
          response: { 200: ref('Volume'), ...errorResponses },
        },
      },
      async (req) => {
        const { pool, vol } = req.params;
        return volumeJson(await service.importDiff(pool, vol, counted(uploadSource(req).source, countIn(pool, vol))));
      },
    );
  });

  app.get<{ Params: VolumeParams; Querystring: { format: 'raw' | 'qcow2'; snapshot?: string; transfer: TransferEncoding } }>(
    '/v1/pools/:pool/volumes/:vol/content',
    {
      schema: {
        tags: ['content'],
        summary: "Export the volume's (or a snapshot's) contents as raw bytes or a standalone qcow2 image",
        description:
          'The header x-strata-size-bytes gives the length of the image (raw: the volume size); x-strata-transfer says how the body carries it (bytes: the image itself; sparse: a strata-sparse stream).',
        params: volumeParams,
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: { format: { type: 'string', enum: ['raw', 'qcow2'], default: 'raw' }, snapshot: nameSchema, transfer: transferSchema },
        },
        produces: ['application/octet-stream'],
        response: { 200: { description: 'the image bytes', content: octetStream }, ...errorResponses },
      },
    },
    async (req, reply) => {
      const { pool, vol } = req.params;
      const { sizeBytes, stream } = await service.exportVolume(pool, vol, {
        format: req.query.format,
        transfer: req.query.transfer,
        ...(req.query.snapshot !== undefined ? { snapshot: req.query.snapshot } : {}),
      });
      reply.header('content-type', 'application/octet-stream');
      reply.header('x-strata-size-bytes', String(sizeBytes));
      reply.header('x-strata-format', req.query.format);
      reply.header('x-strata-transfer', req.query.transfer);
      return reply.send(Readable.from(counted(stream, countOut(pool, vol)), { objectMode: false }));
    },
  );

  app.get<{ Params: VolumeParams; Querystring: { from?: string; to?: string } }>(
    '/v1/pools/:pool/volumes/:vol/diff-stream',
    {
      schema: {
        tags: ['content'],
        summary: 'Export the changes between two snapshots as a diff stream (docs/daemon.md)',
        params: volumeParams,
        querystring: { type: 'object', additionalProperties: false, properties: { from: nameSchema, to: nameSchema } },
        produces: ['application/octet-stream'],
        response: { 200: { description: 'the diff stream', content: octetStream }, ...errorResponses },
      },
    },
    async (req, reply) => {
      const { pool, vol } = req.params;
      const stream = await service.exportDiff(pool, vol, { fromSnapshot: req.query.from, toSnapshot: req.query.to });
      reply.header('content-type', 'application/octet-stream');
      return reply.send(Readable.from(counted(stream, countOut(pool, vol)), { objectMode: false }));
    },
  );
}
