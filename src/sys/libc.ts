/**
 * libc: the raw Linux x86-64 system calls the vhost-user export needs, bound once through koffi.
 *
 * Node's `net` cannot pass file descriptors over a unix socket and Node has no mmap or eventfd, so
 * this module binds them from glibc. Everything here is synchronous and cheap (~0.3 us per call);
 * nothing may block: sockets and eventfds are created non-blocking.
 *
 * Conventions: functions return the raw C result (-1 on failure) and callers turn failures into a
 * SysError with `fail(syscall)` right after the call, before anything else can clobber errno.
 * Pointers are BigInt (koffi 3). Struct layouts below are for Linux x86-64 (LP64) only.
 */
import koffi, { type LibraryHandle } from 'koffi';

/** A failed system call: `errno` is the numeric value, `code` its name (EAGAIN, EBADF, ...). */
export class SysError extends Error {
  readonly errno: number;
  readonly code: string;
  readonly syscall: string;

  constructor(syscall: string, errno: number, detail?: string) {
    const code = errnoName(errno);
    super(`${syscall}${detail ? ` ${detail}` : ''} failed: ${strerrorText(errno)} (${code})`);
    this.name = 'SysError';
    this.errno = errno;
    this.code = code;
    this.syscall = syscall;
  }
}

// --- constants (Linux x86-64 values) ---------------------------------------------------------------

export const AF_UNIX = 1;
export const SOCK_STREAM = 1;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;
export const SOL_SOCKET = 1;
export const SCM_RIGHTS = 1;
export const MSG_CTRUNC = 0x8;
export const MSG_DONTWAIT = 0x40;
export const MSG_NOSIGNAL = 0x4000;
export const MSG_CMSG_CLOEXEC = 0x40000000;
export const F_GETFL = 3;
export const F_SETFL = 4;
export const O_NONBLOCK = 0o4000;
export const EFD_CLOEXEC = 0o2000000;
export const EFD_NONBLOCK = 0o4000;
export const MFD_CLOEXEC = 1;
export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const MAP_SHARED = 1;
export const POLLIN = 1;
export const POLLOUT = 4;
export const POLLERR = 0x8;
export const POLLHUP = 0x10;
/** The peer closed its end (or shut down writing): nothing more will come. */
export const POLLRDHUP = 0x2000;
/** sizeof(struct pollfd): int fd, short events, short revents. */
export const POLLFD_BYTES = 8;
/** The kernel's limit on descriptors in one SCM_RIGHTS message. */
export const SCM_MAX_FD = 253;
/** sizeof(struct sockaddr_un); sun_path holds at most 107 bytes plus the NUL. */
export const SOCKADDR_UN_BYTES = 110;
export const SUN_PATH_MAX_BYTES = 107;
/** sizeof(struct msghdr), sizeof(struct iovec), sizeof(struct cmsghdr) on LP64. */
export const MSGHDR_BYTES = 56;
export const IOVEC_BYTES = 16;
export const CMSGHDR_BYTES = 16;
export const PAGE_BYTES = 4096;

/** CMSG_SPACE for `n` descriptors: header plus data rounded up to 8 bytes. */
export function cmsgSpace(fdCount: number): number {
  return CMSGHDR_BYTES + ((fdCount * 4 + 7) & ~7);
}

// --- errno -------------------------------------------------------------------------------------

const errnoByNumber = new Map<number, string>();
for (const [name, value] of Object.entries(koffi.os.errno)) {
  // Several names share a number (EAGAIN/EWOULDBLOCK, ENOTSUP/EOPNOTSUPP): keep the first seen.
  if (!errnoByNumber.has(value)) errnoByNumber.set(value, name);
}
errnoByNumber.set(11, 'EAGAIN');

export function errnoName(errno: number): string {
  return errnoByNumber.get(errno) ?? `errno ${errno}`;
}

/** errno's number for `name` on this platform (fallback: its Linux x86-64 value). */
export function errnoValue(name: string, fallback: number): number {
  return koffi.os.errno[name] ?? fallback;
}

export const EAGAIN = errnoValue('EAGAIN', 11);
export const EINTR = errnoValue('EINTR', 4);
export const EBADF = errnoValue('EBADF', 9);
export const EINVAL = errnoValue('EINVAL', 22);
export const ECONNABORTED = errnoValue('ECONNABORTED', 103);
export const ECONNREFUSED = errnoValue('ECONNREFUSED', 111);
export const EADDRINUSE = errnoValue('EADDRINUSE', 98);
export const EEXIST = errnoValue('EEXIST', 17);

