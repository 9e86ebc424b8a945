/**
 * A minimal io_uring for large reads and writes, bound through koffi: one ring per process, calls
 * submitted in batches (one io_uring_enter per event-loop turn, however many the turn started) and
 * run by the kernel's own io-wq workers (IOSQE_ASYNC), completions announced on an eventfd the
 * libuv loop watches. Compared with fs.read/fs.write on libuv's thread pool, a call costs no pool
 * mutex, no condition-variable wake-up of a user thread and no uv_async hop (the pool measured ~6
 * futex calls per 1 MiB read here).
 *
 * io-wq runs buffered writes to one regular file one at a time (it hashes them by inode); the
 * kernel's inode lock serialises them on the thread pool too, where the other threads sleep on it.
 *
 * Buffers: the kernel uses the caller's memory after io_uring_enter returns, so every buffer of
 * a call is referenced from the pending table until its completion arrives (a JS
 * ArrayBuffer's backing store does not move while referenced; guest memory is unmapped only once
 * no request is in flight, as for the thread pool). iovec arrays are copied by the kernel during
 * io_uring_enter (FEATURE.submitStable, Linux 5.5+), so one native block holds the iovecs of
 * the batch being submitted.
 *
 * Availability: Linux x86-64 with io_uring enabled (kernel.io_uring_disabled = 0) and the
 * SUBMIT_STABLE and NODROP features; ioUring() answers null otherwise and callers keep the pool.
 * STRATA_IO_URING=0 in the environment turns it off (comparisons, a kernel that misbehaves).
 */
import koffi from 'koffi';
import { closeFd } from './fd.js';
import { EAGAIN, EINTR, EINVAL, errno, errnoName, libc, libcLibrary, MAP_FAILED, MAP_SHARED, PROT_READ, PROT_WRITE, SysError } from './libc.js';
import { EventFd } from './eventfd.js';

/** Linux x86-64 system call numbers, mmap offsets, flags and struct sizes (include/uapi/linux/io_uring.h). */
const SYS = { setup: 425, enter: 426, register: 427 } as const;
const MMAP_OFFSET = { rings: 0, sqes: 0x10000000 } as const;
const FEATURE = { singleMmap: 1 << 0, noDrop: 1 << 1, submitStable: 1 << 2 } as const;
const REGISTER = { eventFd: 4, ioWqMaxWorkers: 19 } as const;
const OPCODE = { readv: 1, writev: 2, read: 22, write: 23 } as const;
const IOSQE_ASYNC = 1 << 4;
const BYTES = { params: 120, sqe: 64, cqe: 16, iovec: 16 } as const;

/** Ring entries: calls in flight at once beyond this wait in a JS queue for a free entry. */
export const IO_URING_ENTRIES = 256;
/**
 * The most io-wq workers copying at once: the count the ring's reads and overwrites were measured
 * with (bench/RESULTS.md, issue 13). Not tied to the thread pool's size (src/sys/thread-pool.ts),
 * which grew to 32 for the writes that grow a file: those serialize on the inode lock, where reads
 * copy in parallel.
 */
export const IO_WQ_MAX_WORKERS = 16;
/** iovecs one batch may carry (a call over more buffers waits for the next batch; one over more than this is refused). */
export const IOVEC_SLAB_ENTRIES = 4096;

interface PendingRead {
  write: boolean;
  fd: number;
  bufs: readonly Uint8Array[];
  offsetBytes: number;
  done: (result: number) => void;
}

export interface IoUring {
  /**
   * One read of bufs (back to back) at offsetBytes: done(bytes read, or -errno) runs on the event
   * loop once the kernel completes it; short reads are the caller's to continue.
   */
  read(fd: number, bufs: readonly Uint8Array[], offsetBytes: number, done: (result: number) => void): void;
  /** write is to read what pwritev is to preadv: done(bytes written, or -errno). */
  write(fd: number, bufs: readonly Uint8Array[], offsetBytes: number, done: (result: number) => void): void;
}

type Syscall = (...args: unknown[]) => unknown;

