/**
 * Reads that never wait: preadv2(2) with RWF_NOWAIT answers from the page cache or fails at once
 * with EAGAIN, never blocking on the device. A small read whose bytes are cached thus runs on the
 * calling thread (~0.7 us of CPU for 4 KiB here) instead of a libuv thread-pool round trip (a
 * request, a wake-up of a worker, a completion callback: ~12 us of CPU per 4 KiB read through
 * fs.read's callback API, ~18 us through FileHandle.read; docs/dedup.md), and a read that would
 * wait is left to the caller's asynchronous path.
 *
 * The kernel reads into one unmanaged buffer of this module, bound once with its iovec, so a call
 * passes only numbers through koffi (a JS buffer in an iovec would be converted on every call);
 * the bytes are then copied into the caller's buffer.
 */
import koffi from 'koffi';
import { EINVAL, errno, errnoValue, libcLibrary } from './libc.js';

/** preadv2 flag: fail with EAGAIN instead of waiting for the device (Linux 4.14+). */
export const RWF_NOWAIT = 0x08;
/** The largest read taken without waiting: larger ones are the caller's asynchronous path. */
export const NOWAIT_READ_MAX_BYTES = 256 * 1024;
/**
 * errno values meaning "this kernel or file system cannot read without waiting" (no preadv2, no
 * RWF_NOWAIT, a file system without it: tmpfs here, kernel 6.18): readNoWait answers
 * 'unsupported' so the caller stops trying on that file system and pays no failed call per read.
 */
const NOWAIT_UNSUPPORTED_ERRNOS: ReadonlySet<number> = new Set([errnoValue('EOPNOTSUPP', 95), errnoValue('ENOSYS', 38), EINVAL]);
/** struct iovec on Linux x86-64: void *iov_base, size_t iov_len. */
const IOVEC_BYTES = 16;

interface Binding {
  /** preadv2 of up to lengthBytes into the scratch: bytes read, or -1 (errno set). */
  readonly read: (fd: number, offsetBytes: number, lengthBytes: number) => number;
  readonly scratch: Buffer;
}

/** undefined: not bound yet; null: cannot be bound here (not glibc Linux x86-64). */
let bound: Binding | null | undefined;

function bind(): Binding | null {
  if (process.platform !== 'linux' || process.arch !== 'x64') return null;
  try {
    const lib = libcLibrary();
    const preadv2 = lib.func('intptr_t preadv2(int fd, const void *iov, int iovcnt, int64_t offset, int flags)');
    const memory: unknown = koffi.alloc('uint8_t', NOWAIT_READ_MAX_BYTES);
    const iov: unknown = koffi.alloc('uint8_t', IOVEC_BYTES);
    const iovWords = new BigUint64Array(koffi.view(iov, IOVEC_BYTES));
    iovWords[0] = koffi.address(memory);
    const scratch = Buffer.from(koffi.view(memory, NOWAIT_READ_MAX_BYTES));
    let iovLength = -1; // iov_len as last set: most reads are one size, and a BigInt per call costs
    return {
      read: (fd, offsetBytes, lengthBytes) => {
        if (lengthBytes !== iovLength) {
          iovWords[1] = BigInt(lengthBytes);
          iovLength = lengthBytes;
        }
        return Number(preadv2(fd, iov, 1, offsetBytes, RWF_NOWAIT));
      },
      scratch,
    };
  } catch {
    return null; // no libc binding: every read takes the caller's asynchronous path
  }
}

/**
 * Fills all of `target` from `fd` at `offsetBytes` when the page cache holds those bytes: 'read'.
 * 'later' when it does not (or the read came short or failed): nothing is then promised about
 * `target`, and the caller reads asynchronously, which also reports any error. 'unsupported'
 * when the kernel or the file's file system cannot read without waiting at all (or there is no
 * libc binding here): the caller should stop asking for that file system.
 */
export function readNoWait(fd: number, offsetBytes: number, target: Uint8Array): 'read' | 'later' | 'unsupported' {
  const length = target.length;
  if (length === 0 || length > NOWAIT_READ_MAX_BYTES) return 'later';
  if (bound === undefined) bound = bind();
  if (bound === null) return 'unsupported';
  const read = bound.read(fd, offsetBytes, length);
  if (read !== length) return read < 0 && NOWAIT_UNSUPPORTED_ERRNOS.has(errno()) ? 'unsupported' : 'later';
  bound.scratch.copy(target, 0, 0, length);
  return 'read';
}
