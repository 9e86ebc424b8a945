/**
 * Qcow2ImageMetadata: the image's metadata outside the request path: write-back of the cached
 * tables, flush and deferred frees, cluster allocation, the active L1 table's growth, and QEMU's
 * overlap checks that keep guest data off metadata.
 *
 * Durability: metadata sits in write-back caches and reaches the disk on flush in the order
 * refcount blocks -> refcount table -> L2 tables -> L1 table -> header, with a host flush between
 * stages, so a power cut leaves at most leaked clusters (see refcounts.ts).
 */
import { StorageError } from '../../src/core/errors.js';
import { IncompatibleBit, MAX_L1_TABLE_BYTES } from './constants.js';
import { hasIncompatible, serializeHeader, setFeatureBit } from './header.js';
import { Qcow2ImageState } from './image-state.js';
import { serializeL1 } from './l1-table.js';

export abstract class Qcow2ImageMetadata extends Qcow2ImageState {
  async flush(): Promise<void> {
    if (this.readOnly) return;
    // Decrements queued before the write-back may be applied once their dereferences are durable
    // (now) and no request that started before could still touch the clusters (after the drain,
    // which must not hold the lock).
    const frees = await this.metaLock.run(async () => {
      await this.writebackMetadata();
      return this.refcounts.takePendingFrees();
    });
    if (frees.length === 0) return;
    await this.drainStarted();
    await this.metaLock.run(() => this.applyFrees(frees));
  }

  /** flush() inside exclusive(): nothing is in flight, so no drain is needed. Lock held. */
  async flushLocked(): Promise<void> {
    await this.writebackMetadata();
    await this.applyFrees(this.refcounts.takePendingFrees());
  }

  /** Applies deferred frees whose dereferences are durable and unused by any request. Lock held. */
  protected async applyFrees(frees: readonly number[]): Promise<void> {
    if (frees.length === 0) return;
    const freed = await this.refcounts.applyFrees(frees);
    // A freed cluster may come back as data: no stale L2 table may stay cached under its offset.
    for (const cluster of freed) this.l2Cache.drop(cluster * this.clusterSizeBytes);
    // Nor may compressed data keep packing into a freed cluster: it may come back as metadata.
    const tailCluster = Math.floor(this.compressedTailHostOffset / this.clusterSizeBytes);
    if (this.compressedTailHostOffset !== 0 && freed.includes(tailCluster)) this.compressedTailHostOffset = 0;
    // Give the space back to the host: these clusters hold nothing anyone references.
    for (const run of contiguousRuns(freed)) {
      await this.file.punchHole(run.start * this.clusterSizeBytes, run.count * this.clusterSizeBytes);
    }
  }

  /**
   * Writes dirty metadata in dependency order with a host flush between stages, so that whatever
   * subset of writes survives a power cut, no reference points at a cluster with refcount 0. With
   * lazy refcounts the dirty bit is set first and the stages share one flush. Lock held.
   */
  async writebackMetadata(): Promise<void> {
    const stages = this.lazyRefcounts ? 'lazy' : 'ordered';
    const anyDirty =
      this.refcounts.blocks.hasDirty() ||
      this.refcounts.tableDirty ||
      this.l2Cache.hasDirty() ||
      this.l1Dirty ||
      this.headerDirty;
    if (!anyDirty) {
      await this.file.flush();
      return;
    }
    if (stages === 'lazy' && !hasIncompatible(this.header, IncompatibleBit.dirty)) {
      this.header.incompatibleFeatures = setFeatureBit(this.header.incompatibleFeatures, IncompatibleBit.dirty, true);
      await this.writeHeaderNow();
    }
    const barrier = async () => {
      if (stages === 'ordered') await this.file.flush();
    };
    if ((await this.refcounts.writeDirtyBlocks()) > 0) await barrier();
    if (await this.refcounts.writeTableIfDirty()) await barrier();
    const dirtyL2 = this.l2Cache.dirtyTables();
    if (dirtyL2.length > 0) {
      // Data written to new clusters must be durable before the L2 entries that point at it, and
      // new L2 tables before the L1 entries that point at them. Lazy refcounts relax only the
      // refcount ordering: these two barriers stay (else a crash reads zeroes for durable data).
      await this.file.flush();
      for (const table of dirtyL2) {
        table.dirty = false;
        await this.file.pwrite(table.bytes, table.hostOffset);
      }
      if (stages === 'ordered' || this.l1Dirty) await this.file.flush();
    }
    if (this.l1Dirty) {
      this.l1Dirty = false;
      await this.file.pwrite(serializeL1(this.l1Offsets, this.l1Copied), this.header.l1TableOffset);
      await barrier();
    }
    if (this.headerDirty) {
      this.headerDirty = false;
      await this.file.pwrite(serializeHeader(this.header), 0);
    }
    await this.file.flush();
  }

  /** Keeps the caches within their budgets: write everything back in order, then drop clean tables. */
  protected async relieveCachePressure(): Promise<void> {
    if (!this.l2Cache.overCapacity() && !this.refcounts.blocks.overCapacity()) return;
    await this.writebackMetadata();
    this.l2Cache.evictClean();
    this.refcounts.blocks.evictClean();
  }

