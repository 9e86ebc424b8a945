/**
 * Buffer lists for vectored I/O (preadv/pwritev): a request whose bytes lie in several buffers
 * back to back (guest memory segments of one virtio request) moves in one system call.
 */

/** Linux's IOV_MAX: the most buffers one preadv/pwritev takes. */
export const IOV_MAX = 1024;

export function totalBytesOf(bufs: readonly Uint8Array[]): number {
  let n = 0;
  for (const b of bufs) n += b.length;
  return n;
}

/** What is left of bufs after the first doneBytes of their concatenation (after a short transfer). */
export function remainingBuffers(bufs: readonly Uint8Array[], doneBytes: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  let skip = doneBytes;
  for (const b of bufs) {
    if (skip >= b.length) {
      skip -= b.length;
      continue;
    }
    out.push(skip === 0 ? b : b.subarray(skip));
    skip = 0;
  }
  return out;
}

/**
 * Views of [startBytes, startBytes + lengthBytes) of the concatenation of bufs (subarrays, no
 * copy). The range must lie within them.
 */
export function sliceBuffers(bufs: readonly Uint8Array[], startBytes: number, lengthBytes: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  let skip = startBytes;
  let take = lengthBytes;
  for (let i = 0; i < bufs.length && take > 0; i++) {
    const b = bufs[i]!;
    if (skip >= b.length) {
      skip -= b.length;
      continue;
    }
    const n = Math.min(b.length - skip, take);
    out.push(skip === 0 && n === b.length ? b : b.subarray(skip, skip + n));
    skip = 0;
    take -= n;
  }
  if (take > 0) throw new RangeError(`range [${startBytes}, +${lengthBytes}) lies past the ${totalBytesOf(bufs)} bytes of the buffers`);
  return out;
}
