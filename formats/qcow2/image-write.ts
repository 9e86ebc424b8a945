/**
 * Qcow2ImageWriter: the write path. A write to a cluster this layer owns goes in place without the
 * metadata lock; anything else (allocation, copy-on-write of a shared, compressed or partly
 * allocated cluster, compressed writes) changes L2 entries under it. Zeroes and discard: image-zero.ts.
 */
import { StorageError } from '../../src/core/errors.js';
import type { WriteFlags } from '../../src/core/block-device.js';
import { compressCluster, decodeCompressedEntry, encodeCompressedEntry } from './compression.js';
import { COMPRESSED_HI_DESCRIPTOR_MASK, SUBCLUSTER_BITMAP_HALF_ALL } from './constants.js';
import { Qcow2ImageReader, settleThenThrow } from './image-read.js';
import {
  SlotKind,
  encodeEntry,
  entryCompressed,
  entryCopied,
  entryHostOffset,
  entryReservedBits,
  entryToBigInt,
  entryZeroFlag,
  subclusterMask,
} from './l2-entry.js';
import { Segments, pwriteRun } from './segments.js';
import type { CachedTable } from './table-cache.js';

/** A copy-up prepared outside the lock: the cluster as the backing holds it, and the bytes the write covers in it. */
interface CopyUp {
  content: Uint8Array;
  writtenBytes: number;
}

export abstract class Qcow2ImageWriter extends Qcow2ImageReader {
  async write(guestOffset: number, data: Uint8Array, flags?: WriteFlags): Promise<void> {
    return this.writeFrom(guestOffset, Segments.of(data), flags);
  }

  /**
   * One write from buffers that lie back to back from guestOffset (a vhost-user request over
   * several guest memory descriptors): mapped once, each contiguous in-place host run written
   * with one pwritev straight from the buffers (BlockDevice.writeSegments). Only ranges that need
   * metadata changes are gathered into one buffer first.
   */
  async writeSegments(guestOffset: number, segments: readonly Uint8Array[], flags?: WriteFlags): Promise<void> {
    return this.writeFrom(guestOffset, Segments.list(segments), flags);
  }

  private async writeFrom(guestOffset: number, source: Segments, flags: WriteFlags | undefined): Promise<void> {
    this.checkWritable();
    this.checkRange(guestOffset, source.totalBytes);
    if (this.gate) await this.passGate();
    const epoch = this.enterIo();
    try {
      await this.writeLayerFrom(guestOffset, source);
    } finally {
      this.exitIo(epoch);
    }
    if (flags?.fua) await this.flush();
  }

  protected writeLayer(guestOffset: number, data: Uint8Array): Promise<void> {
    return this.writeLayerFrom(guestOffset, Segments.of(data));
  }

  private async writeLayerFrom(guestOffset: number, source: Segments): Promise<void> {
    const pending: Promise<unknown>[] = [];
    const totalBytes = source.totalBytes;
    let position = 0;
    let runStart = 0;
    let runHost = -1;
    let runLength = 0;
    const flushRun = () => {
      if (runLength > 0) pending.push(pwriteRun(this.file, source.slices(runStart, runLength), runHost));
      runLength = 0;
    };
    // Consecutive clusters that need the slow path go under the lock together, so whole clusters
    // among them can share one contiguous allocation and one host write.
    let slowStart = 0;
    let slowLength = 0;
    const flushSlow = () => {
      if (slowLength === 0) return;
      const start = slowStart;
      pending.push(this.writeSlow(guestOffset + start, source.gather(start, slowLength)));
      slowLength = 0;
    };
    while (position < totalBytes) {
      const guest = guestOffset + position;
      const offsetInCluster = guest % this.clusterSizeBytes;
      const length = Math.min(this.clusterSizeBytes - offsetInCluster, totalBytes - position);
      let host: number;
      try {
        const found = this.inPlaceHostOffset(guest, length);
        host = typeof found === 'number' ? found : await found;
      } catch (err) {
        return settleThenThrow(pending, err);
      }
      if (host >= 0) {
        if (runLength > 0 && runHost + runLength === host) {
          runLength += length;
        } else {
          flushRun();
          runStart = position;
          runHost = host;
          runLength = length;
        }
      } else {
        flushRun();
        if (slowLength > 0 && slowStart + slowLength === position) {
          slowLength += length;
        } else {
          flushSlow();
          slowStart = position;
          slowLength = length;
        }
      }
      position += length;
    }
    flushRun();
    flushSlow();
    // Most requests are one host run: await its promise itself (no Promise.all).
    if (pending.length === 1) await pending[0];
    else if (pending.length > 1) await Promise.all(pending);
    if (this.l2Cache.overCapacity() || this.refcounts.blocks.overCapacity()) {
      await this.metaLock.run(() => this.relieveCachePressure());
    }
  }