/**
 * The thread's errno as it is now. koffi does not save it after a synchronous call: whatever runs
 * between a failed call's return and this read (the runtime's own work) can overwrite it, as seen
 * once in the vhost-user burst test, where a non-blocking recvmsg that found nothing read back as
 * ENOENT and dropped a healthy connection. Loops around calls that change nothing when they fail
 * therefore repeat the call once (see ErrnoDoubt) before believing an errno they did not expect.
 */
export function errno(): number {
  return koffi.errno();
}

/**
 * Errors a connected unix socket's recvmsg/sendmsg/accept4 report when the peer or the system
 * really caused them: believed at once (a peer that hung up is a disconnect, logged as such; a
 * repeated recvmsg would find the reset consumed and report an end of stream instead). EBADF,
 * EINVAL and the like would be this process's own bug: doubted like any other.
 */
export const SOCKET_ERRNOS: ReadonlySet<number> = new Set([
  ECONNABORTED,
  ...[
    ['ECONNRESET', 104], ['EPIPE', 32], ['ENOTCONN', 107], ['ECONNREFUSED', 111], ['ETIMEDOUT', 110],
    ['ENOBUFS', 105], ['ENOMEM', 12], ['EMFILE', 24], ['ENFILE', 23], ['EMSGSIZE', 90], ['ETOOMANYREFS', 109], ['EPROTO', 71], ['EPERM', 1],
  ].map(([name, fallback]) => errnoValue(name as string, fallback as number)),
]);

/**
 * One per retry loop, made on the loop's first unexpected errno (the loops run per vhost-user
 * kick and message: the path that succeeds allocates nothing). An errno the call can really return (`believed`) is believed; any other
 * (ENOENT from a recvmsg: another call's errno) is doubted once: the caller repeats the call,
 * which is safe because the failed call did nothing, and believes what the repeat reports.
 */
export class ErrnoDoubt {
  private doubted = false;

  /** `believed`: none for calls whose repeat is harmless and cannot change what they report (eventfd, fallocate). */
  constructor(private readonly believed: ReadonlySet<number> = new Set()) {}

  /** True when the caller should repeat the call rather than report `errnoValue`. */
  shouldRetry(errnoValue: number): boolean {
    if (this.doubted || this.believed.has(errnoValue)) return false;
    this.doubted = true;
    return true;
  }
}

/** A SysError for the call that just failed. */
export function fail(syscall: string, detail?: string): SysError {
  return new SysError(syscall, koffi.errno(), detail);
}

// --- bindings ----------------------------------------------------------------------------------

/**
 * Typed facade over the koffi functions. koffi returns `any`; each wrapper pins the JS type
 * (Number() for ssize_t/int64 results, which koffi may hand back as BigInt).
 */
export interface Libc {
  close(fd: number): number;
  socket(domain: number, type: number, protocol: number): number;
  bind(fd: number, addr: Uint8Array, addrBytes: number): number;
  listen(fd: number, backlog: number): number;
  accept4(fd: number, flags: number): number;
  connect(fd: number, addr: Uint8Array, addrBytes: number): number;
  /** msg: native address of a struct msghdr. */
  sendmsg(fd: number, msg: bigint, flags: number): number;
  recvmsg(fd: number, msg: bigint, flags: number): number;
  read(fd: number, buf: Uint8Array, count: number): number;
  write(fd: number, buf: Uint8Array, count: number): number;
  fcntl(fd: number, cmd: number, arg: number): number;
  /** fds: packed struct pollfd array (8 bytes each). */
  poll(fds: Uint8Array, count: number, timeoutMs: number): number;
  /** Returns the mapping address, or MAP_FAILED (all ones). */
  mmap(addr: bigint | null, lengthBytes: number, prot: number, flags: number, fd: number, offsetBytes: number): bigint;
  munmap(addr: bigint, lengthBytes: number): number;
  eventfd(initval: number, flags: number): number;
  memfdCreate(name: string, flags: number): number;
  ftruncate(fd: number, lengthBytes: number): number;
  dup(fd: number): number;
  strerror(errno: number): string;
}

export const MAP_FAILED = 0xffff_ffff_ffff_ffffn;

let bound: Libc | undefined;
let library: LibraryHandle | undefined;

/**
 * The process's one handle on glibc's libc.so.6. Every binding in src/sys declares its functions
 * on it: koffi is loaded in this folder only, and libc is opened once. Throws when it cannot be
 * loaded (not glibc Linux); callers that have a fallback catch that.
 */
export function libcLibrary(): LibraryHandle {
  library ??= koffi.load('libc.so.6');
  return library;
}

