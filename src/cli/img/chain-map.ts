/**
 * Allocation of a whole backing chain, the way qemu-img map sees it: for each guest range, the
 * first layer (from the top) that decides its contents, whether it stores data or zeroes, and where
 * the data lives in that layer's file. map prints it; convert, compare, commit and rebase use it to
 * skip ranges that read as zeroes or that a layer leaves to its backing.
 */
import type { Image } from '../../core/image.js';
import { GiB } from '../../core/units.js';
import { asQcow2, type ChainLayer } from './open-image.js';

/** One run of the chain map, with qemu-img map --output=json's fields. */
export interface ChainExtent {
  start: number;
  length: number;
  /** Index of the deciding layer (0 = top). */
  depth: number;
  /** Some layer stores something for the range (data or zeroes). */
  present: boolean;
  zero: boolean;
  data: boolean;
  /** Host offset in the deciding layer's file, when the data is stored plainly there. */
  offset: number | undefined;
  compressed: boolean;
  /** The deciding layer's path (qemu-img map's human "File" column). */
  filename: string;
}

export interface LayerExtent {
  guestOffset: number;
  lengthBytes: number;
  kind: 'data' | 'zero' | 'unallocated';
  hostOffset?: number | undefined;
  compressed?: boolean | undefined;
}

/** Allocation of one layer only: qcow2's mapLayer, or blockStatus with raw's 1:1 host offsets. */
export async function layerExtents(image: Image, offset: number, length: number): Promise<LayerExtent[]> {
  const end = Math.min(offset + length, image.sizeBytes);
  if (end <= offset) return [];
  const qcow2 = asQcow2(image);
  if (qcow2 !== undefined) return qcow2.mapLayer(offset, end - offset);
  const extents = await image.blockStatus(offset, end - offset);
  if (image.formatName === 'raw') {
    // Raw stores guest offset N at host offset N; holes read as zeroes and are never "unallocated".
    return extents.map((e) => ({
      guestOffset: e.guestOffset,
      lengthBytes: e.lengthBytes,
      kind: e.kind === 'data' ? 'data' : 'zero',
      hostOffset: e.guestOffset,
    }));
  }
  return extents.map((e) => ({ guestOffset: e.guestOffset, lengthBytes: e.lengthBytes, kind: e.kind }));
}

/** Walk window: the top-level range is queried in pieces of at most this many bytes. */
const WINDOW_BYTES = GiB;

async function resolve(
  layers: readonly ChainLayer[],
  depth: number,
  offset: number,
  length: number,
  out: ChainExtent[],
): Promise<void> {
  const layer = layers[depth];
  if (layer === undefined) return;
  const extents = await layerExtents(layer.image, offset, length);
  for (const e of extents) {
    if (e.kind === 'data' || e.kind === 'zero') {
      const plain = !e.compressed && e.hostOffset !== undefined;
      out.push({
        start: e.guestOffset,
        length: e.lengthBytes,
        depth,
        present: true,
        zero: e.kind === 'zero',
        data: e.kind === 'data',
        offset: plain ? e.hostOffset : undefined,
        compressed: e.compressed === true,
        filename: layer.path,
      });
      continue;
    }
    const backing = layers[depth + 1];
    const end = e.guestOffset + e.lengthBytes;
    const backingEnd = backing === undefined ? e.guestOffset : Math.min(end, Math.max(e.guestOffset, backing.image.sizeBytes));
    if (backingEnd > e.guestOffset) await resolve(layers, depth + 1, e.guestOffset, backingEnd - e.guestOffset, out);
    if (end > backingEnd) {
      // Nothing below: reads as zeroes, decided by this layer (qemu reports it at this depth).
      out.push({
        start: backingEnd,
        length: end - backingEnd,
        depth,
        present: false,
        zero: true,
        data: false,
        offset: undefined,
        compressed: false,
        filename: layer.path,
      });
    }
  }
}

/** qemu-img map's entry_mergeable: same kind from the same layer, contiguous on the host too. */
export function mergeable(a: ChainExtent, b: ChainExtent): boolean {
  if (a.length === 0) return false;
  if (a.start + a.length !== b.start) return false;
  if (a.zero !== b.zero || a.data !== b.data || a.depth !== b.depth || a.present !== b.present) return false;
  if (a.compressed !== b.compressed || a.filename !== b.filename) return false;
  if ((a.offset === undefined) !== (b.offset === undefined)) return false;
  if (a.offset !== undefined && a.offset + a.length !== b.offset) return false;
  return true;
}

/**
 * The chain's allocation over [start, start + length), merged like qemu-img map, yielded window by
 * window so huge images do not build one huge list. The top layer decides the size.
 */
export async function* chainExtents(
  layers: readonly ChainLayer[],
  start = 0,
  length?: number,
): AsyncGenerator<ChainExtent> {
  const top = layers[0];
  if (top === undefined) return;
  const end = Math.min(top.image.sizeBytes, length === undefined ? Infinity : start + length);
  let pending: ChainExtent | undefined;
  for (let offset = start; offset < end; offset += WINDOW_BYTES) {
    const windowLength = Math.min(WINDOW_BYTES, end - offset);
    const out: ChainExtent[] = [];
    await resolve(layers, 0, offset, windowLength, out);
    for (const e of out) {
      if (pending !== undefined && mergeable(pending, e)) {
        pending.length += e.length;
        continue;
      }
      if (pending !== undefined) yield pending;
      pending = { ...e };
    }
  }
  if (pending !== undefined) yield pending;
}

/** A cursor over a chain map that hands out the extent covering a given offset. */
export class ExtentCursor {
  private current: ChainExtent | undefined;
  private readonly iter: AsyncIterator<ChainExtent>;

  constructor(layers: readonly ChainLayer[], start: number) {
    this.iter = chainExtents(layers, start)[Symbol.asyncIterator]();
  }

  async at(offset: number): Promise<ChainExtent | undefined> {
    while (this.current === undefined || this.current.start + this.current.length <= offset) {
      const next = await this.iter.next();
      if (next.done) return undefined;
      this.current = next.value;
    }
    return this.current;
  }
}

/** True when every byte of buf is zero. */
export function isZero(buf: Uint8Array): boolean {
  const words = buf.byteOffset % 4 === 0 ? buf.length >>> 2 : 0;
  if (words > 0) {
    const view = new Uint32Array(buf.buffer, buf.byteOffset, words);
    for (let i = 0; i < words; i++) if (view[i] !== 0) return false;
  }
  for (let i = words * 4; i < buf.length; i++) if (buf[i] !== 0) return false;
  return true;
}
