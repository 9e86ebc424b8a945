/**
 * What went wrong with one S3 request, in the few kinds that decide what to do next: retry it
 * (the server or the network failed for now) or give up at once with a message that names the fix
 * (credentials, permissions, the bucket). The retry loop (retry.ts) counts each kind.
 */

/** Kinds worth retrying: they pass by themselves. */
export const S3_TRANSIENT_KINDS = ['server', 'throttle', 'connection', 'timeout', 'truncated', 'conflict'] as const;
/** Kinds that retrying cannot fix: an operator has to. */
export const S3_PERMANENT_KINDS = ['auth', 'bucket', 'credentials', 'other'] as const;
export const S3_FAILURE_KINDS = [...S3_TRANSIENT_KINDS, ...S3_PERMANENT_KINDS] as const;
export type S3FailureKind = (typeof S3_FAILURE_KINDS)[number];

/** Thrown by the body reader when a response ends before its Content-Length (retried, never returned). */
export class TruncatedBodyError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TruncatedBodyError';
  }
}

const THROTTLE_CODES = new Set(['SlowDown', 'Throttling', 'ThrottlingException', 'RequestLimitExceeded', 'TooManyRequests', 'TooManyRequestsException']);
const AUTH_CODES = new Set([
  'AccessDenied',
  'InvalidAccessKeyId',
  'SignatureDoesNotMatch',
  'InvalidToken',
  'ExpiredToken',
  'RequestTimeTooSkewed',
  'AllAccessDisabled',
  'AccountProblem',
]);
/** Node's and the SDK's ways of saying the connection failed or went away. */
const CONNECTION_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ERR_STREAM_PREMATURE_CLOSE',
  'UND_ERR_SOCKET',
]);

interface SdkErrorShape {
  name?: unknown;
  code?: unknown;
  Code?: unknown;
  message?: unknown;
  $metadata?: { httpStatusCode?: unknown };
}

function shape(err: unknown): SdkErrorShape {
  return typeof err === 'object' && err !== null ? (err as SdkErrorShape) : {};
}

/** The HTTP status of an SDK service error, if the server answered. */
export function httpStatusOf(err: unknown): number | undefined {
  const status = shape(err).$metadata?.httpStatusCode;
  return typeof status === 'number' ? status : undefined;
}

/** The S3 error code (SlowDown, NoSuchKey, ...) or Node error code (ECONNRESET). */
export function errorCodeOf(err: unknown): string {
  const s = shape(err);
  for (const candidate of [s.Code, s.code, s.name]) if (typeof candidate === 'string' && candidate !== 'Error') return candidate;
  return 'Error';
}

export function messageOf(err: unknown): string {
  const m = shape(err).message;
  return typeof m === 'string' && m.length > 0 ? m : String(err);
}

/** Sorts one failed attempt; `timedOut` says the store's own attempt timer ended it. */
export function classifyS3Failure(err: unknown, timedOut: boolean): S3FailureKind {
  if (timedOut) return 'timeout';
  if (err instanceof TruncatedBodyError) return 'truncated';
  const code = errorCodeOf(err);
  const status = httpStatusOf(err);
  if (code === 'CredentialsProviderError') return 'credentials';
  if (status === 429 || THROTTLE_CODES.has(code)) return 'throttle';
  if (code === 'NoSuchBucket') return 'bucket';
  if (status === 401 || status === 403 || AUTH_CODES.has(code)) return 'auth';
  if (code === 'ConditionalRequestConflict' || status === 409) return 'conflict';
  if (status !== undefined && status >= 500) return 'server';
  if (CONNECTION_CODES.has(code) || /socket hang up|aborted/i.test(messageOf(err))) return 'connection';
  if (code === 'TimeoutError' || code === 'RequestTimeout') return 'timeout';
  return 'other';
}

export function isTransient(kind: S3FailureKind): boolean {
  return (S3_TRANSIENT_KINDS as readonly string[]).includes(kind);
}

/** What a failure kind means, for messages. */
export const S3_FAILURE_DESCRIPTIONS: Record<S3FailureKind, string> = {
  server: 'the server answered with an internal error (5xx)',
  throttle: 'the server asked to slow down (429 / SlowDown)',
  connection: 'the connection failed or was reset',
  timeout: 'the request got no complete answer in time',
  truncated: 'the response body ended before its Content-Length',
  conflict: 'a concurrent conditional write conflicted (409)',
  auth: 'the server refused the credentials or the permission',
  bucket: 'the bucket does not exist',
  credentials: 'no credentials were found',
  other: 'the request failed',
};
