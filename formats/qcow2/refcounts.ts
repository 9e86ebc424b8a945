/**
 * Refcount table and blocks: reading and changing cluster refcounts, and allocating clusters.
 *
 * Crash-safety contract (with the image's flush order): increments reach the disk before any
 * reference to the cluster does; decrements are deferred (queued as pending frees) and applied only
 * after the metadata that dropped the reference is durable. So a power cut can leave refcounts too
 * high (leaks) but never too low (corruption), and a freed cluster is never reused while a durable
 * reference to it might remain.
 */
import { StorageError } from '../../src/core/errors.js';
import type { HostFile } from '../../src/core/host-file.js';
import { REFT_OFFSET_MASK } from './constants.js';
import { planRefcountStructure } from './refcount-rebuild.js';
import { TableCache, type CachedTable } from './table-cache.js';

export interface RefcountLayout {
  clusterBits: number;
  refcountOrder: number;
  tableOffset: number;
  tableClusters: number;
}

/** Ranges in use by fixed metadata, which a zero refcount must never hand out. */
export type OverlapCheck = (hostOffset: number, lengthBytes: number) => string | undefined;

/** Why a refcount table entry is not used: check() reports each kind as qemu-img check does. */
export type BrokenRefcountKind = 'reserved-bits' | 'unaligned' | 'outside-file' | 'overlaps-metadata';

export interface BrokenRefcountEntry {
  index: number;
  kind: BrokenRefcountKind;
  /** The block offset the entry gives. */
  offset: number;
  reason: string;
}

export class Refcounts {
  /** Refcount table entries that could not be trusted at open (see loadTable). */
  brokenEntries: BrokenRefcountEntry[] = [];
  readonly clusterSizeBytes: number;
  readonly refcountBits: number;
  readonly maxRefcount: number;
  /** Refcount entries in one refcount block. */
  readonly entriesPerBlock: number;
  private readonly entriesPerBlockBits: number;
  /** Host offsets of refcount blocks (0 = none), indexed by refcount table index. */
  table: number[];
  tableOffset: number;
  tableClusters: number;
  tableDirty = false;
  readonly blocks: TableCache;
  /** Clusters whose reference was dropped but whose refcount is not yet decremented. */
  private pendingFrees: number[] = [];
  /** Lowest cluster index that might be free. */
  private freeHint = 0;
  /** Host offsets of the refcount blocks, for the overlap check (built on demand). */
  private blockOffsets: Set<number> | undefined;
  /** Called when a refcount table move must be made durable at once (header fields change). */
  onTableMoved: (() => Promise<void>) | undefined;

  constructor(
    private readonly file: HostFile,
    layout: RefcountLayout,
    table: number[],
    cacheCapacityBlocks: number,
    private readonly overlapCheck: OverlapCheck,
  ) {
    this.clusterSizeBytes = 2 ** layout.clusterBits;
    this.refcountBits = 2 ** layout.refcountOrder;
    this.maxRefcount = this.refcountBits >= 53 ? Number.MAX_SAFE_INTEGER : 2 ** this.refcountBits - 1;
    this.entriesPerBlockBits = layout.clusterBits + 3 - layout.refcountOrder;
    this.entriesPerBlock = 2 ** this.entriesPerBlockBits;
    this.table = table;
    this.tableOffset = layout.tableOffset;
    this.tableClusters = layout.tableClusters;
    this.blocks = new TableCache(file, this.clusterSizeBytes, Math.max(4, cacheCapacityBlocks));
  }

  /**
   * Reads the refcount table. Entries that cannot be right (unaligned, past the end of the file,
   * reserved bits) are reported in `broken` and read as "no block": check reports them and a
   * full repair rebuilds the structure; nothing may allocate while any remain.
   */
  static async loadTable(
    file: HostFile,
    layout: RefcountLayout,
    fileSizeBytes: number,
  ): Promise<{ table: number[]; broken: BrokenRefcountEntry[] }> {
    const clusterSizeBytes = 2 ** layout.clusterBits;
    const bytes = new Uint8Array(layout.tableClusters * clusterSizeBytes);
    await file.pread(bytes, layout.tableOffset);
    const view = new DataView(bytes.buffer);
    const table: number[] = new Array(bytes.length / 8);
    const broken: BrokenRefcountEntry[] = [];
    for (let i = 0; i < table.length; i++) {
      const raw = view.getBigUint64(i * 8);
      const offset = Number(raw & REFT_OFFSET_MASK);
      table[i] = 0;
      if ((raw & ~REFT_OFFSET_MASK) !== 0n) {
        broken.push({ index: i, kind: 'reserved-bits', offset, reason: 'reserved bits are set in its table entry' });
      } else if (offset % clusterSizeBytes !== 0) {
        broken.push({ index: i, kind: 'unaligned', offset, reason: `offset ${offset} is not cluster-aligned` });
      } else if (offset !== 0 && offset + clusterSizeBytes > fileSizeBytes) {
        broken.push({ index: i, kind: 'outside-file', offset, reason: `offset ${offset} lies past the end of the file` });
      } else {
        table[i] = offset;
      }
    }
    return { table, broken };
  }

