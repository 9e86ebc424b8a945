/**
 * How the CLI reports failures: one line "strata: <what was wrong> (<what to do>)" on stderr. A
 * StorageError shows its code so scripts and operators can tell failures apart.
 */
import { StorageError, type StorageErrorCode } from '../core/errors.js';
import { EXIT } from './remote/exits.js';
import { cliHint } from './remote/fixes.js';

/** A mistake in how the command was invoked (exit status 2 for the daemon commands, 1 for img). */
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
  /** A code for scripts when the cause carries none (an API code outside StorageError, UNREACHABLE). */
  readonly code: string | undefined;
  /**
   * True when `hint` is final, even when undefined: the daemon's errors are worded for its objects
   * and get no hint of strata img's (written for image files: "stop the other user of the image").
   */
  readonly hintDecided: boolean;

  constructor(message: string, options: { hint?: string; exitCode?: number; cause?: unknown; code?: string; hintDecided?: boolean } = {}) {
    super(message, { cause: options.cause });
    this.name = 'CliError';
    this.hint = options.hint;
    this.exitCode = options.exitCode ?? 1;
    this.code = options.code;
    this.hintDecided = options.hintDecided ?? false;
  }
}

const HINTS: Record<StorageErrorCode, string> = {
  INVALID_ARGUMENT: 'check the arguments; --help lists the options',
  NOT_FOUND: 'check the file or snapshot name',
  ALREADY_EXISTS: 'choose another name or remove the existing one',
  READ_ONLY: 'the image or file is read-only; check its permissions and flags',
  NO_SPACE: 'free space on the host storage',
  IO_ERROR: 'check the host storage and its kernel log',
  UNAVAILABLE: 'a service the data depends on did not answer: check the S3 server the message names, then try again',
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

/**
 * What the CLI reports about a failure, the one source of both the stderr line and the --json
 * error object: what was wrong, its code (a StorageError or API code, an errno, or USAGE), what to
 * do, and the exit status.
 */
export interface Failure {
  message: string;
  /** Shown in brackets on the stderr line, except the CLI's own codes (USAGE, UNREACHABLE), which its words say. */
  code: string | undefined;
  hint: string | undefined;
  exitCode: number;
}

/** The code of the --json error object for usage errors (no StorageError code applies). */
export const USAGE_CODE = 'USAGE';
/** The code of the --json error object when the daemon cannot be reached. */
export const UNREACHABLE_CODE = 'UNREACHABLE';
const CLI_OWN_CODES: ReadonlySet<string> = new Set([USAGE_CODE, UNREACHABLE_CODE]);
const ERRNO_HINT = 'check the path and its permissions';
const REPORT_HINT = 'please report this with the command line used';

function storageHint(err: StorageError): string {
  return err.fix === undefined ? HINTS[err.code] : cliHint(err.fix);
}

function errnoOf(err: unknown): string | undefined {
  const code = err instanceof Error ? (err as NodeJS.ErrnoException).code : undefined;
  return typeof code === 'string' && NODE_ERRNO_TEXT[code] ? code : undefined;
}

/** Describes any thrown value; usageExitCode: the status of a UsageError in this command. */
export function describeFailure(err: unknown, usageExitCode = 1): Failure {
  if (err instanceof UsageError) return { message: err.message, code: USAGE_CODE, hint: err.hint, exitCode: usageExitCode };
  if (err instanceof CliError) {
    const cause = err.cause;
    let code = err.code;
    let hint = err.hint;
    if (cause instanceof StorageError) {
      code = cause.code;
      if (!err.hintDecided) hint ??= storageHint(cause);
    } else if (errnoOf(cause) !== undefined) {
      code = errnoOf(cause);
      hint ??= ERRNO_HINT;
    } else if (cause instanceof Error) {
      hint ??= REPORT_HINT;
    }
    if (code === undefined && err.exitCode === EXIT.USAGE) code = USAGE_CODE;
    return { message: err.message, code, hint, exitCode: err.exitCode };
  }
  if (err instanceof StorageError) return { message: err.message, code: err.code, hint: storageHint(err), exitCode: 1 };
  const errno = errnoOf(err);
  if (errno !== undefined) return { message: describeError(err), code: errno, hint: ERRNO_HINT, exitCode: 1 };
  return { message: `internal error: ${describeError(err)}`, code: undefined, hint: REPORT_HINT, exitCode: 1 };
}

/** The single stderr line for a failure, without the trailing newline. */
export function failureLine(f: Failure): string {
  const code = f.code !== undefined && !CLI_OWN_CODES.has(f.code) ? ` [${f.code}]` : '';
  return `strata: ${f.message}${code}${f.hint !== undefined ? ` (${f.hint})` : ''}`;
}

/**
 * The --json error object, printed on stdout (the line still goes to stderr):
 * {"error": {"code", "message", "hint", "exitCode"}}; code is USAGE for usage errors and null
 * when there is none, hint null when there is none (docs/cli.md).
 */
export function failureJson(f: Failure): { error: { code: string | null; message: string; hint: string | null; exitCode: number } } {
  return { error: { code: f.code ?? null, message: f.message, hint: f.hint ?? null, exitCode: f.exitCode } };
}

/** The single stderr line for an error, without the trailing newline. */
export function formatErrorLine(err: unknown): string {
  return failureLine(describeFailure(err));
}

/** Wraps an error with context ("Could not open 'x'"), keeping its cause for the code and hint. */
export function withContext(context: string, err: unknown, exitCode?: number): CliError {
  if (err instanceof UsageError) return new CliError(`${context}: ${err.message}`, { hint: err.hint, exitCode });
  if (err instanceof CliError) {
    return new CliError(`${context}: ${err.message}`, { hint: err.hint, exitCode: exitCode ?? err.exitCode, cause: err.cause, hintDecided: err.hintDecided, ...(err.code !== undefined ? { code: err.code } : {}) });
  }
  return new CliError(`${context}: ${describeError(err)}`, { cause: err, exitCode });
}
