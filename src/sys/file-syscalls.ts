/**
 * File system calls Node's fs does not offer: fallocate (hole punching), lseek with SEEK_DATA /
 * SEEK_HOLE (finding a sparse file's data) and flock (the data folder's lock). Bound on first use
 * from the shared libc handle; `fileSyscalls()` answers null where libc cannot be bound (not glibc
 * Linux), so callers keep a portable fallback.
 */
import { errno, errnoName, errnoValue, libcLibrary } from './libc.js';

export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;
export const SEEK_DATA = 3;
export const SEEK_HOLE = 4;
export const LOCK_EX = 2;
export const LOCK_NB = 4;
/** lseek(SEEK_DATA) past the last data: no more data. */
export const ENXIO = errnoValue('ENXIO', 6);
/** errno values meaning "this file system cannot punch holes": fall back to writing zeroes. */
export const PUNCH_UNSUPPORTED_ERRNOS: ReadonlySet<number> = new Set([
  errnoValue('EOPNOTSUPP', 95),
  errnoValue('ENOTSUP', 95),
  errnoValue('ENOSYS', 38),
]);

export interface FileSyscalls {
  /** 0 on success, -1 with errno set. */
  fallocate(fd: number, mode: number, offsetBytes: number, lengthBytes: number): number;
  /** The new offset, or -1 with errno set. */
  lseek(fd: number, offsetBytes: number, whence: number): number;
  /** 0 on success, -1 with errno set. */
  flock(fd: number, operation: number): number;
  /** errno of the last call above (saved by koffi right after the call). */
  errno(): number;
  /** errno's symbolic name (ENOSPC, ...), or "errno N". */
  errnoName(errno: number): string;
}

/** undefined: not bound yet; null: libc could not be bound. */
let bound: FileSyscalls | null | undefined;

export function fileSyscalls(): FileSyscalls | null {
  if (bound !== undefined) return bound;
  try {
    const lib = libcLibrary();
    const fallocate = lib.func('int fallocate(int fd, int mode, int64_t offset, int64_t len)');
    const lseek = lib.func('int64_t lseek(int fd, int64_t offset, int whence)');
    const flock = lib.func('int flock(int fd, int operation)');
    bound = {
      fallocate: (fd, mode, offset, length) => Number(fallocate(fd, mode, offset, length)),
      lseek: (fd, offset, whence) => Number(lseek(fd, offset, whence)),
      flock: (fd, operation) => Number(flock(fd, operation)),
      errno,
      errnoName,
    };
  } catch {
    bound = null;
  }
  return bound;
}