  private readEntry(block: CachedTable, index: number): number {
    const bits = this.refcountBits;
    const view = block.view;
    switch (bits) {
      case 16:
        return view.getUint16(index * 2);
      case 8:
        return view.getUint8(index);
      case 32:
        return view.getUint32(index * 4);
      case 64: {
        const value = view.getBigUint64(index * 8);
        return value > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(value);
      }
      default: {
        // 1, 2 and 4 bits: packed least-significant bits first within each byte.
        const bitOffset = index * bits;
        const byte = view.getUint8(bitOffset >>> 3);
        return (byte >>> (bitOffset & 7)) & ((1 << bits) - 1);
      }
    }
  }

  private writeEntry(block: CachedTable, index: number, value: number): void {
    const bits = this.refcountBits;
    const view = block.view;
    switch (bits) {
      case 16:
        view.setUint16(index * 2, value);
        break;
      case 8:
        view.setUint8(index, value);
        break;
      case 32:
        view.setUint32(index * 4, value);
        break;
      case 64:
        view.setBigUint64(index * 8, BigInt(value));
        break;
      default: {
        const bitOffset = index * bits;
        const mask = ((1 << bits) - 1) << (bitOffset & 7);
        const byte = view.getUint8(bitOffset >>> 3);
        view.setUint8(bitOffset >>> 3, (byte & ~mask) | ((value << (bitOffset & 7)) & mask));
      }
    }
    block.dirty = true;
  }

  /** Refcount of a cluster; clusters without a refcount block have refcount 0. */
  async get(clusterIndex: number): Promise<number> {
    const tableIndex = Math.floor(clusterIndex / this.entriesPerBlock);
    const blockOffset = this.table[tableIndex] ?? 0;
    if (blockOffset === 0) return 0;
    const block = await this.blocks.get(blockOffset);
    return this.readEntry(block, clusterIndex % this.entriesPerBlock);
  }

  /** Adds delta to a cluster's refcount, creating refcount blocks (and growing the table) as needed. */
  async add(clusterIndex: number, delta: number): Promise<number> {
    const block = await this.blockFor(clusterIndex);
    const index = clusterIndex % this.entriesPerBlock;
    const current = this.readEntry(block, index);
    const next = current + delta;
    if (next < 0) {
      throw new StorageError('CORRUPT', `refcount of cluster ${clusterIndex} would drop below zero`);
    }
    if (next > this.maxRefcount) {
      throw new StorageError(
        'LIMIT_EXCEEDED',
        `refcount of cluster ${clusterIndex} would exceed ${this.maxRefcount} (refcount_bits ${this.refcountBits})`,
      );
    }
    this.writeEntry(block, index, next);
    if (next === 0 && clusterIndex < this.freeHint) this.freeHint = clusterIndex;
    return next;
  }

  /**
   * add(cluster, 1) for `count` clusters from `start` (a free run allocate found): one block lookup
   * per refcount block the run touches, not an await per cluster (a 1 MiB allocating write claims
   * 16 clusters).
   */
  private async claimRun(start: number, count: number): Promise<void> {
    const end = start + count;
    for (let cluster = start; cluster < end; ) {
      const block = await this.blockFor(cluster);
      const blockEnd = Math.min(end, (Math.floor(cluster / this.entriesPerBlock) + 1) * this.entriesPerBlock);
      for (; cluster < blockEnd; cluster++) {
        const index = cluster % this.entriesPerBlock;
        const next = this.readEntry(block, index) + 1;
        if (next > this.maxRefcount) {
          throw new StorageError('LIMIT_EXCEEDED', `refcount of cluster ${cluster} would exceed ${this.maxRefcount} (refcount_bits ${this.refcountBits})`);
        }
        this.writeEntry(block, index, next);
      }
    }
  }

