/**
 * Copies bytes into or out of SharedArrayBuffer memory at memcpy's speed.
 *
 * Why: V8 copies any typed array backed by a SharedArrayBuffer with relaxed atomic word moves
 * (`v8::internal::relaxed_memmove`), whether through TypedArray.set or Buffer.copy: 14 GB/s here
 * for 64 KiB, against 45 GB/s for the same copy between ArrayBuffers. The hashing workers'
 * batches are shared memory, and during 16 concurrent 256 MiB PUTs that copy was ~20% of the
 * event loop's samples (`perf record`). glibc's memcpy through koffi moves 64 KiB at 39 GB/s; at
 * 4 KiB the call's own cost leaves it at 21 GB/s, so copies under SHARED_MEMCPY_MIN_BYTES keep
 * TypedArray.set.
 *
 * Plain memcpy is right for shared memory here: the other thread reads a range only after the
 * message naming it was posted, and postMessage orders the copy's writes before the message.
 * Where libc cannot be bound (not glibc Linux x86-64), every copy goes through TypedArray.set.
 */
import { libcLibrary } from './libc.js';

/** Copies at least this long go through memcpy (64 KiB pieces are what a socket read gives). */
export const SHARED_MEMCPY_MIN_BYTES = 16 * 1024;

type Memcpy = (target: Uint8Array, source: Uint8Array, lengthBytes: number) => unknown;

/** glibc's memcpy, or null where it cannot be bound; undefined until first asked. */
let memcpy: Memcpy | null | undefined;

function boundMemcpy(): Memcpy | null {
  if (memcpy === undefined) {
    try {
      memcpy = process.platform === 'linux' && process.arch === 'x64' ? (libcLibrary().func('void *memcpy(void *dest, const void *src, size_t n)') as Memcpy) : null;
    } catch {
      memcpy = null;
    }
  }
  return memcpy;
}

/**
 * target.set(source, targetOffsetBytes), at memcpy's speed for large copies. The ranges must not
 * overlap (they are different buffers at every caller) and must fit: a copy past the target's end
 * throws RangeError as TypedArray.set does, before any byte moves.
 */
export function copyBytes(target: Uint8Array, targetOffsetBytes: number, source: Uint8Array): void {
  const copy = source.length >= SHARED_MEMCPY_MIN_BYTES ? boundMemcpy() : null;
  if (copy === null) {
    target.set(source, targetOffsetBytes);
    return;
  }
  if (!Number.isSafeInteger(targetOffsetBytes) || targetOffsetBytes < 0 || targetOffsetBytes + source.length > target.length) {
    throw new RangeError(`a copy of ${source.length} bytes at ${targetOffsetBytes} does not fit a ${target.length}-byte target`);
  }
  copy(target.subarray(targetOffsetBytes, targetOffsetBytes + source.length), source, source.length);
}