  /**
   * The host offset to write guest bytes in place (the cluster is ours alone, holds data, and with
   * extended L2 every touched subcluster is allocated), or -1 when the slow path must run. A
   * number, without a promise, when the L2 table is cached (the usual case).
   */
  private inPlaceHostOffset(guestOffset: number, lengthBytes: number): number | Promise<number> {
    const guestCluster = Math.floor(guestOffset / this.clusterSizeBytes);
    const l1Index = Math.floor(guestCluster / this.l2Entries);
    if (l1Index >= this.l1Offsets.length || !this.l1Copied[l1Index]) return -1;
    const l2Offset = this.l1Offsets[l1Index] ?? 0;
    if (l2Offset === 0) return -1;
    const cached = this.l2Cache.peek(l2Offset);
    if (cached !== undefined) return this.inPlaceHostOffsetIn(cached, guestCluster, guestOffset, lengthBytes);
    return this.l2Cache.get(l2Offset).then((table) => this.inPlaceHostOffsetIn(table, guestCluster, guestOffset, lengthBytes));
  }

  private inPlaceHostOffsetIn(table: CachedTable, guestCluster: number, guestOffset: number, lengthBytes: number): number {
    const position = (guestCluster % this.l2Entries) * this.l2EntryBytes;
    const hi = table.view.getUint32(position);
    const lo = table.view.getUint32(position + 4);
    if (!entryCopied(hi) || entryCompressed(hi)) return -1;
    const hostCluster = entryHostOffset(hi, lo);
    if (hostCluster === 0 || entryReservedBits(hi, lo) || hostCluster % this.clusterSizeBytes !== 0) return -1;
    const offsetInCluster = guestOffset - guestCluster * this.clusterSizeBytes;
    if (this.extendedL2) {
      const allocBits = table.view.getUint32(position + 12);
      const mask = subclusterMask(offsetInCluster, lengthBytes, this.subclusterSizeBytes);
      if ((allocBits & mask) >>> 0 !== mask) return -1;
    } else if (entryZeroFlag(lo)) {
      return -1;
    }
    if (hostCluster + this.clusterSizeBytes > this.hostHighWaterBytes) return -1;
    // Never in place over metadata (the slow path marks the image corrupt).
    if (this.metadataOverlap(hostCluster, this.clusterSizeBytes)) return -1;
    return hostCluster + offsetInCluster;
  }

  /** The L2 table for an L1 index, allocated or copied (if shared) so this layer may change it. */
  protected async writableL2Table(l1Index: number): Promise<CachedTable> {
    if (l1Index >= this.l1Offsets.length) {
      throw new StorageError('INVALID_ARGUMENT', `L1 index ${l1Index} is past the L1 table`);
    }
    const oldOffset = this.l1Offsets[l1Index] ?? 0;
    if (oldOffset !== 0 && this.l1Copied[l1Index]) {
      const clash = this.fixedMetadataOverlap(oldOffset, this.clusterSizeBytes) ?? this.refcountBlockAt(oldOffset);
      if (clash) this.corruptionDetected(`L1 entry ${l1Index} points at the ${clash} (host offset ${oldOffset}) as its L2 table`);
      return this.l2Cache.get(oldOffset);
    }
    const newOffset = await this.allocateClusters(1);
    let bytes: Uint8Array;
    if (oldOffset === 0) {
      bytes = new Uint8Array(this.clusterSizeBytes);
    } else {
      const old = await this.l2Cache.get(oldOffset);
      bytes = old.bytes.slice();
      this.refcounts.queueFree(oldOffset / this.clusterSizeBytes);
    }
    const table = this.l2Cache.install(newOffset, bytes, true);
    this.l1Offsets[l1Index] = newOffset;
    this.l1Copied[l1Index] = true;
    this.l1Dirty = true;
    return table;
  }