  async set(clusterIndex: number, value: number): Promise<void> {
    const block = await this.blockFor(clusterIndex);
    this.writeEntry(block, clusterIndex % this.entriesPerBlock, value);
    if (value === 0 && clusterIndex < this.freeHint) this.freeHint = clusterIndex;
  }

  /** The refcount block covering a cluster, created if missing. */
  private async blockFor(clusterIndex: number): Promise<CachedTable> {
    const tableIndex = Math.floor(clusterIndex / this.entriesPerBlock);
    if (this.brokenEntries.length > 0) {
      throw new StorageError('CORRUPT', "the refcount table is damaged; repair the image with 'check -r all'");
    }
    if (tableIndex >= this.table.length) await this.growTable(tableIndex + 1);
    const blockOffset = this.table[tableIndex] ?? 0;
    if (blockOffset !== 0) return this.blocks.get(blockOffset);
    return this.createBlock(tableIndex);
  }

  /**
   * A new refcount block goes in the first cluster of the range it describes: every cluster of a
   * range without a block has refcount 0, so that cluster is free, and the block counts itself.
   */
  private async createBlock(tableIndex: number): Promise<CachedTable> {
    const firstCluster = tableIndex * this.entriesPerBlock;
    const hostOffset = firstCluster * this.clusterSizeBytes;
    const clash = this.overlapCheck(hostOffset, this.clusterSizeBytes);
    if (clash) {
      throw new StorageError('CORRUPT', `new refcount block at ${hostOffset} would overlap the ${clash}`);
    }
    const block = this.blocks.install(hostOffset, new Uint8Array(this.clusterSizeBytes), true);
    this.writeEntry(block, 0, 1);
    this.table[tableIndex] = hostOffset;
    this.blockOffsets?.add(hostOffset);
    this.tableDirty = true;
    if (firstCluster === this.freeHint) this.freeHint++;
    return block;
  }

  /**
   * Grows the refcount table to at least minEntries. The new table and the blocks that describe it
   * go in a fresh area past everything the current table can describe and past the file's end, so
   * they never collide with live clusters. Blocks are written and made durable, then the table,
   * then the header switches to it (onTableMoved); the old table's clusters are freed after.
   */
  private async growTable(minEntries: number): Promise<void> {
    const entriesPerCluster = this.clusterSizeBytes / 8;
    const fileEndCluster = Math.ceil((await this.file.sizeBytes()) / this.clusterSizeBytes);
    const areaStart = Math.max(this.table.length * this.entriesPerBlock, fileEndCluster);
    const blockIndexOf = (cluster: number) => Math.floor(cluster / this.entriesPerBlock);
    // Fixed point: the area holds B block clusters then T table clusters, and the table must have
    // room for an entry for every range the area touches.
    let blockClusters = 1;
    let tableClusters = Math.ceil(Math.max(minEntries, Math.ceil(this.table.length * 1.5)) / entriesPerCluster);
    for (let guard = 0; ; guard++) {
      if (guard > 64) throw new Error('assertion failed: refcount table growth did not converge');
      const areaEnd = areaStart + blockClusters + tableClusters;
      const neededEntries = blockIndexOf(areaEnd - 1) + 1;
      const neededTableClusters = Math.max(tableClusters, Math.ceil(neededEntries / entriesPerCluster));
      let missingBlocks = 0;
      for (let i = blockIndexOf(areaStart); i <= blockIndexOf(areaEnd - 1); i++) {
        if ((this.table[i] ?? 0) === 0) missingBlocks++;
      }
      if (neededTableClusters === tableClusters && missingBlocks <= blockClusters) break;
      tableClusters = neededTableClusters;
      blockClusters = Math.max(blockClusters, missingBlocks);
    }
    if (tableClusters * this.clusterSizeBytes > 8 * 1024 * 1024) {
      throw new StorageError('LIMIT_EXCEEDED', 'refcount table would exceed 8 MiB');
    }
    const areaEnd = areaStart + blockClusters + tableClusters;
    const newTable = this.table.slice();
    while (newTable.length < tableClusters * entriesPerCluster) newTable.push(0);
    const newBlocks = new Map<number, CachedTable>();
    let nextBlockCluster = areaStart;
    for (let i = blockIndexOf(areaStart); i <= blockIndexOf(areaEnd - 1); i++) {
      if ((newTable[i] ?? 0) !== 0) continue;
      const offset = nextBlockCluster++ * this.clusterSizeBytes;
      const bytes = new Uint8Array(this.clusterSizeBytes);
      newBlocks.set(i, { hostOffset: offset, bytes, view: new DataView(bytes.buffer), dirty: true, lastUse: 0 });
      newTable[i] = offset;
    }
    // Count every cluster of the area that is used: the new blocks and the table.
    const usedClusters: number[] = [];
    for (let c = areaStart; c < nextBlockCluster; c++) usedClusters.push(c);
    const tableStartCluster = areaStart + blockClusters;
    for (let c = tableStartCluster; c < areaEnd; c++) usedClusters.push(c);
    for (const cluster of usedClusters) {
      const i = blockIndexOf(cluster);
      const block = newBlocks.get(i) ?? (await this.blocks.get(newTable[i] ?? 0));
      this.writeEntry(block, cluster % this.entriesPerBlock, 1);
    }
    for (const block of newBlocks.values()) await this.file.pwrite(block.bytes, block.hostOffset);
    await this.writeDirtyBlocks();
    const newTableOffset = tableStartCluster * this.clusterSizeBytes;
    await this.file.pwrite(this.serializeTable(newTable), newTableOffset);
    await this.file.flush();
    const oldOffset = this.tableOffset;
    const oldClusters = this.tableClusters;
    this.table = newTable;
    this.blockOffsets = undefined;
    this.tableOffset = newTableOffset;
    this.tableClusters = tableClusters;
    this.tableDirty = false;
    for (const block of newBlocks.values()) {
      this.blocks.install(block.hostOffset, block.bytes, false);
    }
    await this.onTableMoved?.();
    for (let i = 0; i < oldClusters; i++) this.queueFree(oldOffset / this.clusterSizeBytes + i);
  }

