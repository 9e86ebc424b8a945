/**
 * LocalHostFile: a HostFile over a local file, through a raw file descriptor.
 *
 * This is the hot data path under every image, so each pread/pwrite costs one Promise, one closure
 * and one libuv request (fs.read/fs.write callback API): no FileHandle, no per-call allocation of
 * option objects. With `syncIo` the same methods call fs.readSync/fs.writeSync on the calling
 * thread instead and return an already-settled promise; that is faster when the file lives in
 * memory (tmpfs, a warm page cache) and blocks the event loop when it does not. Default: 'auto'
 * (sync on tmpfs, where no call ever waits for a device; async elsewhere).
 *
 * punchHole uses fallocate(PUNCH_HOLE | KEEP_SIZE) and seekData/seekHole use lseek(SEEK_DATA /
 * SEEK_HOLE), both from libc (src/sys/file-syscalls); where they are unavailable the file falls back to
 * writing zeroes and to reporting everything as data.
 */
import fs from 'node:fs';
import { StorageError } from '../core/errors.js';
import { wrapFsError } from './local-file-errors.js';
import type { HostFile, HostFileFeatures } from '../core/host-file.js';
import { checkCopyRange, copyRangeByBytes } from './copy-range.js';
import { EAGAIN, EINTR, ErrnoDoubt } from '../sys/libc.js';
import { IOV_MAX, remainingBuffers, totalBytesOf } from '../sys/iovec.js';
import { callName, READ, WRITE, type Direction, type PartDone } from './local-file-directions.js';
import { readNoWait } from '../sys/nowait-read.js';
import { sizeThreadPool } from '../sys/thread-pool.js';
import { folderOnTmpfs } from '../sys/tmpfs.js';
import { ioUring, ringError, ringTakes, type IoUring } from '../sys/io-uring.js';
import { GrowingWrites } from './growing-writes.js';
import { HoleCopyWrites } from './hole-copy-writes.js';
import { MappedOverwrites } from './mapped-overwrites.js';
import { MappedFile } from '../sys/mapped-file.js';
import {
  ENXIO,
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  fileSyscalls,
  PUNCH_UNSUPPORTED_ERRNOS,
  SEEK_DATA,
  SEEK_HOLE,
} from '../sys/file-syscalls.js';

// Before the pool starts (the first asynchronous call, which comes after every module has loaded).
sizeThreadPool();

export interface LocalHostFileOptions {
  /** Open O_RDONLY; every mutating call rejects with READ_ONLY. */
  readOnly?: boolean;
  /** Create the file when it does not exist (mode 0644). */
  create?: boolean;
  /** With create: fail with ALREADY_EXISTS when the file exists (O_EXCL). Implies create. */
  exclusive?: boolean;
  /**
   * Do pread/pwrite with fs.readSync/fs.writeSync inside the promise-returning methods. Much faster
   * on tmpfs (no thread-pool hop); on a disk it blocks the event loop for each call's duration.
   * 'auto': on tmpfs (memory: never waits for a device) requests up to AUTO_SYNC_IO_MAX_BYTES go
   * synchronously and larger ones through the thread pool, where several cores copy in parallel;
   * elsewhere everything is async. Default 'auto'.
   */
  syncIo?: boolean | 'auto';
}

/** One copy_file_range call at most: the worker thread comes back between calls. */
const COPY_FILE_RANGE_MAX_BYTES = 64 * 1024 * 1024;
const ZERO_CHUNK_BYTES = 1024 * 1024;

function checkRange(name: string, what: string, hostOffset: number, length: number): StorageError | undefined {
  if (
    Number.isSafeInteger(hostOffset) &&
    hostOffset >= 0 &&
    Number.isSafeInteger(length) &&
    length >= 0 &&
    Number.isSafeInteger(hostOffset + length)
  ) {
    return undefined;
  }
  return new StorageError('INVALID_ARGUMENT', `${what} on ${name}: invalid range: offset ${hostOffset}, length ${length}`);
}

