/**
 * Allocation maps and sparse copies over opened qcow2 chains: the primitives behind copy, import,
 * export, flatten, snapshot delete (copy-up) and diff.
 */
import { StorageError } from '../core/errors.js';
import { allocAligned } from '../sys/aligned-buffer.js';
import type { Qcow2Image } from '../../formats/qcow2/index.js';
import { backingOf } from './layers.js';

export interface Range {
  offset: number;
  length: number;
}

export interface KindRange extends Range {
  kind: 'data' | 'zero';
}

/** Maps are computed a window at a time so that a huge sparse volume never builds one huge list. */
export const MAP_WINDOW_BYTES = 4 * 1024 * 1024 * 1024;
/** Bytes read and written per step of a copy. */
export const COPY_CHUNK_BYTES = 1024 * 1024;
/** Zero detection granule: blocks of this size that read as zeroes are not written. */
export const ZERO_GRANULE_BYTES = 64 * 1024;

const ZEROES = Buffer.alloc(COPY_CHUNK_BYTES);

function pushRange<T extends Range & { kind?: string }>(out: T[], item: T): void {
  if (item.length <= 0) return;
  const last = out[out.length - 1];
  if (last && last.offset + last.length === item.offset && last.kind === item.kind) last.length += item.length;
  else out.push(item);
}

/** Calls fn for each window [start, end) covering [offset, offset + length). */
export async function forEachWindow(offset: number, length: number, fn: (start: number, end: number) => Promise<void>): Promise<void> {
  const end = offset + length;
  for (let start = offset; start < end; ) {
    const windowEnd = Math.min(end, Math.floor(start / MAP_WINDOW_BYTES) * MAP_WINDOW_BYTES + MAP_WINDOW_BYTES);
    await fn(start, windowEnd);
    start = windowEnd;
    await yieldNowAndThen();
  }
}

/** This layer's own map over [start, end): past its size counts as unallocated. */
export async function layerMap(image: Qcow2Image, start: number, end: number): Promise<{ offset: number; length: number; kind: 'data' | 'zero' | 'unallocated' }[]> {
  const out: { offset: number; length: number; kind: 'data' | 'zero' | 'unallocated' }[] = [];
  const inside = Math.min(end, image.sizeBytes);
  if (start < inside) {
    for (const e of await image.mapLayer(start, inside - start)) {
      pushRange(out, { offset: e.guestOffset, length: e.lengthBytes, kind: e.kind });
    }
  }
  const tail = Math.max(start, inside);
  if (tail < end) pushRange(out, { offset: tail, length: end - tail, kind: 'unallocated' });
  return out;
}

/**
 * What the chain from `image` down reads over [start, end): 'data' where some layer stores data,
 * 'zero' where the deciding layer says zero, no layer says anything, or a layer ends first.
 */
export async function chainMap(image: Qcow2Image, start: number, end: number): Promise<KindRange[]> {
  const out: KindRange[] = [];
  await walkChain(image, start, end, out);
  return out;
}

async function walkChain(image: Qcow2Image, start: number, end: number, out: KindRange[]): Promise<void> {
  const inside = Math.min(end, image.sizeBytes);
  if (start < inside) {
    const backing = backingOf(image);
    for (const e of await image.mapLayer(start, inside - start)) {
      if (e.kind === 'unallocated') {
        if (backing) await walkChain(backing, e.guestOffset, e.guestOffset + e.lengthBytes, out);
        else pushRange(out, { offset: e.guestOffset, length: e.lengthBytes, kind: 'zero' });
      } else {
        pushRange(out, { offset: e.guestOffset, length: e.lengthBytes, kind: e.kind });
      }
    }
  }
  const tail = Math.max(start, inside);
  if (tail < end) pushRange(out, { offset: tail, length: end - tail, kind: 'zero' });
}

/** Sorts and merges overlapping or touching ranges. */
export function mergeRanges(ranges: Range[]): Range[] {
  const sorted = ranges.filter((r) => r.length > 0).sort((a, b) => a.offset - b.offset);
  const out: Range[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r.offset <= last.offset + last.length) {
      last.length = Math.max(last.length, r.offset + r.length - last.offset);
    } else {
      out.push({ offset: r.offset, length: r.length });
    }
  }
  return out;
}

