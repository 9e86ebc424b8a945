/**
 * virtio-blk on top of a BlockDevice: feature bits, the config space, and the request handler that
 * turns one descriptor chain into device calls and a status byte.
 *
 * Request framing (virtio 1.x section 5.2.6): device-readable {le32 type, le32 ioprio, le64 sector}
 * header, then the request's readable payload (OUT data, DISCARD/WRITE_ZEROES segments); then the
 * device-writable part: data (IN, GET_ID) and finally the status byte, which is the last byte of
 * the last writable buffer. Descriptor boundaries carry no meaning: the header may be split across
 * buffers and data may share a buffer with the header or the status.
 *
 * Sectors are always 512 bytes in virtio-blk. We also report blk_size = 512 (the logical block):
 * guests then may issue 512-byte-aligned I/O, which every Strata device supports, and 4 KiB is
 * announced as the physical block (TOPOLOGY) so filesystems and partitioners align to 4 KiB anyway.
 * A 4096 blk_size would break guests and tools that assume 512-byte LBAs for no gain here.
 *
 * Data moves straight between the device and guest memory: a request over several data buffers
 * goes to the device in one readSegments/writeSegments call when the device has them (a qcow2 image
 * moves each host run with one preadv/pwritev), so a 1 MiB read or write is not copied in JavaScript
 * at all. For a device without them, requests with many small buffers go through a pooled bounce
 * buffer instead: one device call and a memcpy per buffer is cheaper than a device call per buffer
 * (measured, see DIRECT_MIN_SEGMENT_BYTES).
 */
import { forEachSegment, type BlockDevice } from '../../core/block-device.js';
import { isStorageError } from '../../core/errors.js';
import { allocAligned } from '../../sys/aligned-buffer.js';
import { DeviceErrorReport } from '../error-report.js';
import type { ExportLog } from '../log.js';
import { VirtqueueError, type DescriptorChain } from './virtqueue.js';

// --- feature bits ---------------------------------------------------------------------------------

export const VIRTIO_BLK_F_SIZE_MAX = 1;
export const VIRTIO_BLK_F_SEG_MAX = 2;
export const VIRTIO_BLK_F_GEOMETRY = 4;
export const VIRTIO_BLK_F_RO = 5;
export const VIRTIO_BLK_F_BLK_SIZE = 6;
export const VIRTIO_BLK_F_FLUSH = 9;
export const VIRTIO_BLK_F_TOPOLOGY = 10;
export const VIRTIO_BLK_F_CONFIG_WCE = 11;
export const VIRTIO_BLK_F_MQ = 12;
export const VIRTIO_BLK_F_DISCARD = 13;
export const VIRTIO_BLK_F_WRITE_ZEROES = 14;
export const VIRTIO_F_NOTIFY_ON_EMPTY = 24;
export const VIRTIO_RING_F_INDIRECT_DESC = 28;
export const VIRTIO_RING_F_EVENT_IDX = 29;
export const VIRTIO_F_VERSION_1 = 32;

// --- requests and status --------------------------------------------------------------------------

export const VIRTIO_BLK_T_IN = 0;
export const VIRTIO_BLK_T_OUT = 1;
export const VIRTIO_BLK_T_FLUSH = 4;
export const VIRTIO_BLK_T_GET_ID = 8;
export const VIRTIO_BLK_T_DISCARD = 11;
export const VIRTIO_BLK_T_WRITE_ZEROES = 13;

export const VIRTIO_BLK_S_OK = 0;
export const VIRTIO_BLK_S_IOERR = 1;
export const VIRTIO_BLK_S_UNSUPP = 2;

export const VIRTIO_BLK_SECTOR_BYTES = 512;
export const VIRTIO_BLK_OUT_HEADER_BYTES = 16;
export const VIRTIO_BLK_ID_BYTES = 20;
/** {le64 sector, le32 num_sectors, le32 flags} */
export const VIRTIO_BLK_DISCARD_SEGMENT_BYTES = 16;
export const VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP = 1;
/** struct virtio_blk_config up to write_zeroes_may_unmap and its padding. */
export const BLK_CONFIG_BYTES = 60;