/**
 * Measured on tmpfs here (page-aligned buffers): a synchronous 64 KiB read runs at 5.9 GB/s vs
 * 3.6 GB/s through the pool at queue depth 32 (the thread hop dominates); at 256 KiB they are even;
 * at 1 MiB the pool wins (7.4 vs 3.7-5.2 GB/s) because two cores copy at once.
 */
export const AUTO_SYNC_IO_MAX_BYTES = 256 * 1024;
/**
 * A read of one buffer up to this size that would go to the thread pool first tries preadv2 with
 * RWF_NOWAIT on the calling thread (src/sys/nowait-read.ts): bytes in the page cache come back at
 * once, with no pool round trip (a worker's wake-up, a completion hop back to the event loop: two
 * more context switches and ~10-20 us per request, and on a busy machine two more waits for a
 * CPU); anything else takes the pool as before. Small: the copy out of the kernel then runs on the
 * event loop, and larger reads gain from the pool's parallel copies (the comment above).
 */
export const NOWAIT_READ_MAX_BYTES = 64 * 1024;
/**
 * On tmpfs, reads from this size up go through the file's mapping when its pages are there
 * (src/sys/mapped-file.ts). Below it the copy is too short for the saving to pay for the
 * residency check (a 4 KiB pread and a mincore call cost about the same).
 */
export const MAPPED_READ_MIN_BYTES = 64 * 1024;
let zeroChunk: Uint8Array | undefined;

export class LocalHostFile implements HostFile {
  readonly name: string;
  readonly readOnly: boolean;
  /** True when at least small requests run synchronously (see syncIoMaxBytes). */
  readonly syncIo: boolean;
  /** Requests of at most this many bytes run synchronously; larger ones go to the thread pool. */
  readonly syncIoMaxBytes: number;
  /** -1 once close() has started: new calls reject; calls already in flight finish first. */
  private fd: number;
  private inFlight = 0;
  private drained: (() => void) | undefined;
  private closing: Promise<void> | undefined;
  /** A truncate or punchHole since the last flush: use fsync, not fdatasync. */
  private metadataDirty = false;
  private punchUnsupported = false;
  /** preadv2(RWF_NOWAIT) answered 'unsupported' here: small async reads go straight to the pool. */
  private noWaitUnsupported = false;
  /**
   * Large reads and overwrites of a file in memory (tmpfs) go through io_uring where it is
   * available (overwrites only where mappedOverwrites cannot): batched submission and the kernel's
   * own workers instead of a thread-pool hop per call (src/sys/io-uring.ts). Writes that grow the
   * file do not take it (holeCopies, else the pool): pwrites serialize on the inode lock either
   * way (io-wq's workers were seen waiting on it too), and through the ring allocating 1 MiB
   * writes measured no faster and with more CPU (busy machine, 8 runs: median 566 vs 655 ops/s,
   * 2.38 vs 1.94 CPU s per 3 GiB).
   */
  private readonly ring: IoUring | null;
  /**
   * The file's size as this object saw it (at open, raised by its writes, set by truncate): which
   * writes are overwrites. Only a routing hint: a wrong value costs speed, never correctness.
   */
  private knownSizeBytes: number;
  /** The descriptor while it is open, for the writes that queued before close() began. */
  private readonly openFd: number;
  /** Writes that grow the file and take the pool: a few at a time, the rest combined (growing-writes.ts). */
  private readonly growingWrites: GrowingWrites;
  /**
   * On tmpfs, large writes the kernel copies several at once, without the inode lock: those that
   * grow the file into its holes (hole-copy-writes.ts), overwrites through a mapping
   * (mapped-overwrites.ts). Null elsewhere, read-only, or with STRATA_HOLE_COPY=0.
   */
  private readonly holeCopies: HoleCopyWrites | null;
  private readonly mappedOverwrites: MappedOverwrites | null;
  /**
   * On tmpfs, large reads of pages the file has are copied out of a shared read-only mapping on
   * the calling thread (src/sys/mapped-file.ts: half the CPU of pread, no hand-off); null
   * elsewhere, or with STRATA_MAPPED_IO=0. Writes never go through it (a killed process would
   * leave torn sectors).
   */
  private readonly mapped: MappedFile | null;
  /** Truncates in flight (on the pool): pages may vanish, so no copy goes through the mapping meanwhile. */
  private truncating = 0;