  /** True when a host offset holds one of the refcount blocks. */
  isBlock(hostOffset: number): boolean {
    this.blockOffsets ??= new Set(this.table.filter((offset) => offset !== 0));
    return this.blockOffsets.has(hostOffset);
  }

  serializeTable(table: number[] = this.table): Uint8Array {
    const bytes = new Uint8Array(Math.ceil((table.length * 8) / this.clusterSizeBytes) * this.clusterSizeBytes);
    const view = new DataView(bytes.buffer);
    table.forEach((offset, i) => view.setBigUint64(i * 8, BigInt(offset)));
    return bytes;
  }

  /** Writes every dirty refcount block (no fsync). Returns how many were written. */
  async writeDirtyBlocks(): Promise<number> {
    const dirty = this.blocks.dirtyTables();
    for (const block of dirty) {
      block.dirty = false;
      await this.file.pwrite(block.bytes, block.hostOffset);
    }
    return dirty.length;
  }

  async writeTableIfDirty(): Promise<boolean> {
    if (!this.tableDirty) return false;
    this.tableDirty = false;
    await this.file.pwrite(this.serializeTable(), this.tableOffset);
    return true;
  }

  /**
   * Allocates `count` contiguous free clusters and sets their refcounts to 1. Returns the host
   * offset of the first. Clusters of fixed metadata are never handed out (a zero refcount on them
   * means the image is corrupt).
   */
  async allocate(count: number): Promise<number> {
    let cluster = this.freeHint;
    let runStart = -1;
    let run = 0;
    let firstFree = -1;
    // Scan block by block (synchronously within a block). Bounded: every step either extends the
    // run or passes a used cluster, and clusters past the end of the file are all free.
    // Past the last existing refcount block every range gets a new block in its first cluster, so
    // no free run there is longer than entriesPerBlock - 1: a longer request must be met before.
    // Only such long requests need it, and it scans the table: not on every allocation.
    const lastBlockIndex =
      count >= this.entriesPerBlock ? Math.ceil(this.highestBlockEnd() / this.entriesPerBlock) - 1 : Number.POSITIVE_INFINITY;
    scan: for (;;) {
      const tableIndex = Math.floor(cluster / this.entriesPerBlock);
      if (tableIndex > lastBlockIndex) {
        throw new StorageError(
          'LIMIT_EXCEEDED',
          `cannot allocate ${count} contiguous clusters: more than one refcount block describes (${this.entriesPerBlock})`,
        );
      }
      const block = await this.blockFor(cluster);
      const base = tableIndex * this.entriesPerBlock;
      for (let index = cluster - base; index < this.entriesPerBlock; index++, cluster++) {
        if (this.readEntry(block, index) === 0) {
          if (firstFree < 0) firstFree = cluster;
          if (run === 0) runStart = cluster;
          if (++run === count) break scan;
        } else {
          run = 0;
        }
      }
    }
    const hostOffset = runStart * this.clusterSizeBytes;
    const clash = this.overlapCheck(hostOffset, count * this.clusterSizeBytes);
    if (clash) {
      throw new StorageError('CORRUPT', `cluster at ${hostOffset} has refcount 0 but holds the ${clash}`);
    }
    await this.claimRun(runStart, count);
    this.freeHint = firstFree === runStart ? runStart + count : firstFree;
    return hostOffset;
  }