/** Limits announced in the config space and enforced by the handler (one object, so they agree). */
export interface BlkLimits {
  /** Data buffers per request (seg_max); the header and status come on top. */
  segMax: number;
  /** Largest data buffer (size_max). segMax * sizeMaxBytes stays below the virtqueue's 64 MiB chain cap. */
  sizeMaxBytes: number;
  maxDiscardSectors: number;
  maxDiscardSegments: number;
  /** discard_sector_alignment, in 512-byte sectors (Linux's discard granularity). */
  discardAlignmentSectors: number;
  maxWriteZeroesSectors: number;
  maxWriteZeroesSegments: number;
}

export const DEFAULT_BLK_LIMITS: Readonly<BlkLimits> = {
  // 126 + header + status = 128 descriptors: fits the smallest common queue size (QEMU's default).
  segMax: 126,
  // 126 x 512 KiB = 63 MiB < 64 MiB. Linux splits larger physically contiguous runs; that costs a
  // descriptor, nothing else.
  sizeMaxBytes: 512 * 1024,
  // Discard and write-zeroes move no data: large ranges are cheap, and fewer requests are faster.
  maxDiscardSectors: 2 ** 21, // 1 GiB
  // Linux's multi-range discard (fstrim) batches up to 256 ranges; 64 keeps one payload at 1 KiB.
  maxDiscardSegments: 64,
  discardAlignmentSectors: 8, // 4 KiB unless the caller knows the device's granularity (qcow2 cluster)
  maxWriteZeroesSectors: 2 ** 21,
  // Linux sends write-zeroes with one range.
  maxWriteZeroesSegments: 1,
};

export interface BlkFeatureOptions {
  readOnly: boolean;
  /** Offer DISCARD (the device frees space on discard). */
  discard: boolean;
  /** Offer WRITE_ZEROES (default: when writable). */
  writeZeroes?: boolean;
}

/**
 * Virtio feature bits the back-end offers (GET_FEATURES), without vhost-user's own bit 30
 * (VHOST_USER_F_PROTOCOL_FEATURES), which the protocol layer adds. Not offered: GEOMETRY (legacy
 * CHS), CONFIG_WCE (we always need FLUSH), NOTIFY_ON_EMPTY (legacy), RING_PACKED and IN_ORDER
 * (the virtqueue is split-ring only, completions are out of order).
 */
export function blkFeatures(opts: BlkFeatureOptions): bigint {
  let bits =
    bit(VIRTIO_F_VERSION_1) |
    bit(VIRTIO_RING_F_INDIRECT_DESC) |
    bit(VIRTIO_RING_F_EVENT_IDX) |
    bit(VIRTIO_BLK_F_SIZE_MAX) |
    bit(VIRTIO_BLK_F_SEG_MAX) |
    bit(VIRTIO_BLK_F_BLK_SIZE) |
    bit(VIRTIO_BLK_F_TOPOLOGY) |
    bit(VIRTIO_BLK_F_FLUSH) |
    bit(VIRTIO_BLK_F_MQ);
  if (opts.readOnly) {
    bits |= bit(VIRTIO_BLK_F_RO);
  } else {
    if (opts.discard) bits |= bit(VIRTIO_BLK_F_DISCARD);
    if (opts.writeZeroes ?? true) bits |= bit(VIRTIO_BLK_F_WRITE_ZEROES);
  }
  return bits;
}

function bit(n: number): bigint {
  return 1n << BigInt(n);
}

export interface BlkConfigOptions {
  capacityBytes: number;
  /** num_queues (MQ is always offered; 1 is fine). */
  queueCount: number;
  limits?: BlkLimits;
  /** Announced physical block (TOPOLOGY); a power of two >= 512. Default 4096. */
  physicalBlockBytes?: number;
  /** opt_io_size (TOPOLOGY), e.g. the qcow2 cluster size. Default 0: not announced. */
  optimalIoBytes?: number;
  /** write_zeroes_may_unmap: the device can deallocate on write-zeroes with the unmap flag. */
  writeZeroesMayUnmap: boolean;
}