class Ring implements IoUring {
  private readonly sqHead: Uint32Array;
  private readonly sqTail: Uint32Array;
  private readonly sqArray: Uint32Array;
  private readonly cqHead: Uint32Array;
  private readonly cqTail: Uint32Array;
  private readonly sqes: DataView;
  private readonly sqeBytes: Uint8Array;
  private readonly cqes: DataView;
  private readonly sqMask: number;
  private readonly cqMask: number;
  private readonly iovecs: DataView;
  private readonly iovecsAddr: bigint;
  /** Reads in the kernel, by user_data (a slot number). */
  private readonly inKernel: (PendingRead | undefined)[] = [];
  private readonly freeSlots: number[] = [];
  /** Reads started this turn (or waiting for a free slot). */
  private queued: PendingRead[] = [];
  private flushScheduled = false;
  private inKernelCount = 0;
  /** The eventfd's watcher: referenced (keeps the process alive) only while reads are in the kernel. */
  private readonly watcher: ReturnType<typeof koffi.node.poll>;

  constructor(
    private readonly ringFd: number,
    params: DataView,
    ring: ArrayBuffer,
    cqRing: ArrayBuffer,
    sqes: ArrayBuffer,
    private readonly enter: Syscall,
    wake: EventFd,
  ) {
    const sqOff = 40;
    const cqOff = 80;
    const u32 = (buffer: ArrayBuffer, at: number, count = 1) => new Uint32Array(buffer, at, count);
    this.sqHead = u32(ring, params.getUint32(sqOff, true));
    this.sqTail = u32(ring, params.getUint32(sqOff + 4, true));
    this.sqMask = u32(ring, params.getUint32(sqOff + 8, true))[0]!;
    const sqEntries = params.getUint32(0, true);
    this.sqArray = u32(ring, params.getUint32(sqOff + 24, true), sqEntries);
    this.cqHead = u32(cqRing, params.getUint32(cqOff, true));
    this.cqTail = u32(cqRing, params.getUint32(cqOff + 4, true));
    this.cqMask = u32(cqRing, params.getUint32(cqOff + 8, true))[0]!;
    const cqEntries = params.getUint32(4, true);
    this.cqes = new DataView(cqRing, params.getUint32(cqOff + 20, true), cqEntries * BYTES.cqe);
    this.sqes = new DataView(sqes);
    this.sqeBytes = new Uint8Array(sqes);
    for (let i = sqEntries - 1; i >= 0; i--) this.freeSlots.push(i);
    const slab = koffi.alloc('uint8_t', IOVEC_SLAB_ENTRIES * BYTES.iovec) as bigint;
    this.iovecsAddr = koffi.address(slab) as bigint;
    this.iovecs = new DataView(koffi.view(slab, IOVEC_SLAB_ENTRIES * BYTES.iovec));
    this.watcher = koffi.node.poll(wake.fd, { readable: true }, () => {
      try {
        wake.drain();
        this.reap();
      } catch (err) {
        process.emitWarning(`io_uring completion failed: ${err instanceof Error ? err.message : String(err)}`);
      }
    });
    this.watcher.unref();
  }

  read(fd: number, bufs: readonly Uint8Array[], offsetBytes: number, done: (result: number) => void): void {
    this.start({ write: false, fd, bufs, offsetBytes, done });
  }

  write(fd: number, bufs: readonly Uint8Array[], offsetBytes: number, done: (result: number) => void): void {
    this.start({ write: true, fd, bufs, offsetBytes, done });
  }

  private start(r: PendingRead): void {
    // More buffers than one batch's iovecs could never be submitted: refused now, not queued forever.
    if (r.bufs.length > IOVEC_SLAB_ENTRIES) {
      queueMicrotask(() => r.done(-EINVAL));
      return;
    }
    this.queued.push(r);
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    // Every read the current turn starts (a kick's requests) goes in with one io_uring_enter.
    queueMicrotask(() => {
      this.flushScheduled = false;
      this.submitQueued();
    });
  }

