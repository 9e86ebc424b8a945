/**
 * Qcow2ImageReader: the read path. Mapping a guest range through the L1 and L2 tables (lookup,
 * map, block status) and reading it: data runs from the file, zeroes, the backing image, and
 * compressed clusters.
 *
 * Guest offsets (what the guest addresses) and host offsets (positions in the image file) never
 * mix: every variable says which it is.
 */
import type { Extent } from '../../src/core/block-device.js';
import { decodeCompressedEntry, decompressCluster } from './compression.js';
import { COMPRESSED_HI_DESCRIPTOR_MASK, IncompatibleBit, SUBCLUSTER_BITMAP_HALF_ALL, SUBCLUSTERS_PER_CLUSTER } from './constants.js';
import { hasIncompatible } from './header.js';
import { Qcow2ImageMetadata } from './image-metadata.js';
import { SlotKind, entryCompressed, entryHostOffset, entryReservedBits, entryToBigInt, entryZeroFlag } from './l2-entry.js';
import { Segments, preadRun } from './segments.js';
import type { CachedTable } from './table-cache.js';
import type { Qcow2Info, Qcow2MapExtent, Qcow2SnapshotInfo } from './types.js';

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

export abstract class Qcow2ImageReader extends Qcow2ImageMetadata {
  /** The L2 table for an L1 index, or undefined when the L1 entry is empty. */
  protected async l2Table(l1Index: number): Promise<CachedTable | undefined> {
    const offset = this.l1Offsets[l1Index] ?? 0;
    if (offset === 0) return undefined;
    return this.l2Cache.peek(offset) ?? this.l2Cache.get(offset);
  }

  /**
   * How this layer maps the guest range starting at guestOffset, up to the end of its cluster (or
   * fewer bytes when the kind changes at a subcluster boundary).
   */
  async lookup(guestOffset: number, maxBytes: number): Promise<SlotRun> {
    return this.lookupCached(guestOffset, maxBytes) ?? this.lookupLoading(guestOffset, maxBytes);
  }

  /**
   * lookup without a promise when the answer needs no table load (the L2 table is cached, or the
   * L1 entry is empty): a 1 MiB request maps 16 clusters without 16 awaits. Undefined otherwise.
   */
  protected lookupCached(guestOffset: number, maxBytes: number): SlotRun | undefined {
    const guestCluster = Math.floor(guestOffset / this.clusterSizeBytes);
    const l1Index = Math.floor(guestCluster / this.l2Entries);
    const offsetInCluster = guestOffset - guestCluster * this.clusterSizeBytes;
    const limit = Math.min(maxBytes, this.clusterSizeBytes - offsetInCluster);
    const l2Offset = l1Index < this.l1Offsets.length ? (this.l1Offsets[l1Index] ?? 0) : 0;
    if (l2Offset === 0) return { kind: SlotKind.unallocated, hostOffset: 0, lengthBytes: limit, entryHi: 0, entryLo: 0 };
    const table = this.l2Cache.peek(l2Offset);
    if (table === undefined) return undefined;
    return this.decodeSlot(table, (guestCluster % this.l2Entries) * this.l2EntryBytes, offsetInCluster, limit);
  }

  private async lookupLoading(guestOffset: number, maxBytes: number): Promise<SlotRun> {
    const guestCluster = Math.floor(guestOffset / this.clusterSizeBytes);
    const l1Index = Math.floor(guestCluster / this.l2Entries);
    const offsetInCluster = guestOffset - guestCluster * this.clusterSizeBytes;
    const limit = Math.min(maxBytes, this.clusterSizeBytes - offsetInCluster);
    const table = l1Index < this.l1Offsets.length ? await this.l2Table(l1Index) : undefined;
    if (!table) return { kind: SlotKind.unallocated, hostOffset: 0, lengthBytes: limit, entryHi: 0, entryLo: 0 };
    return this.decodeSlot(table, (guestCluster % this.l2Entries) * this.l2EntryBytes, offsetInCluster, limit);
  }