/** struct virtio_blk_config, little-endian, BLK_CONFIG_BYTES long (GET_CONFIG answers a slice). */
export function encodeBlkConfig(opts: BlkConfigOptions): Uint8Array {
  const limits = opts.limits ?? DEFAULT_BLK_LIMITS;
  const physicalBlockBytes = opts.physicalBlockBytes ?? 4096;
  const physicalExp = Math.log2(physicalBlockBytes / VIRTIO_BLK_SECTOR_BYTES);
  if (!Number.isInteger(physicalExp) || physicalExp < 0 || physicalExp > 255) {
    throw new RangeError(`physical block of ${physicalBlockBytes} bytes is not a power of two >= 512`);
  }
  if (!Number.isInteger(opts.queueCount) || opts.queueCount < 1 || opts.queueCount > 0xffff) {
    throw new RangeError(`queue count ${opts.queueCount}`);
  }
  const out = new Uint8Array(BLK_CONFIG_BYTES);
  const dv = new DataView(out.buffer);
  dv.setBigUint64(0, BigInt(Math.floor(opts.capacityBytes / VIRTIO_BLK_SECTOR_BYTES)), true); // capacity
  dv.setUint32(8, limits.sizeMaxBytes, true); // size_max
  dv.setUint32(12, limits.segMax, true); // seg_max
  // 16..19 geometry: not offered, left zero.
  dv.setUint32(20, VIRTIO_BLK_SECTOR_BYTES, true); // blk_size
  dv.setUint8(24, physicalExp); // physical_block_exp
  dv.setUint8(25, 0); // alignment_offset
  dv.setUint16(26, physicalBlockBytes / VIRTIO_BLK_SECTOR_BYTES, true); // min_io_size, in logical blocks
  dv.setUint32(28, Math.floor((opts.optimalIoBytes ?? 0) / VIRTIO_BLK_SECTOR_BYTES), true); // opt_io_size
  dv.setUint8(32, 1); // writeback (only meaningful with CONFIG_WCE; FLUSH implies a write-back cache)
  dv.setUint16(34, opts.queueCount, true); // num_queues
  dv.setUint32(36, limits.maxDiscardSectors, true);
  dv.setUint32(40, limits.maxDiscardSegments, true);
  dv.setUint32(44, limits.discardAlignmentSectors, true);
  dv.setUint32(48, limits.maxWriteZeroesSectors, true);
  dv.setUint32(52, limits.maxWriteZeroesSegments, true);
  dv.setUint8(56, opts.writeZeroesMayUnmap ? 1 : 0);
  return out;
}

// --- request handling ------------------------------------------------------------------------------

/**
 * For a device without readSegments/writeSegments, scattered data (several buffers) goes directly
 * between device and guest memory, one device call per buffer run concurrently, only when the
 * buffers are large on average; otherwise through one
 * bounce buffer (one device call plus a memcpy per buffer). Each extra device call costs ~10-15 us
 * on a qcow2 image (lookup, gate, pread) while copying costs ~25-50 us per MiB. Measured on qcow2
 * in /dev/shm (STRATA_BENCH=1 npx vitest run test/vhost-user/blk.test.ts -t bench; a shared 2-core
 * machine, so +-30% noise), QD1, direct vs bounce, us per request:
 *   64 KiB in 16 x 4 KiB:   IN 255 vs 32,   OUT 205 vs 45   (bounce 5-8x faster)
 *   1 MiB in 256 x 4 KiB:   IN 3270 vs 478, OUT 3092 vs 672
 *   1 MiB in 16 x 64 KiB:   IN 237-497 vs 248-322 (noise: a draw)
 *   1 MiB in 2-4 x 256+ KiB: IN 220-314 vs 219-465, OUT 201-395 vs 254-479 (direct a bit ahead)
 *   4 MiB in 8 x 512 KiB:   IN 1007 vs 1085, OUT 1037 vs 1525
 * A single buffer is always direct (no copy at all), as is the common [header][data][status].
 */
