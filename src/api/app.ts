/**
 * The HTTP server every API of the daemon runs in: one fastify instance configured once (logger,
 * body limit, closing behaviour, schema validation and its messages, plain JSON serialization).
 * Each API (src/api/rest; src/api/s3 to come) is an encapsulated plugin on it with its own
 * authentication, errors and routes.
 */
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyServerOptions } from 'fastify';
import type { Logger } from 'pino';

/** JSON bodies of the APIs are small; byte streams bypass the limit (their routes read the socket). */
const JSON_BODY_LIMIT_BYTES = 1024 * 1024;
/** How long the rest of an unread request body may take to arrive before the connection is ended. */
const UNREAD_BODY_GRACE_MS = 5000;

/** What an API may set on its own instance (the S3 endpoint answers malformed URLs in S3's terms). */
export interface ApiAppOptions {
  frameworkErrors?: FastifyServerOptions['frameworkErrors'];
}

export function createApiApp(logger: Logger, options: ApiAppOptions = {}): FastifyInstance {
  const app = Fastify({
    ...(options.frameworkErrors === undefined ? {} : { frameworkErrors: options.frameworkErrors }),
    loggerInstance: logger as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: JSON_BODY_LIMIT_BYTES,
    return503OnClosing: true,
    // No implicit HEAD routes: a HEAD on /content would open the volume for nothing.
    exposeHeadRoutes: false,
    ajv: { customOptions: { removeAdditional: false, allErrors: false, coerceTypes: 'array', useDefaults: true } },
    schemaErrorFormatter: (errors, dataVar) => new Error(errors.map((e) => describeSchemaError(e, dataVar)).join('; ')),
  });
  app.addHook('onResponse', async (req) => {
    if (!req.raw.complete) dropUnreadBody(req.raw);
  });
  return app;
}

/**
 * A response went out before the request body was read to its end (an upload refused early, or a
 * stream whose last bytes had not been parsed yet). Node's server discards the rest of the body
 * and then serves the connection's next request (keep-alive). A client that stops sending instead
 * leaves a half-open connection the server would wait for forever (at shutdown too): end it when
 * the client closes its side, or when the body is still unfinished after a short while. A body
 * that does finish leaves the connection alone: ending it then would cut the client's next
 * request on it (seen as ECONNRESET).
 */
function dropUnreadBody(req: IncomingMessage): void {
  const socket = req.socket as Socket | null;
  if (socket === null || socket.destroyed) return;
  if (socket.readableEnded) {
    socket.destroy();
    return;
  }
  const onClientEnd = (): void => {
    socket.destroy();
  };
  socket.once('end', onClientEnd);
  const timer = setTimeout(() => {
    if (!req.complete) socket.destroy();
  }, UNREAD_BODY_GRACE_MS).unref();
  req.once('end', () => {
    clearTimeout(timer);
    socket.off('end', onClientEnd);
  });
}

/** One validation failure in words a person can act on. */
function describeSchemaError(e: { keyword: string; instancePath: string; params: Record<string, unknown>; message?: string | undefined }, dataVar: string): string {
  const where = `${dataVar}${e.instancePath}`;
  switch (e.keyword) {
    case 'additionalProperties':
      return `${where} has an unknown property '${String(e.params['additionalProperty'])}'`;
    case 'required':
      return `${where} must have the property '${String(e.params['missingProperty'])}'`;
    case 'pattern':
      return `${where} is not a valid name (1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit)`;
    case 'minProperties':
      return `${where} must name at least one property to change`;
    default:
      return `${where} ${e.message ?? 'is not valid'}`;
  }
}
