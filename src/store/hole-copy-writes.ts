/**
 * HoleCopyWrites: large writes that grow a file in memory (tmpfs), copied into the file's holes
 * with UFFDIO_COPY (src/sys/hole-copy.ts) several at once, instead of pwrites that take the file's
 * inode lock one after another (src/store/growing-writes.ts, which carries them where this cannot).
 *
 * A write goes in two steps. First its last page, by a pwrite on the calling thread: that makes
 * the file at least as long as the write (UFFDIO_COPY fills only below the file's size), and a
 * pwrite never shortens a file, however writes of different ends interleave. Then the rest, each
 * buffer a UFFDIO_COPY on the thread pool, a few at once (copy-turns.ts); whatever a copy leaves (a page the file
 * already has, tmpfs full, a copy refused) goes to the pool's pwrite, which overwrites or reports
 * the error. The write is answered once every byte of it is in the file, as a pwrite is, so a
 * flush covers exactly the writes answered. A write killed midway leaves whole pages old or new.
 */
import { PAGE_BYTES } from '../sys/libc.js';
import { HoleCopier } from '../sys/hole-copy.js';
import { CopyTurns, type WriteRest } from './copy-turns.js';

/** Smallest write worth it: below this the one pwrite of the tail is most of it. */
export const HOLE_COPY_MIN_BYTES = 64 * 1024;

/** Writes bytes at hostOffset on the calling thread: bytes written (a tmpfs page: all, or it throws). */
export type WriteTailSync = (buf: Uint8Array, hostOffset: number) => number;

export class HoleCopyWrites {
  /** undefined: not asked for yet (the userfaultfd is made on the first write); null: not available. */
  private copier: HoleCopier | null | undefined;
  /** At most KERNEL_COPIES_IN_FLIGHT copies of this file at once (copy-turns.ts). */
  private readonly turns = new CopyTurns();

  constructor(
    private readonly fd: number,
    private readonly writeTailSync: WriteTailSync,
    private readonly writeRest: WriteRest,
  ) {}

  /** Whether a write of bufs at hostOffset goes this way (each buffer whole pages, at a page, and copies can be had). */
  takes(bufs: readonly Uint8Array[], hostOffset: number, lengthBytes: number): boolean {
    if (lengthBytes < HOLE_COPY_MIN_BYTES || hostOffset % PAGE_BYTES !== 0) return false;
    for (const b of bufs) if (b.length === 0 || b.length % PAGE_BYTES !== 0) return false;
    this.copier ??= HoleCopier.open(this.fd);
    return this.copier !== null;
  }

  /** Only after takes() said yes. Rejects with the pwrite's error when a part of it could not be written. */
  async write(bufs: readonly Uint8Array[], hostOffset: number, lengthBytes: number): Promise<void> {
    const copier = this.copier!;
    const last = bufs[bufs.length - 1]!;
    const tailAt = hostOffset + lengthBytes - PAGE_BYTES;
    const tail = last.subarray(last.length - PAGE_BYTES);
    const tailWritten = this.writeTailSync(tail, tailAt);
    const parts: Array<Promise<void>> = [];
    if (tailWritten < PAGE_BYTES) parts.push(this.leftover(tail.subarray(tailWritten), tailAt + tailWritten));
    let at = hostOffset;
    for (let i = 0; i < bufs.length; i++) {
      const buf = i === bufs.length - 1 ? last.subarray(0, last.length - PAGE_BYTES) : bufs[i]!;
      if (buf.length > 0) parts.push(this.copyOne(copier, buf, at));
      at += buf.length;
    }
    // Every part settles before the write is answered (a rejection too: no byte left in flight).
    const outcomes = await Promise.allSettled(parts);
    for (const o of outcomes) if (o.status === 'rejected') throw o.reason;
  }

  /** Unmaps and closes the copier (after the writes in flight ended). */
  close(): void {
    this.copier?.close();
    this.copier = null;
  }

  private async copyOne(copier: HoleCopier, buf: Uint8Array, hostOffset: number): Promise<void> {
    const copied = await this.turns.run(() => copier.copy(buf, hostOffset));
    if (copied < buf.length) await this.leftover(buf.subarray(copied), hostOffset + copied);
  }

  private async leftover(buf: Uint8Array, hostOffset: number): Promise<void> {
    await this.writeRest([buf], hostOffset, buf.length);
  }
}