export const DIRECT_MIN_SEGMENT_BYTES = 128 * 1024;
/** At most this many concurrent device calls for one request. */
export const DIRECT_SEGMENTS_MAX = 16;
/** Bounce buffers kept for reuse (each request in flight needs its own). */
const BOUNCE_POOL_MAX = 16;

/** Larger bounce buffers are allocated per request and dropped. */
const BOUNCE_POOLED_MAX_BYTES = 4 * 1024 * 1024;

/** Called once a request's status byte is in guest memory, with the used-ring length. */
export type BlkRequestDone = (chain: DescriptorChain, usedBytes: number) => void;

/**
 * Called instead of done when the device refused a write-type request (write, write-zeroes,
 * discard, flush) for want of space (StorageError NO_SPACE): no status byte was written, the
 * request is still the back-end's to complete (space-wait.ts parks it and runs it again with
 * start()). Reads never come here.
 */
export type BlkRequestPark = (chain: DescriptorChain, done: BlkRequestDone, err: unknown) => void;

export interface BlkRequestHandlerOptions {
  readOnly: boolean;
  /** GET_ID answer; UTF-8, truncated to 20 bytes, NUL-padded. */
  serial: string;
  limits?: BlkLimits;
  /**
   * Device failures are reported here: the first at once, later ones at most once per
   * DEVICE_ERROR_REPORT_INTERVAL_MS with how many were not reported since (../error-report.ts).
   */
  log?: ExportLog;
  /** Milliseconds for that interval (default Date.now; tests pass their own). */
  clock?: () => number;
  /** Tuning/benchmarks: see DIRECT_MIN_SEGMENT_BYTES (0: always direct; Infinity: always bounce). */
  directMinSegmentBytes?: number;
}

/**
 * Executes virtio-blk requests against a BlockDevice.
 *
 * start() reports (handle() resolves with) the used-ring length: the writable bytes of the chain, i.e. up to and
 * including the status byte. The spec defines len as a lower bound on bytes written from the start
 * of the writable buffers, and the status byte is the last of them, so anything shorter would
 * understate what the driver must look at (QEMU reports the same).
 *
 * Guest errors never reject: bad ranges, misaligned lengths, read-only writes, short headers or
 * payloads and device failures complete with IOERR; unknown types and unsupported flags with
 * UNSUPP. The single exception is a chain without any writable byte: there is nowhere to put a
 * status, the request cannot be completed, and start() throws (handle() rejects with) a VirtqueueError before doing
 * any I/O. The caller treats that like a VirtqueueError from pop(): the queue is broken until reset
 * (virtio-blk in QEMU does the same for a missing status byte). It should still not push the chain.
 */
export class BlkRequestHandler {
  private readonly device: BlockDevice;
  private readonly readOnly: boolean;
  private readonly limits: BlkLimits;
  private readonly idBytes: Uint8Array;
  private readonly headerScratch = new Uint8Array(VIRTIO_BLK_OUT_HEADER_BYTES);
  private readonly bouncePool: Uint8Array[] = [];
  private readonly directMinSegmentBytes: number;
  private readonly deviceErrorReport: DeviceErrorReport;

  constructor(device: BlockDevice, opts: BlkRequestHandlerOptions) {
    this.device = device;
    this.readOnly = opts.readOnly || device.capabilities.readOnly;
    this.limits = opts.limits ?? DEFAULT_BLK_LIMITS;
    this.deviceErrorReport = new DeviceErrorReport({
      log: opts.log ?? (() => {}),
      subject: 'virtio-blk',
      peer: 'guest',
      ...(opts.clock !== undefined ? { clock: opts.clock } : {}),
    });
    this.directMinSegmentBytes = opts.directMinSegmentBytes ?? DIRECT_MIN_SEGMENT_BYTES;
    this.idBytes = new Uint8Array(VIRTIO_BLK_ID_BYTES);
    this.idBytes.set(new TextEncoder().encode(opts.serial).subarray(0, VIRTIO_BLK_ID_BYTES));
  }