  private constructor(fd: number, path: string, readOnly: boolean, syncIoMaxBytes: number, sizeBytes: number, inMemory: boolean) {
    this.fd = fd;
    this.openFd = fd;
    const poolWrite = (bufs: readonly Uint8Array[], hostOffset: number, lengthBytes: number): Promise<void> =>
      this.poolTransfer(WRITE, bufs, lengthBytes, hostOffset, callName(WRITE, bufs), this.openFd, null);
    const syncWrite = (buf: Uint8Array, hostOffset: number): number => {
      try {
        return WRITE.partSync(this.openFd, [buf], hostOffset);
      } catch (err) {
        throw this.transferError(err, 'pwrite', WRITE, [buf], buf.length, hostOffset);
      }
    };
    this.growingWrites = new GrowingWrites(poolWrite);
    this.ring = Number.isFinite(syncIoMaxBytes) && syncIoMaxBytes > 0 ? ioUring() : null;
    this.mapped = inMemory && process.env.STRATA_MAPPED_IO !== '0' ? new MappedFile(fd) : null;
    const kernelCopies = inMemory && !readOnly && process.env.STRATA_HOLE_COPY !== '0';
    this.mappedOverwrites = kernelCopies ? new MappedOverwrites(fd, poolWrite) : null;
    this.holeCopies = kernelCopies ? new HoleCopyWrites(fd, syncWrite, poolWrite) : null;
    this.knownSizeBytes = sizeBytes;
    this.name = path;
    this.readOnly = readOnly;
    this.syncIoMaxBytes = syncIoMaxBytes;
    this.syncIo = syncIoMaxBytes > 0;
  }

  static async open(path: string, options: LocalHostFileOptions = {}): Promise<LocalHostFile> {
    const readOnly = options.readOnly === true;
    const exclusive = options.exclusive === true;
    const create = options.create === true || exclusive;
    if (readOnly && create) {
      throw new StorageError('INVALID_ARGUMENT', `cannot create ${path} read-only: pass create without readOnly`);
    }
    const c = fs.constants;
    let flags = readOnly ? c.O_RDONLY : c.O_RDWR;
    if (create) flags |= c.O_CREAT;
    if (exclusive) flags |= c.O_EXCL;
    const verb = exclusive ? 'cannot create' : 'cannot open';
    const fd = await new Promise<number>((resolve, reject) => {
      fs.open(path, flags, 0o644, (err, fd) => (err ? reject(wrapFsError(err, `${verb} ${path}`)) : resolve(fd)));
    });
    let sizeBytes = 0;
    try {
      const stat = await new Promise<fs.Stats>((resolve, reject) => {
        fs.fstat(fd, (err, st) => (err ? reject(wrapFsError(err, `cannot stat ${path}`)) : resolve(st)));
      });
      if (!stat.isFile()) {
        const kind = stat.isDirectory() ? 'a directory' : 'not a regular file';
        throw new StorageError('INVALID_ARGUMENT', `cannot open ${path}: ${kind}`);
      }
      sizeBytes = stat.size;
    } catch (err) {
      fs.close(fd, () => {});
      throw err;
    }
    const mode = options.syncIo ?? 'auto';
    const inMemory = mode === 'auto' && (await folderOnTmpfs(path)) === true;
    const syncIoMaxBytes = mode === 'auto' ? (inMemory ? AUTO_SYNC_IO_MAX_BYTES : 0) : mode ? Number.POSITIVE_INFINITY : 0;
    return new LocalHostFile(fd, path, readOnly, syncIoMaxBytes, sizeBytes, inMemory);
  }

