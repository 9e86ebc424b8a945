/**
 * MappedOverwrites: large overwrites of a file in memory (tmpfs) copied by the kernel into a
 * shared mapping of the file (src/sys/mapped-writes.ts: process_vm_writev, no inode lock), up to
 * KERNEL_COPIES_IN_FLIGHT at once (copy-turns.ts), instead of pwrites that take the file's inode
 * lock one after another. Whatever a copy leaves (the file ended, tmpfs full, a range across two windows)
 * goes by pwrite through the pool, which extends the file or reports the error. A write is
 * answered once all of it is in, as a pwrite is, so a flush covers exactly the writes answered.
 */
import { remainingBuffers } from '../sys/iovec.js';
import { MappedWriter } from '../sys/mapped-writes.js';
import { CopyTurns, type WriteRest } from './copy-turns.js';

export class MappedOverwrites {
  /** undefined: not asked for yet (mapped on the first write); null: not available here. */
  private writer: MappedWriter | null | undefined;
  private readonly turns = new CopyTurns();

  constructor(
    private readonly fd: number,
    private readonly writeRest: WriteRest,
  ) {}

  /** Whether overwrites can go this way here. */
  available(): boolean {
    this.writer ??= MappedWriter.open(this.fd);
    return this.writer !== null;
  }

  /** Only after available() said yes. Rejects with the pwrite's error when the rest could not be written. */
  async write(bufs: readonly Uint8Array[], hostOffset: number, lengthBytes: number): Promise<void> {
    const writer = this.writer!;
    const written = await this.turns.run(() => writer.write(bufs, hostOffset, lengthBytes));
    if (written < lengthBytes) await this.writeRest(remainingBuffers(bufs, written), hostOffset + written, lengthBytes - written);
  }

  /** Unmaps (after the writes in flight ended). */
  close(): void {
    this.writer?.close();
    this.writer = null;
  }
}
