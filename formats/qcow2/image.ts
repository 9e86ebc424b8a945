/**
 * Qcow2Image: a qcow2 image over a HostFile, as a BlockDevice.
 *
 * Guest offsets (what the guest addresses) and host offsets (positions in the image file) never
 * mix: every variable says which it is.
 *
 * Concurrency: reads and in-place writes to clusters this layer owns run without a lock; anything
 * that changes metadata (allocation, copy-on-write, zeroing, discard, flush) runs under one mutex.
 * Operations that must see no I/O in flight (snapshots, resize) drain and gate new requests.
 *
 * Durability: metadata sits in write-back caches and reaches the disk on flush in the order
 * refcount blocks -> refcount table -> L2 tables -> L1 table -> header, with a host flush between
 * stages, so a power cut leaves at most leaked clusters (see refcounts.ts).
 */
import { StorageError } from '../../src/core/errors.js';
import { checkGuestRange } from '../../src/core/guest-range.js';
import type { BlockDeviceCapabilities, Extent, WriteFlags, WriteZeroesFlags } from '../../src/core/block-device.js';
import type { HostFile } from '../../src/core/host-file.js';
import type { Image } from '../../src/core/image.js';
import { AsyncMutex } from './async-mutex.js';
import {
  compressCluster,
  decodeCompressedEntry,
  decompressCluster,
  encodeCompressedEntry,
} from './compression.js';
import {
  CompatibleBit,
  COMPRESSED_HI_DESCRIPTOR_MASK,
  CompressionTypeId,
  IncompatibleBit,
  MAX_L1_TABLE_BYTES,
  SUBCLUSTER_BITMAP_HALF_ALL,
  SUBCLUSTERS_PER_CLUSTER,
} from './constants.js';
import { hasIncompatible, parseHeader, serializeHeader, setFeatureBit, type Qcow2Header } from './header.js';
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
import { readL1Table, serializeL1 } from './l1-table.js';
import { forEachReference } from './references.js';
import { Refcounts } from './refcounts.js';
import { readSnapshotTable, type SnapshotEntry } from './snapshot-table.js';
import type { CachedTable } from './table-cache.js';
import { TableCache } from './table-cache.js';
import type {
  CheckRepairMode,
  Qcow2CheckResult,
  Qcow2CreateOptions,
  Qcow2Info,
  Qcow2MapExtent,
  Qcow2OpenOptions,
  Qcow2SnapshotInfo,
} from './types.js';

/** One run of a guest range inside a single cluster, as this layer maps it. */
export interface SlotRun {
  kind: SlotKind;
  /** Host offset of the run's first byte (data and zeroAllocated runs), else 0. */
  hostOffset: number;
  lengthBytes: number;
  /** For compressed clusters: the raw L2 entry halves. */
  entryHi: number;
  entryLo: number;
}

const DEFAULT_L2_CACHE_MAX_BYTES = 32 * 1024 * 1024;
const DEFAULT_REFCOUNT_CACHE_MAX_BYTES = 8 * 1024 * 1024;

export class Qcow2Image implements Image {
  readonly formatName = 'qcow2';
  readonly file: HostFile;
  backing: Image | undefined;
  header: Qcow2Header;
  sizeBytes: number;
  readonly clusterBits: number;
  readonly clusterSizeBytes: number;
  readonly extendedL2: boolean;
  /** Bytes per L2 entry: 8, or 16 with extended L2. */
  readonly l2EntryBytes: number;
  /** Entries per L2 table. */
  readonly l2Entries: number;
  readonly subclusterSizeBytes: number;
  readonly subclustersPerCluster: number;
  readOnly: boolean;
  /** Host offsets of L2 tables per L1 index (0 = none), and their COPIED flags. */
  l1Offsets: number[];
  l1Copied: boolean[];
  l1Dirty = false;
  headerDirty = false;
  readonly l2Cache: TableCache;
  readonly refcounts: Refcounts;
  snapshots: SnapshotEntry[];
  /** Host offset past every cluster ever allocated or present: clusters beyond read as zeroes. */
  hostHighWaterBytes: number;
  readonly lazyRefcounts: boolean;
  readonly metaLock = new AsyncMutex();
  /** Compressed data is packed: the next free byte in the last cluster used for it. */
  private compressedTailHostOffset = 0;
  /** Requests in flight per epoch; flush and exclusive() wait for the epochs before theirs. */
  private readonly inFlightByEpoch = new Map<number, number>();
  private ioEpoch = 0;
  private drainWaiters: { upToEpoch: number; resolve: () => void }[] = [];
  private gate: Promise<void> | undefined;
  private closed = false;
  /** The write of the corrupt bit, once corruption was detected (see corruptionDetected). */
  private corruptMarking: Promise<void> | undefined;
  /**
   * Opened writable while dirty with dirtyPolicy 'ignore': the refcounts are not known to be exact,
   * so close() must leave the dirty bit set until a repair that leaves nothing to fix.
   */
  /** Dirty on open and not repaired (dirtyPolicy 'ignore'): the dirty bit must stay set. */
  refcountsUnverified = false;

