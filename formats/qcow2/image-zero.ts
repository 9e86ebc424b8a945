/**
 * Qcow2ImageZeroer: write-zeroes and discard. Aligned ranges become zero flags (or subcluster zero
 * bits) and unmapped clusters under the metadata lock; unaligned edges are written as zero bytes.
 */
import type { WriteZeroesFlags } from '../../src/core/block-device.js';
import { SUBCLUSTER_BITMAP_HALF_ALL } from './constants.js';
import { encodeEntry, entryCompressed, entryHostOffset, subclusterMask } from './l2-entry.js';
import { Qcow2ImageWriter } from './image-write.js';

export abstract class Qcow2ImageZeroer extends Qcow2ImageWriter {

  async writeZeroes(guestOffset: number, lengthBytes: number, flags?: WriteZeroesFlags): Promise<void> {
    this.checkWritable();
    this.checkRange(guestOffset, lengthBytes);
    if (this.gate) await this.passGate();
    const epoch = this.enterIo();
    try {
      const granule = this.subclusterSizeBytes;
      const end = guestOffset + lengthBytes;
      const alignedStart = Math.ceil(guestOffset / granule) * granule;
      // The last partial granule at the end of the image counts as whole (QEMU does the same).
      const alignedEnd = end === this.sizeBytes ? end : Math.floor(end / granule) * granule;
      const canZeroize = this.header.version >= 3;
      if (!canZeroize || alignedStart >= alignedEnd) {
        await this.writeZeroBuffers(guestOffset, lengthBytes);
      } else {
        if (alignedStart > guestOffset) await this.writeZeroBuffers(guestOffset, alignedStart - guestOffset);
        await this.metaLock.run(() => this.zeroizeRange(alignedStart, alignedEnd, flags?.mayUnmap ?? false));
        if (end > alignedEnd) await this.writeZeroBuffers(alignedEnd, end - alignedEnd);
      }
    } finally {
      this.exitIo(epoch);
    }
    if (flags?.fua) await this.flush();
  }

  private async writeZeroBuffers(guestOffset: number, lengthBytes: number): Promise<void> {
    const step = Math.max(this.clusterSizeBytes, 1024 * 1024);
    const zeroes = new Uint8Array(Math.min(step, lengthBytes));
    for (let done = 0; done < lengthBytes; ) {
      const n = Math.min(zeroes.length, lengthBytes - done);
      const guest = guestOffset + done;
      // A v2 image without backing reads unallocated clusters as zeroes already: skip those.
      await this.writeLayer(guest, zeroes.subarray(0, n));
      done += n;
    }
  }

  /** Sets zero flags (or subcluster zero bits) over [start, end), granule-aligned. Lock held. */
  private async zeroizeRange(start: number, end: number, mayUnmap: boolean): Promise<void> {
    for (let guest = start; guest < end; ) {
      const guestCluster = Math.floor(guest / this.clusterSizeBytes);
      const clusterGuestOffset = guestCluster * this.clusterSizeBytes;
      const clusterEnd = Math.min(clusterGuestOffset + this.clusterSizeBytes, this.sizeBytes);
      const segmentEnd = Math.min(end, clusterEnd);
      const table = await this.writableL2Table(Math.floor(guestCluster / this.l2Entries));
      const position = (guestCluster % this.l2Entries) * this.l2EntryBytes;
      const hi = table.view.getUint32(position);
      const lo = table.view.getUint32(position + 4);
      const wholeCluster = guest === clusterGuestOffset && segmentEnd === clusterEnd;
      const compressed = entryCompressed(hi);
      const host = compressed ? 0 : entryHostOffset(hi, lo);
      if (!this.extendedL2) {
        const unmap = compressed || (mayUnmap && host !== 0);
        if (unmap) this.freeEntryClusters(hi, lo);
        const next = unmap ? encodeEntry(0, { zero: true }) : { hi, lo: (lo | 1) >>> 0 };
        this.setEntry(table, position, next.hi, next.lo);
      } else if (wholeCluster) {
        const unmap = compressed || (mayUnmap && host !== 0);
        if (unmap) this.freeEntryClusters(hi, lo);
        const next = unmap ? { hi: 0, lo: 0 } : { hi, lo };
        this.setEntry(table, position, next.hi, next.lo, { zero: SUBCLUSTER_BITMAP_HALF_ALL, alloc: 0 });
      } else if (compressed) {
        // Part of a compressed cluster: rewrite it uncompressed with the zeroes in place.
        await this.writeClusterSlow(guest, new Uint8Array(segmentEnd - guest));
      } else {
        const mask = subclusterMask(guest - clusterGuestOffset, segmentEnd - guest, this.subclusterSizeBytes);
        const zeroBits = table.view.getUint32(position + 8);
        const allocBits = table.view.getUint32(position + 12);
        this.setEntry(table, position, hi, lo, {
          zero: (zeroBits | mask) >>> 0,
          alloc: (allocBits & ~mask) >>> 0,
        });
      }
      guest = segmentEnd;
    }
    await this.relieveCachePressure();
  }

  async discard(guestOffset: number, lengthBytes: number): Promise<void> {
    this.checkWritable();
    this.checkRange(guestOffset, lengthBytes);
    // As QEMU: a v2 image has no zero flag, so under a backing file a discarded cluster could only
    // become unallocated and show the backing file's stale data there. Ignore the discard.
    if (this.header.version < 3 && (this.backing !== undefined || this.header.backingFile !== undefined)) return;
    if (this.gate) await this.passGate();
    const epoch = this.enterIo();
    try {
      // Only whole clusters are discarded; the partial last cluster of the image counts as whole.
      const end = guestOffset + lengthBytes;
      const start = Math.ceil(guestOffset / this.clusterSizeBytes) * this.clusterSizeBytes;
      const alignedEnd = end === this.sizeBytes ? end : Math.floor(end / this.clusterSizeBytes) * this.clusterSizeBytes;
      if (start < alignedEnd) await this.metaLock.run(() => this.discardRange(start, alignedEnd));
    } finally {
      this.exitIo(epoch);
    }
  }

  private async discardRange(start: number, end: number): Promise<void> {
    for (let guest = start; guest < end; guest += this.clusterSizeBytes) {
      const guestCluster = guest / this.clusterSizeBytes;
      const l1Index = Math.floor(guestCluster / this.l2Entries);
      if ((this.l1Offsets[l1Index] ?? 0) === 0 && this.backing === undefined) {
        // Nothing allocated under this whole L2 range: skip it.
        guest = (l1Index + 1) * this.l2Entries * this.clusterSizeBytes - this.clusterSizeBytes;
        continue;
      }
      const table = await this.writableL2Table(l1Index);
      const position = (guestCluster % this.l2Entries) * this.l2EntryBytes;
      const hi = table.view.getUint32(position);
      const lo = table.view.getUint32(position + 4);
      const compressed = entryCompressed(hi);
      const allocated = compressed || entryHostOffset(hi, lo) !== 0;
      // As QEMU: discarded clusters read as zeroes when there is a backing file or data (v3);
      // a v2 image can only make them unallocated.
      if (!(this.backing !== undefined || allocated)) continue;
      if (allocated) this.freeEntryClusters(hi, lo);
      if (this.extendedL2) {
        this.setEntry(table, position, 0, 0, { zero: SUBCLUSTER_BITMAP_HALF_ALL, alloc: 0 });
      } else {
        this.setEntry(table, position, 0, this.header.version >= 3 ? 1 : 0);
      }
    }
    await this.relieveCachePressure();
  }
}
