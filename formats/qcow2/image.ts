/**
 * Qcow2Image: a qcow2 image over a HostFile, as a BlockDevice. This class opens and creates images
 * and does the whole-image operations (resize, make-empty, backing file, internal snapshots, check,
 * close); the rest comes from the classes it is built from, one responsibility each:
 *
 *   image-state.ts     Qcow2ImageState     fields, geometry, requests in flight, exclusive()
 *   image-metadata.ts  Qcow2ImageMetadata  write-back ordering, flush, allocation, overlap checks
 *   image-read.ts      Qcow2ImageReader    lookup, reads, map and block status
 *   image-write.ts     Qcow2ImageWriter    writes, copy-on-write (copy-up), compressed writes
 *   image-zero.ts      Qcow2ImageZeroer    write-zeroes, discard
 *
 * Check, repair, internal snapshots and reference walking see the image only through
 * Qcow2Internals (internals.ts).
 */
import { StorageError } from '../../src/core/errors.js';
import type { HostFile } from '../../src/core/host-file.js';
import type { Image } from '../../src/core/image.js';
import { checkImage } from './check.js';
import { IncompatibleBit } from './constants.js';
import { createQcow2 } from './create.js';
import { hasIncompatible, parseHeader, setFeatureBit, type Qcow2Header } from './header.js';
import { Qcow2ImageZeroer } from './image-zero.js';
import type { Qcow2Internals } from './internals.js';
import { readL1Table } from './l1-table.js';
import { forEachReference } from './references.js';
import { Refcounts } from './refcounts.js';
import { readSnapshotTable } from './snapshot-table.js';
import { applyInternalSnapshot, createInternalSnapshot, deleteInternalSnapshot } from './snapshots.js';
import type { CheckRepairMode, Qcow2CheckOptions, Qcow2CheckResult, Qcow2CreateOptions, Qcow2OpenOptions, Qcow2SnapshotInfo } from './types.js';

const DEFAULT_L2_CACHE_MAX_BYTES = 32 * 1024 * 1024;
const DEFAULT_REFCOUNT_CACHE_MAX_BYTES = 8 * 1024 * 1024;

export class Qcow2Image extends Qcow2ImageZeroer implements Image, Qcow2Internals {
  static async create(file: HostFile, options: Qcow2CreateOptions): Promise<void> {
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
    return this.exclusive(() => createInternalSnapshot(this, name));
  }

  async applySnapshot(idOrName: string): Promise<void> {
    this.checkWritable();
    await this.exclusive(() => applyInternalSnapshot(this, idOrName));
  }

  async deleteSnapshot(idOrName: string): Promise<void> {
    this.checkWritable();
    await this.exclusive(() => deleteInternalSnapshot(this, idOrName));
  }

  async check(repair?: CheckRepairMode, options: Qcow2CheckOptions = {}): Promise<Qcow2CheckResult> {
    if (repair) this.checkWritable();
    const result = await this.exclusive(() => checkImage(this, repair, options));
    if (repair && result.corruptions === 0 && result.leaks === 0) this.refcountsUnverified = false;
    return result;
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

function defaultL2CacheBytes(header: Qcow2Header): number {
  const clusterSizeBytes = 2 ** header.clusterBits;
  const entryBytes = hasIncompatible(header, IncompatibleBit.extendedL2) ? 16 : 8;
  const tables = Math.ceil(header.sizeBytes / ((clusterSizeBytes / entryBytes) * clusterSizeBytes));
  return Math.min(DEFAULT_L2_CACHE_MAX_BYTES, Math.max(tables, 4) * clusterSizeBytes);
}
