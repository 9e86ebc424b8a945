/**
 * The HTTP server every API of the daemon runs in: one fastify instance configured once (logger,
 * body limit, closing behaviour, schema validation and its messages, plain JSON serialization).
 * Each API (src/api/rest; src/api/s3 to come) is an encapsulated plugin on it with its own
 * authentication, errors and routes.
 */
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import AjvCompiler from '@fastify/ajv-compiler';
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
    schemaController: { compilersFactory: { buildValidator: partValidators() } },
    schemaErrorFormatter: (errors, dataVar) => new Error(errors.map((e) => describeSchemaError(e, dataVar)).join('; ')),
  });
  app.addHook('onResponse', async (req) => {
    if (!req.raw.complete) dropUnreadBody(req.raw);
  });
  return app;
}

/** Ajv's options for every part: unknown properties refused, not dropped; the first error only; defaults filled in. */
const AJV_OPTIONS = { removeAdditional: false, allErrors: false, useDefaults: true } as const;

/**
 * Validators that coerce types in the query string, path parameters and headers only. Those are
 * always text, so "?limit=10" must become 10; a JSON body carries its own types, and coercing them
 * would take `true` for 1 and "1048576" for a number: a body with the wrong type is refused (400).
 * Both sets come from fastify's own Ajv compiler (ajv-formats, the context's shared schemas from
 * addSchema), one pool per app as fastify's default has. Fastify counts this as a custom
 * compiler, so it would not lower-case a headers schema's keys: no route has one (give its
 * properties in lower case if one is added).
 */
function partValidators(): AjvCompiler.BuildCompilerFromPool {
  const pool = AjvCompiler();
  return (externalSchemas) => {
    // The Ajv options are set here: fastify's `ajv` server option is not read (createApiApp sets none).
    const coercing = pool(externalSchemas, { customOptions: { ...AJV_OPTIONS, coerceTypes: 'array' } });
    const exact = pool(externalSchemas, { customOptions: { ...AJV_OPTIONS, coerceTypes: false } });
    // Fastify calls a validator compiler with the route's part ({ schema, method, url, httpPart }),
    // though the compiler's type names the argument a schema.
    return (route) => ((route as { httpPart?: unknown }).httpPart === 'body' ? exact : coercing)(route);
  };
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
