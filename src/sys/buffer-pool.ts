/**
 * BufferPool: reusable page-aligned buffers for large transfers (NBD read replies and write
 * payloads of 64 KiB and more).
 *
 * Two costs made 1 MiB NBD transfers slower than qemu-nbd when every request allocated its own
 * buffer (measured, bench/RESULTS.md): the kernel copies into a malloc'd buffer at page+32 several
 * times slower than into a page-aligned one (see aligned-buffer.ts), and a fresh 1 MiB buffer per
 * request kept V8's garbage collector busy for about half a millisecond per request (external
 * memory pressure triggers full collections). Pooled buffers are aligned once and reused.
 *
 * A buffer has `headroomBytes` in front of its page-aligned data, so a protocol header and the
 * data go out in one write without a copy. Buffers come in power-of-two size classes; released
 * buffers are kept up to `maxPooledBytes` in total, the rest are left to the garbage collector.
 */
import { allocAligned, PAGE_SIZE_BYTES } from './aligned-buffer.js';

export interface PooledBuffer {
  /** The data region (page-aligned), `dataBytes` long. */
  readonly data: Buffer;
  /** The data with headerBytes (at most the pool's headroom) in front: header + data in one buffer. */
  withHeader(headerBytes: number): Buffer;
  /** Returns the buffer to the pool; it must not be used afterwards. Idempotent. */
  release(): void;
}

export interface BufferPoolOptions {
  /** Headroom in front of every buffer's data (at most a page). */
  headroomBytes: number;
  /** Upper bound on the bytes kept in free buffers (default 64 MiB). */
  maxPooledBytes?: number;
}

const DEFAULT_MAX_POOLED_BYTES = 64 * 1024 * 1024;
/** The smallest size class: below it a plain allocation is as cheap and alignment matters less. */
export const POOL_MIN_BYTES = 64 * 1024;

interface Slab {
  /** Headroom + class-size bytes; data starts page-aligned at headroomBytes. */
  region: Buffer;
  classBytes: number;
}

export class BufferPool {
  private readonly free = new Map<number, Slab[]>();
  private pooledBytes = 0;
  private readonly headroomBytes: number;
  private readonly maxPooledBytes: number;

  constructor(options: BufferPoolOptions) {
    if (options.headroomBytes < 0 || options.headroomBytes > PAGE_SIZE_BYTES) {
      throw new RangeError(`headroom must be 0..${PAGE_SIZE_BYTES} bytes`);
    }
    this.headroomBytes = options.headroomBytes;
    this.maxPooledBytes = options.maxPooledBytes ?? DEFAULT_MAX_POOLED_BYTES;
  }

  /** Bytes currently held in free buffers. */
  get idleBytes(): number {
    return this.pooledBytes;
  }

  acquire(dataBytes: number): PooledBuffer {
    const classBytes = sizeClass(dataBytes);
    let slab = this.free.get(classBytes)?.pop();
    if (slab !== undefined) this.pooledBytes -= classBytes;
    else slab = this.allocate(classBytes);
    const owned = slab;
    const headroom = this.headroomBytes;
    const end = headroom + dataBytes;
    let released = false;
    return {
      data: owned.region.subarray(headroom, end),
      withHeader: (headerBytes) => {
        if (headerBytes > headroom) throw new RangeError(`a ${headerBytes}-byte header exceeds the ${headroom}-byte headroom`);
        return owned.region.subarray(headroom - headerBytes, end);
      },
      release: () => {
        if (released) return;
        released = true;
        this.give(owned);
      },
    };
  }

  private allocate(classBytes: number): Slab {
    // One aligned allocation with a page in front: data at the page boundary, headroom before it.
    const aligned = allocAligned(PAGE_SIZE_BYTES + classBytes);
    const start = PAGE_SIZE_BYTES - this.headroomBytes;
    const region = Buffer.from(aligned.buffer, aligned.byteOffset + start, this.headroomBytes + classBytes);
    return { region, classBytes };
  }

  private give(slab: Slab): void {
    if (this.pooledBytes + slab.classBytes > this.maxPooledBytes) return;
    let list = this.free.get(slab.classBytes);
    if (list === undefined) {
      list = [];
      this.free.set(slab.classBytes, list);
    }
    list.push(slab);
    this.pooledBytes += slab.classBytes;
  }
}

/** The power-of-two class a request of dataBytes is served from (at least POOL_MIN_BYTES). */
export function sizeClass(dataBytes: number): number {
  if (!Number.isSafeInteger(dataBytes) || dataBytes < 0) throw new RangeError(`invalid buffer size ${dataBytes}`);
  return Math.max(POOL_MIN_BYTES, 2 ** Math.ceil(Math.log2(Math.max(1, dataBytes))));
}