  protected decodeSlot(table: CachedTable, position: number, offsetInCluster: number, limit: number): SlotRun {
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

  /**
   * How many bytes from guestOffset (a cluster boundary) continue a data run at hostOffset: whole
   * data clusters that lie back to back in the file, scanned in the cached L2 table without a
   * SlotRun per cluster (a 1 MiB read maps 16 clusters in one loop), at most maxBytes. Stops, for
   * readLayerInto's per-cluster lookup to take over, at anything else: another table, a zero,
   * compressed or partly allocated cluster, a host cluster elsewhere, and an entry decodeSlot would
   * call corrupt (reserved bits, past the end of the file), so the checks stay in one place.
   */
  protected dataRunAfter(guestOffset: number, hostOffset: number, maxBytes: number): number {
    const cs = this.clusterSizeBytes;
    const guestCluster = guestOffset / cs;
    if (!Number.isInteger(guestCluster)) return 0;
    const l1Index = Math.floor(guestCluster / this.l2Entries);
    const l2Offset = l1Index < this.l1Offsets.length ? (this.l1Offsets[l1Index] ?? 0) : 0;
    const table = l2Offset === 0 ? undefined : this.l2Cache.peek(l2Offset);
    if (table === undefined) return 0;
    const view = table.view;
    const entryBytes = this.l2EntryBytes;
    const extended = this.extendedL2;
    const tableEnd = this.l2Entries * entryBytes;
    let bytes = 0;
    let host = hostOffset;
    for (let position = (guestCluster % this.l2Entries) * entryBytes; position < tableEnd && bytes < maxBytes; position += entryBytes) {
      const hi = view.getUint32(position);
      const lo = view.getUint32(position + 4);
      if (entryCompressed(hi) || entryZeroFlag(lo) || entryReservedBits(hi, lo) || entryHostOffset(hi, lo) !== host) break;
      if (host + cs > this.hostHighWaterBytes) break;
      if (extended && (view.getUint32(position + 8) !== 0 || view.getUint32(position + 12) !== SUBCLUSTER_BITMAP_HALF_ALL)) break;
      bytes += cs;
      host += cs;
    }
    return Math.min(bytes, maxBytes);
  }

  // ---------------------------------------------------------------------------------------------
  // Reads

  async read(guestOffset: number, buf: Uint8Array): Promise<void> {
    this.checkRange(guestOffset, buf.length);
    if (this.gate) await this.passGate();
    const epoch = this.enterIo();
    try {
      await this.readLayerInto(guestOffset, Segments.of(buf));
    } finally {
      this.exitIo(epoch);
    }
  }

  /**
   * One read into buffers that lie back to back from guestOffset (a vhost-user request over
   * several guest memory descriptors): mapped once, each contiguous host run read with one preadv
   * straight into the buffers (BlockDevice.readSegments).
   */
  async readSegments(guestOffset: number, segments: readonly Uint8Array[]): Promise<void> {
    const target = Segments.list(segments);
    this.checkRange(guestOffset, target.totalBytes);
    if (this.gate) await this.passGate();
    const epoch = this.enterIo();
    try {
      await this.readLayerInto(guestOffset, target);
    } finally {
      this.exitIo(epoch);
    }
  }

  /** Reads what the guest sees at guestOffset (this layer, then backing), without I/O accounting. */
  readLayer(guestOffset: number, buf: Uint8Array): Promise<void> {
    return this.readLayerInto(guestOffset, Segments.of(buf));
  }

  /** readLayer into segments: one preadv per contiguous host run. */
  protected async readLayerInto(guestOffset: number, target: Segments): Promise<void> {
    const pending: Promise<unknown>[] = [];
    const totalBytes = target.totalBytes;
    let position = 0;
    let runStart = 0;
    let runHost = -1;
    let runLength = 0;
    const flushRun = () => {
      if (runLength > 0) pending.push(preadRun(this.file, target.slices(runStart, runLength), runHost));
      runLength = 0;
      runHost = -1;
    };
    while (position < totalBytes) {
      const guest = guestOffset + position;
      let run: SlotRun;
      try {
        run = this.lookupCached(guest, totalBytes - position) ?? (await this.lookupLoading(guest, totalBytes - position));
      } catch (err) {
        return settleThenThrow(pending, err);
      }
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
          // The clusters after this one that continue its host run, in one scan of the table.
          if (position + length < totalBytes) {
            const more = this.dataRunAfter(guest + length, run.hostOffset + length, totalBytes - position - length);
            runLength += more;
            position += more;
          }
          break;
        case SlotKind.zeroPlain:
        case SlotKind.zeroAllocated:
          flushRun();
          target.zero(position, length);
          break;
        case SlotKind.unallocated:
        case SlotKind.unallocatedInAllocated:
          flushRun();
          pending.push(target.fillWith(position, length, (buf) => this.readBacking(guest, buf)));
          break;
        case SlotKind.compressed:
          flushRun();
          pending.push(target.fillWith(position, length, (buf) => this.readCompressed(guest, run, buf)));
          break;
      }
      position += length;
    }
    flushRun();
    // Most requests are one host run: await its promise itself, without Promise.all's array,
    // element callbacks and extra promise.
    if (pending.length === 1) await pending[0];
    else if (pending.length > 1) await Promise.all(pending);
  }

  protected async readBacking(guestOffset: number, buf: Uint8Array): Promise<void> {
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
}

/**
 * Fails a request part-way through: first lets the I/O it already issued settle, so that a failure
 * among it (a corrupt compressed cluster, say) is handled here and not left as an unhandled
 * rejection, which would end the process.
 */
export async function settleThenThrow(pending: Promise<unknown>[], err: unknown): Promise<never> {
  await Promise.allSettled(pending);
  throw err;
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