  /** Device calls that failed (logged as DeviceErrorReport decides). */
  get deviceErrors(): number {
    return this.deviceErrorReport.errors;
  }

  /** start() as a promise of the used-ring length (rejects with VirtqueueError as start() throws). */
  handle(chain: DescriptorChain): Promise<number> {
    return new Promise((resolve) => this.start(chain, (_chain, usedBytes) => resolve(usedBytes)));
  }

  /** Completes a request with IOERR without running it (a parked request its front-end cannot get back). */
  fail(chain: DescriptorChain, done: BlkRequestDone): void {
    const writable = chain.writable;
    const statusBuffer = writable[writable.length - 1]!;
    statusBuffer[statusBuffer.length - 1] = VIRTIO_BLK_S_IOERR;
    done(chain, chain.writableBytes);
  }

  /**
   * Runs one request; done(chain, usedBytes) runs once its status byte is written: synchronously
   * when no device call was needed (GET_ID, refused requests), else from the device promise's
   * own reaction. The ring's hot path: per request one promise reaction, no async frames between
   * the device and the used ring. Throws VirtqueueError, before any I/O, for a chain without a
   * status byte; done is then never called. With park, a write-type request the device refused
   * for want of space goes to park instead of done (its status byte untouched).
   */
  start(chain: DescriptorChain, done: BlkRequestDone, park?: BlkRequestPark): void {
    const writable = chain.writable;
    const statusBuffer = writable[writable.length - 1];
    if (statusBuffer === undefined) {
      throw new VirtqueueError(`virtio-blk request ${chain.head} has no writable status byte`);
    }
    const statusIndex = statusBuffer.length - 1;
    let result: Promise<void> | number;
    try {
      result = this.execute(chain);
    } catch (err) {
      if (park !== undefined && this.parks(chain, err)) {
        park(chain, done, err);
        return;
      }
      this.noteDeviceError(err);
      result = VIRTIO_BLK_S_IOERR;
    }
    if (typeof result === 'number') {
      statusBuffer[statusIndex] = result;
      done(chain, chain.writableBytes);
      return;
    }
    result.then(
      () => {
        // Refusals are decided before any I/O (a number above); a promise that settles is the
        // device's answer, whatever value a device resolves with.
        statusBuffer[statusIndex] = VIRTIO_BLK_S_OK;
        done(chain, chain.writableBytes);
      },
      (err: unknown) => {
        if (park !== undefined && this.parks(chain, err)) {
          park(chain, done, err);
          return;
        }
        this.noteDeviceError(err);
        statusBuffer[statusIndex] = VIRTIO_BLK_S_IOERR;
        done(chain, chain.writableBytes);
      },
    );
  }

  /**
   * A status decided without I/O, or the device work's promise (fulfilled: OK; rejected: IOERR).
   * Everything read from guest memory is read before the first await. May throw (a device
   * failing synchronously): start() reports IOERR.
   */
  private execute(chain: DescriptorChain): Promise<void> | number {
    if (chain.readableBytes < VIRTIO_BLK_OUT_HEADER_BYTES) return VIRTIO_BLK_S_IOERR;
    let header = chain.readable[0]!;
    if (header.length < VIRTIO_BLK_OUT_HEADER_BYTES) {
      copyOut(chain.readable, 0, this.headerScratch);
      header = this.headerScratch;
    }
    const type = le32(header, 0);
    const sectorLow = le32(header, 8);
    const sectorHigh = le32(header, 12);
    switch (type) {
      case VIRTIO_BLK_T_IN:
        return this.read(chain, sectorLow, sectorHigh);
      case VIRTIO_BLK_T_OUT:
        return this.write(chain, sectorLow, sectorHigh);
      case VIRTIO_BLK_T_FLUSH:
        return this.device.flush();
      case VIRTIO_BLK_T_GET_ID:
        return this.getId(chain);
      case VIRTIO_BLK_T_DISCARD:
      case VIRTIO_BLK_T_WRITE_ZEROES:
        return this.discardOrWriteZeroes(chain, type);
      default:
        return VIRTIO_BLK_S_UNSUPP;
    }
  }