  pread(buf: Uint8Array, hostOffset: number): Promise<number> {
    if (buf.length > this.syncIoMaxBytes && buf.length <= NOWAIT_READ_MAX_BYTES && !this.noWaitUnsupported && this.readCached(buf, hostOffset)) {
      return Promise.resolve(buf.length);
    }
    return this.move(READ, [buf], hostOffset);
  }

  /**
   * The read from the page cache without waiting (NOWAIT_READ_MAX_BYTES): true when all of buf
   * was read. False (nothing promised about buf) when it was not cached, came short (the end of
   * the file: the pool's path zero-fills), failed (the pool's path reports the error) or cannot
   * be done here, or the file is closed or the range invalid (move() refuses those).
   */
  private readCached(buf: Uint8Array, hostOffset: number): boolean {
    const fd = this.fd;
    if (fd < 0 || buf.length === 0 || !Number.isSafeInteger(hostOffset) || hostOffset < 0) return false;
    const outcome = readNoWait(fd, hostOffset, buf);
    if (outcome === 'unsupported') this.noWaitUnsupported = true; // this file system cannot: stop asking
    return outcome === 'read';
  }

  pwrite(buf: Uint8Array, hostOffset: number): Promise<void> {
    return this.move(WRITE, [buf], hostOffset);
  }

  /**
   * One preadv(2) for buffers that lie back to back from hostOffset (a request over several guest
   * memory segments): one thread-pool hop and no bounce copy. Same rules as pread (synchronous up
   * to syncIoMaxBytes; past the end of the file reads zeroes).
   */
  preadv(bufs: readonly Uint8Array[], hostOffset: number): Promise<number> {
    return this.move(READ, bufs, hostOffset);
  }

  /** pwritev(2): pwrite of buffers that lie back to back from hostOffset, in one call. */
  pwritev(bufs: readonly Uint8Array[], hostOffset: number): Promise<void> {
    return this.move(WRITE, bufs, hostOffset);
  }

  /** pread/pwrite (one buffer) and preadv/pwritev (several): the checks, then the transfer. */
  private move<T>(direction: Direction<T>, bufs: readonly Uint8Array[], hostOffset: number): Promise<T> {
    const call = callName(direction, bufs);
    if (this.fd < 0) return Promise.reject(this.closedError(call));
    if (direction.writes && this.readOnly) return Promise.reject(this.readOnlyError(call));
    const length = bufs.length === 1 ? bufs[0]!.length : totalBytesOf(bufs);
    if (!Number.isSafeInteger(hostOffset) || hostOffset < 0) {
      return Promise.reject(checkRange(this.name, call, hostOffset, length));
    }
    if (length === 0) return Promise.resolve(direction.result(0));
    if (bufs.length > IOV_MAX) return this.inGroups(direction, bufs, hostOffset);
    return this.transfer(direction, bufs, length, hostOffset, call);
  }

  /**
   * Moves all length bytes between bufs and the file: after a short transfer, one more call for
   * what is left, until done. Synchronous up to syncIoMaxBytes, else through the thread pool. A
   * read that meets the end of the file zeroes the rest; a write that makes no progress fails.
   */
  private transfer<T>(direction: Direction<T>, bufs: readonly Uint8Array[], length: number, hostOffset: number, call: string): Promise<T> {
    const fd = this.fd;
    if (!direction.writes && length >= MAPPED_READ_MIN_BYTES && this.mapped !== null && this.truncating === 0 && this.mapped.read(bufs, hostOffset, length)) {
      return Promise.resolve(direction.result(length));
    }
    let rest = bufs;
    let done = 0;
    if (length <= this.syncIoMaxBytes) {
      try {
        while (done < length) {
          const n = direction.partSync(fd, rest, hostOffset + done);
          if (n === 0) break;
          done += n;
          if (done < length) rest = remainingBuffers(rest, n);
        }
        if (done < length) direction.endOfFile(bufs, done);
      } catch (err) {
        return Promise.reject(this.transferError(err, call, direction, bufs, length, hostOffset));
      }
      if (direction.writes) this.knownSizeBytes = Math.max(this.knownSizeBytes, hostOffset + length);
      return Promise.resolve(direction.result(done));
    }
    const grows = direction.writes && hostOffset + length > this.knownSizeBytes;
    const ring = this.ring !== null && !grows && ringTakes(bufs) ? this.ring : null;
    const overwrite = direction.writes && !grows && this.mappedOverwrites !== null && this.truncating === 0 && this.mappedOverwrites.available();
    if (grows || overwrite) {
      this.inFlight++;
      const holeCopies = grows && this.holeCopies !== null && this.holeCopies.takes(bufs, hostOffset, length) ? this.holeCopies : null;
      const written = overwrite
        ? this.mappedOverwrites!.write(bufs, hostOffset, length)
        : holeCopies !== null
          ? holeCopies.write(bufs, hostOffset, length)
          : this.growingWrites.write(bufs, hostOffset, length);
      return written.then(
        () => {
          this.opDone();
          this.knownSizeBytes = Math.max(this.knownSizeBytes, hostOffset + length);
          return direction.result(length);
        },
        (err: unknown) => {
          this.opDone();
          throw err;
        },
      );
    }
    return this.poolTransfer(direction, bufs, length, hostOffset, call, fd, ring);
  }