  private constructor(
    file: HostFile,
    header: Qcow2Header,
    readOnly: boolean,
    l1Offsets: number[],
    l1Copied: boolean[],
    refcounts: Refcounts,
    snapshots: SnapshotEntry[],
    fileSizeBytes: number,
    l2CacheTables: number,
  ) {
    this.file = file;
    this.header = header;
    this.sizeBytes = header.sizeBytes;
    this.clusterBits = header.clusterBits;
    this.clusterSizeBytes = 2 ** header.clusterBits;
    this.extendedL2 = hasIncompatible(header, IncompatibleBit.extendedL2);
    this.l2EntryBytes = this.extendedL2 ? 16 : 8;
    this.l2Entries = this.clusterSizeBytes / this.l2EntryBytes;
    this.subclustersPerCluster = this.extendedL2 ? SUBCLUSTERS_PER_CLUSTER : 1;
    this.subclusterSizeBytes = this.clusterSizeBytes / this.subclustersPerCluster;
    this.readOnly = readOnly;
    this.l1Offsets = l1Offsets;
    this.l1Copied = l1Copied;
    this.refcounts = refcounts;
    this.snapshots = snapshots;
    this.hostHighWaterBytes = Math.ceil(fileSizeBytes / this.clusterSizeBytes) * this.clusterSizeBytes;
    this.lazyRefcounts = (header.compatibleFeatures & (1n << BigInt(CompatibleBit.lazyRefcounts))) !== 0n;
    this.l2Cache = new TableCache(file, this.clusterSizeBytes, l2CacheTables);
  }

  static async create(file: HostFile, options: Qcow2CreateOptions): Promise<void> {
    const { createQcow2 } = await import('./create.js');
    await createQcow2(file, options);
  }

  static async open(file: HostFile, options: Qcow2OpenOptions = {}): Promise<Qcow2Image> {
    const fileSizeBytes = await file.sizeBytes();
    const probe = new Uint8Array(Math.min(65536, Math.max(fileSizeBytes, 0)));
    await file.pread(probe, 0);
    let headerBytes = probe;
    if (probe.length >= 24) {
      const clusterBits = new DataView(probe.buffer).getUint32(20);
      if (clusterBits > 16 && clusterBits <= 21 && fileSizeBytes > probe.length) {
        headerBytes = new Uint8Array(Math.min(2 ** clusterBits, fileSizeBytes));
        await file.pread(headerBytes, 0);
      }
    }
    // forCheck: nothing is refused for lying past the end of the file; check() reports it.
    const boundsBytes = options.forCheck ? Number.MAX_SAFE_INTEGER : fileSizeBytes;
    const header = parseHeader(headerBytes, boundsBytes);
    const corrupt = hasIncompatible(header, IncompatibleBit.corrupt);
    let readOnly = options.readOnly ?? file.readOnly;
    if (file.readOnly) readOnly = true;
    if (corrupt && !readOnly && options.dirtyPolicy !== 'ignore') {
      throw new StorageError(
        'CORRUPT',
        `${file.name}: the image is marked corrupt; open it read-only, or repair it with 'strata img check -r all'`,
      );
    }
    const clusterSizeBytes = 2 ** header.clusterBits;
    const { offsets: l1Offsets, copied: l1Copied } = await readL1Table(
      file,
      header.l1TableOffset,
      header.l1Size,
      clusterSizeBytes,
      boundsBytes,
    );
    const layout = {
      clusterBits: header.clusterBits,
      refcountOrder: header.refcountOrder,
      tableOffset: header.refcountTableOffset,
      tableClusters: header.refcountTableClusters,
    };
    // forCheck: a refcount block is outside the file when none of its cluster is in it (as qemu-img check judges).
    const refcountBoundBytes = options.forCheck ? Math.ceil(fileSizeBytes / clusterSizeBytes) * clusterSizeBytes : fileSizeBytes;
    const { table: refTable, broken } = await Refcounts.loadTable(file, layout, refcountBoundBytes);
    if (broken.length > 0 && !readOnly && options.dirtyPolicy !== 'ignore') {
      throw new StorageError(
        'CORRUPT',
        `${file.name}: refcount block ${broken[0]!.index} ${broken[0]!.reason}; open it read-only, or repair it with 'strata img check -r all'`,
      );
    }
    const snapshots = await readSnapshotTable(file, header.snapshotsOffset, header.nbSnapshots, {
      clusterSizeBytes,
      fileSizeBytes: boundsBytes,
    });
    const l2CacheBytes = options.l2CacheBytes ?? defaultL2CacheBytes(header);
    const refcountCacheBytes = options.refcountCacheBytes ?? DEFAULT_REFCOUNT_CACHE_MAX_BYTES;
    let image: Qcow2Image | undefined;
    const refcounts = new Refcounts(
      file,
      layout,
      refTable,
      Math.ceil(refcountCacheBytes / clusterSizeBytes),
      (hostOffset, lengthBytes) => image?.metadataOverlap(hostOffset, lengthBytes),
    );
    image = new Qcow2Image(
      file,
      header,
      readOnly,
      l1Offsets,
      l1Copied,
      refcounts,
      snapshots,
      fileSizeBytes,
      Math.max(4, Math.ceil(l2CacheBytes / clusterSizeBytes)),
    );
    const opened = image;
    // A refcount table entry pointing at fixed metadata (the header, an L1 table, the refcount
    // table itself) would have refcount updates written over that structure: as broken.
    for (const [index, offset] of refTable.entries()) {
      const clash = offset === 0 ? undefined : opened.fixedMetadataOverlap(offset, clusterSizeBytes);
      if (!clash) continue;
      broken.push({ index, kind: 'overlaps-metadata', offset, reason: `points at the ${clash}` });
      refTable[index] = 0;
      if (!readOnly && options.dirtyPolicy !== 'ignore') {
        throw new StorageError(
          'CORRUPT',
          `${file.name}: refcount block ${index} points at the ${clash}; open it read-only, or repair it with 'strata img check -r all'`,
        );
      }
    }
    refcounts.brokenEntries = broken;
    refcounts.onTableMoved = () => opened.commitRefcountTableMove();

    if (header.backingFile !== undefined && !options.ignoreBacking) {
      if (!options.openBacking) {
        throw new StorageError(
          'INVALID_ARGUMENT',
          `${file.name} has backing file '${header.backingFile}' but no way to open backing files was given`,
        );
      }
      opened.backing = await options.openBacking(
        { fileName: header.backingFile, formatName: header.backingFormat, childName: file.name },
        (options.depth ?? 0) + 1,
      );
    }
    if (!readOnly) {
      const dirty = hasIncompatible(header, IncompatibleBit.dirty);
      if (dirty && options.dirtyPolicy !== 'ignore') {
        // A dirty image (lazy refcounts, or a crash during a snapshot operation): refcounts may be
        // stale. Rebuild them before anything allocates, as QEMU does on open.
        const { checkImage } = await import('./check.js');
        await checkImage(opened, 'all');
      } else if (dirty) {
        opened.refcountsUnverified = true;
      }
      // Autoclear features we do not maintain (bitmaps) become invalid once we write; clear them.
      if (opened.header.autoclearFeatures !== 0n) {
        opened.header.autoclearFeatures = 0n;
        await opened.writeHeaderNow();
      }
    }
    return opened;
  }

