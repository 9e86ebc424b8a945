/**
 * File descriptor helpers. Descriptors received over vhost-user are plain numbers: whoever holds
 * one must close it exactly once, so close is strict about EBADF (a double close could close a
 * descriptor that was reused meanwhile by someone else).
 */
import { EBADF, EINTR, errno, libc, SysError } from './libc.js';

/**
 * Closes fd. Negative values are ignored (the "no descriptor" marker). EINTR is not an error on
 * Linux (the descriptor is closed anyway); EBADF throws because it means a double close.
 */
export function closeFd(fd: number): void {
  if (fd < 0) return;
  if (libc().close(fd) === 0) return;
  const e = errno();
  if (e === EINTR) return;
  if (e === EBADF) throw new SysError('close', e, `of fd ${fd}`);
  // EIO and friends: the descriptor is released regardless; nothing useful to do here.
}

/** Closes every descriptor in fds, ignoring failures (cleanup paths must not throw midway). */
export function closeFds(fds: Iterable<number>): void {
  for (const fd of fds) {
    try {
      closeFd(fd);
    } catch {
      // Already closed: keep closing the others.
    }
  }
}

/** dup(2): a second descriptor for the same open file (tests, and keeping an fd past its sender). */
export function dupFd(fd: number): number {
  const r = libc().dup(fd);
  if (r < 0) throw new SysError('dup', errno(), `of fd ${fd}`);
  return r;
}

/** Makes fd non-blocking (descriptors received from a peer may be blocking). */
export function setNonBlocking(fd: number): void {
  const lib = libc();
  const flags = lib.fcntl(fd, 3 /* F_GETFL */, 0);
  if (flags < 0) throw new SysError('fcntl', errno(), `F_GETFL of fd ${fd}`);
  if ((flags & 0o4000) !== 0) return;
  if (lib.fcntl(fd, 4 /* F_SETFL */, flags | 0o4000) < 0) throw new SysError('fcntl', errno(), `F_SETFL of fd ${fd}`);
}
