/**
 * How LocalHostFile reports a failed Node fs call: a StorageError whose code says what the caller
 * can do about it (NOT_FOUND, NO_SPACE, READ_ONLY...) and whose message names the call, the path and
 * the reason in words with the errno last.
 */
import { StorageError, type StorageErrorCode } from '../core/errors.js';

const ERRNO_TO_CODE: Record<string, StorageErrorCode> = {
  ENOENT: 'NOT_FOUND',
  ENOTDIR: 'NOT_FOUND',
  EEXIST: 'ALREADY_EXISTS',
  ENOSPC: 'NO_SPACE',
  EDQUOT: 'NO_SPACE',
  EFBIG: 'NO_SPACE',
  EROFS: 'READ_ONLY',
  EISDIR: 'INVALID_ARGUMENT',
};

const ERRNO_TEXT: Record<string, string> = {
  ENOENT: 'no such file or directory',
  ENOTDIR: 'a path component is not a directory',
  EEXIST: 'file already exists',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  ENOSPC: 'no space left on device',
  EDQUOT: 'disk quota exceeded',
  EROFS: 'read-only file system',
  EISDIR: 'is a directory',
  EIO: 'input/output error',
};

function errnoCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

/** Wraps a Node fs error: "<what> <path>: <reason> (<ERRNO>)". */
export function wrapFsError(err: unknown, what: string, fallback: StorageErrorCode = 'IO_ERROR'): StorageError {
  if (err instanceof StorageError) return err;
  const errno = errnoCode(err);
  const code = (errno && ERRNO_TO_CODE[errno]) || fallback;
  const reason = errno
    ? `${ERRNO_TEXT[errno] ?? (err as Error).message} (${errno})`
    : err instanceof Error
      ? err.message
      : String(err);
  return new StorageError(code, `${what}: ${reason}`, { cause: err });
}