  /**
   * Whether a failure is one to wait out: the device ran out of space (NO_SPACE) on a request that
   * writes (OUT, WRITE_ZEROES, DISCARD, FLUSH). The header is read again from guest memory, which
   * is still mapped: the request is in flight until it completes.
   */
  private parks(chain: DescriptorChain, err: unknown): boolean {
    if (!isStorageError(err) || err.code !== 'NO_SPACE' || chain.readableBytes < VIRTIO_BLK_OUT_HEADER_BYTES) return false;
    copyOut(chain.readable, 0, this.headerScratch);
    const type = le32(this.headerScratch, 0);
    return type === VIRTIO_BLK_T_OUT || type === VIRTIO_BLK_T_WRITE_ZEROES || type === VIRTIO_BLK_T_DISCARD || type === VIRTIO_BLK_T_FLUSH;
  }

  /** Byte offset of a data request, or -1 when [sector, +lengthBytes) is not within the device. */
  private dataOffset(sectorLow: number, sectorHigh: number, lengthBytes: number): number {
    if (lengthBytes % VIRTIO_BLK_SECTOR_BYTES !== 0) return -1;
    // sector < 2^53 here; sector * 512 may round above 2^53 but then it is far beyond any device.
    if (sectorHigh >= 2 ** 21) return -1;
    const offset = (sectorHigh * 2 ** 32 + sectorLow) * VIRTIO_BLK_SECTOR_BYTES;
    return offset + lengthBytes <= this.device.sizeBytes ? offset : -1;
  }

  /** The common shapes, [data, status] and [data+status], go straight to the device: no async frame. */
  private read(chain: DescriptorChain, sectorLow: number, sectorHigh: number): Promise<void> | number {
    const dataBytes = chain.writableBytes - 1;
    const offset = this.dataOffset(sectorLow, sectorHigh, dataBytes);
    if (offset < 0) return VIRTIO_BLK_S_IOERR;
    if (dataBytes === 0) return VIRTIO_BLK_S_OK;
    const writable = chain.writable;
    const first = writable[0]!;
    if (writable.length <= 2 && first.length >= dataBytes) {
      return this.device.read(offset, first.length > dataBytes ? first.subarray(0, dataBytes) : first);
    }
    return this.readScattered(writable, offset, dataBytes);
  }

  private async readScattered(writable: readonly Uint8Array[], offset: number, dataBytes: number): Promise<void> {
    const segments = sliceSegments(writable, 0, dataBytes);
    const device = this.device;
    if (this.direct(segments, dataBytes, device.readSegments !== undefined)) {
      await (device.readSegments !== undefined ? device.readSegments(offset, segments) : forEachSegment(offset, segments, (o, s) => device.read(o, s)));
      return;
    }
    const bounce = this.takeBounce(dataBytes);
    try {
      const data = bounce.subarray(0, dataBytes);
      await this.device.read(offset, data);
      copyIn(data, segments);
    } finally {
      this.returnBounce(bounce);
    }
  }

  /** Like read(): [header, data] and [header+data] go straight to the device. */
  private write(chain: DescriptorChain, sectorLow: number, sectorHigh: number): Promise<void> | number {
    if (this.readOnly) return VIRTIO_BLK_S_IOERR;
    const dataBytes = chain.readableBytes - VIRTIO_BLK_OUT_HEADER_BYTES;
    const offset = this.dataOffset(sectorLow, sectorHigh, dataBytes);
    if (offset < 0) return VIRTIO_BLK_S_IOERR;
    if (dataBytes === 0) return VIRTIO_BLK_S_OK;
    const readable = chain.readable;
    const first = readable[0]!;
    if (readable.length === 2 && first.length === VIRTIO_BLK_OUT_HEADER_BYTES) return this.device.write(offset, readable[1]!);
    if (readable.length === 1) return this.device.write(offset, first.subarray(VIRTIO_BLK_OUT_HEADER_BYTES));
    return this.writeScattered(readable, offset, dataBytes);
  }

