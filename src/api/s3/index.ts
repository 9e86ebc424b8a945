/**
 * The S3-compatible endpoint, a fastify plugin: every request is resolved to a typed endpoint
 * (endpoints.ts), its SigV4 signature checked (sigv4.ts) against the access keys, and only then
 * handed to a handler, with its body left as a stream and checked as it is read (payload.ts).
 * Errors are S3's XML bodies with x-amz-request-id and x-amz-id-2; HEAD errors have no body.
 * The daemon serves it on its own listener (--s3-listen), beside the REST API.
 */
import { randomBytes } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { createApiApp } from '../app.js';
import { ACL_HANDLERS } from './acl-handlers.js';
import { admitAnonymous, admitSigned } from './access.js';
import { BUCKET_HANDLERS, type S3Handler, type S3RequestContext } from './bucket-handlers.js';
import { LIST_HANDLERS } from './list-handlers.js';
import { MULTIPART_HANDLERS } from './multipart-handlers.js';
import { OBJECT_HANDLERS } from './object-handlers.js';
import { resolveEndpoint, type ResolvedRequest } from './endpoints.js';
import { S3Error, toS3Error } from './errors.js';
import type { S3Metrics } from './metrics.js';
import { isObjectError } from '../../objects/errors.js';
import type { ObjectService } from '../../objects/object-service.js';
import { openPayload, payloadExpectations } from './payload.js';
import { ResponseBody } from './response-body.js';
import type { S3Endpoint } from './endpoints.js';
import { verifySigV4, type SecretLookup, type VerifiedRequest } from './sigv4.js';
import { splitTarget } from './uri.js';
import { errorXml } from './xml.js';

export interface S3ApiOptions {
  /** The secret of an access key (the user store). */
  readonly keys: SecretLookup;
  /** The object model; undefined: every operation past authentication answers NotImplemented. */
  readonly objects: ObjectService | undefined;
  /** Domains for virtual-host style addressing (bucket.<domain>); path style always works. */
  readonly domains: readonly string[];
  /** The region reported (GetBucketLocation, HeadBucket); clients may sign for any region. */
  readonly region?: string;
  /** The clock for signature times (tests); Date.now by default. */
  readonly now?: () => number;
  /** Per-operation request, byte and latency metrics (the daemon renders them on /metrics). */
  readonly metrics?: S3Metrics;
}

export const DEFAULT_S3_REGION = 'us-east-1';

interface S3RequestState {
  requestId: string;
  resolved: ResolvedRequest | undefined;
  /** The request failed because a service the daemon depends on is unavailable (logged as a warning). */
  unavailable?: boolean;
}

/** Every handler, by endpoint; an endpoint without one answers NotImplemented. */
const HANDLERS: Partial<Record<S3Endpoint, S3Handler>> = { ...BUCKET_HANDLERS, ...OBJECT_HANDLERS, ...LIST_HANDLERS, ...MULTIPART_HANDLERS, ...ACL_HANDLERS };

const states = new WeakMap<FastifyRequest, S3RequestState>();

/**
 * Request ids: 16 upper-case hex digits, unique per process (a random prefix per process and a
 * counter) without asking the CSPRNG twice per request (randomBytes was a visible share of a
 * small GET). x-amz-id-2 (S3's opaque host id) is the process's, fixed.
 */
const REQUEST_ID_PREFIX = randomBytes(3).toString('hex').toUpperCase();
const REQUEST_COUNTER_DIGITS = 10;
const REQUEST_COUNTER_MAX = 16 ** REQUEST_COUNTER_DIGITS;
let requestCounter = Math.floor(Math.random() * REQUEST_COUNTER_MAX);
const HOST_ID = randomBytes(24).toString('base64');

function newRequestId(): string {
  requestCounter = (requestCounter + 1) % REQUEST_COUNTER_MAX;
  return REQUEST_ID_PREFIX + requestCounter.toString(16).toUpperCase().padStart(REQUEST_COUNTER_DIGITS, '0');
}

