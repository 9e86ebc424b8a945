/**
 * Overwrites of a file in memory (tmpfs) copied by the kernel into a shared mapping of the file
 * (process_vm_writev to this process), on libuv's thread pool, instead of pwrite.
 *
 * Why: a pwrite holds the file's inode lock for its whole copy, so large overwrites of one file
 * go one at a time however many threads carry them (io_uring's io-wq even hashes a file's
 * buffered writes to one worker). process_vm_writev pins the mapped pages and copies into them
 * without that lock, so two copies run on two CPUs at once. Measured here, 1 MiB overwrites of a
 * 256 MiB file in /dev/shm (a C loop, not committed): pwrite 4.2-5.5 GB/s from one thread or two,
 * process_vm_writev from two threads 6.2-6.9 (bench/RESULTS.md, issue 13).
 *
 * What it keeps: the kernel copies each page whole (no signal stops a copy inside the kernel), so
 * a process killed mid-write leaves each sector old or new, as a pwrite does; a memcpy into the
 * mapping from user space could stop at any byte (src/sys/mapped-file.ts says why writes left that
 * path). Where the kernel cannot give a page (past the end of the file, a hole in a full tmpfs)
 * the call fails with EFAULT or stops short, never with SIGBUS (pinning pages raises no signal):
 * the caller writes what is left by pwrite, which extends the file or reports ENOSPC. A hole is
 * filled (the page zeroed, then copied), as pwrite fills it. The mapping has no view in
 * JavaScript: nothing but the kernel writes through it.
 */
import koffi from 'koffi';
import { FILE_WINDOW_BYTES, FileWindows } from './file-windows.js';
import { IOVEC_BYTES, libcLibrary } from './libc.js';

/**
 * Page table entries for a window are dropped once this much was written through it, so a large
 * image's mapping does not keep an entry for every page it ever wrote (2 MiB of page tables per
 * GiB). Rare enough that the next writes' minor faults cost nothing measurable.
 */
export const MAPPED_WRITE_ZAP_BYTES = 1024 * 1024 * 1024;

type ProcessVmWritevAsync = (pid: number, local: Uint8Array, localCount: number, remote: Uint8Array, done: (err: unknown, result: unknown) => void) => void;
let processVmWritev: ProcessVmWritevAsync | null | undefined;

function bound(): ProcessVmWritevAsync | null {
  if (processVmWritev !== undefined) return processVmWritev;
  try {
    const pvw = libcLibrary().func(
      'intptr_t process_vm_writev(int pid, const void *local_iov, unsigned long liovcnt, const void *remote_iov, unsigned long riovcnt, unsigned long flags)',
    );
    // A container's seccomp profile may refuse the call: find out once, on two buffers of our
    // own, rather than by every write failing over to pwrite.
    const from = new Uint8Array(8).fill(1);
    const to = new Uint8Array(8);
    const local = iovecOf(from);
    const remote = iovecOf(to);
    if (Number(pvw(process.pid, local, 1, remote, 1, 0)) !== to.length || to[7] !== 1) throw new Error('process_vm_writev refused');
    processVmWritev = (pid, local, localCount, remote, done) => pvw.async(pid, local, localCount, remote, 1, 0, done);
  } catch {
    processVmWritev = null;
  }
  return processVmWritev;
}

/** struct iovec for one buffer. */
function iovecOf(buf: Uint8Array): Uint8Array {
  const iov = new Uint8Array(IOVEC_BYTES);
  const view = new DataView(iov.buffer);
  view.setBigUint64(0, koffi.address(buf) as bigint, true);
  view.setBigUint64(8, BigInt(buf.length), true);
  return iov;
}

export class MappedWriter {
  private readonly windows: FileWindows;

  private constructor(
    fd: number,
    private readonly writev: ProcessVmWritevAsync,
  ) {
    this.windows = new FileWindows(fd, MAPPED_WRITE_ZAP_BYTES);
  }

  /** A writer for fd (a tmpfs file open read-write; the descriptor stays the caller's), or null where it cannot be had. */
  static open(fd: number): MappedWriter | null {
    const writev = FileWindows.available() ? bound() : null;
    return writev === null ? null : new MappedWriter(fd, writev);
  }

  /**
   * Writes bufs (back to back, lengthBytes in all, at most IOV_MAX of them) into the file at
   * hostOffset. Resolves with how many bytes from the start went in: all, or fewer where the file
   * ended or a page could not be had, or 0 for a range across two windows; the caller writes the
   * rest. Never rejects.
   */
  write(bufs: readonly Uint8Array[], hostOffset: number, lengthBytes: number): Promise<number> {
    if (lengthBytes === 0) return Promise.resolve(0);
    const windowIndex = Math.floor(hostOffset / FILE_WINDOW_BYTES);
    const inWindow = hostOffset - windowIndex * FILE_WINDOW_BYTES;
    if (inWindow + lengthBytes > FILE_WINDOW_BYTES) return Promise.resolve(0);
    const window = this.windows.window(windowIndex);
    if (window === undefined) return Promise.resolve(0);
    const local = new Uint8Array(bufs.length * IOVEC_BYTES);
    const localView = new DataView(local.buffer);
    bufs.forEach((buf, i) => {
      localView.setBigUint64(i * IOVEC_BYTES, koffi.address(buf) as bigint, true);
      localView.setBigUint64(i * IOVEC_BYTES + 8, BigInt(buf.length), true);
    });
    const remote = new Uint8Array(IOVEC_BYTES);
    const remoteView = new DataView(remote.buffer);
    remoteView.setBigUint64(0, window.addr + BigInt(inWindow), true);
    remoteView.setBigUint64(8, BigInt(lengthBytes), true);
    return new Promise<number>((resolve) => {
      // bufs are held by this closure until the call returns: the pool thread reads them.
      this.writev(process.pid, local, bufs.length, remote, (err, result) => {
        const written = err !== null && err !== undefined ? 0 : Math.min(Math.max(0, Number(result)), lengthBytes);
        this.windows.copied(window, written);
        resolve(written);
      });
    });
  }

  /** Unmaps every window. Only after the writes ended. Idempotent. */
  close(): void {
    this.windows.close();
  }
}
