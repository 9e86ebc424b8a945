/**
 * Unix stream sockets with descriptor passing (SCM_RIGHTS), which Node's `net` cannot do.
 *
 * All sockets are non-blocking and close-on-exec. Reads are driven by libuv readiness
 * (watchReadable); writes are synchronous because vhost-user messages are small (at most a few
 * KiB) and the socket buffer is far larger: a full buffer means a stuck peer, so sendMessage waits
 * a bounded time with poll(2) and then fails rather than queueing without limit.
 */
import fs from 'node:fs';
import {
  AF_UNIX,
  cmsgSpace,
  CMSGHDR_BYTES,
  EAGAIN,
  EADDRINUSE,
  ECONNABORTED,
  ECONNREFUSED,
  EEXIST,
  EINTR,
  EINVAL,
  ErrnoDoubt,
  SOCKET_ERRNOS,
  errno,
  fail,
  libc,
  MSG_CMSG_CLOEXEC,
  MSG_CTRUNC,
  MSG_DONTWAIT,
  MSG_NOSIGNAL,
  MSGHDR_BYTES,
  POLLERR,
  POLLFD_BYTES,
  POLLHUP,
  POLLOUT,
  POLLRDHUP,
  SCM_MAX_FD,
  SCM_RIGHTS,
  scratch,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  SOCK_STREAM,
  SOCKADDR_UN_BYTES,
  SOL_SOCKET,
  SUN_PATH_MAX_BYTES,
  SysError,
} from './libc.js';
import { closeFd, closeFds } from './fd.js';
import { WatchedFd, watchReadable, type Watcher } from './poll.js';

/** How long sendMessage waits for buffer space before giving up on the peer. */
const SEND_TIMEOUT_MS = 5_000;
/** After accept fails for lack of descriptors or memory, stop accepting this long (no busy loop). */
const ACCEPT_BACKOFF_MS = 100;

// Layout of the scratch block for sendmsg/recvmsg: msghdr, one iovec, control buffer, data.
const IOV_OFFSET = 64;
const CONTROL_OFFSET = 128;

function sockaddrUn(path: string): Uint8Array {
  const encoded = Buffer.from(path, 'utf8');
  if (encoded.length === 0 || encoded.length > SUN_PATH_MAX_BYTES || encoded.includes(0)) {
    throw new SysError('bind', EINVAL, `of "${path}" (a unix socket path is 1..${SUN_PATH_MAX_BYTES} bytes without NUL)`);
  }
  const addr = new Uint8Array(SOCKADDR_UN_BYTES);
  new DataView(addr.buffer).setUint16(0, AF_UNIX, true);
  addr.set(encoded, 2);
  return addr;
}

function newSocket(): number {
  const fd = libc().socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw fail('socket');
  return fd;
}

/**
 * Whether a process listens on the unix socket at path: a non-blocking connect succeeds (or finds
 * the backlog full, EAGAIN). ECONNREFUSED says no: nobody listens, the file is stale. Any other
 * errno (ENOENT: the file went away meanwhile) is doubted once (see errno()) and then also says no.
 * The listener sees a connection that closes at once.
 */
export function isListening(path: string): boolean {
  const addr = sockaddrUn(path);
  for (let attempt = 0; attempt < 2; attempt++) {
    const fd = newSocket();
    try {
      if (libc().connect(fd, addr, addr.length) === 0) return true;
      const e = errno();
      if (e === EAGAIN) return true;
      if (e === ECONNREFUSED) return false;
    } finally {
      closeFd(fd);
    }
  }
  return false;
}

/**
 * Makes path free for a new listener: nothing there, or a socket file nobody listens on (removed).
 * Any other file is EEXIST, a socket with a live listener EADDRINUSE; neither is touched.
 */