  /** Frees whatever host clusters an L2 entry references (deferred until durable). */
  protected freeEntryClusters(hi: number, lo: number): void {
    if (entryCompressed(hi)) {
      const entry = decodeCompressedEntry(entryToBigInt(hi & COMPRESSED_HI_DESCRIPTOR_MASK, lo), this.clusterBits);
      const firstSector = Math.floor(entry.hostOffset / 512) * 512;
      const first = Math.floor(firstSector / this.clusterSizeBytes);
      const last = Math.floor((firstSector + entry.sectorCount * 512 - 1) / this.clusterSizeBytes);
      for (let c = first; c <= last; c++) this.refcounts.queueFree(c);
      return;
    }
    const host = entryHostOffset(hi, lo);
    if (host !== 0) this.refcounts.queueFree(host / this.clusterSizeBytes);
  }

  protected setEntry(table: CachedTable, position: number, hi: number, lo: number, bitmap?: { zero: number; alloc: number }) {
    table.view.setUint32(position, hi >>> 0);
    table.view.setUint32(position + 4, lo >>> 0);
    if (this.extendedL2) {
      table.view.setUint32(position + 8, (bitmap?.zero ?? 0) >>> 0);
      table.view.setUint32(position + 12, (bitmap?.alloc ?? 0) >>> 0);
    }
    table.dirty = true;
  }

  /**
   * Writes a run of clusters that need metadata changes. Whole clusters that need new host
   * clusters are reserved under the lock, written without it (so large allocating writes proceed
   * in parallel) and committed under it again; the rest go cluster by cluster under the lock.
   */
  private async writeSlow(guestOffset: number, data: Uint8Array): Promise<void> {
    const cs = this.clusterSizeBytes;
    for (let position = 0; position < data.length; ) {
      const guest = guestOffset + position;
      const rest = data.subarray(position);
      // A partial write over a cluster only the backing holds copies the cluster up. The backing
      // (a sealed layer may fetch from a chunk store) is read before taking the lock, so copy-ups
      // of different clusters overlap instead of queueing behind one another's backing reads.
      // Without a backing image (or with extended L2) there is never a copy-up: no await for it.
      const copyUp = this.backing === undefined || this.extendedL2 ? undefined : await this.readForCopyUp(guest, rest.length);
      if (copyUp !== undefined) {
        await this.writeCopyUp(guest, rest.subarray(0, cs - (guest % cs)), copyUp);
        position += copyUp.writtenBytes;
        continue;
      }
      const step = await this.metaLock.run(async (): Promise<{ written: number } | { reserved: number; hostOffset: number }> => {
        if (guest % cs === 0) {
          const wholeClusters = await this.countClustersNeedingNewHost(guest, rest.length);
          if (wholeClusters >= 2) {
            await this.writableL2Table(Math.floor(guest / cs / this.l2Entries));
            return { reserved: wholeClusters, hostOffset: await this.allocateClusters(wholeClusters) };
          }
        }
        const length = Math.min(cs - (guest % cs), rest.length);
        await this.writeClusterSlow(guest, rest.subarray(0, length));
        return { written: length };
      });
      if ('written' in step) {
        position += step.written;
        continue;
      }
      const bytes = step.reserved * cs;
      try {
        await this.file.pwrite(rest.subarray(0, bytes), step.hostOffset);
      } catch (err) {
        // Never referenced: queue the reserved clusters for freeing like any dropped cluster.
        for (let i = 0; i < step.reserved; i++) this.refcounts.queueFree(step.hostOffset / cs + i);
        throw err;
      }
      await this.metaLock.run(() => this.commitNewClusters(guest, step.reserved, step.hostOffset));
      position += bytes;
    }
  }

  /**
   * The cluster's bytes from the backing, read without the lock, when a write of up to maxBytes
   * at guestOffset is a partial write to a cluster this layer does not map (a plain entry of
   * zeroes, no zero flag): a copy-up. Undefined when the locked path is to decide (whole clusters,
   * extended L2, anything mapped). Only a hint: writeCopyUp checks the entry again under the lock.
   */
  private async readForCopyUp(guestOffset: number, maxBytes: number): Promise<CopyUp | undefined> {
    const cs = this.clusterSizeBytes;
    const guestCluster = Math.floor(guestOffset / cs);
    const l1Index = Math.floor(guestCluster / this.l2Entries);
    const clusterGuestOffset = guestCluster * cs;
    const validClusterBytes = Math.min(cs, this.sizeBytes - clusterGuestOffset);
    const writtenBytes = Math.min(cs - (guestOffset - clusterGuestOffset), maxBytes);
    const covers = guestOffset === clusterGuestOffset && writtenBytes >= validClusterBytes;
    if (this.backing === undefined || this.extendedL2 || covers || l1Index >= this.l1Offsets.length) return undefined;
    if (!(await this.entryUnmapped(guestCluster))) return undefined;
    const content = new Uint8Array(cs);
    // The backing is read-only under this layer: what it returns stays true while the entry is unmapped.
    await this.readBacking(clusterGuestOffset, content.subarray(0, validClusterBytes));
    return { content, writtenBytes };
  }