  private submitQueued(): void {
    const queued = this.queued;
    let tail = Atomics.load(this.sqTail, 0);
    let iovecsUsed = 0;
    let taken = 0;
    for (; taken < queued.length; taken++) {
      const r = queued[taken]!;
      if (r.bufs.length > 1 && iovecsUsed + r.bufs.length > IOVEC_SLAB_ENTRIES) break;
      const slot = this.freeSlots.pop();
      if (slot === undefined) break;
      this.inKernel[slot] = r;
      const at = slot * BYTES.sqe;
      const sqe = this.sqes;
      this.sqeBytes.fill(0, at, at + BYTES.sqe);
      sqe.setUint8(at + 1, IOSQE_ASYNC);
      sqe.setInt32(at + 4, r.fd, true);
      sqe.setBigUint64(at + 8, BigInt(r.offsetBytes), true);
      if (r.bufs.length === 1) {
        const buf = r.bufs[0]!;
        sqe.setUint8(at, r.write ? OPCODE.write : OPCODE.read);
        sqe.setBigUint64(at + 16, koffi.address(buf) as bigint, true);
        sqe.setUint32(at + 24, buf.length, true);
      } else {
        sqe.setUint8(at, r.write ? OPCODE.writev : OPCODE.readv);
        sqe.setBigUint64(at + 16, this.iovecsAddr + BigInt(iovecsUsed * BYTES.iovec), true);
        sqe.setUint32(at + 24, r.bufs.length, true);
        for (const buf of r.bufs) {
          this.iovecs.setBigUint64(iovecsUsed * BYTES.iovec, koffi.address(buf) as bigint, true);
          this.iovecs.setBigUint64(iovecsUsed * BYTES.iovec + 8, BigInt(buf.length), true);
          iovecsUsed++;
        }
      }
      sqe.setBigUint64(at + 32, BigInt(slot), true);
      this.sqArray[tail & this.sqMask] = slot;
      tail = (tail + 1) >>> 0;
    }
    if (taken === 0) return;
    if (this.inKernelCount === 0) this.watcher.ref();
    this.inKernelCount += taken;
    this.queued = taken === queued.length ? [] : queued.slice(taken);
    Atomics.store(this.sqTail, 0, tail);
    this.submit(taken);
    // What did not fit waits for completions to free entries (reap() submits it).
  }

  private submit(count: number): void {
    let left = count;
    while (left > 0) {
      const n = Number(this.enter(SYS.enter, 'int', this.ringFd, 'uint32_t', left, 'uint32_t', 0, 'uint32_t', 0, 'void *', null, 'size_t', 0));
      if (n > 0) {
        left -= n;
        continue;
      }
      // 0 would mean the kernel saw no entries: treated as a refusal rather than retried forever.
      const e = n === 0 ? EAGAIN : errno();
      if (n < 0 && e === EINTR) continue;
      // The ring refused the batch (EAGAIN, EBUSY: out of kernel resources): fail what is left,
      // the caller reports an I/O error for those reads. Entries not consumed are still in the
      // SQ, so they are taken back by rewinding the tail to the kernel's head.
      const head = Atomics.load(this.sqHead, 0);
      let tail = Atomics.load(this.sqTail, 0);
      while (tail !== head) {
        tail = (tail - 1) >>> 0;
        const slot = this.sqArray[tail & this.sqMask]!;
        const r = this.inKernel[slot];
        this.inKernel[slot] = undefined;
        this.freeSlots.push(slot);
        this.inKernelCount--;
        r?.done(-e);
      }
      if (this.inKernelCount === 0) this.watcher.unref();
      Atomics.store(this.sqTail, 0, tail);
      return;
    }
  }

