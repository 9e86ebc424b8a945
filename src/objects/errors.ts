/**
 * The object model's refusals, named by the S3 error code a client expects. An ObjectError is a
 * StorageError (its `code` says what kind of failure it is, for every edge that knows only those),
 * and carries `s3Code`: the S3 endpoint maps an ObjectError by `s3Code` through S3_ERRORS (the one
 * table of S3 codes and their HTTP statuses) and any other StorageError by its `code`.
 */
import { StorageError, type StorageErrorCode } from '../core/errors.js';

/** Every S3 error this layer raises: its StorageError code and its HTTP status (AWS's S3 error table). */
export const S3_ERRORS = {
  NoSuchBucket: { code: 'NOT_FOUND', httpStatus: 404 },
  NoSuchKey: { code: 'NOT_FOUND', httpStatus: 404 },
  NoSuchVersion: { code: 'NOT_FOUND', httpStatus: 404 },
  NoSuchUpload: { code: 'NOT_FOUND', httpStatus: 404 },
  BucketAlreadyExists: { code: 'ALREADY_EXISTS', httpStatus: 409 },
  BucketAlreadyOwnedByYou: { code: 'ALREADY_EXISTS', httpStatus: 409 },
  BucketNotEmpty: { code: 'BUSY', httpStatus: 409 },
  ConditionalRequestConflict: { code: 'BUSY', httpStatus: 409 },
  InvalidBucketName: { code: 'INVALID_ARGUMENT', httpStatus: 400 },
  KeyTooLongError: { code: 'INVALID_ARGUMENT', httpStatus: 400 },
  InvalidArgument: { code: 'INVALID_ARGUMENT', httpStatus: 400 },
  InvalidRequest: { code: 'INVALID_ARGUMENT', httpStatus: 400 },
  InvalidPart: { code: 'INVALID_ARGUMENT', httpStatus: 400 },
  InvalidPartOrder: { code: 'INVALID_ARGUMENT', httpStatus: 400 },
  EntityTooSmall: { code: 'INVALID_ARGUMENT', httpStatus: 400 },
  EntityTooLarge: { code: 'LIMIT_EXCEEDED', httpStatus: 400 },
  IncompleteBody: { code: 'INVALID_ARGUMENT', httpStatus: 400 },
  BadDigest: { code: 'INVALID_ARGUMENT', httpStatus: 400 },
  XAmzContentSHA256Mismatch: { code: 'INVALID_ARGUMENT', httpStatus: 400 },
  InvalidDigest: { code: 'INVALID_ARGUMENT', httpStatus: 400 },
  InvalidRange: { code: 'INVALID_ARGUMENT', httpStatus: 416 },
  PreconditionFailed: { code: 'BUSY', httpStatus: 412 },
  /** A GET or HEAD of a specific version that is a delete marker. */
  MethodNotAllowed: { code: 'UNSUPPORTED', httpStatus: 405 },
} as const satisfies Record<string, { code: StorageErrorCode; httpStatus: number }>;

export type S3ErrorCode = keyof typeof S3_ERRORS;

/** Facts the endpoint turns into response headers (x-amz-delete-marker, x-amz-version-id). */
export interface ObjectErrorDetails {
  readonly deleteMarker?: boolean;
  readonly versionId?: string;
}

export class ObjectError extends StorageError {
  readonly s3Code: S3ErrorCode;
  readonly details: ObjectErrorDetails;

  constructor(s3Code: S3ErrorCode, message: string, options: { details?: ObjectErrorDetails; cause?: unknown } = {}) {
    super(S3_ERRORS[s3Code].code, message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'ObjectError';
    this.s3Code = s3Code;
    this.details = options.details ?? {};
  }
}

export function isObjectError(err: unknown, s3Code?: S3ErrorCode): err is ObjectError {
  return err instanceof ObjectError && (s3Code === undefined || err.s3Code === s3Code);
}