  /** Whether a guest cluster's L2 entry is all zeroes (reads the backing). Lock not needed. */
  private async entryUnmapped(guestCluster: number): Promise<boolean> {
    const table = await this.l2Table(Math.floor(guestCluster / this.l2Entries));
    if (table === undefined) return true;
    const position = (guestCluster % this.l2Entries) * this.l2EntryBytes;
    return table.view.getUint32(position) === 0 && table.view.getUint32(position + 4) === 0;
  }

  /**
   * Copies a cluster up with backing bytes read outside the lock: a new cluster is reserved under
   * the lock, written (merged with chunk) without it, and committed under it only if the entry is
   * still unmapped. If a concurrent request mapped it meanwhile, the new cluster is dropped and the
   * write goes the locked way over what that request left. As for any allocation, the data is
   * written before the L2 entry points at it.
   */
  private async writeCopyUp(guestOffset: number, chunk: Uint8Array, copyUp: CopyUp): Promise<void> {
    const cs = this.clusterSizeBytes;
    const guestCluster = Math.floor(guestOffset / cs);
    const reserved = await this.metaLock.run(async () => {
      await this.writableL2Table(Math.floor(guestCluster / this.l2Entries));
      if (!(await this.entryUnmapped(guestCluster))) {
        await this.writeClusterSlow(guestOffset, chunk);
        return undefined;
      }
      return this.allocateClusters(1);
    });
    if (reserved === undefined) return;
    copyUp.content.set(chunk, guestOffset - guestCluster * cs);
    try {
      await this.file.pwrite(copyUp.content, reserved);
    } catch (err) {
      this.refcounts.queueFree(reserved / cs);
      throw err;
    }
    await this.metaLock.run(async () => {
      const table = await this.writableL2Table(Math.floor(guestCluster / this.l2Entries));
      if (!(await this.entryUnmapped(guestCluster))) {
        this.refcounts.queueFree(reserved / cs);
        await this.writeClusterSlow(guestOffset, chunk);
        return;
      }
      const entry = encodeEntry(reserved, { copied: true });
      this.setEntry(table, (guestCluster % this.l2Entries) * this.l2EntryBytes, entry.hi, entry.lo);
    });
  }

  /**
   * How many whole clusters from guestOffset (within maxBytes and one L2 table, never the partial
   * last cluster of the image) are not ours to overwrite, so a fully covering write needs a new
   * host cluster for each. Lock held.
   */
  private async countClustersNeedingNewHost(guestOffset: number, maxBytes: number): Promise<number> {
    const cs = this.clusterSizeBytes;
    const firstCluster = guestOffset / cs;
    const l1Index = Math.floor(firstCluster / this.l2Entries);
    const limit = Math.min(
      Math.floor(maxBytes / cs),
      Math.floor((this.sizeBytes - guestOffset) / cs),
      (l1Index + 1) * this.l2Entries - firstCluster,
      // A new refcount block takes the first cluster of the range it describes, so fresh space
      // has no free run longer than this: a larger request could never be met (see allocate).
      this.refcounts.entriesPerBlock - 1,
    );
    if (limit < 2) return 0;
    const table = await this.writableL2Table(l1Index);
    let count = 0;
    for (; count < limit; count++) {
      const position = ((firstCluster + count) % this.l2Entries) * this.l2EntryBytes;
      const hi = table.view.getUint32(position);
      const lo = table.view.getUint32(position + 4);
      const owned = !entryCompressed(hi) && entryCopied(hi) && entryHostOffset(hi, lo) !== 0;
      if (owned) break;
    }
    return count;
  }

