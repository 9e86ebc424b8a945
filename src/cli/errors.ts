/**
 * How the CLI reports failures: one line "strata: <what was wrong> (<what to do>)" on stderr. A
 * StorageError shows its code so scripts and operators can tell failures apart.
 */
import { StorageError, type StorageErrorCode } from '../core/errors.js';

/** A mistake in how the command was invoked (exit status 1). */
export class UsageError extends Error {
  readonly hint: string;

  constructor(message: string, hint: string) {
    super(message);
    this.name = 'UsageError';
    this.hint = hint;
  }
}

/** A failure with a known cause, a hint, and an exit status chosen by the command. */
export class CliError extends Error {
  readonly hint: string | undefined;
  readonly exitCode: number;

  constructor(message: string, options: { hint?: string; exitCode?: number; cause?: unknown } = {}) {
    super(message, { cause: options.cause });
    this.name = 'CliError';
    this.hint = options.hint;
    this.exitCode = options.exitCode ?? 1;
  }
}

const HINTS: Record<StorageErrorCode, string> = {
  INVALID_ARGUMENT: 'check the arguments; --help lists the options',
  NOT_FOUND: 'check the file or snapshot name',
  ALREADY_EXISTS: 'choose another name or remove the existing one',
  READ_ONLY: 'the image or file is read-only; check its permissions and flags',
  NO_SPACE: 'free space on the host storage',
  IO_ERROR: 'check the host storage and its kernel log',
  CORRUPT: "the image's metadata is damaged; 'strata img check FILE' reports more, -r all repairs (copy it first)",
  UNSUPPORTED: 'this image uses a feature Strata does not handle',
  BUSY: 'stop the other user of the image first',
  CANCELLED: 'the operation was cancelled; run it again',
  LIMIT_EXCEEDED: 'the image exceeds a limit; check its backing chain and size',
};

const NODE_ERRNO_TEXT: Record<string, string> = {
  ENOENT: 'No such file or directory',
  EACCES: 'Permission denied',
  EPERM: 'Operation not permitted',
  EISDIR: 'Is a directory',
  ENOTDIR: 'Not a directory',
  EEXIST: 'File exists',
  ENOSPC: 'No space left on device',
  EROFS: 'Read-only file system',
  EIO: 'Input/output error',
};

/** A short human reason for any error (the message without our prefixes). */
export function describeError(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    if (!(err instanceof StorageError) && typeof code === 'string' && NODE_ERRNO_TEXT[code]) {
      const path = (err as NodeJS.ErrnoException).path;
      return path ? `${path}: ${NODE_ERRNO_TEXT[code]}` : (NODE_ERRNO_TEXT[code] as string);
    }
    return err.message;
  }
  return String(err);
}

/** The single stderr line for an error, without the trailing newline. */
export function formatErrorLine(err: unknown): string {
  if (err instanceof UsageError) return `strata: ${err.message} (${err.hint})`;
  if (err instanceof CliError) {
    const cause = err.cause;
    let code = '';
    let hint = err.hint;
    if (cause instanceof StorageError) {
      code = ` [${cause.code}]`;
      hint ??= HINTS[cause.code];
    } else if (cause instanceof Error) {
      const errno = (cause as NodeJS.ErrnoException).code;
      if (typeof errno === 'string' && NODE_ERRNO_TEXT[errno]) {
        code = ` [${errno}]`;
        hint ??= 'check the path and its permissions';
      } else {
        hint ??= 'please report this with the command line used';
      }
    }
    return `strata: ${err.message}${code}${hint ? ` (${hint})` : ''}`;
  }
  if (err instanceof StorageError) {
    return `strata: ${err.message} [${err.code}] (${HINTS[err.code]})`;
  }
  const code = err instanceof Error ? (err as NodeJS.ErrnoException).code : undefined;
  if (typeof code === 'string' && NODE_ERRNO_TEXT[code]) {
    return `strata: ${describeError(err)} [${code}] (check the path and its permissions)`;
  }
  const text = describeError(err);
  return `strata: internal error: ${text} (please report this with the command line used)`;
}

/** Wraps an error with context ("Could not open 'x'"), keeping its cause for the code and hint. */
export function withContext(context: string, err: unknown, exitCode?: number): CliError {
  if (err instanceof UsageError) return new CliError(`${context}: ${err.message}`, { hint: err.hint, exitCode });
  if (err instanceof CliError) {
    return new CliError(`${context}: ${err.message}`, { hint: err.hint, exitCode: exitCode ?? err.exitCode, cause: err.cause });
  }
  return new CliError(`${context}: ${describeError(err)}`, { cause: err, exitCode });
}
