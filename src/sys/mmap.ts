/**
 * Shared memory mappings (guest RAM, inflight regions) seen from JavaScript as one Uint8Array.
 *
 * Safety rules, because a view outliving its mapping reads or writes unmapped memory (SIGSEGV) or,
 * worse, a later mapping at the same address:
 *  - `bytes` is created once per mapping (koffi.view costs ~5 us); callers take subarrays of it.
 *  - unmap() must only run once no code holds views of it, including I/O in flight on the libuv
 *    thread pool that writes into such a view. JavaScript cannot revoke the views (an external
 *    ArrayBuffer over foreign memory cannot be detached), so this is the caller's discipline.
 *  - A view can span at most 4 GiB (V8's typed array limit; koffi aborts the process beyond it),
 *    so larger mappings are refused.
 */
import koffi from 'koffi';
import { EINVAL, fail, libc, MAP_FAILED, MAP_SHARED, PAGE_BYTES, PROT_READ, PROT_WRITE, SysError } from './libc.js';

/** Largest mapping a single Uint8Array can view. */
export const MAX_MAPPING_BYTES = 2 ** 32;

export interface MappedRegion {
  /** Address of byte 0 of `bytes` in this process. */
  readonly hostAddr: bigint;
  readonly sizeBytes: number;
  /** The whole mapping. Invalid (must not be touched) after unmap(). */
  readonly bytes: Uint8Array;
  /** Idempotent. */
  unmap(): void;
}

/**
 * Maps [offsetBytes, offsetBytes + sizeBytes) of fd MAP_SHARED, read-write unless readOnly. The
 * offset need not be page-aligned (vhost-user's mmap_offset is not required to be): the mapping
 * starts at the page below and `bytes`/`hostAddr` point at the requested offset. The caller keeps
 * ownership of fd (the mapping stays valid after fd is closed).
 */
export function mapShared(fd: number, sizeBytes: number, offsetBytes: number, options: { readOnly?: boolean } = {}): MappedRegion {
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes > MAX_MAPPING_BYTES) {
    throw new SysError('mmap', EINVAL, `of ${sizeBytes} bytes (size must be 1..${MAX_MAPPING_BYTES})`);
  }
  if (!Number.isSafeInteger(offsetBytes) || offsetBytes < 0) {
    throw new SysError('mmap', EINVAL, `at offset ${offsetBytes}`);
  }
  const slack = offsetBytes % PAGE_BYTES;
  const mapBytes = sizeBytes + slack;
  const prot = options.readOnly === true ? PROT_READ : PROT_READ | PROT_WRITE;
  const base = libc().mmap(null, mapBytes, prot, MAP_SHARED, fd, offsetBytes - slack);
  if (base === MAP_FAILED || base === 0n) throw fail('mmap', `of ${sizeBytes} bytes at offset ${offsetBytes} of fd ${fd}`);
  const hostAddr = base + BigInt(slack);
  let bytes: Uint8Array;
  try {
    bytes = new Uint8Array(koffi.view(hostAddr, sizeBytes));
  } catch (err) {
    libc().munmap(base, mapBytes);
    throw err;
  }
  let mapped = true;
  return {
    hostAddr,
    sizeBytes,
    bytes,
    unmap(): void {
      if (!mapped) return;
      mapped = false;
      if (libc().munmap(base, mapBytes) < 0) throw fail('munmap', `of ${mapBytes} bytes`);
    },
  };
}
