/**
 * InflightTracker: the inflight region of VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD, which lets a
 * back-end that crashed with requests in flight be replaced without losing or repeating any.
 *
 * The front-end asks for the region once (GET_INFLIGHT_FD: we hand out a fresh zeroed memfd), keeps
 * it, and hands it back with SET_INFLIGHT_FD on every start and to every back-end it reconnects to.
 * Layout per queue (docs/interop/vhost-user.rst "Inflight I/O tracking", split rings), each queue's
 * part 64-byte aligned:
 *   header  {le64 features, le16 version, le16 desc_num, le16 last_batch_head, le16 used_idx}
 *   desc[desc_num]  {u8 inflight, u8 padding[5], le16 next, le64 counter}
 *
 * Protocol: a popped head is marked inflight with an increasing counter (markInflight); on completion
 * it is linked into the last-batch list before it becomes visible in the used ring
 * (linkBeforePush), then cleared and the used index stored (clearAfterPush). When a ring starts on
 * an initialized region (startRing): if the saved used index lags the used ring, the previous
 * back-end died between pushing a batch and clearing it, so the batch is cleared; every head still
 * marked is resubmitted, oldest first, and popping continues at used.idx + resubmitted (every chain
 * the old back-end popped is either counted in used.idx or still marked).
 *
 * The region is the front-end's memory: its contents are validated before use (version, desc_num,
 * heads against the ring size, a batch no longer than the ring), and a mismatch reinitializes it.
 * The three per-request functions are plain DataView stores on the ring's own view: no allocation.
 */
import { memfdCreate } from '../../sys/memfd.js';
import { mapShared, MAX_MAPPING_BYTES, type MappedRegion } from '../../sys/mmap.js';
import type { ExportLog } from '../log.js';
import type { InflightDescription } from './messages.js';
import { ProtocolError } from './protocol-errors.js';
import { MAX_QUEUE_SIZE } from './virtqueue.js';

/** Per-queue header, per-descriptor state, each queue's region 64-byte aligned. */
const INFLIGHT_QUEUE_HEADER_BYTES = 16;
const INFLIGHT_DESC_BYTES = 16;
const INFLIGHT_ALIGN_BYTES = 64;
const INFLIGHT_VERSION = 1;
/** Header fields (byte offsets). */
const VERSION_OFFSET = 8;
const DESC_NUM_OFFSET = 10;
const LAST_BATCH_HEAD_OFFSET = 12;
const USED_IDX_OFFSET = 14;
/** Descriptor entry fields (byte offsets within the entry). */
const ENTRY_NEXT_OFFSET = 6;
const ENTRY_COUNTER_OFFSET = 8;

export function inflightQueueRegionBytes(queueSize: number): number {
  const raw = INFLIGHT_QUEUE_HEADER_BYTES + INFLIGHT_DESC_BYTES * queueSize;
  return Math.ceil(raw / INFLIGHT_ALIGN_BYTES) * INFLIGHT_ALIGN_BYTES;
}

function entryOffset(head: number): number {
  return INFLIGHT_QUEUE_HEADER_BYTES + head * INFLIGHT_DESC_BYTES;
}

interface InflightRegion {
  mapping: MappedRegion;
  queueCount: number;
  queueSize: number;
  strideBytes: number;
}

/** A ring tracked in the inflight region, as startRing finds it. */
export interface TrackedRing {
  /** This ring's part of the region: its requests are marked and cleared there. */
  view: DataView;
  /** Heads a previous back-end left in flight, oldest first, and the avail index to continue from. */
  resubmit: { heads: number[]; lastAvailIdx: number } | undefined;
}

export class InflightTracker {
  private region: InflightRegion | undefined;
  /** Monotonic counter stamped on inflight entries (resubmission order). */
  private counter = 0;

  constructor(
    /** The device's queue count: the most a region may describe. */
    private readonly queueCount: number,
    private readonly log: ExportLog,
  ) {}

  /**
   * GET_INFLIGHT_FD: a fresh memfd for d's rings. It reads as zeroes, so every queue's part starts
   * uninitialized (version 0). The caller sends the descriptor and then closes it.
   */
  createRegionFd(d: InflightDescription): { fd: number; sizeBytes: number } {
    this.checkShape(d);
    const sizeBytes = d.queueCount * inflightQueueRegionBytes(d.queueSize);
    return { fd: memfdCreate('strata-vhost-inflight', sizeBytes), sizeBytes };
  }

  /** SET_INFLIGHT_FD, before waiting for requests in flight: refuses a region too small for d's rings. */
  checkRegion(d: InflightDescription): void {
    this.checkShape(d);
    const needBytes = d.queueCount * inflightQueueRegionBytes(d.queueSize);
    if (d.mmapSizeBytes < BigInt(needBytes) || d.mmapSizeBytes > BigInt(MAX_MAPPING_BYTES) || d.mmapOffsetBytes > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new ProtocolError(`inflight region of ${d.mmapSizeBytes} bytes (need ${needBytes} for ${d.queueCount} x ${d.queueSize})`);
    }
  }

  /**
   * SET_INFLIGHT_FD, once no request is in flight (checkRegion passed): maps fd (the caller keeps
   * and closes it) and unmaps the previous region. Views of the old region must be dropped by the caller.
   */
  replace(d: InflightDescription, fd: number): void {
    const mapping = mapShared(fd, Number(d.mmapSizeBytes), Number(d.mmapOffsetBytes));
    this.region?.mapping.unmap();
    this.region = { mapping, queueCount: d.queueCount, queueSize: d.queueSize, strideBytes: inflightQueueRegionBytes(d.queueSize) };
  }

