/**
 * S3's errors: a code from S3's list with its HTTP status, and the one mapping from StorageError
 * codes to them (the edge maps once). The XML body is written by the plugin (xml.ts errorXml).
 */
import { StorageError, type StorageErrorCode } from '../../core/errors.js';
import { isObjectError, S3_ERRORS, type S3ErrorCode as ObjectS3ErrorCode } from '../../objects/errors.js';

/** The S3 errors of the protocol itself (auth, bodies, XML); the object model's are S3_ERRORS. */
const PROTOCOL_ERROR_STATUS = {
  AccessDenied: 403,
  AuthorizationHeaderMalformed: 400,
  AuthorizationQueryParametersError: 400,
  // Not one of AWS's (S3 is never full): WebDAV's status, as MinIO answers a full disk (its
  // XMinioStorageFull). SDKs do not retry it, where a 503 would be retried into the same refusal.
  InsufficientStorage: 507,
  InternalError: 500,
  InvalidAccessKeyId: 403,
  MalformedXML: 400,
  MissingContentLength: 411,
  MissingSecurityHeader: 400,
  NotImplemented: 501,
  RequestTimeTooSkewed: 403,
  ServiceUnavailable: 503,
  SignatureDoesNotMatch: 403,
  SlowDown: 503,
  XAmzContentSHA256Mismatch: 400,
  OperationAborted: 409,
} as const;

export type S3ErrorCode = keyof typeof PROTOCOL_ERROR_STATUS | ObjectS3ErrorCode;

/** Every S3 error code this endpoint produces, with the status S3 gives it: one table, two owners. */
export const S3_ERROR_STATUS: Readonly<Record<S3ErrorCode, number>> = {
  ...PROTOCOL_ERROR_STATUS,
  ...(Object.fromEntries(Object.entries(S3_ERRORS).map(([code, entry]) => [code, entry.httpStatus])) as Record<ObjectS3ErrorCode, number>),
};

/** A refusal in S3's terms. `extra` adds elements to the XML body (S3 adds e.g. ServerTime). */
export class S3Error extends Error {
  readonly status: number;
  constructor(
    readonly code: S3ErrorCode,
    message: string,
    readonly extra: Readonly<Record<string, string>> = {},
  ) {
    super(message);
    this.name = 'S3Error';
    this.status = S3_ERROR_STATUS[code];
  }
}

/** Where a StorageError code lands when the object model does not say more precisely. */
const STORAGE_TO_S3: Record<StorageErrorCode, S3ErrorCode> = {
  INVALID_ARGUMENT: 'InvalidArgument',
  NOT_FOUND: 'NoSuchKey',
  ALREADY_EXISTS: 'BucketAlreadyOwnedByYou',
  BUSY: 'OperationAborted',
  READ_ONLY: 'AccessDenied',
  CANCELLED: 'OperationAborted',
  LIMIT_EXCEEDED: 'InvalidRequest',
  NO_SPACE: 'InsufficientStorage',
  UNSUPPORTED: 'NotImplemented',
  CORRUPT: 'InternalError',
  IO_ERROR: 'InternalError',
  // The code every AWS SDK, the aws CLI and boto3 retry with backoff: the client comes back.
  UNAVAILABLE: 'ServiceUnavailable',
};

/**
 * Any thrown value as an S3Error, whether it is the daemon's fault (`internal`: logged as an
 * error), and whether a service the daemon depends on is unavailable (`unavailable`: logged as a
 * warning; the client is told to try again later).
 */
export function toS3Error(err: unknown): { error: S3Error; internal: boolean; unavailable: boolean } {
  if (err instanceof S3Error) return { error: err, internal: err.status >= 500 && err.code !== 'NotImplemented', unavailable: false };
  if (isObjectError(err)) return { error: new S3Error(err.s3Code, err.message), internal: false, unavailable: false };
  if (err instanceof StorageError) {
    const code = STORAGE_TO_S3[err.code];
    return { error: new S3Error(code, err.message), internal: code === 'InternalError', unavailable: err.code === 'UNAVAILABLE' };
  }
  const message = err instanceof Error ? err.message : String(err);
  return { error: new S3Error('InternalError', `internal error: ${message}`), internal: true, unavailable: false };
}
