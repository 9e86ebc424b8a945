/**
 * Copies data into the holes of a file in memory (tmpfs) with userfaultfd's UFFDIO_COPY, on
 * libuv's thread pool: writes that grow a file, without its inode lock.
 *
 * Why: Linux runs a buffered write (pwrite) with the file's inode lock held for its whole copy, so
 * writes that grow one file go one at a time however many threads carry them, and two CPUs copy
 * no faster than one (src/store/growing-writes.ts). UFFDIO_COPY into a shared mapping of a tmpfs
 * file allocates each page, copies the data into it and only then adds it to the file
 * (shmem_mfill_atomic_pte): no inode lock, so several copies run at once. Measured here, 3,000 MiB
 * in 1 MiB requests to a new file in /dev/shm (a C loop, not committed): pwrite from one thread
 * 577-2,620 MiB/s (the machine's own spread), UFFDIO_COPY from one thread 819-2,555, from two
 * 2,205-4,299 (bench/RESULTS.md, issue 13).
 *
 * What it keeps: the kernel copies whole pages and adds a page to the file only once it is whole,
 * so a process killed mid-copy leaves each page (and so each 512-byte sector) old or new, as a
 * pwrite does (which also stops between pages on SIGKILL), never torn; a copy through a mapping
 * from user space can stop at any byte (src/sys/mapped-file.ts says why writes left that path).
 * The pages are ordinary page cache: pread, the mapping's reads, qemu-img and fdatasync see them
 * as they see a pwrite's.
 *
 * Limits, each answered by copying less and letting the caller pwrite the rest: UFFDIO_COPY fills
 * holes only (a page the file has stops it: EEXIST), below the file's size only (the caller
 * extends the file first, by a pwrite, which never shrinks it), whole pages only, and it fails
 * where tmpfs is full (ENOSPC: the pwrite then reports it). Where userfaultfd is refused (a
 * seccomp profile, an old kernel) `open` answers null. The mapping is never read or written from
 * user space (no view of it exists): a touch of a registered page that is not there would wait
 * for a fault handler that this process does not run.
 */
import koffi from 'koffi';
import { FILE_WINDOW_BYTES, FileWindows } from './file-windows.js';
import { errnoValue, libc, libcLibrary, PAGE_BYTES } from './libc.js';

/**
 * A copy leaves its pages mapped here too (UFFDIO_COPY maps what it fills); page table entries
 * are dropped for a whole window once this much was copied into it. Dropping them after each
 * copy cost a TLB flush each (madvise on the event loop: 1 MiB writes ran ~20% slower).
 */
export const HOLE_COPY_ZAP_BYTES = 64 * 1024 * 1024;

// linux/userfaultfd.h (x86-64): ioctl numbers, flags and struct layouts.
const SYS_USERFAULTFD = 323;
const UFFD_API = 0xaan;
const UFFDIO_API = 0xc018aa3f;
const UFFDIO_REGISTER = 0xc020aa00;
const UFFDIO_COPY = 0xc028aa03;
const UFFDIO_REGISTER_MODE_MISSING = 1n;
/** No thread waits on a fault here: skip the wake-up. */
const UFFDIO_COPY_MODE_DONTWAKE = 1n;
/** Bit _UFFDIO_COPY of the ioctls a registered range allows. */
const UFFDIO_COPY_ALLOWED = 1n << 3n;
/** Handle only faults from user space: what an unprivileged process may ask for (Linux 5.11+). */
const UFFD_USER_MODE_ONLY = 1;
const O_CLOEXEC = 0o2000000;
const O_NONBLOCK = 0o4000;
const UFFDIO_API_BYTES = 24;
const UFFDIO_REGISTER_BYTES = 32;
const UFFDIO_COPY_BYTES = 40;
/** struct uffdio_copy's `copy`: bytes copied, or a negative errno. */
const UFFDIO_COPY_RESULT_AT = 32;
const EINVAL = errnoValue('EINVAL', 22);

interface Bindings {
  userfaultfd(flags: number): number;
  ioctl(fd: number, request: number, arg: Uint8Array): number;
  ioctlAsync(fd: number, request: number, arg: Uint8Array, done: (err: unknown, result: unknown) => void): void;
}

let bindings: Bindings | null | undefined;

function bound(): Bindings | null {
  if (bindings !== undefined) return bindings;
  try {
    const lib = libcLibrary();
    const syscall = lib.func('long syscall(long number, ...)');
    const ioctl = lib.func('int ioctl(int fd, unsigned long request, void *arg)');
    bindings = {
      userfaultfd: (flags) => Number(syscall(SYS_USERFAULTFD, 'int', flags)),
      ioctl: (fd, request, arg) => ioctl(fd, request, arg) as number,
      ioctlAsync: (fd, request, arg, done) => ioctl.async(fd, request, arg, done),
    };
  } catch {
    bindings = null;
  }
  return bindings;
}

