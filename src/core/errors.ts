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
  // A service the data lives in or depends on (an S3 tier or S3 chunk store; later the cluster's
  // etcd) could not be reached, or kept failing transiently (5xx, throttling, timeouts), past the
  // retry policy. Nothing is wrong with the request or the daemon: the same request may succeed
  // later, so edges say "try again later" (HTTP 503, S3 ServiceUnavailable), not "internal error".
  'UNAVAILABLE',
  'CORRUPT', // on-disk metadata is inconsistent; the image is marked corrupt and opened read-only
  'UNSUPPORTED', // a valid feature this implementation does not handle (e.g. unknown incompatible bit)
  'BUSY', // the resource's state does not allow it now (in use, locked, has dependents, not protected, finished)
  'CANCELLED', // a long operation was cancelled
  'LIMIT_EXCEEDED', // a bound was hit (chain depth, table size, snapshot count)
] as const;

export type StorageErrorCode = (typeof StorageErrorCodes)[number];

/**
 * What the caller can do about a refusal, named independently of the interface it used: a
 * request option ('allowShrink') or an operation to run first ('protectSnapshot' of a snapshot).
 * `text` is the sentence with "{}" where the edge puts its own spelling of the option or operation
 * (the REST API its field or route, the CLI its flag or command), so a CLI user is never told to
 * "pass allowShrink" and a REST user never to run `strata snap protect`.
 */
export type ErrorFix = { text: string } & (
  | { option: FixOption }
  | { operation: 'protectSnapshot' | 'unprotectSnapshot'; pool: string; volume: string; snapshot: string }
  | { operation: 'setPoolQuota'; pool: string }
  | { operation: 'setSnapshotLimit'; pool: string; volume: string }
  | { operation: 'removeFromGroup'; group: string; pool: string; volume: string }
  | { operation: 'deleteGroupSnapshot'; group: string; snapshot: string }
  | { operation: 'stopExports'; exports: ExportRef[] }
  | { operation: ListOperation }
  | { operation: 'listVolumes' | 'listTrash'; pool: string }
  | { operation: 'listSnapshots'; pool: string; volume: string }
  | { operation: 'listGroupSnapshots'; group: string }
  /** The buckets a user still owns (the first few): each given to another user or deleted. */
  | { operation: 'removeBuckets'; buckets: string[] }
  /**
   * A remedy that reads the same through every interface (a host tool's command, another path):
   * `text` has no "{}". It is still a fix, so the edge shows it instead of its generic hint for
   * the code, which may be wrong for this error ("delete the existing one" of a live socket).
   */
  | { literal: true }
);

/**
 * One export of a volume, as a fix to stop it names it: its id, how it is served, the volume and
 * the snapshot it serves (absent: the volume's head). vhost-user-blk serves heads only.
 */
export interface ExportRef {
  id: string;
  type: 'nbd' | 'vhost-user';
  pool: string;
  volume: string;
  snapshot?: string;
}

/**
 * Fixes that list what exists, for a NOT_FOUND (what was named is not among them) or for what
 * holds a volume (the job): the lists that need no scope.
 */
export const LIST_OPERATIONS = ['listPools', 'listJobs', 'listExports', 'listGroups', 'listUsers', 'listBuckets'] as const;
export type ListOperation = (typeof LIST_OPERATIONS)[number];

/** Request options a fix can name: resize's allowShrink, volume delete's force, import's sizeBytes, trash restore's name, bucket delete's purge. */
export const FIX_OPTIONS = ['allowShrink', 'force', 'sizeBytes', 'name', 'purge'] as const;
export type FixOption = (typeof FIX_OPTIONS)[number];

/** The fix's sentence with the edge's spelling of its option or operation in place of "{}". */
export function renderFix(fix: ErrorFix, spelling: string): string {
  return fix.text.replace('{}', spelling);
}

export class StorageError extends Error {
  readonly code: StorageErrorCode;
  /** The remedy, for the edge to render in its own terms (absent when the message says it all). */
  readonly fix: ErrorFix | undefined;

  constructor(code: StorageErrorCode, message: string, options?: { cause?: unknown; fix?: ErrorFix }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'StorageError';
    this.code = code;
    this.fix = options?.fix;
  }
}

export function isStorageError(err: unknown, code?: StorageErrorCode): err is StorageError {
  return err instanceof StorageError && (code === undefined || err.code === code);
}

/** Programmer errors: a broken invariant inside Strata, never bad input from outside. */
export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(`assertion failed: ${message}`);
}