  /**
   * The asynchronous part of transfer(): through the ring when given one, else the thread pool,
   * one call after another until all length bytes have moved.
   */
  private poolTransfer<T>(
    direction: Direction<T>,
    bufs: readonly Uint8Array[],
    length: number,
    hostOffset: number,
    call: string,
    fd: number,
    ring: IoUring | null,
  ): Promise<T> {
    let rest = bufs;
    let done = 0;
    this.inFlight++;
    const part = ring === null ? direction.part : (fd: number, parts: readonly Uint8Array[], position: number, partDone: PartDone) => {
      const move = direction.writes ? ring.write : ring.read;
      move.call(ring, fd, parts, position, (n) => {
        if (n >= 0) partDone(null, n);
        // A transient refusal (EAGAIN, EINTR) is not the file's answer: that part goes through the pool.
        else if (n === -EAGAIN || n === -EINTR) direction.part(fd, parts, position, partDone);
        else partDone(ringError(n, call), 0);
      });
    };
    return new Promise<T>((resolve, reject) => {
      const onPart = (err: NodeJS.ErrnoException | null, n: number): void => {
        try {
          if (err) throw err;
          done += n;
          if (n > 0 && done < length) {
            rest = remainingBuffers(rest, n);
            part(fd, rest, hostOffset + done, onPart);
            return;
          }
          if (done < length) direction.endOfFile(bufs, done);
        } catch (failed) {
          this.opDone();
          reject(this.transferError(failed, call, direction, bufs, length, hostOffset));
          return;
        }
        this.opDone();
        if (direction.writes) this.knownSizeBytes = Math.max(this.knownSizeBytes, hostOffset + length);
        resolve(direction.result(done));
      };
      try {
        part(fd, rest, hostOffset, onPart);
      } catch (err) {
        this.opDone();
        reject(this.transferError(err, call, direction, bufs, length, hostOffset));
      }
    });
  }

  private transferError(err: unknown, call: string, direction: Direction<unknown>, bufs: readonly Uint8Array[], length: number, hostOffset: number): StorageError {
    const where = bufs.length === 1 ? '' : ` in ${bufs.length} buffers`;
    return wrapFsError(err, `${call} of ${length} bytes${where} at ${hostOffset} ${direction.preposition} ${this.name}`);
  }

  /** More buffers than one call takes: IOV_MAX at a time, one after another. */
  private async inGroups<T>(direction: Direction<T>, bufs: readonly Uint8Array[], hostOffset: number): Promise<T> {
    let at = hostOffset;
    for (let i = 0; i < bufs.length; i += IOV_MAX) {
      const group = bufs.slice(i, i + IOV_MAX);
      await this.move(direction, group, at);
      at += totalBytesOf(group);
    }
    return direction.result(at - hostOffset);
  }