function stateOf(req: FastifyRequest): S3RequestState {
  let state = states.get(req);
  if (state === undefined) {
    state = { requestId: newRequestId(), resolved: undefined };
    states.set(req, state);
  }
  return state;
}

/** What S3 names in an error's <Resource>: the path as requested. */
function resourceOf(req: FastifyRequest): string {
  return splitTarget(req.raw.url ?? '/').rawPath;
}

function hasBody(req: FastifyRequest): boolean {
  const length = req.headers['content-length'];
  return (length !== undefined && length !== '0') || req.headers['transfer-encoding'] !== undefined;
}

/** The headers every answer carries, errors included (the onRequest hook sets them). */
const HEADERS_OF_EVERY_ANSWER: ReadonlySet<string> = new Set(['x-amz-request-id', 'x-amz-id-2', 'server']);

/**
 * Drops what a handler set for the answer it was giving when that answer failed before its first
 * byte (a GET whose object data could not be read: fastify has put the reply's headers on the
 * response already). An error must not carry the object's headers: a client checks the error body
 * against the object's x-amz-checksum-* (the AWS SDK reports a checksum mismatch instead of the
 * error, and does not retry a ServiceUnavailable it never saw) or takes its ETag for the error's.
 */
function dropAnswerHeaders(reply: FastifyReply): void {
  // getHeaders() covers the reply's and the response's; removeHeader() drops a name from both.
  for (const name of Object.keys(reply.getHeaders())) if (!HEADERS_OF_EVERY_ANSWER.has(name)) reply.removeHeader(name);
}

async function sendError(req: FastifyRequest, reply: FastifyReply, err: unknown): Promise<FastifyReply | undefined> {
  const { error, internal, unavailable } = toS3Error(err);
  const state = stateOf(req);
  state.unavailable = unavailable;
  if (!reply.sent && !reply.raw.headersSent) dropAnswerHeaders(reply);
  // Set here too: a malformed URL fails before the onRequest hook runs.
  reply.header('x-amz-request-id', state.requestId);
  if (isObjectError(err) && err.details.deleteMarker === true) reply.header('x-amz-delete-marker', 'true');
  if (isObjectError(err) && err.details.versionId !== undefined) reply.header('x-amz-version-id', err.details.versionId);
  if (internal) req.log.error({ err, url: req.url, requestId: state.requestId }, 's3 request failed');
  else if (unavailable) req.log.warn({ code: error.code, message: error.message, url: req.url, requestId: state.requestId }, 's3 request failed for now');
  else req.log.debug({ code: error.code, message: error.message, requestId: state.requestId }, 's3 request refused');
  if (reply.sent || reply.raw.headersSent) return undefined;
  reply.code(error.status);
  if (req.method === 'HEAD') return reply.send();
  return reply.type('application/xml').send(errorXml(error.code, error.message, resourceOf(req), state.requestId, error.extra));
}

/** The verified signature a body is checked against; anonymous requests are reads and never get here. */
function signed(verified: VerifiedRequest | undefined): VerifiedRequest {
  if (verified === undefined) throw new S3Error('AccessDenied', 'anonymous requests may not send a body; sign the request');
  return verified;
}

