/**
 * MemoryTable: the memory-table messages of a vhost-user connection (SET_MEM_TABLE, and ADD_MEM_REG /
 * REM_MEM_REG of CONFIGURE_MEM_SLOTS) applied to its GuestMemory (memory.ts does the mapping and the
 * address translation).
 *
 * Rules:
 *  - Guest memory is unmapped (a table replaced, a region removed) only once no request is in flight
 *    (RingSet.quiesce): device I/O on the thread pool may still be writing into a view of it, and
 *    views cannot be revoked in JavaScript. Adding a region unmaps nothing and does not wait.
 *  - A region's fd is not taken: the mapping outlives it, so the dispatcher closes it with the
 *    message's other descriptors right after the handler returns (or throws).
 *  - A table that fails half-way is dropped entirely (a partial table would translate some addresses
 *    and not others).
 *  - After any change the running rings' views are rebuilt (RingSet.refresh); a ring that left the
 *    table is stopped.
 */
import type { GuestMemory } from './memory.js';
import type { MemoryRegion } from './messages.js';
import { ProtocolError } from './protocol-errors.js';
import type { RingSet } from './rings.js';

export class MemoryTable {
  constructor(
    private readonly memory: GuestMemory,
    private readonly rings: RingSet,
  ) {}

  /** SET_MEM_TABLE: replaces the whole table (region i maps fds[i]). */
  async set(regions: MemoryRegion[], fds: number[]): Promise<void> {
    await this.rings.quiesce(() => {
      this.memory.clear();
      try {
        regions.forEach((r, i) => this.map(r, fds[i]!));
      } catch (err) {
        // A partial table would translate some addresses and not others: drop it all.
        this.memory.clear();
        throw err;
      }
      this.rings.refresh();
    });
  }

  /** ADD_MEM_REG: one more region (mapping fds[0]). */
  add(r: MemoryRegion, fds: number[]): void {
    this.map(r, fds[0]!);
    this.rings.refresh();
  }

  /** REM_MEM_REG: unmaps the region matching r once no request is in flight. */
  async remove(r: MemoryRegion): Promise<void> {
    await this.rings.quiesce(() => {
      if (r.sizeBytes > BigInt(Number.MAX_SAFE_INTEGER) || !this.memory.removeRegion(r.guestAddr, Number(r.sizeBytes), r.frontendAddr)) {
        throw new ProtocolError(`no memory region at guest address 0x${r.guestAddr.toString(16)} of 0x${r.sizeBytes.toString(16)} bytes`);
      }
      this.rings.refresh();
    });
  }

  /** Drops every region (RESET_DEVICE, end of connection); nothing may be in flight. */
  clear(): void {
    this.memory.clear();
  }

  private map(r: MemoryRegion, fd: number): void {
    if (r.sizeBytes === 0n || r.sizeBytes > BigInt(Number.MAX_SAFE_INTEGER) || r.mmapOffsetBytes > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new ProtocolError(`memory region of 0x${r.sizeBytes.toString(16)} bytes at mmap offset 0x${r.mmapOffsetBytes.toString(16)}`);
    }
    // GuestMemory maps the region and leaves the descriptor to us: the mapping outlives it, so it is
    // closed right away (by dispatch, as it is not taken).
    this.memory.addRegion({
      guestAddr: r.guestAddr,
      sizeBytes: Number(r.sizeBytes),
      frontendAddr: r.frontendAddr,
      mmapOffsetBytes: Number(r.mmapOffsetBytes),
      fd,
    });
  }
}