  private async writeScattered(readable: readonly Uint8Array[], offset: number, dataBytes: number): Promise<void> {
    const segments = sliceSegments(readable, VIRTIO_BLK_OUT_HEADER_BYTES, dataBytes);
    const device = this.device;
    if (this.direct(segments, dataBytes, device.writeSegments !== undefined)) {
      await (device.writeSegments !== undefined ? device.writeSegments(offset, segments) : forEachSegment(offset, segments, (o, s) => device.write(o, s)));
      return;
    }
    // Gathered into our own buffer before the first await: the device sees one snapshot.
    const bounce = this.takeBounce(dataBytes);
    try {
      const data = bounce.subarray(0, dataBytes);
      copyOut(segments, 0, data);
      await this.device.write(offset, data);
    } finally {
      this.returnBounce(bounce);
    }
  }

  private getId(chain: DescriptorChain): number {
    const capacityBytes = chain.writableBytes - 1;
    const n = Math.min(VIRTIO_BLK_ID_BYTES, capacityBytes);
    if (n > 0) copyIn(this.idBytes.subarray(0, n), sliceSegments(chain.writable, 0, n));
    return VIRTIO_BLK_S_OK;
  }

  /** Every range is validated synchronously (a refusal is a number); the device calls follow. */
  private discardOrWriteZeroes(chain: DescriptorChain, type: number): Promise<void> | number {
    const isDiscard = type === VIRTIO_BLK_T_DISCARD;
    if (this.readOnly) return VIRTIO_BLK_S_IOERR;
    if (isDiscard && !this.device.capabilities.discard) return VIRTIO_BLK_S_UNSUPP;
    const payloadBytes = chain.readableBytes - VIRTIO_BLK_OUT_HEADER_BYTES;
    const count = payloadBytes / VIRTIO_BLK_DISCARD_SEGMENT_BYTES;
    const maxSegments = isDiscard ? this.limits.maxDiscardSegments : this.limits.maxWriteZeroesSegments;
    const maxSectors = isDiscard ? this.limits.maxDiscardSectors : this.limits.maxWriteZeroesSectors;
    if (!Number.isInteger(count) || count < 1 || count > maxSegments) return VIRTIO_BLK_S_IOERR;
    // Copy the segments out of guest memory once (payload is at most 64 x 16 bytes), then validate
    // every one before touching the device: a request either runs entirely or not at all.
    const payload = new Uint8Array(payloadBytes);
    copyOut(chain.readable, VIRTIO_BLK_OUT_HEADER_BYTES, payload);
    const offsets: number[] = [];
    const lengths: number[] = [];
    const unmaps: boolean[] = [];
    for (let i = 0; i < count; i++) {
      const o = i * VIRTIO_BLK_DISCARD_SEGMENT_BYTES;
      const sectors = le32(payload, o + 8);
      const flags = le32(payload, o + 12);
      // Unknown flags -> UNSUPP; the unmap flag is only defined for write-zeroes (spec 5.2.6.2).
      if ((flags & ~VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) !== 0) return VIRTIO_BLK_S_UNSUPP;
      if (isDiscard && flags !== 0) return VIRTIO_BLK_S_UNSUPP;
      if (sectors > maxSectors) return VIRTIO_BLK_S_IOERR;
      const lengthBytes = sectors * VIRTIO_BLK_SECTOR_BYTES;
      const offset = this.dataOffset(le32(payload, o), le32(payload, o + 4), lengthBytes);
      if (offset < 0) return VIRTIO_BLK_S_IOERR;
      offsets.push(offset);
      lengths.push(lengthBytes);
      unmaps.push(flags !== 0);
    }
    return this.applyRanges(isDiscard, offsets, lengths, unmaps);
  }

