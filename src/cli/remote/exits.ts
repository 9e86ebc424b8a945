/**
 * Exit statuses of the daemon commands (status, pool, volume, snap, job), for scripts:
 *   0 success
 *   1 error (the daemon failed the request, is not reachable, the token was refused, ...)
 *   2 usage error (wrong arguments or options; nothing was sent to the daemon)
 *   3 not found (a pool, volume, snapshot or job named does not exist)
 *   4 conflict or busy (already exists, in use, has dependents, read-only, cancelled)
 *   5 pool scrub: problems remain (found and not repaired)
 *   6 unavailable: a service the data depends on (a pool's S3 tier) could not be reached or kept
 *     failing; the same command may succeed later (a script may wait and run it again)
 */
export const EXIT = {
  OK: 0,
  ERROR: 1,
  USAGE: 2,
  NOT_FOUND: 3,
  CONFLICT: 4,
  SCRUB_PROBLEMS: 5,
  UNAVAILABLE: 6,
} as const;