  /**
   * Points whole guest clusters at newly written host clusters. Whatever the entries hold by now
   * (a concurrent write or discard may have changed them) is freed: this write counts as the
   * later one, a valid order for concurrent overlapping requests. Lock held.
   */
  private async commitNewClusters(guestOffset: number, count: number, hostOffset: number): Promise<void> {
    const cs = this.clusterSizeBytes;
    const firstCluster = guestOffset / cs;
    const table = await this.writableL2Table(Math.floor(firstCluster / this.l2Entries));
    for (let i = 0; i < count; i++) {
      const position = ((firstCluster + i) % this.l2Entries) * this.l2EntryBytes;
      this.freeEntryClusters(table.view.getUint32(position), table.view.getUint32(position + 4));
      const entry = encodeEntry(hostOffset + i * cs, { copied: true });
      this.setEntry(table, position, entry.hi, entry.lo, { zero: 0, alloc: SUBCLUSTER_BITMAP_HALF_ALL });
    }
  }

  /** Writes within one cluster when the cluster is not simply ours to overwrite. Lock held. */
  protected async writeClusterSlow(guestOffset: number, chunk: Uint8Array): Promise<void> {
    const guestCluster = Math.floor(guestOffset / this.clusterSizeBytes);
    const clusterGuestOffset = guestCluster * this.clusterSizeBytes;
    const offsetInCluster = guestOffset - clusterGuestOffset;
    const l1Index = Math.floor(guestCluster / this.l2Entries);
    const table = await this.writableL2Table(l1Index);
    const position = (guestCluster % this.l2Entries) * this.l2EntryBytes;
    const run = this.decodeSlot(table, position, offsetInCluster, chunk.length);
    const hi = run.entryHi;
    const lo = run.entryLo;
    const oldHost = entryCompressed(hi) ? 0 : entryHostOffset(hi, lo);
    const ownsHost = oldHost !== 0 && entryCopied(hi) && !entryCompressed(hi);
    if (ownsHost) {
      const clash = this.metadataOverlap(oldHost, this.clusterSizeBytes);
      if (clash) this.corruptionDetected(`L2 entry for guest offset ${clusterGuestOffset} points at the ${clash} (host offset ${oldHost})`);
    }
    const validClusterBytes = Math.min(this.clusterSizeBytes, this.sizeBytes - clusterGuestOffset);

    if (!this.extendedL2) {
      if (run.kind === SlotKind.normal && ownsHost) {
        await this.file.pwrite(chunk, oldHost + offsetInCluster);
        return;
      }
      let host = oldHost;
      let fresh = false;
      if (!ownsHost) {
        const highWater = this.hostHighWaterBytes;
        host = await this.allocateClusters(1);
        fresh = host >= highWater;
      }
      const coversCluster = offsetInCluster === 0 && chunk.length >= validClusterBytes;
      const oldReadsZero =
        run.kind === SlotKind.zeroPlain ||
        run.kind === SlotKind.zeroAllocated ||
        (run.kind === SlotKind.unallocated && this.backing === undefined);
      if (coversCluster || (fresh && oldReadsZero)) {
        await this.file.pwrite(chunk, host + offsetInCluster);
      } else {
        const content = new Uint8Array(this.clusterSizeBytes);
        if (run.kind !== SlotKind.zeroPlain && run.kind !== SlotKind.zeroAllocated) {
          await this.readLayer(clusterGuestOffset, content.subarray(0, validClusterBytes));
        }
        content.set(chunk, offsetInCluster);
        await this.file.pwrite(content, host);
      }
      if (!ownsHost) this.freeEntryClusters(hi, lo);
      const entry = encodeEntry(host, { copied: true });
      this.setEntry(table, position, entry.hi, entry.lo);
      return;
    }

    // Extended L2: work in subclusters. Touched subclusters become allocated; the part of each
    // touched subcluster the chunk does not cover keeps what the guest read there before.
    const view = table.view;
    const zeroBits = view.getUint32(position + 8);
    const allocBits = view.getUint32(position + 12);
    const scSize = this.subclusterSizeBytes;
    const mask = subclusterMask(offsetInCluster, chunk.length, scSize);
    const firstSc = Math.floor(offsetInCluster / scSize);
    const endSc = Math.ceil((offsetInCluster + chunk.length) / scSize);
    let host = oldHost;
    let newAlloc = (allocBits | mask) >>> 0;
    let newZero = (zeroBits & ~mask) >>> 0;
    if (ownsHost) {
      const start = firstSc * scSize;
      const end = Math.min(endSc * scSize, validClusterBytes);
      const content = new Uint8Array(end - start);
      await this.readLayer(clusterGuestOffset + start, content);
      content.set(chunk, offsetInCluster - start);
      await this.file.pwrite(content, host + start);
    } else {
      const highWater = this.hostHighWaterBytes;
      host = await this.allocateClusters(1);
      const fresh = host >= highWater;
      if (run.kind === SlotKind.compressed || oldHost !== 0) {
        // Copy-on-write of a shared or compressed cluster: bring every subcluster across.
        const content = new Uint8Array(this.clusterSizeBytes);
        await this.readLayer(clusterGuestOffset, content.subarray(0, validClusterBytes));
        content.set(chunk, offsetInCluster);
        await this.file.pwrite(content, host);
        if (run.kind === SlotKind.compressed) {
          newAlloc = SUBCLUSTER_BITMAP_HALF_ALL;
          newZero = 0;
        }
      } else {
        const start = firstSc * scSize;
        const end = Math.min(endSc * scSize, validClusterBytes);
        const content = new Uint8Array(end - start);
        const untouchedReadsZero = this.backing === undefined || (zeroBits & mask) >>> 0 === mask;
        if (!(fresh && untouchedReadsZero)) await this.readLayer(clusterGuestOffset + start, content);
        content.set(chunk, offsetInCluster - start);
        await this.file.pwrite(content, host + start);
      }
      this.freeEntryClusters(hi, lo);
    }
    const entry = encodeEntry(host, { copied: true });
    this.setEntry(table, position, entry.hi, entry.lo, { zero: newZero, alloc: newAlloc });
  }