  private async applyRanges(isDiscard: boolean, offsets: number[], lengths: number[], unmaps: boolean[]): Promise<void> {
    for (let i = 0; i < offsets.length; i++) {
      const lengthBytes = lengths[i]!;
      if (lengthBytes === 0) continue;
      if (isDiscard) await this.device.discard(offsets[i]!, lengthBytes);
      else await this.device.writeZeroes(offsets[i]!, lengthBytes, { mayUnmap: unmaps[i]! });
    }
  }

  /**
   * Whether the data goes straight between guest memory and the device: always when the device
   * takes the segments in one call (readSegments/writeSegments: a qcow2 image maps the request once
   * and moves each host run with one preadv/pwritev), else by DIRECT_MIN_SEGMENT_BYTES.
   */
  private direct(segments: readonly Uint8Array[], dataBytes: number, vectored: boolean): boolean {
    if (segments.length === 1 || (vectored && this.directMinSegmentBytes !== Number.POSITIVE_INFINITY)) return true;
    return segments.length <= DIRECT_SEGMENTS_MAX && dataBytes >= segments.length * this.directMinSegmentBytes;
  }

  /** A page-aligned buffer of at least lengthBytes; give it back with returnBounce. */
  private takeBounce(lengthBytes: number): Uint8Array {
    const pool = this.bouncePool;
    for (let i = pool.length - 1; i >= 0; i--) {
      if (pool[i]!.length >= lengthBytes) return pool.splice(i, 1)[0]!;
    }
    if (lengthBytes > BOUNCE_POOLED_MAX_BYTES) return allocAligned(lengthBytes);
    // Round up so one pooled buffer serves the sizes around it (1 MiB requests share 1 MiB buffers).
    let capacityBytes = 64 * 1024;
    while (capacityBytes < lengthBytes) capacityBytes *= 2;
    return allocAligned(capacityBytes);
  }

  private returnBounce(buffer: Uint8Array): void {
    if (buffer.length > BOUNCE_POOLED_MAX_BYTES || this.bouncePool.length >= BOUNCE_POOL_MAX) return;
    this.bouncePool.push(buffer);
  }

  private noteDeviceError(err: unknown): void {
    this.deviceErrorReport.note(err, 'IOERR');
  }
}

function le32(bytes: Uint8Array, offset: number): number {
  return (bytes[offset]! | (bytes[offset + 1]! << 8) | (bytes[offset + 2]! << 16) | (bytes[offset + 3]! << 24)) >>> 0;
}

/** Views of [skipBytes, skipBytes + takeBytes) of the concatenation of `views`. */
function sliceSegments(views: readonly Uint8Array[], skipBytes: number, takeBytes: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  let skip = skipBytes;
  let take = takeBytes;
  for (let i = 0; i < views.length && take > 0; i++) {
    const v = views[i]!;
    if (skip >= v.length) {
      skip -= v.length;
      continue;
    }
    const n = Math.min(v.length - skip, take);
    out.push(skip === 0 && n === v.length ? v : v.subarray(skip, skip + n));
    skip = 0;
    take -= n;
  }
  return out;
}

/** Copies bytes [skipBytes, skipBytes + out.length) of the concatenation of `views` into out. */
function copyOut(views: readonly Uint8Array[], skipBytes: number, out: Uint8Array): void {
  let skip = skipBytes;
  let position = 0;
  for (let i = 0; i < views.length && position < out.length; i++) {
    const v = views[i]!;
    if (skip >= v.length) {
      skip -= v.length;
      continue;
    }
    const n = Math.min(v.length - skip, out.length - position);
    out.set(skip === 0 && n === v.length ? v : v.subarray(skip, skip + n), position);
    skip = 0;
    position += n;
  }
}

/** Scatters `data` over `segments` (whose total length is data.length). */
function copyIn(data: Uint8Array, segments: readonly Uint8Array[]): void {
  let position = 0;
  for (const s of segments) {
    s.set(position === 0 && s.length === data.length ? data : data.subarray(position, position + s.length));
    position += s.length;
  }
}

