/**
 * Reading an NBD connection's socket beside libuv: its descriptor, and non-blocking reads from it.
 *
 * Used where going through Node's stream costs too much: idle polling (idle-poll.ts) and large
 * WRITE payloads, which are read straight into their pooled, aligned buffer instead of arriving
 * as 64 KiB chunks that are allocated, queued and copied again. This is safe because Node is
 * single-threaded, the socket is non-blocking, and libuv reads only when epoll reports data (a
 * read that then finds none gets EAGAIN, which libuv ignores), provided Node's stream holds no
 * bytes it has not delivered yet (socket.readableLength === 0: a paused socket keeps buffering
 * what libuv reads, and a direct read would overtake those bytes; the caller checks). End-of-file
 * and errors are left in the socket for libuv to report.
 */
import type net from 'node:net';
import { libc, type Libc } from '../../sys/libc.js';

/**
 * The socket's file descriptor, or -1. Node has no public accessor; the handle's `fd` is what
 * libuv polls (Pipe and TCP handles on Linux).
 */
export function socketFd(socket: net.Socket): number {
  const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  return typeof fd === 'number' && Number.isInteger(fd) && fd >= 0 ? fd : -1;
}

let sys: Libc | null | undefined;

/** The libc bindings, or null where they cannot be bound (not Linux x86-64): then nobody reads directly. */
export function socketSys(): Libc | null {
  if (sys === undefined) {
    try {
      sys = libc();
    } catch {
      sys = null;
    }
  }
  return sys;
}

/**
 * Reads what the socket holds, up to into.length bytes, without blocking. Returns the bytes read;
 * 0 when there are none now, at end-of-file or on an error (all left for libuv to see).
 */
export function readAvailable(s: Libc, fd: number, into: Uint8Array): number {
  let filled = 0;
  while (filled < into.length) {
    const n = s.read(fd, filled === 0 ? into : into.subarray(filled), into.length - filled);
    if (n <= 0) break;
    filled += n;
  }
  return filled;
}