export function removeStaleSocket(path: string, syscall: string): void {
  let st: fs.Stats | undefined;
  try {
    st = fs.lstatSync(path);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new SysError(syscall, EEXIST, `of "${path}" (exists and is not a socket)`);
  if (isListening(path)) throw new SysError(syscall, EADDRINUSE, `of "${path}" (another process listens on it)`);
  fs.rmSync(path, { force: true });
}

export class UnixListener {
  readonly fd: number;
  readonly path: string;
  private watcher: Watcher | undefined;
  private backoff: NodeJS.Timeout | undefined;
  private closed = false;
  /** Inode of the socket file we bound, so close() never unlinks a file someone else put there. */
  private readonly ino: number;

  private constructor(fd: number, path: string, ino: number) {
    this.fd = fd;
    this.path = path;
    this.ino = ino;
  }

  /**
   * Binds and listens on path. A stale socket file (left by a killed daemon) is removed first; any
   * other kind of file at path is an error (EEXIST), never deleted, and so is a socket some process
   * still listens on (EADDRINUSE): removing it would take its path from a live server (another
   * daemon's attachment, qemu-storage-daemon, this daemon's own NBD socket), whose next client
   * would then reach us instead.
   */
  static listen(path: string, backlog = 16): UnixListener {
    const addr = sockaddrUn(path);
    removeStaleSocket(path, 'bind');
    const fd = newSocket();
    try {
      if (libc().bind(fd, addr, addr.length) < 0) throw fail('bind', `of "${path}"`);
      if (libc().listen(fd, backlog) < 0) throw fail('listen', `on "${path}"`);
      return new UnixListener(fd, path, fs.statSync(path).ino);
    } catch (err) {
      closeFd(fd);
      throw err;
    }
  }

  /** Accepts connections as they arrive; each becomes a non-blocking UnixStream owned by cb. */
  onConnection(cb: (sock: UnixStream) => void): void {
    if (this.closed) return;
    this.watcher?.stop();
    const acceptAll = (): void => {
      let doubt: ErrnoDoubt | undefined;
      for (;;) {
        const fd = libc().accept4(this.fd, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
          cb(new UnixStream(fd));
          if (this.closed) return;
          continue;
        }
        const e = errno();
        if (e === EAGAIN) return;
        if (e === EINTR || e === ECONNABORTED || (doubt ??= new ErrnoDoubt(SOCKET_ERRNOS)).shouldRetry(e)) continue;
        // EMFILE/ENFILE/ENOMEM: the pending connection stays queued; retry later instead of spinning.
        process.emitWarning(`accept on ${this.path} failed: ${new SysError('accept4', e).message}; retrying`);
        this.watcher?.stop();
        this.watcher = undefined;
        this.backoff = setTimeout(() => {
          this.backoff = undefined;
          if (!this.closed) this.onConnection(cb);
        }, ACCEPT_BACKOFF_MS);
        return;
      }
    };
    this.watcher = watchReadable(this.fd, acceptAll, `listener ${this.path}`);
  }

  /** Stops accepting, closes the socket and removes the socket file (if it is still ours). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.watcher?.stop();
    this.watcher = undefined;
    if (this.backoff !== undefined) clearTimeout(this.backoff);
    closeFd(this.fd);
    try {
      if (fs.lstatSync(this.path).ino === this.ino) fs.rmSync(this.path, { force: true });
    } catch {
      // Already gone.
    }
  }
}

export type RecvResult = { data: Uint8Array; fds: number[] } | 'again' | 'eof';

export class UnixStream extends WatchedFd {
  /** Wraps an already connected, non-blocking socket; the stream owns fd from now on. */
  constructor(fd: number) {
    super(fd, 'stream', 'unix stream fd');
  }

  get isClosed(): boolean {
    return this.fd < 0;
  }

  /** Connects to a listening unix socket (succeeds at once when the listener's backlog has room). */
  static connect(path: string): UnixStream {
    const addr = sockaddrUn(path);
    const fd = newSocket();
    if (libc().connect(fd, addr, addr.length) < 0) {
      const err = fail('connect', `to "${path}"`);
      closeFd(fd);
      throw err;
    }
    return new UnixStream(fd);
  }

  /**
   * Sends data with fds attached to its first byte (SCM_RIGHTS). The caller keeps ownership of its
   * fds (the kernel duplicates them into the peer). Loops over partial sends; waits at most
   * waitMs (default SEND_TIMEOUT_MS; 0: not at all) for buffer space, then throws SysError(EAGAIN).
   */
  sendMessage(data: Uint8Array, fds: readonly number[] = [], waitMs = SEND_TIMEOUT_MS): void {
    const fd = this.requireOpen('sendmsg');
    if (fds.length > SCM_MAX_FD) throw new SysError('sendmsg', EINVAL, `(${fds.length} descriptors; at most ${SCM_MAX_FD})`);
    const controlBytes = fds.length > 0 ? cmsgSpace(fds.length) : 0;
    const dataOffset = CONTROL_OFFSET + ((controlBytes + 63) & ~63);
    const s = scratch(dataOffset + data.length);
    s.bytes.set(data, dataOffset);
    let sent = 0;
    let withFds = fds.length > 0;
    const deadline = Date.now() + waitMs;
    let doubt: ErrnoDoubt | undefined;
    while (sent < data.length || withFds) {
      this.fillMsghdr(s.view, s.addr, dataOffset + sent, data.length - sent, withFds ? controlBytes : 0);
      if (withFds) {
        const v = s.view;
        v.setBigUint64(CONTROL_OFFSET, BigInt(CMSGHDR_BYTES + fds.length * 4), true);
        v.setInt32(CONTROL_OFFSET + 8, SOL_SOCKET, true);
        v.setInt32(CONTROL_OFFSET + 12, SCM_RIGHTS, true);
        fds.forEach((f, i) => v.setInt32(CONTROL_OFFSET + CMSGHDR_BYTES + i * 4, f, true));
      }
      const n = libc().sendmsg(fd, s.addr, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n >= 0) {
        sent += n;
        withFds = false; // the descriptors travelled with the first byte sent
        continue;
      }
      const e = errno();
      if (e === EINTR) continue;
      if (e !== EAGAIN) {
        if ((doubt ??= new ErrnoDoubt(SOCKET_ERRNOS)).shouldRetry(e)) continue;
        throw new SysError('sendmsg', e);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new SysError('sendmsg', e, `(peer has not read for ${waitMs} ms)`);
      this.waitWritable(fd, left);
    }
  }

  /**
   * One non-blocking recvmsg of at most maxBytes, accepting at most maxFds descriptors (received
   * ones are close-on-exec and owned by the caller). A stream socket has no message boundaries:
   * callers frame. When the peer attached more than maxFds descriptors the kernel drops the rest
   * (MSG_CTRUNC): the received ones are closed and SysError is thrown, since the stream can no
   * longer be interpreted safely.
   */
  recvMessage(maxBytes: number, maxFds: number): RecvResult {
    const fd = this.requireOpen('recvmsg');
    const fdCap = Math.min(Math.max(maxFds, 0), SCM_MAX_FD);
    // Always leave room for at least one descriptor so that an unexpected one is seen (and
    // closed by the caller's validation) rather than silently dropped with MSG_CTRUNC.
    const controlBytes = cmsgSpace(Math.max(fdCap, 1));
    const dataOffset = CONTROL_OFFSET + ((controlBytes + 63) & ~63);
    const s = scratch(dataOffset + maxBytes);
    let n: number;
    let doubt: ErrnoDoubt | undefined;
    for (;;) {
      this.fillMsghdr(s.view, s.addr, dataOffset, maxBytes, controlBytes);
      n = libc().recvmsg(fd, s.addr, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
      if (n >= 0) break;
      const e = errno();
      if (e === EINTR) continue;
      if (e === EAGAIN) return 'again';
      if ((doubt ??= new ErrnoDoubt(SOCKET_ERRNOS)).shouldRetry(e)) continue;
      throw new SysError('recvmsg', e);
    }
    const v = s.view;
    const fds: number[] = [];
    const controlLen = Number(v.getBigUint64(40, true));
    let off = 0;
    while (off + CMSGHDR_BYTES <= controlLen) {
      const len = Number(v.getBigUint64(CONTROL_OFFSET + off, true));
      if (len < CMSGHDR_BYTES || off + len > controlLen) break;
      const level = v.getInt32(CONTROL_OFFSET + off + 8, true);
      const type = v.getInt32(CONTROL_OFFSET + off + 12, true);
      if (level === SOL_SOCKET && type === SCM_RIGHTS) {
        const count = Math.floor((len - CMSGHDR_BYTES) / 4);
        for (let i = 0; i < count; i++) fds.push(v.getInt32(CONTROL_OFFSET + off + CMSGHDR_BYTES + i * 4, true));
      }
      off += (len + 7) & ~7;
    }
    const flags = v.getInt32(48, true);
    if ((flags & MSG_CTRUNC) !== 0 || fds.length > fdCap) {
      closeFds(fds);
      throw new SysError('recvmsg', EINVAL, `(more than ${fdCap} descriptors attached; all closed)`);
    }
    if (n === 0 && fds.length === 0) return 'eof';
    return { data: s.bytes.slice(dataOffset, dataOffset + n), fds };
  }

  /**
   * Whether the peer has closed its end (or reset it): asked without reading, so bytes it sent
   * before stay for whoever serves the connection. A peer that has only stopped writing counts as
   * gone too: a vhost-user front-end that cannot send requests any more is not a front-end.
   */
  peerHungUp(): boolean {
    if (this.isClosed) return true;
    const revents = this.pollNow(POLLRDHUP, 0);
    return (revents & (POLLRDHUP | POLLHUP | POLLERR)) !== 0;
  }

  // onReadable (cb runs while readable or hung up: read until 'again'), stopWatching and close
  // come from WatchedFd.

  /** struct msghdr { name, namelen, iov, iovlen, control, controllen, flags } at offset 0. */
  private fillMsghdr(v: DataView, base: bigint, dataOffset: number, dataBytes: number, controlBytes: number): void {
    for (let i = 0; i < MSGHDR_BYTES; i += 8) v.setBigUint64(i, 0n, true);
    v.setBigUint64(16, base + BigInt(IOV_OFFSET), true);
    v.setBigUint64(24, 1n, true);
    if (controlBytes > 0) {
      v.setBigUint64(32, base + BigInt(CONTROL_OFFSET), true);
      v.setBigUint64(40, BigInt(controlBytes), true);
    }
    v.setBigUint64(IOV_OFFSET, base + BigInt(dataOffset), true);
    v.setBigUint64(IOV_OFFSET + 8, BigInt(dataBytes), true);
  }

  private waitWritable(fd: number, timeoutMs: number): void {
    this.pollNow(POLLOUT, Math.min(timeoutMs, 1000), fd);
  }

  /** poll(2) on this socket alone for events; returns revents (0 on timeout or error). */
  private pollNow(events: number, timeoutMs: number, fd = this.fd): number {
    const pfd = new Uint8Array(POLLFD_BYTES);
    const dv = new DataView(pfd.buffer);
    dv.setInt32(0, fd, true);
    dv.setInt16(4, events, true);
    return libc().poll(pfd, 1, timeoutMs) > 0 ? dv.getUint16(6, true) : 0;
  }
}