/** The S3 endpoint as an encapsulated plugin: its own body handling, auth and errors. */
export async function s3Api(app: FastifyInstance, options: S3ApiOptions): Promise<void> {
  const region = options.region ?? DEFAULT_S3_REGION;
  // Bodies stay streams: no parser reads them (the handlers read them through openPayload).
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_req, _payload, done) => done(null, undefined));

  app.addHook('onRequest', async (req, reply) => {
    const { requestId } = stateOf(req);
    reply.header('x-amz-request-id', requestId);
    reply.header('x-amz-id-2', HOST_ID);
    reply.header('server', 'Strata');
  });

  app.addHook('onResponse', async (req, reply) => {
    const state = stateOf(req);
    // NotImplemented is no failure; an UNAVAILABLE is none of the daemon's (the client is told to
    // come back) but leaves the operator a service to look at: a warning.
    const level = reply.statusCode < 500 || reply.statusCode === 501 ? 'info' : state.unavailable === true ? 'warn' : 'error';
    options.metrics?.record(state.resolved?.endpoint ?? 'unresolved', reply.statusCode, reply.elapsedTime, req.raw.socket);
    req.log[level]({ s3: state.resolved?.endpoint ?? 'unresolved', method: req.method, url: req.url, status: reply.statusCode, requestId: state.requestId, ms: Math.round(reply.elapsedTime * 10) / 10 }, 's3 request');
  });

  app.setErrorHandler(async (err, req, reply) => sendError(req, reply, err));
  app.setNotFoundHandler(async (req, reply) => sendError(req, reply, new S3Error('MethodNotAllowed', `the method ${req.method} is not allowed by S3`)));

  const handler = async (req: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> => {
    const url = req.raw.url ?? '/';
    const copySource = req.headers['x-amz-copy-source'];
    const resolved = resolveEndpoint(req.method, url, { host: req.headers.host, copySource: typeof copySource === 'string' ? copySource : undefined }, options.domains);
    stateOf(req).resolved = resolved;
    const verified = await verifySigV4({ method: req.method, url, rawHeaders: req.raw.rawHeaders }, options.keys, options.now === undefined ? {} : { now: options.now });
    // Unsigned: only reads of a public-read bucket; signed: the user's own buckets, and reads of
    // public-read ones (access.ts). An unsigned request has no body to read.
    const principal =
      verified === undefined
        ? await admitAnonymous(resolved, options.objects)
        : await admitSigned(resolved, { owner: verified.owner, accessKeyId: verified.accessKeyId }, options.objects, req.headers);
    const handle = HANDLERS[resolved.endpoint];
    if (options.objects === undefined || handle === undefined) {
      throw new S3Error('NotImplemented', `${resolved.endpoint} is not implemented by this endpoint yet${options.objects === undefined ? ' (no object store is configured)' : ''}`);
    }
    let body: ReturnType<S3RequestContext['dataBody']> | undefined;
    const ctx: S3RequestContext = {
      endpoint: resolved.endpoint,
      bucket: resolved.bucket,
      key: resolved.key,
      query: resolved.query,
      principal,
      objects: options.objects,
      region,
      hasBody: hasBody(req),
      headers: req.headers,
      body: () => (body ??= openPayload(req.raw, req.raw.rawHeaders, signed(verified))),
      dataBody: () => (body ??= openPayload(req.raw, req.raw.rawHeaders, signed(verified), { checksumByConsumer: true })),
      payload: () => payloadExpectations(req.raw.rawHeaders, signed(verified)),
    };
    const response = await handle(ctx);
    reply.code(response.status);
    for (const [name, value] of Object.entries(response.headers ?? {})) reply.header(name, value);
    if (response.xml !== undefined && req.method !== 'HEAD') return reply.type('application/xml').send(response.xml);
    if (response.body !== undefined && req.method !== 'HEAD') return reply.send(new ResponseBody(response.body));
    return reply.send();
  };

  app.route({ method: ['GET', 'HEAD', 'PUT', 'POST', 'DELETE'], url: '/', handler });
  app.route({ method: ['GET', 'HEAD', 'PUT', 'POST', 'DELETE'], url: '/*', handler });
}

/** A fastify instance serving the S3 endpoint alone (the daemon listens on it with --s3-listen). */
export async function buildS3Api(options: S3ApiOptions & { logger: Logger }): Promise<FastifyInstance> {
  // Requests fastify cannot route (a malformed percent escape in the path) get S3's XML too.
  const app = createApiApp(options.logger, {
    frameworkErrors: (err, req, reply) => {
      void sendError(req, reply, new S3Error('InvalidArgument', `the request URI is not valid: ${err.message}`));
    },
  });
  await app.register(s3Api, options);
  return app;
}