export class HoleCopier {
  private readonly windows: FileWindows;

  private constructor(
    fd: number,
    private readonly uffd: number,
    private readonly calls: Bindings,
  ) {
    this.windows = new FileWindows(fd, HOLE_COPY_ZAP_BYTES, (addr) => this.register(addr));
  }

  /**
   * A copier for fd (a tmpfs file open read-write; the descriptor stays the caller's), or null
   * where userfaultfd cannot be had here.
   */
  static open(fd: number): HoleCopier | null {
    const calls = FileWindows.available() ? bound() : null;
    if (calls === null) return null;
    let uffd = calls.userfaultfd(O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
    // Before Linux 5.11 the flag is unknown (EINVAL); a privileged process may ask without it.
    if (uffd < 0 && koffi.errno() === EINVAL) uffd = calls.userfaultfd(O_CLOEXEC | O_NONBLOCK);
    if (uffd < 0) return null;
    const api = new Uint8Array(UFFDIO_API_BYTES);
    new DataView(api.buffer).setBigUint64(0, UFFD_API, true);
    if (calls.ioctl(uffd, UFFDIO_API, api) !== 0) {
      libc().close(uffd);
      return null;
    }
    return new HoleCopier(fd, uffd, calls);
  }

  /**
   * Copies buf (a whole number of pages) into the file at hostOffset (page-aligned), page by page,
   * into holes below the file's size. Resolves with how many bytes from the start went in (whole
   * pages): all of buf, or less where a page was already there, the file ended, tmpfs was full or
   * the copy could not be set up; the caller writes the rest another way. Never rejects.
   */
  async copy(buf: Uint8Array, hostOffset: number): Promise<number> {
    if (buf.length === 0 || buf.length % PAGE_BYTES !== 0 || hostOffset % PAGE_BYTES !== 0) return 0;
    let done = 0;
    while (done < buf.length) {
      const at = hostOffset + done;
      const windowIndex = Math.floor(at / FILE_WINDOW_BYTES);
      const window = this.windows.window(windowIndex);
      if (window === undefined) break;
      const inWindow = at - windowIndex * FILE_WINDOW_BYTES;
      const lengthBytes = Math.min(buf.length - done, FILE_WINDOW_BYTES - inWindow);
      const copied = await this.copyPages(window.addr + BigInt(inWindow), buf.subarray(done, done + lengthBytes));
      this.windows.copied(window, copied);
      done += copied;
      if (copied < lengthBytes) break;
    }
    return done;
  }

  /** Unmaps every window (with it, the registrations), then closes the userfaultfd. Only after the copies ended. Idempotent. */
  close(): void {
    this.windows.close(() => libc().close(this.uffd));
  }

  private copyPages(dst: bigint, src: Uint8Array): Promise<number> {
    const arg = new Uint8Array(UFFDIO_COPY_BYTES);
    const view = new DataView(arg.buffer);
    view.setBigUint64(0, dst, true);
    view.setBigUint64(8, koffi.address(src) as bigint, true);
    view.setBigUint64(16, BigInt(src.length), true);
    view.setBigUint64(24, UFFDIO_COPY_MODE_DONTWAKE, true);
    return new Promise<number>((resolve) => {
      // src is held by this closure until the call returns: the pool thread reads it.
      this.calls.ioctlAsync(this.uffd, UFFDIO_COPY, arg, (err) => {
        if (err !== null && err !== undefined) return resolve(0);
        // Bytes copied (also after a partial copy, where the ioctl itself says EAGAIN), or -errno.
        const result = Number(view.getBigInt64(UFFDIO_COPY_RESULT_AT, true));
        resolve(result > 0 ? Math.min(result, src.length) : 0);
      });
    });
  }

  /** Registers a new window for missing-page copies: whether UFFDIO_COPY may then be used there. */
  private register(addr: bigint): boolean {
    const register = new Uint8Array(UFFDIO_REGISTER_BYTES);
    const view = new DataView(register.buffer);
    view.setBigUint64(0, addr, true);
    view.setBigUint64(8, BigInt(FILE_WINDOW_BYTES), true);
    view.setBigUint64(16, UFFDIO_REGISTER_MODE_MISSING, true);
    return this.calls.ioctl(this.uffd, UFFDIO_REGISTER, register) === 0 && (view.getBigUint64(24, true) & UFFDIO_COPY_ALLOWED) !== 0n;
  }
}