  /** Drops the region (RESET_DEVICE, end of connection); no view of it may be used afterwards. */
  unmap(): void {
    this.region?.mapping.unmap();
    this.region = undefined;
  }

  private checkShape(d: InflightDescription): void {
    if (d.queueCount < 1 || d.queueCount > this.queueCount) {
      throw new ProtocolError(`inflight region for ${d.queueCount} queues (this device has ${this.queueCount})`);
    }
    if (d.queueSize < 1 || d.queueSize > MAX_QUEUE_SIZE || (d.queueSize & (d.queueSize - 1)) !== 0) {
      throw new ProtocolError(`inflight queue size ${d.queueSize} is not a power of two in 1..${MAX_QUEUE_SIZE}`);
    }
  }

  /**
   * When ring `index` (of `ringSize` entries, whose used ring stands at ringUsedIdx) starts: undefined
   * if no region tracks it; else its view, initialized, or, if it holds a previous back-end's state,
   * with the last completion batch repaired and the heads to resubmit.
   */
  startRing(index: number, ringSize: number, ringUsedIdx: number): TrackedRing | undefined {
    const r = this.region;
    if (r === undefined) return undefined;
    if (index >= r.queueCount || ringSize > r.queueSize) {
      this.log(`vring ${index}: not tracked in the inflight region (${r.queueCount} x ${r.queueSize} entries)`, 'warn');
      return undefined;
    }
    const b = r.mapping.bytes;
    const v = new DataView(b.buffer, b.byteOffset + index * r.strideBytes, r.strideBytes);
    const descNum = r.queueSize;
    const initialize = (): TrackedRing => {
      new Uint8Array(v.buffer, v.byteOffset, v.byteLength).fill(0);
      v.setUint16(VERSION_OFFSET, INFLIGHT_VERSION, true);
      v.setUint16(DESC_NUM_OFFSET, descNum, true);
      v.setUint16(USED_IDX_OFFSET, ringUsedIdx, true);
      return { view: v, resubmit: undefined };
    };
    if (v.getUint16(VERSION_OFFSET, true) !== INFLIGHT_VERSION || v.getUint16(DESC_NUM_OFFSET, true) !== descNum) return initialize();
    const savedUsedIdx = v.getUint16(USED_IDX_OFFSET, true);
    if (savedUsedIdx !== ringUsedIdx) {
      // The previous back-end died between pushing a batch to the used ring and clearing its entries.
      const batch = (ringUsedIdx - savedUsedIdx) & 0xffff;
      if (batch > ringSize) {
        this.log(`vring ${index}: inflight region does not match the used ring (used ${ringUsedIdx}, saved ${savedUsedIdx}); reinitialized`, 'warn');
        return initialize();
      }
      let head = v.getUint16(LAST_BATCH_HEAD_OFFSET, true);
      for (let i = 0; i < batch && head < descNum; i++) {
        v.setUint8(entryOffset(head), 0);
        head = v.getUint16(entryOffset(head) + ENTRY_NEXT_OFFSET, true);
      }
      v.setUint16(USED_IDX_OFFSET, ringUsedIdx, true);
    }
    const entries: Array<{ head: number; counter: number }> = [];
    for (let head = 0; head < descNum; head++) {
      const o = entryOffset(head);
      if (v.getUint8(o) === 0) continue;
      const counter = v.getUint32(o + ENTRY_COUNTER_OFFSET, true) + v.getUint32(o + ENTRY_COUNTER_OFFSET + 4, true) * 2 ** 32;
      if (head >= ringSize) {
        v.setUint8(o, 0);
        continue;
      }
      entries.push({ head, counter });
      this.counter = Math.max(this.counter, counter + 1);
    }
    if (entries.length === 0) return { view: v, resubmit: undefined };
    entries.sort((a, b) => a.counter - b.counter);
    this.log(`vring ${index}: resubmitting ${entries.length} request(s) left in flight by a previous back-end`, 'info');
    // Every chain the old back-end popped is either completed (counted in used.idx) or still inflight.
    return { view: v, resubmit: { heads: entries.map((e) => e.head), lastAvailIdx: (ringUsedIdx + entries.length) & 0xffff } };
  }

  /** A head was popped (or resubmitted): marked inflight in v, the view startRing returned. */
  markInflight(v: DataView, head: number): void {
    const o = entryOffset(head);
    const counter = this.counter++;
    v.setUint32(o + ENTRY_COUNTER_OFFSET, counter >>> 0, true);
    v.setUint32(o + ENTRY_COUNTER_OFFSET + 4, Math.floor(counter / 2 ** 32), true);
    v.setUint8(o, 1);
  }
}

/** Links head into the last-batch list before it becomes visible in the used ring. */
export function linkBeforePush(v: DataView, head: number): void {
  v.setUint16(entryOffset(head) + ENTRY_NEXT_OFFSET, v.getUint16(LAST_BATCH_HEAD_OFFSET, true), true);
  v.setUint16(LAST_BATCH_HEAD_OFFSET, head, true);
}

/** After head was pushed to the used ring (now at usedIdx): no longer inflight. */
export function clearAfterPush(v: DataView, head: number, usedIdx: number): void {
  v.setUint8(entryOffset(head), 0);
  v.setUint16(USED_IDX_OFFSET, usedIdx, true);
}
