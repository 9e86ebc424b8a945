/**
 * Qcow2ImageState: the state of an open qcow2 image (the bottom of the classes Qcow2Image is built
 * from, one responsibility each: this state, metadata write-back, the read path, the write path,
 * and the image itself), and the accounting of requests in flight.
 *
 * Concurrency: reads and in-place writes to clusters this layer owns run without a lock; anything
 * that changes metadata (allocation, copy-on-write, zeroing, discard, flush) runs under metaLock.
 * Operations that must see no I/O in flight (snapshots, resize) drain and gate new requests
 * (exclusive).
 */
import { StorageError } from '../../src/core/errors.js';
import { checkGuestRange } from '../../src/core/guest-range.js';
import type { BlockDeviceCapabilities } from '../../src/core/block-device.js';
import type { HostFile } from '../../src/core/host-file.js';
import type { Image } from '../../src/core/image.js';
import { AsyncMutex } from './async-mutex.js';
import { CompatibleBit, CompressionTypeId, IncompatibleBit, SUBCLUSTERS_PER_CLUSTER } from './constants.js';
import { hasIncompatible, serializeHeader, setFeatureBit, type Qcow2Header } from './header.js';
import type { Refcounts } from './refcounts.js';
import type { SnapshotEntry } from './snapshot-table.js';
import { TableCache } from './table-cache.js';

export abstract class Qcow2ImageState {
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
  protected compressedTailHostOffset = 0;
  /** Requests in flight per epoch; flush and exclusive() wait for the epochs before theirs. */
  protected readonly inFlightByEpoch = new Map<number, number>();
  protected ioEpoch = 0;
  protected drainWaiters: { upToEpoch: number; resolve: () => void }[] = [];
  protected gate: Promise<void> | undefined;
  protected closed = false;
  /** The write of the corrupt bit, once corruption was detected (see corruptionDetected). */
  protected corruptMarking: Promise<void> | undefined;
  /**
   * Opened writable while dirty with dirtyPolicy 'ignore': the refcounts are not known to be exact,
   * so close() must leave the dirty bit set until a repair that leaves nothing to fix.
   */
  refcountsUnverified = false;

  protected constructor(
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

  protected enterIo(): number {
    const epoch = this.ioEpoch;
    this.inFlightByEpoch.set(epoch, (this.inFlightByEpoch.get(epoch) ?? 0) + 1);
    return epoch;
  }

  protected exitIo(epoch: number): void {
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
  protected drainStarted(): Promise<void> {
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

  protected async passGate(): Promise<void> {
    while (this.gate) await this.gate;
  }

  protected checkWritable(): void {
    if (this.closed) throw new StorageError('INVALID_ARGUMENT', `${this.file.name}: image is closed`);
    if (this.readOnly) {
      const why = this.corrupt ? ' (it is marked corrupt)' : '';
      throw new StorageError('READ_ONLY', `${this.file.name} is open read-only${why}`);
    }
  }

  protected checkRange(guestOffset: number, lengthBytes: number): void {
    checkGuestRange(this.file.name, this.sizeBytes, guestOffset, lengthBytes);
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
}
