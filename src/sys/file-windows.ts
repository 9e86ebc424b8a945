/**
 * FileWindows: a file mapped shared and writable in fixed windows, each on first use, for copies
 * the kernel makes into the mapping (hole-copy.ts: UFFDIO_COPY; mapped-writes.ts:
 * process_vm_writev). No view of the mapping exists in JavaScript: nothing but the kernel
 * touches it, so a page past the end of the file or one tmpfs cannot give is the copy's error,
 * never a SIGBUS.
 *
 * The copies leave their pages mapped (a page table entry each, and the pages counted in this
 * process's RSS as shared memory), so a window's entries are dropped (madvise MADV_DONTNEED, on the
 * thread pool: the pages stay in the file) once zapBytes were copied into it.
 */
import { libc, libcLibrary, MAP_FAILED, MAP_SHARED, PROT_READ, PROT_WRITE } from './libc.js';

const MADV_DONTNEED = 4;
/**
 * The file is mapped in windows of this size, each on first use: a copy's range stays inside one
 * window or is split at its edge, and an image of any size needs only the windows it is written in.
 */
export const FILE_WINDOW_BYTES = 1024 * 1024 * 1024;

type MadviseAsync = (addr: bigint, lengthBytes: number, advice: number, done: () => void) => void;
let madviseAsync: MadviseAsync | null | undefined;

/** madvise(2) on a libuv worker thread, or null where libc cannot be bound. */
function boundMadvise(): MadviseAsync | null {
  if (madviseAsync !== undefined) return madviseAsync;
  try {
    const madvise = libcLibrary().func('int madvise(void *addr, size_t length, int advice)');
    madviseAsync = (addr, lengthBytes, advice, done) => madvise.async(addr, lengthBytes, advice, done);
  } catch {
    madviseAsync = null;
  }
  return madviseAsync;
}

export interface FileWindow {
  /** Address of the window's first byte (the file's byte index * FILE_WINDOW_BYTES). */
  readonly addr: bigint;
  copiedSinceZapBytes: number;
}

export class FileWindows {
  private readonly windows = new Map<number, FileWindow>();
  private closed = false;
  private zapsInFlight = 0;
  private released: (() => void) | undefined;
  /** A window could not be mapped (or set up) once: no more tries. */
  unusable = false;

  /**
   * setUp runs on each new window (registering it with a userfaultfd, say); false unmaps it and
   * makes these windows unusable.
   */
  constructor(
    private readonly fd: number,
    private readonly zapBytes: number,
    private readonly setUp: (addr: bigint) => boolean = () => true,
  ) {}

  /** Whether this process can have such windows at all (glibc Linux x86-64, libc bound). */
  static available(): boolean {
    return process.platform === 'linux' && process.arch === 'x64' && boundMadvise() !== null;
  }

  /** The window holding the file's byte index * FILE_WINDOW_BYTES, mapped on first use; undefined when it cannot be. */
  window(index: number): FileWindow | undefined {
    if (this.closed || this.unusable) return undefined;
    const known = this.windows.get(index);
    if (known !== undefined) return known;
    // Mapping past the file's end is allowed: a copy there fails cleanly, nothing else touches it.
    const addr = libc().mmap(null, FILE_WINDOW_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, this.fd, index * FILE_WINDOW_BYTES);
    if (addr === MAP_FAILED || addr === 0n) {
      this.unusable = true;
      return undefined;
    }
    if (!this.setUp(addr)) {
      libc().munmap(addr, FILE_WINDOW_BYTES);
      this.unusable = true;
      return undefined;
    }
    const window = { addr, copiedSinceZapBytes: 0 };
    this.windows.set(index, window);
    return window;
  }

  /** Counts bytes copied into window; drops its page table entries when zapBytes were. */
  copied(window: FileWindow, bytes: number): void {
    window.copiedSinceZapBytes += bytes;
    if (window.copiedSinceZapBytes < this.zapBytes) return;
    window.copiedSinceZapBytes = 0;
    const madvise = boundMadvise();
    if (madvise === null) return;
    this.zapsInFlight++;
    madvise(window.addr, FILE_WINDOW_BYTES, MADV_DONTNEED, () => {
      if (--this.zapsInFlight === 0 && this.closed) this.release();
    });
  }

  /**
   * Unmaps every window, once a zap in flight has ended; then calls released (once). Only after
   * the copies into them ended. Idempotent.
   */
  close(released?: () => void): void {
    if (this.closed) return;
    this.closed = true;
    this.released = released;
    if (this.zapsInFlight === 0) this.release();
  }

  private release(): void {
    for (const window of this.windows.values()) libc().munmap(window.addr, FILE_WINDOW_BYTES);
    this.windows.clear();
    this.released?.();
    this.released = undefined;
  }
}