  private reap(): void {
    let head = Atomics.load(this.cqHead, 0);
    const finished: [PendingRead, number][] = [];
    for (;;) {
      const tail = Atomics.load(this.cqTail, 0);
      if (head === tail) break;
      while (head !== tail) {
        const at = (head & this.cqMask) * BYTES.cqe;
        const slot = Number(this.cqes.getBigUint64(at, true));
        const result = this.cqes.getInt32(at + 8, true);
        head = (head + 1) >>> 0;
        const r = this.inKernel[slot];
        if (r === undefined) continue;
        this.inKernel[slot] = undefined;
        this.freeSlots.push(slot);
        finished.push([r, result]);
      }
      Atomics.store(this.cqHead, 0, head);
    }
    this.inKernelCount -= finished.length;
    if (this.inKernelCount === 0 && finished.length > 0) this.watcher.unref();
    if (this.queued.length > 0) this.submitQueued();
    for (const [r, result] of finished) {
      // One failing callback must not strand the reads completed after it.
      try {
        r.done(result);
      } catch (err) {
        process.emitWarning(`io_uring completion callback failed: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
  }
}

/** undefined: not tried yet; null: io_uring is not available here. */
let shared: IoUring | null | undefined;

/** The process's io_uring, or null where it cannot be set up (callers keep the thread pool). */
export function ioUring(): IoUring | null {
  if (shared !== undefined) return shared;
  shared = null;
  if (process.platform !== 'linux' || process.arch !== 'x64' || process.env['STRATA_IO_URING'] === '0') return shared;
  let ringFd = -1;
  try {
    const syscall = libcLibrary().func('long syscall(long number, ...)') as Syscall;
    const paramsBytes = new Uint8Array(BYTES.params);
    ringFd = Number(syscall(SYS.setup, 'uint32_t', IO_URING_ENTRIES, 'void *', paramsBytes));
    if (ringFd < 0) return shared;
    const params = new DataView(paramsBytes.buffer);
    const features = params.getUint32(20, true);
    const needed = FEATURE.singleMmap | FEATURE.noDrop | FEATURE.submitStable;
    if ((features & needed) !== needed) {
      closeFd(ringFd);
      return shared;
    }
    const sqEntries = params.getUint32(0, true);
    const cqEntries = params.getUint32(4, true);
    const sqRingBytes = params.getUint32(40 + 24, true) + sqEntries * 4;
    const cqRingBytes = params.getUint32(80 + 20, true) + cqEntries * BYTES.cqe;
    const ringBytes = Math.max(sqRingBytes, cqRingBytes);
    const map = (bytes: number, offset: number): ArrayBuffer => {
      const addr = libc().mmap(null, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | 0x8000 /* MAP_POPULATE */, ringFd, offset);
      if (addr === MAP_FAILED) throw new SysError('mmap', errno(), 'of an io_uring ring');
      return koffi.view(addr, bytes);
    };
    const ring = map(ringBytes, MMAP_OFFSET.rings);
    // SINGLE_MMAP: the CQ ring shares the SQ ring's mapping.
    const sqes = map(sqEntries * BYTES.sqe, MMAP_OFFSET.sqes);
    const wake = EventFd.create();
    const fdArg = new Int32Array([wake.fd]);
    if (Number(syscall(SYS.register, 'int', ringFd, 'uint32_t', REGISTER.eventFd, 'void *', fdArg, 'uint32_t', 1)) < 0) {
      wake.close();
      closeFd(ringFd);
      return shared;
    }
    // io-wq runs at most min(entries, 4 x CPUs) reads of regular files at once by default (8 on 2
    // cores); IO_WQ_MAX_WORKERS gives the copies a busy machine's CPU share. Best effort (Linux
    // 5.15+): the default is fine otherwise.
    syscall(SYS.register, 'int', ringFd, 'uint32_t', REGISTER.ioWqMaxWorkers, 'void *', new Uint32Array([IO_WQ_MAX_WORKERS, 0]), 'uint32_t', 2);
    // The ring and its mappings live as long as the process (one per process, like the thread pool).
    shared = new Ring(ringFd, params, ring, ring, sqes, syscall, wake);
  } catch {
    if (ringFd >= 0) closeFd(ringFd);
    shared = null;
  }
  return shared;
}

/**
 * Whether a read into (or write from) bufs may go to the ring: every buffer at least a page. V8 keeps typed arrays
 * of a few dozen bytes inside its heap, where the garbage collector may move them while the kernel
 * writes; a page-sized one always has its own backing store, which never moves.
 */
export function ringTakes(bufs: readonly Uint8Array[]): boolean {
  for (const b of bufs) if (b.length < 4096) return false;
  return true;
}

/** A completion's negative result as the error fs calls give (code: the errno name). */
export function ringError(negativeErrno: number, syscall: string): NodeJS.ErrnoException {
  const e = -negativeErrno;
  const code = errnoName(e);
  const err: NodeJS.ErrnoException = new Error(`${syscall} through io_uring failed: ${code}`);
  err.errno = e;
  err.code = code;
  err.syscall = syscall;
  return err;
}