  async flush(): Promise<void> {
    const fd = this.fd;
    if (fd < 0) throw this.closedError('flush');
    if (this.readOnly) return;
    const full = this.metadataDirty;
    this.metadataDirty = false;
    this.inFlight++;
    try {
      await new Promise<void>((resolve, reject) => {
        const done = (err: NodeJS.ErrnoException | null): void =>
          err ? reject(wrapFsError(err, `flush of ${this.name}`)) : resolve();
        if (full) fs.fsync(fd, done);
        else fs.fdatasync(fd, done);
      });
    } catch (err) {
      if (full) this.metadataDirty = true;
      throw err;
    } finally {
      this.opDone();
    }
  }

  async truncate(sizeBytes: number): Promise<void> {
    const fd = this.fd;
    if (fd < 0) throw this.closedError('truncate');
    if (this.readOnly) throw this.readOnlyError('truncate');
    const bad = checkRange(this.name, 'truncate', sizeBytes, 0);
    if (bad) throw bad;
    this.inFlight++;
    this.truncating++;
    try {
      await new Promise<void>((resolve, reject) => {
        fs.ftruncate(fd, sizeBytes, (err) =>
          err ? reject(wrapFsError(err, `truncate of ${this.name} to ${sizeBytes} bytes`)) : resolve(),
        );
      });
      this.metadataDirty = true;
      this.knownSizeBytes = sizeBytes;
    } finally {
      this.truncating--;
      this.opDone();
    }
  }