/** The libc bindings; loaded on first use. Throws SysError-free Error when libc cannot be bound. */
export function libc(): Libc {
  if (bound !== undefined) return bound;
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    throw new Error(`vhost-user system bindings support Linux x86-64 only (this is ${process.platform}-${process.arch})`);
  }
  const lib = libcLibrary();
  const f = (decl: string) => lib.func(decl);
  const close = f('int close(int fd)');
  const socket = f('int socket(int domain, int type, int protocol)');
  const bind = f('int bind(int fd, const void *addr, uint32_t len)');
  const listen = f('int listen(int fd, int backlog)');
  const accept4 = f('int accept4(int fd, void *addr, void *len, int flags)');
  const connect = f('int connect(int fd, const void *addr, uint32_t len)');
  const sendmsg = f('intptr_t sendmsg(int fd, void *msg, int flags)');
  const recvmsg = f('intptr_t recvmsg(int fd, void *msg, int flags)');
  const read = f('intptr_t read(int fd, void *buf, size_t count)');
  const write = f('intptr_t write(int fd, const void *buf, size_t count)');
  const fcntl = f('int fcntl(int fd, int cmd, int arg)');
  const poll = f('int poll(void *fds, uint64_t nfds, int timeout)');
  const mmap = f('void *mmap(void *addr, size_t length, int prot, int flags, int fd, int64_t offset)');
  const munmap = f('int munmap(void *addr, size_t length)');
  const eventfd = f('int eventfd(unsigned int initval, int flags)');
  const memfdCreate = f('int memfd_create(const char *name, unsigned int flags)');
  const ftruncate = f('int ftruncate(int fd, int64_t length)');
  const dup = f('int dup(int fd)');
  const strerror = f('const char *strerror(int errnum)');
  // koffi functions are typed `(...args: any[]) => any`: this is the boundary where JS types are fixed.
  bound = {
    close: (fd) => close(fd) as number,
    socket: (d, t, p) => socket(d, t, p) as number,
    bind: (fd, a, n) => bind(fd, a, n) as number,
    listen: (fd, b) => listen(fd, b) as number,
    accept4: (fd, flags) => accept4(fd, null, null, flags) as number,
    connect: (fd, a, n) => connect(fd, a, n) as number,
    sendmsg: (fd, m, flags) => Number(sendmsg(fd, m, flags)),
    recvmsg: (fd, m, flags) => Number(recvmsg(fd, m, flags)),
    read: (fd, b, n) => Number(read(fd, b, n)),
    write: (fd, b, n) => Number(write(fd, b, n)),
    fcntl: (fd, c, a) => fcntl(fd, c, a) as number,
    poll: (fds, n, t) => poll(fds, n, t) as number,
    mmap: (a, n, p, fl, fd, o) => BigInt(mmap(a, n, p, fl, fd, o) as bigint | number),
    munmap: (a, n) => munmap(a, n) as number,
    eventfd: (v, fl) => eventfd(v, fl) as number,
    memfdCreate: (name, fl) => memfdCreate(name, fl) as number,
    ftruncate: (fd, n) => ftruncate(fd, n) as number,
    dup: (fd) => dup(fd) as number,
    strerror: (e) => String(strerror(e)),
  };
  return bound;
}

function strerrorText(errno: number): string {
  try {
    return libc().strerror(errno);
  } catch {
    return `error ${errno}`;
  }
}

// --- native scratch memory ---------------------------------------------------------------------

/**
 * A block of native memory for building struct msghdr and friends. Node is single-threaded and
 * every call using it is synchronous, so one growing block serves the whole process.
 */
export interface Scratch {
  readonly addr: bigint;
  readonly sizeBytes: number;
  readonly bytes: Uint8Array;
  readonly view: DataView;
}

let scratchBlock: Scratch | undefined;

export function scratch(minBytes: number): Scratch {
  if (scratchBlock !== undefined && scratchBlock.sizeBytes >= minBytes) return scratchBlock;
  const sizeBytes = Math.max(64 * 1024, 2 ** Math.ceil(Math.log2(minBytes)));
  // koffi.alloc returns the native address (BigInt in koffi 3); the old block is freed only after
  // the new one exists so that a failed allocation leaves the previous one usable.
  const ptr = koffi.alloc('uint8_t', sizeBytes) as bigint;
  const ab = koffi.view(ptr, sizeBytes);
  if (scratchBlock !== undefined) koffi.free(scratchBlock.addr);
  scratchBlock = { addr: koffi.address(ptr), sizeBytes, bytes: new Uint8Array(ab), view: new DataView(ab) };
  return scratchBlock;
}