  /** The stored refcount without creating anything (0 where no block exists). */
  async storedRefcount(clusterIndex: number): Promise<number> {
    const tableIndex = Math.floor(clusterIndex / this.entriesPerBlock);
    const blockOffset = this.table[tableIndex] ?? 0;
    if (blockOffset === 0) return 0;
    const block = this.blocks.peek(blockOffset) ?? (await this.blocks.get(blockOffset));
    return this.readEntry(block, clusterIndex % this.entriesPerBlock);
  }

  /** One past the last cluster any existing refcount block describes. */
  highestBlockEnd(): number {
    for (let i = this.table.length - 1; i >= 0; i--) {
      if ((this.table[i] ?? 0) !== 0) return (i + 1) * this.entriesPerBlock;
    }
    return 0;
  }

  /**
   * Replaces the whole refcount structure with one built from `references` (a count per cluster;
   * the old structure's clusters, oldStructure, not counted), placed as planRefcountStructure
   * says. Blocks and table are durable before the header switches (onTableMoved).
   */
  async rebuild(references: Uint32Array, oldStructure: ReadonlySet<number> = new Set()): Promise<void> {
    for (let c = 0; c < references.length; c++) {
      if (references[c]! > this.maxRefcount) {
        throw new StorageError('LIMIT_EXCEEDED', `cluster ${c} has ${references[c]} references, more than refcount_bits allows`);
      }
    }
    const plan = planRefcountStructure(references, oldStructure, this.entriesPerBlock, this.clusterSizeBytes);
    const counts = (cluster: number) => (plan.allocated.has(cluster) ? 1 : (references[cluster] ?? 0));
    const newTable: number[] = new Array(plan.tableClusters * (this.clusterSizeBytes / 8)).fill(0);
    for (const [range, cluster] of plan.blockClusters) {
      const bytes = new Uint8Array(this.clusterSizeBytes);
      const block: CachedTable = { hostOffset: 0, bytes, view: new DataView(bytes.buffer), dirty: true, lastUse: 0 };
      const first = range * this.entriesPerBlock;
      for (let i = 0; i < this.entriesPerBlock; i++) {
        const value = counts(first + i);
        if (value !== 0) this.writeEntry(block, i, value);
      }
      const offset = cluster * this.clusterSizeBytes;
      newTable[range] = offset;
      await this.file.pwrite(bytes, offset);
    }
    const tableOffset = plan.tableCluster * this.clusterSizeBytes;
    await this.file.pwrite(this.serializeTable(newTable), tableOffset);
    await this.file.flush();
    this.table = newTable;
    this.blockOffsets = undefined;
    this.tableOffset = tableOffset;
    this.tableClusters = plan.tableClusters;
    this.tableDirty = false;
    this.blocks.clear();
    this.brokenEntries = [];
    this.pendingFrees = [];
    this.freeHint = 0;
    await this.onTableMoved?.();
  }

  /** Defers a decrement until the metadata dropping the reference is durable. */
  queueFree(clusterIndex: number): void {
    this.pendingFrees.push(clusterIndex);
  }

  get pendingFreeCount(): number {
    return this.pendingFrees.length;
  }

  /** Takes the queued decrements (for a caller that applies them once it is safe). */
  takePendingFrees(): number[] {
    const frees = this.pendingFrees;
    this.pendingFrees = [];
    return frees;
  }

  /** Applies deferred decrements. Returns the clusters whose refcount reached zero. */
  async applyFrees(frees: readonly number[]): Promise<number[]> {
    const freed: number[] = [];
    for (const cluster of frees) {
      if ((await this.add(cluster, -1)) === 0) freed.push(cluster);
    }
    return freed;
  }
}