  async punchHole(hostOffset: number, lengthBytes: number): Promise<void> {
    const fd = this.fd;
    if (fd < 0) throw this.closedError('punchHole');
    if (this.readOnly) throw this.readOnlyError('punchHole');
    const bad = checkRange(this.name, 'punchHole', hostOffset, lengthBytes);
    if (bad) throw bad;
    if (lengthBytes === 0) return;
    const lib = this.punchUnsupported ? null : fileSyscalls();
    if (lib) {
      let doubt: ErrnoDoubt | undefined;
      for (;;) {
        if (lib.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, hostOffset, lengthBytes) === 0) {
          this.metadataDirty = true;
          return;
        }
        const errno = lib.errno();
        // A failed punch changed nothing, so an errno read back wrong (see ErrnoDoubt) is retried.
        if (errno === EINTR || (doubt ??= new ErrnoDoubt()).shouldRetry(errno)) continue;
        if (PUNCH_UNSUPPORTED_ERRNOS.has(errno)) {
          this.punchUnsupported = true;
          break;
        }
        const errName = lib.errnoName(errno);
        throw wrapFsError(
          Object.assign(new Error(errName), { code: errName }),
          `punchHole of ${lengthBytes} bytes at ${hostOffset} in ${this.name}`,
        );
      }
    }
    // No hole punching here: write zeroes over the part that lies inside the file (KEEP_SIZE).
    const end = Math.min(hostOffset + lengthBytes, await this.sizeBytes());
    zeroChunk ??= new Uint8Array(ZERO_CHUNK_BYTES);
    for (let pos = hostOffset; pos < end; pos += ZERO_CHUNK_BYTES) {
      const n = Math.min(ZERO_CHUNK_BYTES, end - pos);
      await this.pwrite(n === ZERO_CHUNK_BYTES ? zeroChunk : zeroChunk.subarray(0, n), pos);
    }
  }

  async sizeBytes(): Promise<number> {
    return (await this.stat('sizeBytes')).size;
  }

  async allocatedBytes(): Promise<number> {
    return (await this.stat('allocatedBytes')).blocks * 512;
  }

  /**
   * The first offset >= hostOffset that holds data (lseek SEEK_DATA), or undefined when there is
   * no data at or after it. Without SEEK_DATA support every byte of the file counts as data.
   */
  async seekData(hostOffset: number): Promise<number | undefined> {
    return this.seek(hostOffset, SEEK_DATA);
  }

  /**
   * The first offset >= hostOffset inside a hole (lseek SEEK_HOLE; the end of the file counts as a
   * hole), or undefined when hostOffset is at or past the end of the file.
   */
  async seekHole(hostOffset: number): Promise<number | undefined> {
    return this.seek(hostOffset, SEEK_HOLE);
  }

  supports(): HostFileFeatures {
    const syscalls = fileSyscalls();
    return { punchHole: syscalls !== null && !this.punchUnsupported, seekData: syscalls !== null, copyByReference: false };
  }

  /**
   * Between two local files, copy_file_range(2): the kernel copies (or shares extents, on file
   * systems that can) without the bytes passing through this process. Anything else, or a kernel
   * that refuses (EXDEV on old kernels, special files), takes the portable path.
   */
  async copyRange(source: HostFile, sourceOffset: number, targetOffset: number, lengthBytes: number): Promise<void> {
    checkCopyRange(source, this, sourceOffset, targetOffset, lengthBytes);
    const syscalls = fileSyscalls();
    if (!(source instanceof LocalHostFile) || syscalls === null) {
      return copyRangeByBytes(source, this, sourceOffset, targetOffset, lengthBytes);
    }
    if (this.fd < 0) throw this.closedError('copyRange');
    if (source.fd < 0) throw source.closedError('copyRange');
    this.inFlight++;
    let done = 0;
    try {
      while (done < lengthBytes) {
        const part = Math.min(lengthBytes - done, COPY_FILE_RANGE_MAX_BYTES);
        const copied = await syscalls.copyFileRange(source.fd, sourceOffset + done, this.fd, targetOffset + done, part);
        // 0: the source ended (the rest reads as zeroes); < 0: refused. Both finish portably.
        if (copied <= 0) break;
        done += copied;
      }
    } finally {
      this.opDone();
    }
    if (done < lengthBytes) await copyRangeByBytes(source, this, sourceOffset + done, targetOffset + done, lengthBytes - done);
  }

  /** Resolves once every call in flight has finished and the descriptor is closed. Idempotent. */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    const fd = this.fd;
    this.fd = -1;
    this.closing = (async () => {
      if (this.inFlight > 0) await new Promise<void>((resolve) => (this.drained = resolve));
      this.mapped?.close();
      this.holeCopies?.close();
      this.mappedOverwrites?.close();
      await new Promise<void>((resolve, reject) => {
        fs.close(fd, (err) => (err ? reject(wrapFsError(err, `close of ${this.name}`)) : resolve()));
      });
    })();
    return this.closing;
  }

  private async seek(hostOffset: number, whence: number): Promise<number | undefined> {
    const fd = this.fd;
    if (fd < 0) throw this.closedError(whence === SEEK_DATA ? 'seekData' : 'seekHole');
    const bad = checkRange(this.name, 'seek', hostOffset, 0);
    if (bad) throw bad;
    const lib = fileSyscalls();
    if (lib) {
      for (;;) {
        const result = lib.lseek(fd, hostOffset, whence);
        if (result >= 0) return result;
        const errno = lib.errno();
        if (errno === ENXIO) return undefined;
        if (errno !== EINTR) break; // EINVAL etc.: no SEEK_DATA here, use the fallback
      }
    }
    const size = await this.sizeBytes();
    if (hostOffset >= size) return undefined;
    return whence === SEEK_DATA ? hostOffset : size;
  }

  private stat(what: string): Promise<fs.Stats> {
    const fd = this.fd;
    if (fd < 0) return Promise.reject(this.closedError(what));
    this.inFlight++;
    return new Promise<fs.Stats>((resolve, reject) => {
      fs.fstat(fd, (err, st) => {
        this.opDone();
        if (err) reject(wrapFsError(err, `${what} of ${this.name}`));
        else resolve(st);
      });
    });
  }

  private opDone(): void {
    if (--this.inFlight === 0 && this.drained) {
      const drained = this.drained;
      this.drained = undefined;
      drained();
    }
  }

  private closedError(what: string): StorageError {
    return new StorageError('IO_ERROR', `${what} on ${this.name}: the file is closed`);
  }

  private readOnlyError(what: string): StorageError {
    return new StorageError('READ_ONLY', `${what} on ${this.name}: the file is open read-only`);
  }
}