  async writeHeaderNow(): Promise<void> {
    await this.file.pwrite(serializeHeader(this.header), 0);
    await this.file.flush();
    this.headerDirty = false;
  }

  /** Called by Refcounts after it wrote a new, durable refcount table. */
  async commitRefcountTableMove(): Promise<void> {
    this.header.refcountTableOffset = this.refcounts.tableOffset;
    this.header.refcountTableClusters = this.refcounts.tableClusters;
    await this.writeHeaderNow();
  }

  /**
   * QEMU's pre-write overlap check, for host clusters about to be written as guest data (or handed
   * out by the allocator): the fixed metadata, any refcount block, or a cached L2 table. A corrupt
   * or hostile image must not get us to write guest data over its metadata.
   */
  metadataOverlap(hostOffset: number, lengthBytes: number): string | undefined {
    const fixed = this.fixedMetadataOverlap(hostOffset, lengthBytes);
    if (fixed) return fixed;
    const cs = this.clusterSizeBytes;
    for (let cluster = Math.floor(hostOffset / cs) * cs; cluster < hostOffset + lengthBytes; cluster += cs) {
      const clash = this.refcountBlockAt(cluster) ?? (this.l2Cache.peek(cluster) ? 'L2 table' : undefined);
      if (clash) return clash;
    }
    return undefined;
  }

  protected refcountBlockAt(hostOffset: number): string | undefined {
    return this.refcounts.isBlock(hostOffset) ? 'refcount block' : undefined;
  }

  /** Which fixed metadata structure a host range overlaps, if any (QEMU's overlap check). */
  fixedMetadataOverlap(hostOffset: number, lengthBytes: number): string | undefined {
    const end = hostOffset + lengthBytes;
    const overlaps = (start: number, length: number) => length > 0 && hostOffset < start + length && start < end;
    const cs = this.clusterSizeBytes;
    const roundUp = (n: number) => Math.ceil(n / cs) * cs;
    if (overlaps(0, cs)) return 'header';
    if (overlaps(this.header.l1TableOffset, roundUp(this.header.l1Size * 8))) return 'active L1 table';
    if (overlaps(this.refcounts.tableOffset, this.refcounts.tableClusters * cs)) return 'refcount table';
    if (this.header.nbSnapshots > 0 && overlaps(this.header.snapshotsOffset, cs)) return 'snapshot table';
    for (const s of this.snapshots) {
      if (overlaps(s.l1TableOffset, roundUp(s.l1Size * 8))) return `L1 table of snapshot '${s.name}'`;
    }
    return undefined;
  }

  /** Allocates count contiguous clusters (refcount 1), raising the high-water mark past them. */
  async allocateClusters(count: number): Promise<number> {
    const hostOffset = await this.refcounts.allocate(count);
    const end = hostOffset + count * this.clusterSizeBytes;
    if (end > this.hostHighWaterBytes) this.hostHighWaterBytes = end;
    return hostOffset;
  }

  /** Moves the active L1 table to a larger one: written and durable before the header points at it. */
  async growL1(entries: number): Promise<void> {
    if (entries * 8 > MAX_L1_TABLE_BYTES) throw new StorageError('LIMIT_EXCEEDED', 'L1 table would exceed 32 MiB');
    const clusters = Math.ceil((entries * 8) / this.clusterSizeBytes);
    const offsets = this.l1Offsets.slice();
    const copied = this.l1Copied.slice();
    while (offsets.length < entries) {
      offsets.push(0);
      copied.push(false);
    }
    const newOffset = await this.allocateClusters(clusters);
    await this.writebackMetadata();
    const bytes = new Uint8Array(clusters * this.clusterSizeBytes);
    bytes.set(serializeL1(offsets, copied));
    await this.file.pwrite(bytes, newOffset);
    await this.file.flush();
    const oldOffset = this.header.l1TableOffset;
    const oldClusters = Math.ceil((this.header.l1Size * 8) / this.clusterSizeBytes);
    this.header.l1TableOffset = newOffset;
    this.header.l1Size = entries;
    this.l1Offsets = offsets;
    this.l1Copied = copied;
    this.l1Dirty = false;
    await this.writeHeaderNow();
    if (oldOffset !== 0) {
      for (let i = 0; i < oldClusters; i++) this.refcounts.queueFree(oldOffset / this.clusterSizeBytes + i);
    }
  }

  /** Drops every cached table (after a repair rewrote them on disk). Lock held. */
  resetCaches(): void {
    this.l2Cache.clear();
    this.refcounts.blocks.clear();
  }
}

function contiguousRuns(clusters: number[]): { start: number; count: number }[] {
  const sorted = [...clusters].sort((a, b) => a - b);
  const runs: { start: number; count: number }[] = [];
  for (const c of sorted) {
    const last = runs[runs.length - 1];
    if (last && last.start + last.count === c) last.count++;
    else runs.push({ start: c, count: 1 });
  }
  return runs;
}
