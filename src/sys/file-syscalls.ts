/**
 * File system calls Node's fs does not offer: fallocate (hole punching), lseek with SEEK_DATA /
 * SEEK_HOLE (finding a sparse file's data) and flock (the data folder's lock). Bound on first use
 * from the shared libc handle; `fileSyscalls()` answers null where libc cannot be bound (not glibc
 * Linux), so callers keep a portable fallback.
 */
import { errno, errnoName, errnoValue, libcLibrary } from './libc.js';

export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;
export const SEEK_SET = 0;
export const SEEK_CUR = 1;
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
  /**
   * copy_file_range(2) on a libuv worker thread (it can take long): bytes copied (0 at the
   * source's end) or -1 when the kernel refused (errno is not reported: it was set on another
   * thread; callers fall back to copying through user space). The kernel copies without user
   * space, or shares extents where the file system can (btrfs, XFS reflink).
   */
  copyFileRange(fdIn: number, offsetIn: number, fdOut: number, offsetOut: number, lengthBytes: number): Promise<number>;
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
    const copyFileRange = lib.func(
      'intptr_t copy_file_range(int fd_in, _Inout_ int64_t *off_in, int fd_out, _Inout_ int64_t *off_out, size_t len, unsigned int flags)',
    );
    bound = {
      fallocate: (fd, mode, offset, length) => Number(fallocate(fd, mode, offset, length)),
      lseek: (fd, offset, whence) => Number(lseek(fd, offset, whence)),
      flock: (fd, operation) => Number(flock(fd, operation)),
      copyFileRange: (fdIn, offsetIn, fdOut, offsetOut, lengthBytes) =>
        new Promise((resolve, reject) => {
          // koffi runs .async calls on the libuv thread pool.
          copyFileRange.async(fdIn, [offsetIn], fdOut, [offsetOut], lengthBytes, 0, (err: unknown, result: unknown) => {
            if (err) reject(err instanceof Error ? err : new Error(String(err)));
            else resolve(Number(result));
          });
        }),
      errno,
      errnoName,
    };
  } catch {
    bound = null;
  }
  return bound;
}
