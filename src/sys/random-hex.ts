/**
 * Random names in hex (ids of puts, packs, jobs and exports; temporary file names), drawn from a
 * pool of bytes from the system's CSPRNG filled POOL_BYTES at a time, each byte handed out once.
 *
 * Why: a randomBytes call per name is a getrandom(2) system call and a new Buffer, 10-30 us on the
 * event loop each; a 1 MiB PUT names four things (its put record, its pack, the pack's temporary
 * file, its version slot): ~0.07 ms of its ~4.7 ms on the event loop, in a CPU profile of 1,500 of
 * them. Secrets (keys, tokens, IVs) take randomBytes directly: none of their bytes sit in a pool.
 */
import { randomFillSync } from 'node:crypto';

/** Bytes drawn from the CSPRNG at once. */
const POOL_BYTES = 4096;
const pool = Buffer.allocUnsafeSlow(POOL_BYTES);
/** Bytes of the pool handed out (all of it: fill before the next name). */
let usedBytes = POOL_BYTES;

/** `byteCount` random bytes as 2 * byteCount hex digits. */
export function randomHex(byteCount: number): string {
  if (!Number.isSafeInteger(byteCount) || byteCount < 1 || byteCount > POOL_BYTES) {
    throw new RangeError(`randomHex takes 1 to ${POOL_BYTES} bytes, not ${byteCount}`);
  }
  if (usedBytes + byteCount > POOL_BYTES) {
    randomFillSync(pool);
    usedBytes = 0;
  }
  const hex = pool.toString('hex', usedBytes, usedBytes + byteCount);
  usedBytes += byteCount;
  return hex;
}