  /** Writes one cluster compressed (qemu-img convert -c). guestOffset must be cluster-aligned. */
  async writeCompressed(guestOffset: number, data: Uint8Array): Promise<void> {
    this.checkWritable();
    this.checkRange(guestOffset, data.length);
    const validClusterBytes = Math.min(this.clusterSizeBytes, this.sizeBytes - guestOffset);
    if (guestOffset % this.clusterSizeBytes !== 0 || data.length !== validClusterBytes) {
      throw new StorageError('INVALID_ARGUMENT', 'compressed writes must cover exactly one whole cluster');
    }
    let cluster = data;
    if (data.length < this.clusterSizeBytes) {
      cluster = new Uint8Array(this.clusterSizeBytes);
      cluster.set(data);
    }
    const compressed = compressCluster(this.compressionType, cluster);
    if (!compressed) {
      await this.write(guestOffset, data);
      return;
    }
    if (this.gate) await this.passGate();
    const epoch = this.enterIo();
    try {
      await this.metaLock.run(async () => {
        const guestCluster = guestOffset / this.clusterSizeBytes;
        const table = await this.writableL2Table(Math.floor(guestCluster / this.l2Entries));
        const position = (guestCluster % this.l2Entries) * this.l2EntryBytes;
        const hi = table.view.getUint32(position);
        const lo = table.view.getUint32(position + 4);
        const hostOffset = await this.allocateCompressedBytes(compressed.length);
        await this.file.pwrite(compressed, hostOffset);
        this.freeEntryClusters(hi, lo);
        const descriptor = encodeCompressedEntry(hostOffset, compressed.length, this.clusterBits) | (1n << 62n);
        this.setEntry(table, position, Number(descriptor >> 32n), Number(descriptor & 0xffffffffn));
      });
    } finally {
      this.exitIo(epoch);
    }
  }

  /**
   * Space for compressed data: packed after the previous compressed cluster when it fits in the
   * same host cluster (that cluster's refcount counts each compressed cluster in it), else a new
   * cluster.
   */
  private async allocateCompressedBytes(lengthBytes: number): Promise<number> {
    const tail = this.compressedTailHostOffset;
    const clusterStart = Math.floor(tail / this.clusterSizeBytes) * this.clusterSizeBytes;
    if (tail !== 0 && tail % this.clusterSizeBytes !== 0 && tail + lengthBytes <= clusterStart + this.clusterSizeBytes) {
      const refcount = await this.refcounts.get(clusterStart / this.clusterSizeBytes);
      // A full refcount (refcount_bits 1, or many small compressed clusters) means a new cluster.
      if (refcount > 0 && refcount < this.refcounts.maxRefcount) {
        await this.refcounts.add(clusterStart / this.clusterSizeBytes, 1);
        this.compressedTailHostOffset = tail + lengthBytes;
        return tail;
      }
    }
    const hostOffset = await this.allocateClusters(1);
    this.compressedTailHostOffset = hostOffset + lengthBytes;
    return hostOffset;
  }
}