export function isZero(buf: Uint8Array): boolean {
  for (let done = 0; done < buf.length; done += ZEROES.length) {
    const n = Math.min(ZEROES.length, buf.length - done);
    const view = Buffer.from(buf.buffer, buf.byteOffset + done, n);
    if (!view.equals(n === ZEROES.length ? ZEROES : ZEROES.subarray(0, n))) return false;
  }
  return true;
}

export function checkCancelled(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new StorageError('CANCELLED', 'the operation was cancelled');
}

export interface CopyOptions {
  signal?: AbortSignal;
  /** Called after each chunk with the bytes it covered. */
  onBytes?: (bytes: number) => void;
  /**
   * Blocks that read as zeroes: 'skip' them (the destination reads zeroes there already) or
   * 'write-zeroes' (the destination has a backing file that must not show through).
   */
  zeroBlocks: 'skip' | 'write-zeroes';
}

/** A reusable copy buffer (page-aligned, one chunk). */
export function copyBuffer(): Uint8Array {
  return allocAligned(COPY_CHUNK_BYTES);
}

/**
 * Copies [offset, offset + length) as `read` sees it into `dst`, a zero-granule block at a time:
 * blocks that read as zeroes are skipped or written as zeroes, runs of other blocks are written.
 */
export async function copyRange(
  read: (offset: number, buf: Uint8Array) => Promise<void>,
  dst: Qcow2Image,
  offset: number,
  length: number,
  options: CopyOptions,
  buffer: Uint8Array = copyBuffer(),
): Promise<void> {
  const end = offset + length;
  for (let pos = offset; pos < end; ) {
    checkCancelled(options.signal);
    const chunkEnd = Math.min(end, Math.floor(pos / COPY_CHUNK_BYTES) * COPY_CHUNK_BYTES + COPY_CHUNK_BYTES);
    const buf = buffer.subarray(0, chunkEnd - pos);
    await read(pos, buf);
    await writeSparse(dst, pos, buf, options.zeroBlocks);
    options.onBytes?.(buf.length);
    pos = chunkEnd;
    await yieldNowAndThen();
  }
}

/** The event loop is given a turn at least this often during long copies. */
const YIELD_EVERY_MS = 10;
let lastYieldMs = Date.now();

/**
 * Lets timers and I/O callbacks run now and then. On tmpfs the host file does synchronous I/O whose
 * promises settle at once, so a long copy would otherwise hold the event loop (and the API) until
 * it ends.
 */
export async function yieldNowAndThen(): Promise<void> {
  const now = Date.now();
  if (now - lastYieldMs < YIELD_EVERY_MS) return;
  lastYieldMs = now;
  await new Promise<void>((resolve) => setImmediate(resolve));
}

/** Writes buf at offset into dst, skipping (or zero-writing) granules that are all zeroes. */
export async function writeSparse(dst: Qcow2Image, offset: number, buf: Uint8Array, zeroBlocks: 'skip' | 'write-zeroes'): Promise<void> {
  if (isZero(buf)) {
    if (zeroBlocks === 'write-zeroes') await dst.writeZeroes(offset, buf.length);
    return;
  }
  let runStart = 0;
  let runZero: boolean | undefined;
  const flushRun = async (runEnd: number) => {
    if (runZero === undefined || runEnd <= runStart) return;
    if (!runZero) await dst.write(offset + runStart, buf.subarray(runStart, runEnd));
    else if (zeroBlocks === 'write-zeroes') await dst.writeZeroes(offset + runStart, runEnd - runStart);
  };
  for (let pos = 0; pos < buf.length; ) {
    const absolute = offset + pos;
    const blockEnd = Math.min(buf.length, Math.floor(absolute / ZERO_GRANULE_BYTES) * ZERO_GRANULE_BYTES + ZERO_GRANULE_BYTES - offset);
    const zero = isZero(buf.subarray(pos, blockEnd));
    if (zero !== runZero) {
      await flushRun(pos);
      runStart = pos;
      runZero = zero;
    }
    pos = blockEnd;
  }
  await flushRun(buf.length);
}

/** Sum of lengths. */
export function totalLength(ranges: readonly Range[]): number {
  let total = 0;
  for (const r of ranges) total += r.length;
  return total;
}
