/**
 * Segments: the guest buffer of one request as the engine sees it, either one Uint8Array or
 * several that lie back to back (a vhost-user request over several guest memory descriptors). The
 * read and write paths map the guest range once and move each contiguous host run with one
 * preadv/pwritev straight between the file and these buffers: no bounce buffer, no per-segment
 * lookup. Only what is not a plain host run (zeroes, backing, compressed, allocation) works on a
 * contiguous view, and copies only when that range spans two segments.
 */
import type { HostFile } from '../../src/core/host-file.js';
import { sliceBuffers, totalBytesOf } from '../../src/sys/iovec.js';

export class Segments {
  readonly parts: readonly Uint8Array[];
  readonly totalBytes: number;

  private constructor(parts: readonly Uint8Array[], totalBytes: number) {
    this.parts = parts;
    this.totalBytes = totalBytes;
  }

  static of(buf: Uint8Array): Segments {
    return new Segments([buf], buf.length);
  }

  static list(parts: readonly Uint8Array[]): Segments {
    return new Segments(parts, totalBytesOf(parts));
  }

  /** Views of [startBytes, +lengthBytes): the buffers one vectored call moves. */
  slices(startBytes: number, lengthBytes: number): Uint8Array[] {
    if (this.parts.length === 1) return [this.single(startBytes, lengthBytes)];
    return sliceBuffers(this.parts, startBytes, lengthBytes);
  }

  /** The range as one buffer: a view when it lies in one segment, else a copy (gathered now). */
  gather(startBytes: number, lengthBytes: number): Uint8Array {
    if (this.parts.length === 1) return this.single(startBytes, lengthBytes);
    const slices = sliceBuffers(this.parts, startBytes, lengthBytes);
    if (slices.length === 1) return slices[0]!;
    const out = new Uint8Array(lengthBytes);
    let at = 0;
    for (const s of slices) {
      out.set(s, at);
      at += s.length;
    }
    return out;
  }

  /**
   * Runs fill on the range as one buffer and lands the result in the segments: directly when the
   * range lies in one segment, else through a temporary buffer scattered afterwards.
   */
  async fillWith(startBytes: number, lengthBytes: number, fill: (buf: Uint8Array) => Promise<void>): Promise<void> {
    const slices = this.slices(startBytes, lengthBytes);
    if (slices.length === 1) return fill(slices[0]!);
    const temp = new Uint8Array(lengthBytes);
    await fill(temp);
    let at = 0;
    for (const s of slices) {
      s.set(temp.subarray(at, at + s.length));
      at += s.length;
    }
  }

  zero(startBytes: number, lengthBytes: number): void {
    for (const s of this.slices(startBytes, lengthBytes)) s.fill(0);
  }

  private single(startBytes: number, lengthBytes: number): Uint8Array {
    const buf = this.parts[0]!;
    return startBytes === 0 && lengthBytes === buf.length ? buf : buf.subarray(startBytes, startBytes + lengthBytes);
  }
}

/** One pread of a host run into its buffers: preadv where the file has it. */
export function preadRun(file: HostFile, bufs: Uint8Array[], hostOffset: number): Promise<unknown> {
  if (bufs.length === 1) return file.pread(bufs[0]!, hostOffset);
  if (file.preadv !== undefined) return file.preadv(bufs, hostOffset);
  return eachBuffer(bufs, hostOffset, (b, at) => file.pread(b, at));
}

/** One pwrite of a host run from its buffers: pwritev where the file has it. */
export function pwriteRun(file: HostFile, bufs: Uint8Array[], hostOffset: number): Promise<unknown> {
  if (bufs.length === 1) return file.pwrite(bufs[0]!, hostOffset);
  if (file.pwritev !== undefined) return file.pwritev(bufs, hostOffset);
  return eachBuffer(bufs, hostOffset, (b, at) => file.pwrite(b, at));
}

/** Every buffer at its place, all at once; settles only when all have (then the first failure). */
async function eachBuffer(bufs: Uint8Array[], hostOffset: number, call: (buf: Uint8Array, hostOffset: number) => Promise<unknown>): Promise<void> {
  const calls: Promise<unknown>[] = [];
  let at = hostOffset;
  for (const b of bufs) {
    calls.push(call(b, at));
    at += b.length;
  }
  const results = await Promise.allSettled(calls);
  for (const r of results) if (r.status === 'rejected') throw r.reason;
}
