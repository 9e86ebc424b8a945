/**
 * StorageError carries a stable code from where a failure is detected to the edge that reports it
 * (CLI exit status, NBD errno, virtio status byte, S3 error code, HTTP status). Each edge maps the
 * code once; nothing in between rewrites it.
 */
export const StorageErrorCodes = [
  'INVALID_ARGUMENT', // caller passed something malformed (bad size, bad option, out-of-range offset)
  'NOT_FOUND', // a named thing (file, snapshot, pool, volume) does not exist
  'ALREADY_EXISTS', // create over an existing name
  'READ_ONLY', // write to something opened or marked read-only
  'NO_SPACE', // host storage or a quota is exhausted
  'IO_ERROR', // the host storage failed an operation
  'CORRUPT', // on-disk metadata is inconsistent; the image is marked corrupt and opened read-only
  'UNSUPPORTED', // a valid feature this implementation does not handle (e.g. unknown incompatible bit)
  'BUSY', // the resource is in use (locked, has dependents)
  'CANCELLED', // a long operation was cancelled
  'LIMIT_EXCEEDED', // a bound was hit (chain depth, table size, snapshot count)
] as const;

export type StorageErrorCode = (typeof StorageErrorCodes)[number];

export class StorageError extends Error {
  readonly code: StorageErrorCode;

  constructor(code: StorageErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StorageError';
    this.code = code;
  }
}

export function isStorageError(err: unknown, code?: StorageErrorCode): err is StorageError {
  return err instanceof StorageError && (code === undefined || err.code === code);
}

/** Programmer errors: a broken invariant inside Strata, never bad input from outside. */
export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(`assertion failed: ${message}`);
}
