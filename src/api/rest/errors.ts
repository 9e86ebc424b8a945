/**
 * The one place where StorageError codes become HTTP statuses, and where every failure becomes the
 * body { "error": { "code", "message", "hint"?, "fix"? } }: the hint says what to do in the API's
 * terms, the fix is the same remedy as data (core/errors.ts ErrorFix) for clients that word it
 * their own way (the CLI names its flags).
 */
import type { FastifyError } from 'fastify';
import { StorageError, type ErrorFix, type StorageErrorCode } from '../../core/errors.js';
import { InvalidImageError } from '../../core/input-errors.js';
import { restHint } from './fixes.js';

export const HTTP_STATUS: Record<StorageErrorCode, number> = {
  INVALID_ARGUMENT: 400,
  NOT_FOUND: 404,
  ALREADY_EXISTS: 409,
  BUSY: 409,
  READ_ONLY: 409,
  CANCELLED: 409,
  LIMIT_EXCEEDED: 422,
  NO_SPACE: 507,
  UNSUPPORTED: 501,
  CORRUPT: 500,
  IO_ERROR: 500,
  UNAVAILABLE: 503,
};

/**
 * Retry-After (seconds) of an UNAVAILABLE answer: the daemon has already retried the service it
 * depends on for up to a minute, so a few seconds' pause is enough for a client to come back
 * without hammering it; clients that back off on their own wait longer anyway.
 */
export const UNAVAILABLE_RETRY_AFTER_SECONDS = 5;

/** Codes outside StorageError that the API itself produces. */
export type ApiErrorCode = StorageErrorCode | 'UNAUTHORIZED' | 'INTERNAL' | 'INVALID_IMAGE';

/** An uploaded image is damaged (InvalidImageError): the request's fault, not the storage's. */
const INVALID_IMAGE_STATUS = 422;

export interface ErrorBody {
  error: { code: ApiErrorCode; message: string; hint?: string; fix?: ErrorFix };
}

export interface MappedError {
  status: number;
  body: ErrorBody;
  /** True for failures that are the daemon's fault (logged at error level). */
  internal: boolean;
  /**
   * Set when a service the daemon depends on is unavailable (UNAVAILABLE): the client may send the
   * same request again after this many seconds (the Retry-After header). Logged at warn level:
   * the operator has a service to look at, but the daemon itself did not fail.
   */
  retryAfterSeconds?: number;
}

export class UnauthorizedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UnauthorizedError';
  }
}

function isFastifyError(err: unknown): err is FastifyError {
  return err instanceof Error && typeof (err as Partial<FastifyError>).code === 'string' && (err as Partial<FastifyError>).code!.startsWith('FST_');
}

/** The client went away in the middle of its upload (Node's "aborted" / ECONNRESET on the request). */
export function isClientAbort(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as NodeJS.ErrnoException).code;
  return err.message === 'aborted' || code === 'ECONNRESET' || code === 'ERR_STREAM_PREMATURE_CLOSE';
}

/** Maps any thrown value to a status and an error body. */
export function mapError(err: unknown): MappedError {
  if (err instanceof InvalidImageError) {
    return { status: INVALID_IMAGE_STATUS, body: { error: { code: 'INVALID_IMAGE', message: err.message } }, internal: false };
  }
  if (err instanceof StorageError) {
    const status = HTTP_STATUS[err.code] ?? 500;
    const remedy = err.fix === undefined ? {} : { hint: restHint(err.fix), fix: err.fix };
    const body: ErrorBody = { error: { code: err.code, message: err.message, ...remedy } };
    if (err.code === 'UNAVAILABLE') return { status, body, internal: false, retryAfterSeconds: UNAVAILABLE_RETRY_AFTER_SECONDS };
    return { status, body, internal: status >= 500 && err.code !== 'UNSUPPORTED' };
  }
  if (isClientAbort(err)) {
    return { status: 409, body: { error: { code: 'CANCELLED', message: 'the client closed the connection before the request was complete' } }, internal: false };
  }
  if (err instanceof UnauthorizedError) {
    return { status: 401, body: { error: { code: 'UNAUTHORIZED', message: err.message } }, internal: false };
  }
  const fe = err as Partial<FastifyError> & Error;
  if (fe && Array.isArray(fe.validation)) {
    return { status: 400, body: { error: { code: 'INVALID_ARGUMENT', message: fe.message } }, internal: false };
  }
  if (isFastifyError(err)) {
    const status = typeof err.statusCode === 'number' ? err.statusCode : 500;
    let message = err.message;
    if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
      message = `${err.message}; send JSON (Content-Type: application/json) or, for content and diff-stream routes, application/octet-stream`;
    }
    if (status === 404) return { status, body: { error: { code: 'NOT_FOUND', message } }, internal: false };
    if (status >= 400 && status < 500) return { status, body: { error: { code: 'INVALID_ARGUMENT', message } }, internal: false };
    return { status, body: { error: { code: 'INTERNAL', message } }, internal: true };
  }
  // Malformed JSON from the body parser is a SyntaxError with statusCode 400.
  const statusCode = (err as { statusCode?: unknown } | null)?.statusCode;
  if (typeof statusCode === 'number' && statusCode >= 400 && statusCode < 500) {
    return { status: statusCode, body: { error: { code: 'INVALID_ARGUMENT', message: (err as Error).message } }, internal: false };
  }
  const message = err instanceof Error ? err.message : String(err);
  return { status: 500, body: { error: { code: 'INTERNAL', message: `internal error: ${message}` } }, internal: true };
}