  get capabilities(): BlockDeviceCapabilities {
    return { readOnly: this.readOnly, discard: true, efficientZeroes: this.header.version >= 3, flush: true, unallocatedReadsZero: !this.backing };
  }

  get corrupt(): boolean {
    return hasIncompatible(this.header, IncompatibleBit.corrupt);
  }

  get compressionType(): 'zlib' | 'zstd' {
    return this.header.compressionType === CompressionTypeId.zstd ? 'zstd' : 'zlib';
  }

  // ---------------------------------------------------------------------------------------------
  // In-flight accounting: flush waits for requests that could still touch a freed cluster, and
  // snapshot-style operations drain everything first.

  private enterIo(): number {
    const epoch = this.ioEpoch;
    this.inFlightByEpoch.set(epoch, (this.inFlightByEpoch.get(epoch) ?? 0) + 1);
    return epoch;
  }

  private exitIo(epoch: number): void {
    const left = (this.inFlightByEpoch.get(epoch) ?? 1) - 1;
    if (left > 0) {
      this.inFlightByEpoch.set(epoch, left);
      return;
    }
    this.inFlightByEpoch.delete(epoch);
    if (this.drainWaiters.length === 0) return;
    const oldest = this.oldestEpochInFlight();
    this.drainWaiters = this.drainWaiters.filter((waiter) => {
      if (waiter.upToEpoch >= oldest) return true;
      waiter.resolve();
      return false;
    });
  }

  private oldestEpochInFlight(): number {
    let oldest = Number.POSITIVE_INFINITY;
    for (const epoch of this.inFlightByEpoch.keys()) if (epoch < oldest) oldest = epoch;
    return oldest;
  }

  /**
   * Waits until every request that started before this call has finished. Never call it with the
   * metadata lock held: a request in flight may be queued on that lock.
   */
  private drainStarted(): Promise<void> {
    const upToEpoch = this.ioEpoch++;
    if (this.oldestEpochInFlight() > upToEpoch) return Promise.resolve();
    return new Promise<void>((resolve) => this.drainWaiters.push({ upToEpoch, resolve }));
  }

  /**
   * Runs fn with the metadata lock held, no request in flight and new requests held back. For
   * operations that rewrite many tables at once (snapshots, resize, repair, close). The drain
   * happens before taking the lock, since requests in flight may be waiting for it.
   */
  async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    while (this.gate) await this.gate;
    let open!: () => void;
    this.gate = new Promise<void>((resolve) => (open = resolve));
    try {
      await this.drainStarted();
      return await this.metaLock.run(fn);
    } finally {
      this.gate = undefined;
      open();
    }
  }

  private async passGate(): Promise<void> {
    while (this.gate) await this.gate;
  }

  private checkWritable(): void {
    if (this.closed) throw new StorageError('INVALID_ARGUMENT', `${this.file.name}: image is closed`);
    if (this.readOnly) {
      const why = this.corrupt ? ' (it is marked corrupt)' : '';
      throw new StorageError('READ_ONLY', `${this.file.name} is open read-only${why}`);
    }
  }

  private checkRange(guestOffset: number, lengthBytes: number): void {
    checkGuestRange(this.file.name, this.sizeBytes, guestOffset, lengthBytes);
  }


  // ---------------------------------------------------------------------------------------------
  // Mapping

  /** The L2 table for an L1 index, or undefined when the L1 entry is empty. */
  private async l2Table(l1Index: number): Promise<CachedTable | undefined> {
    const offset = this.l1Offsets[l1Index] ?? 0;
    if (offset === 0) return undefined;
    return this.l2Cache.peek(offset) ?? this.l2Cache.get(offset);
  }

  /**
   * How this layer maps the guest range starting at guestOffset, up to the end of its cluster (or
   * fewer bytes when the kind changes at a subcluster boundary).
   */
  async lookup(guestOffset: number, maxBytes: number): Promise<SlotRun> {
    const guestCluster = Math.floor(guestOffset / this.clusterSizeBytes);
    const l1Index = Math.floor(guestCluster / this.l2Entries);
    const offsetInCluster = guestOffset - guestCluster * this.clusterSizeBytes;
    const limit = Math.min(maxBytes, this.clusterSizeBytes - offsetInCluster);
    if (l1Index >= this.l1Offsets.length) {
      return { kind: SlotKind.unallocated, hostOffset: 0, lengthBytes: limit, entryHi: 0, entryLo: 0 };
    }
    const table = await this.l2Table(l1Index);
    if (!table) return { kind: SlotKind.unallocated, hostOffset: 0, lengthBytes: limit, entryHi: 0, entryLo: 0 };
    return this.decodeSlot(table, (guestCluster % this.l2Entries) * this.l2EntryBytes, offsetInCluster, limit);
  }

  private decodeSlot(table: CachedTable, position: number, offsetInCluster: number, limit: number): SlotRun {
    const view = table.view;
    const hi = view.getUint32(position);
    const lo = view.getUint32(position + 4);
    if (entryCompressed(hi)) {
      return { kind: SlotKind.compressed, hostOffset: 0, lengthBytes: limit, entryHi: hi, entryLo: lo };
    }
    const hostCluster = entryHostOffset(hi, lo);
    if (entryReservedBits(hi, lo) || hostCluster % this.clusterSizeBytes !== 0) {
      this.corruptionDetected(`L2 entry at host offset ${table.hostOffset + position} is invalid`);
    }
    if (hostCluster !== 0 && hostCluster + this.clusterSizeBytes > this.hostHighWaterBytes) {
      this.corruptionDetected(
        `L2 entry at 0x${(table.hostOffset + position).toString(16)} points past the end of the file (data cluster at 0x${hostCluster.toString(16)}; the file ends at 0x${this.hostHighWaterBytes.toString(16)})`,
      );
    }
    if (!this.extendedL2) {
      const zero = entryZeroFlag(lo);
      const kind =
        hostCluster === 0
          ? zero
            ? SlotKind.zeroPlain
            : SlotKind.unallocated
          : zero
            ? SlotKind.zeroAllocated
            : SlotKind.normal;
      return {
        kind,
        hostOffset: hostCluster === 0 ? 0 : hostCluster + offsetInCluster,
        lengthBytes: limit,
        entryHi: hi,
        entryLo: lo,
      };
    }
    const zeroBits = view.getUint32(position + 8);
    const allocBits = view.getUint32(position + 12);
    if ((zeroBits & allocBits) !== 0 || (hostCluster === 0 && allocBits !== 0) || entryZeroFlag(lo)) {
      this.corruptionDetected(`extended L2 entry at host offset ${table.hostOffset + position} is invalid`);
    }
    const scSize = this.subclusterSizeBytes;
    const first = Math.floor(offsetInCluster / scSize);
    const kindOf = (sc: number): SlotKind => {
      const bit = 1 << sc;
      if (allocBits & bit) return SlotKind.normal;
      if (zeroBits & bit) return hostCluster === 0 ? SlotKind.zeroPlain : SlotKind.zeroAllocated;
      return hostCluster === 0 ? SlotKind.unallocated : SlotKind.unallocatedInAllocated;
    };
    const kind = kindOf(first);
    let end = (first + 1) * scSize;
    for (let sc = first + 1; sc < SUBCLUSTERS_PER_CLUSTER && end < offsetInCluster + limit && kindOf(sc) === kind; sc++) end += scSize;
    return {
      kind,
      hostOffset: hostCluster === 0 ? 0 : hostCluster + offsetInCluster,
      lengthBytes: Math.min(limit, end - offsetInCluster),
      entryHi: hi,
      entryLo: lo,
    };
  }

  /** Marks the image corrupt (durably, when writable: a read-only one stays as it was) and fails the request. */
  corruptionDetected(reason: string): never {
    if (!this.readOnly && !this.corrupt) {
      this.header.incompatibleFeatures = setFeatureBit(this.header.incompatibleFeatures, IncompatibleBit.corrupt, true);
      this.readOnly = true;
      // Best effort: the request fails either way; the bit tells the next opener. close() waits
      // for it (else the file could be closed before the flush that makes the bit durable).
      this.corruptMarking = this.file
        .pwrite(serializeHeader(this.header), 0)
        .then(() => this.file.flush())
        .catch(() => undefined);
    }
    this.readOnly = true;
    throw new StorageError('CORRUPT', `${this.file.name}: ${reason}${this.corrupt ? '; the image is marked corrupt' : ''}`);
  }

  // ---------------------------------------------------------------------------------------------
  // Reads

  async read(guestOffset: number, buf: Uint8Array): Promise<void> {
    this.checkRange(guestOffset, buf.length);
    if (this.gate) await this.passGate();
    const epoch = this.enterIo();
    try {
      await this.readLayer(guestOffset, buf);
    } finally {
      this.exitIo(epoch);
    }
  }

  /** Reads what the guest sees at guestOffset (this layer, then backing), without I/O accounting. */
  async readLayer(guestOffset: number, buf: Uint8Array): Promise<void> {
    const pending: Promise<unknown>[] = [];
    let position = 0;
    let runStart = 0;
    let runHost = -1;
    let runLength = 0;
    const flushRun = () => {
      if (runLength > 0) pending.push(this.file.pread(buf.subarray(runStart, runStart + runLength), runHost));
      runLength = 0;
      runHost = -1;
    };
    while (position < buf.length) {
      const guest = guestOffset + position;
      const run = await this.lookup(guest, buf.length - position).catch((err) => settleThenThrow(pending, err));
      const length = run.lengthBytes;
      switch (run.kind) {
        case SlotKind.normal:
          if (runLength > 0 && runHost + runLength === run.hostOffset) {
            runLength += length;
          } else {
            flushRun();
            runStart = position;
            runHost = run.hostOffset;
            runLength = length;
          }
          break;
        case SlotKind.zeroPlain:
        case SlotKind.zeroAllocated:
          flushRun();
          buf.fill(0, position, position + length);
          break;
        case SlotKind.unallocated:
        case SlotKind.unallocatedInAllocated:
          flushRun();
          pending.push(this.readBacking(guest, buf.subarray(position, position + length)));
          break;
        case SlotKind.compressed:
          flushRun();
          pending.push(this.readCompressed(guest, run, buf.subarray(position, position + length)));
          break;
      }
      position += length;
    }
    flushRun();
    await Promise.all(pending);
  }

  private async readBacking(guestOffset: number, buf: Uint8Array): Promise<void> {
    const backing = this.backing;
    if (!backing || guestOffset >= backing.sizeBytes) {
      buf.fill(0);
      return;
    }
    const inBacking = Math.min(buf.length, backing.sizeBytes - guestOffset);
    await backing.read(guestOffset, buf.subarray(0, inBacking));
    buf.fill(0, inBacking);
  }

  private async readCompressed(guestOffset: number, run: SlotRun, out: Uint8Array): Promise<void> {
    const cluster = await this.decompressRun(run);
    const offsetInCluster = guestOffset % this.clusterSizeBytes;
    out.set(cluster.subarray(offsetInCluster, offsetInCluster + out.length));
  }

  private async decompressRun(run: SlotRun): Promise<Uint8Array> {
    const entry = decodeCompressedEntry(entryToBigInt(run.entryHi & COMPRESSED_HI_DESCRIPTOR_MASK, run.entryLo), this.clusterBits);
    if (entry.hostOffset >= this.hostHighWaterBytes) {
      this.corruptionDetected(`compressed cluster at host offset ${entry.hostOffset} lies past the end of the file`);
    }
    const compressed = new Uint8Array(Math.min(entry.maxLengthBytes, this.clusterSizeBytes * 2));
    await this.file.pread(compressed, entry.hostOffset);
    const cluster = new Uint8Array(this.clusterSizeBytes);
    decompressCluster(this.compressionType, compressed, cluster);
    return cluster;
  }

  // ---------------------------------------------------------------------------------------------
  // Writes

  async write(guestOffset: number, data: Uint8Array, flags?: WriteFlags): Promise<void> {
    this.checkWritable();
    this.checkRange(guestOffset, data.length);
    if (this.gate) await this.passGate();
    const epoch = this.enterIo();
    try {
      await this.writeLayer(guestOffset, data);
    } finally {
      this.exitIo(epoch);
    }
    if (flags?.fua) await this.flush();
  }

  private async writeLayer(guestOffset: number, data: Uint8Array): Promise<void> {
    const pending: Promise<unknown>[] = [];
    let position = 0;
    let runStart = 0;
    let runHost = -1;
    let runLength = 0;
    const flushRun = () => {
      if (runLength > 0) pending.push(this.file.pwrite(data.subarray(runStart, runStart + runLength), runHost));
      runLength = 0;
    };
    // Consecutive clusters that need the slow path go under the lock together, so whole clusters
    // among them can share one contiguous allocation and one host write.
    let slowStart = 0;
    let slowLength = 0;
    const flushSlow = () => {
      if (slowLength === 0) return;
      const start = slowStart;
      const chunk = data.subarray(start, start + slowLength);
      pending.push(this.writeSlow(guestOffset + start, chunk));
      slowLength = 0;
    };
    while (position < data.length) {
      const guest = guestOffset + position;
      const offsetInCluster = guest % this.clusterSizeBytes;
      const length = Math.min(this.clusterSizeBytes - offsetInCluster, data.length - position);
      const host = await this.inPlaceHostOffset(guest, length).catch((err) => settleThenThrow(pending, err));
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
    await Promise.all(pending);
    if (this.l2Cache.overCapacity() || this.refcounts.blocks.overCapacity()) {
      await this.metaLock.run(() => this.relieveCachePressure());
    }
  }

  /**
   * The host offset to write guest bytes in place (the cluster is ours alone, holds data, and with
   * extended L2 every touched subcluster is allocated), or -1 when the slow path must run.
   */
  private async inPlaceHostOffset(guestOffset: number, lengthBytes: number): Promise<number> {
    const guestCluster = Math.floor(guestOffset / this.clusterSizeBytes);
    const l1Index = Math.floor(guestCluster / this.l2Entries);
    if (l1Index >= this.l1Offsets.length || !this.l1Copied[l1Index]) return -1;
    const table = await this.l2Table(l1Index);
    if (!table) return -1;
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
  private async writableL2Table(l1Index: number): Promise<CachedTable> {
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

  async allocateClusters(count: number): Promise<number> {
    const hostOffset = await this.refcounts.allocate(count);
    const end = hostOffset + count * this.clusterSizeBytes;
    if (end > this.hostHighWaterBytes) this.hostHighWaterBytes = end;
    return hostOffset;
  }

  /** Frees whatever host clusters an L2 entry references (deferred until durable). */
  private freeEntryClusters(hi: number, lo: number): void {
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

  private setEntry(table: CachedTable, position: number, hi: number, lo: number, bitmap?: { zero: number; alloc: number }) {
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
  private async writeClusterSlow(guestOffset: number, chunk: Uint8Array): Promise<void> {
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

  // ---------------------------------------------------------------------------------------------
  // Zeroes and discard

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

  // ---------------------------------------------------------------------------------------------
  // Status

  async blockStatus(guestOffset: number, lengthBytes: number): Promise<Extent[]> {
    const extents = await this.mapLayer(guestOffset, lengthBytes);
    return extents.map((e) => ({ guestOffset: e.guestOffset, lengthBytes: e.lengthBytes, kind: e.kind }));
  }

  /**
   * This layer's map of a guest range, merging runs the way qemu-img map does. An empty L1 entry
   * answers for its whole L2 range at once, and each L2 table is scanned without awaiting per
   * cluster, so mapping a large sparse image costs a step per table, not per cluster.
   */
  async mapLayer(guestOffset: number, lengthBytes: number): Promise<Qcow2MapExtent[]> {
    this.checkRange(guestOffset, lengthBytes);
    const out: Qcow2MapExtent[] = [];
    const push = (extent: Qcow2MapExtent) => {
      const last = out[out.length - 1];
      if (last && canMerge(last, extent)) last.lengthBytes += extent.lengthBytes;
      else out.push(extent);
    };
    const cs = this.clusterSizeBytes;
    const l2RangeBytes = this.l2Entries * cs;
    const end = guestOffset + lengthBytes;
    for (let guest = guestOffset; guest < end; ) {
      const l1Index = Math.floor(guest / l2RangeBytes);
      const rangeEnd = Math.min(end, (l1Index + 1) * l2RangeBytes);
      const table = l1Index < this.l1Offsets.length ? await this.l2Table(l1Index) : undefined;
      if (!table) {
        push({ guestOffset: guest, lengthBytes: rangeEnd - guest, kind: 'unallocated' });
        guest = rangeEnd;
        continue;
      }
      while (guest < rangeEnd) {
        const guestCluster = Math.floor(guest / cs);
        const offsetInCluster = guest - guestCluster * cs;
        const position = (guestCluster % this.l2Entries) * this.l2EntryBytes;
        const run = this.decodeSlot(table, position, offsetInCluster, Math.min(rangeEnd - guest, cs - offsetInCluster));
        push(mapExtentOf(guest, run));
        guest += run.lengthBytes;
      }
    }
    return out;
  }

  info(): Qcow2Info {
    const h = this.header;
    const unknownIncompatibleBits: number[] = [];
    for (let bit = 5; bit < 64; bit++) if (h.incompatibleFeatures & (1n << BigInt(bit))) unknownIncompatibleBits.push(bit);
    return {
      virtualSizeBytes: this.sizeBytes,
      clusterSizeBytes: this.clusterSizeBytes,
      version: h.version,
      compat: h.version === 3 ? '1.1' : '0.10',
      compressionType: this.compressionType,
      lazyRefcounts: this.lazyRefcounts,
      refcountBits: 2 ** h.refcountOrder,
      corrupt: this.corrupt,
      dirty: hasIncompatible(h, IncompatibleBit.dirty),
      extendedL2: this.extendedL2,
      backingFile: h.backingFile,
      backingFormat: h.backingFormat,
      dataFile: h.dataFile,
      snapshots: this.listSnapshots(),
      unknownIncompatibleBits,
    };
  }

  listSnapshots(): Qcow2SnapshotInfo[] {
    return this.snapshots.map((s) => ({
      id: s.id,
      name: s.name,
      diskSizeBytes: s.diskSizeBytes ?? this.sizeBytes,
      vmStateSizeBytes: s.vmStateSizeBytes,
      dateSec: s.dateSec,
      dateNsec: s.dateNsec,
      vmClockNsec: Number(s.vmClockNsec),
      icount: s.icount === undefined ? undefined : Number(s.icount),
    }));
  }

  // ---------------------------------------------------------------------------------------------
  // Flush and metadata writeback

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
  private async applyFrees(frees: readonly number[]): Promise<void> {
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
  private async relieveCachePressure(): Promise<void> {
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

  private refcountBlockAt(hostOffset: number): string | undefined {
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

  // ---------------------------------------------------------------------------------------------
  // Whole-image operations

  async resize(newSizeBytes: number, options: { allowShrink?: boolean } = {}): Promise<void> {
    this.checkWritable();
    if (!Number.isSafeInteger(newSizeBytes) || newSizeBytes < 0) {
      throw new StorageError('INVALID_ARGUMENT', `invalid size ${newSizeBytes}`);
    }
    if (newSizeBytes < this.sizeBytes && !options.allowShrink) {
      throw new StorageError('INVALID_ARGUMENT', 'shrinking needs --shrink (data past the new end is lost)');
    }
    if (this.snapshots.length > 0 && (this.header.version < 3 || newSizeBytes < this.sizeBytes)) {
      throw new StorageError('UNSUPPORTED', "can't shrink an image with internal snapshots, or resize a v2 one");
    }
    await this.exclusive(async () => {
      if (newSizeBytes < this.sizeBytes) {
        const firstDropped = Math.ceil(newSizeBytes / this.clusterSizeBytes) * this.clusterSizeBytes;
        if (firstDropped < this.sizeBytes) await this.dropClusters(firstDropped, this.sizeBytes);
      }
      const l1Needed = Math.ceil(newSizeBytes / (this.l2Entries * this.clusterSizeBytes));
      if (l1Needed > this.l1Offsets.length) await this.growL1(l1Needed);
      await this.writebackMetadata();
      this.sizeBytes = newSizeBytes;
      this.header.sizeBytes = newSizeBytes;
      await this.writeHeaderNow();
      await this.applyFrees(this.refcounts.takePendingFrees());
      await this.writebackMetadata();
    });
  }

  /** Makes guest clusters in [start, end) unallocated, freeing their host clusters. Lock held. */
  private async dropClusters(start: number, end: number): Promise<void> {
    for (let guest = start; guest < end; guest += this.clusterSizeBytes) {
      const guestCluster = guest / this.clusterSizeBytes;
      const l1Index = Math.floor(guestCluster / this.l2Entries);
      if ((this.l1Offsets[l1Index] ?? 0) === 0) continue;
      const table = await this.writableL2Table(l1Index);
      const position = (guestCluster % this.l2Entries) * this.l2EntryBytes;
      const hi = table.view.getUint32(position);
      const lo = table.view.getUint32(position + 4);
      this.freeEntryClusters(hi, lo);
      this.setEntry(table, position, 0, 0, { zero: 0, alloc: 0 });
    }
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

  /**
   * Drops every cluster of the active layer (QEMU's make_empty, used by commit): afterwards every
   * range is unallocated and reads from the backing image.
   */
  async makeEmpty(): Promise<void> {
    this.checkWritable();
    if (this.snapshots.length > 0) {
      throw new StorageError('UNSUPPORTED', `${this.file.name} has internal snapshots; it cannot be emptied`);
    }
    await this.exclusive(async () => {
      await this.writebackMetadata();
      await forEachReference(this, this.l1Offsets, (cluster) => this.refcounts.queueFree(cluster));
      this.l1Offsets = this.l1Offsets.map(() => 0);
      this.l1Copied = this.l1Copied.map(() => false);
      this.l1Dirty = true;
      await this.flushLocked();
      await this.writebackMetadata();
    });
  }

  async setBackingFile(fileName: string | undefined, formatName: string | undefined): Promise<void> {
    this.checkWritable();
    await this.exclusive(async () => {
      await this.writebackMetadata();
      this.header.backingFile = fileName;
      this.header.backingFormat = fileName === undefined ? undefined : formatName;
      await this.writeHeaderNow();
    });
  }

  async createSnapshot(name: string): Promise<Qcow2SnapshotInfo> {
    this.checkWritable();
    const { createInternalSnapshot } = await import('./snapshots.js');
    return this.exclusive(() => createInternalSnapshot(this, name));
  }

  async applySnapshot(idOrName: string): Promise<void> {
    this.checkWritable();
    const { applyInternalSnapshot } = await import('./snapshots.js');
    await this.exclusive(() => applyInternalSnapshot(this, idOrName));
  }

  async deleteSnapshot(idOrName: string): Promise<void> {
    this.checkWritable();
    const { deleteInternalSnapshot } = await import('./snapshots.js');
    await this.exclusive(() => deleteInternalSnapshot(this, idOrName));
  }

  async check(repair?: CheckRepairMode): Promise<Qcow2CheckResult> {
    if (repair) this.checkWritable();
    const { checkImage } = await import('./check.js');
    const result = await this.exclusive(() => checkImage(this, repair));
    if (repair && result.corruptions === 0 && result.leaks === 0) this.refcountsUnverified = false;
    return result;
  }

  /** Drops every cached table (after a repair rewrote them on disk). Lock held. */
  resetCaches(): void {
    this.l2Cache.clear();
    this.refcounts.blocks.clear();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    if (!this.readOnly) {
      await this.exclusive(async () => {
        await this.writebackMetadata();
        if (this.refcounts.pendingFreeCount > 0) {
          await this.applyFrees(this.refcounts.takePendingFrees());
          await this.writebackMetadata();
        }
        if (this.lazyRefcounts && hasIncompatible(this.header, IncompatibleBit.dirty) && !this.refcountsUnverified) {
          // Clean close: refcounts are now exact, so the lazy-refcounts dirty bit can go.
          this.header.incompatibleFeatures = setFeatureBit(this.header.incompatibleFeatures, IncompatibleBit.dirty, false);
          await this.writeHeaderNow();
        }
      });
    }
    this.closed = true;
    await this.corruptMarking;
    await this.backing?.close();
    await this.file.close();
  }
}

/**
 * Fails a request part-way through: first lets the I/O it already issued settle, so that a failure
 * among it (a corrupt compressed cluster, say) is handled here and not left as an unhandled
 * rejection, which would end the process.
 */
async function settleThenThrow(pending: Promise<unknown>[], err: unknown): Promise<never> {
  await Promise.allSettled(pending);
  throw err;
}

function defaultL2CacheBytes(header: Qcow2Header): number {
  const clusterSizeBytes = 2 ** header.clusterBits;
  const entryBytes = hasIncompatible(header, IncompatibleBit.extendedL2) ? 16 : 8;
  const tables = Math.ceil(header.sizeBytes / ((clusterSizeBytes / entryBytes) * clusterSizeBytes));
  return Math.min(DEFAULT_L2_CACHE_MAX_BYTES, Math.max(tables, 4) * clusterSizeBytes);
}

function mapExtentOf(guestOffset: number, run: SlotRun): Qcow2MapExtent {
  const lengthBytes = run.lengthBytes;
  switch (run.kind) {
    case SlotKind.normal:
      return { guestOffset, lengthBytes, kind: 'data', hostOffset: run.hostOffset };
    case SlotKind.compressed:
      return { guestOffset, lengthBytes, kind: 'data', compressed: true };
    case SlotKind.zeroAllocated:
      return { guestOffset, lengthBytes, kind: 'zero', hostOffset: run.hostOffset };
    case SlotKind.zeroPlain:
      return { guestOffset, lengthBytes, kind: 'zero' };
    default:
      return { guestOffset, lengthBytes, kind: 'unallocated' };
  }
}

function canMerge(a: Qcow2MapExtent, b: Qcow2MapExtent): boolean {
  if (a.kind !== b.kind || a.compressed !== b.compressed) return false;
  if (a.hostOffset === undefined && b.hostOffset === undefined) return true;
  if (a.hostOffset === undefined || b.hostOffset === undefined) return false;
  return a.hostOffset + a.lengthBytes === b.hostOffset;
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

