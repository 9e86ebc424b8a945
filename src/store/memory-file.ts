/**
 * MemoryHostFile: a HostFile held in memory, for tests and scratch images.
 *
 * Storage is a map of fixed-size chunks, so a file with a large logical size and a few hundred MiB
 * of data costs only the data: never-written and punched ranges hold no chunk and read as zeroes.
 * close() keeps the bytes; the object can be used again afterwards, like a file that is reopened.
 */
import { StorageError } from '../core/errors.js';
import type { HostFile, HostFileFeatures } from '../core/host-file.js';
import { copyRangeByBytes } from './copy-range.js';
import { isAllZero } from './zero-bytes.js';

/** Allocation granularity: allocatedBytes() counts whole chunks, seekData/seekHole see chunks. */
export const MEMORY_CHUNK_BYTES = 64 * 1024;
const CHUNK = MEMORY_CHUNK_BYTES;

const MEMORY_FEATURES: HostFileFeatures = { punchHole: true, seekData: true, copyByReference: false };

export interface MemoryHostFileOptions {
  /** Shown in errors and logs; "memory" by default. */
  name?: string;
  readOnly?: boolean;
}

/** The state a MemoryHostFile and its read-only views share. */
class MemoryStore {
  chunks = new Map<number, Uint8Array>();
  size = 0;
}

export class MemoryHostFile implements HostFile {
  readonly name: string;
  readonly readOnly: boolean;
  private readonly store: MemoryStore;

  /** An empty file, or one holding a copy of `initial` (all-zero chunks of it stay unallocated). */
  constructor(initial?: Uint8Array, options: MemoryHostFileOptions = {}) {
    this.name = options.name ?? 'memory';
    this.readOnly = options.readOnly === true;
    this.store = new MemoryStore();
    if (initial) {
      this.store.size = initial.length;
      for (let start = 0; start < initial.length; start += CHUNK) {
        const piece = initial.subarray(start, Math.min(start + CHUNK, initial.length));
        if (isAllZero(piece)) continue;
        const chunk = new Uint8Array(CHUNK);
        chunk.set(piece);
        this.store.chunks.set(start / CHUNK, chunk);
      }
    }
  }

  static fromBytes(bytes: Uint8Array, options?: MemoryHostFileOptions): MemoryHostFile {
    return new MemoryHostFile(bytes, options);
  }

  /** An independent copy of this file's current contents (copy-on-clone: O(allocated bytes)). */
  clone(options: MemoryHostFileOptions = {}): MemoryHostFile {
    const copy = new MemoryHostFile(undefined, { name: options.name ?? this.name, readOnly: options.readOnly });
    copy.store.size = this.store.size;
    for (const [index, chunk] of this.store.chunks) copy.store.chunks.set(index, chunk.slice());
    return copy;
  }

  /** A read-only HostFile over the same bytes (later writes through this object show in it). */
  readOnlyView(): MemoryHostFile {
    const view = Object.create(MemoryHostFile.prototype) as MemoryHostFile;
    Object.assign(view, { name: this.name, readOnly: true, store: this.store });
    return view;
  }

  /** A copy of the whole contents, sizeBytes long. */
  snapshotBytes(): Uint8Array {
    const out = new Uint8Array(this.store.size);
    for (const [index, chunk] of this.store.chunks) {
      const start = index * CHUNK;
      if (start >= out.length) continue;
      out.set(chunk.subarray(0, Math.min(CHUNK, out.length - start)), start);
    }
    return out;
  }

  /** Synchronous core of pread, also used by FaultInjectingFile. */
  readSync(buf: Uint8Array, hostOffset: number): number {
    checkRange(this.name, 'pread', hostOffset, buf.length);
    const size = this.store.size;
    const existing = Math.max(0, Math.min(buf.length, size - hostOffset));
    let pos = 0;
    while (pos < buf.length) {
      const abs = hostOffset + pos;
      const index = Math.floor(abs / CHUNK);
      const within = abs - index * CHUNK;
      const n = Math.min(CHUNK - within, buf.length - pos);
      const chunk = pos < existing ? this.store.chunks.get(index) : undefined;
      if (chunk) buf.set(chunk.subarray(within, within + n), pos);
      else buf.fill(0, pos, pos + n);
      pos += n;
    }
    // Chunks can hold stale bytes past the end of the file only if truncate left them; it does not.
    return existing;
  }

  writeSync(data: Uint8Array, hostOffset: number): void {
    this.checkWritable('pwrite');
    checkRange(this.name, 'pwrite', hostOffset, data.length);
    if (data.length === 0) return; // like pwrite(2): an empty write does not extend the file
    let pos = 0;
    while (pos < data.length) {
      const abs = hostOffset + pos;
      const index = Math.floor(abs / CHUNK);
      const within = abs - index * CHUNK;
      const n = Math.min(CHUNK - within, data.length - pos);
      let chunk = this.store.chunks.get(index);
      if (!chunk) {
        chunk = new Uint8Array(CHUNK);
        this.store.chunks.set(index, chunk);
      }
      chunk.set(data.subarray(pos, pos + n), within);
      pos += n;
    }
    if (hostOffset + data.length > this.store.size) this.store.size = hostOffset + data.length;
  }

  truncateSync(sizeBytes: number): void {
    this.checkWritable('truncate');
    checkRange(this.name, 'truncate', sizeBytes, 0);
    if (sizeBytes < this.store.size) {
      // Invariant: chunk bytes at or past the end of the file are zero, so growing reads zeroes.
      const chunks = this.store.chunks;
      const keep = Math.ceil(sizeBytes / CHUNK); // chunks [0, keep) survive
      const oldCount = Math.ceil(this.store.size / CHUNK);
      if (oldCount - keep <= chunks.size) {
        for (let index = keep; index < oldCount; index++) chunks.delete(index);
      } else {
        for (const index of [...chunks.keys()]) if (index >= keep) chunks.delete(index);
      }
      this.zeroPartial(sizeBytes, Math.min(keep * CHUNK, this.store.size));
    }
    this.store.size = sizeBytes;
  }

  /** Zeroes [hostOffset, hostOffset + lengthBytes) inside the file and frees whole chunks; keeps the size. */
  punchHoleSync(hostOffset: number, lengthBytes: number): void {
    this.checkWritable('punchHole');
    checkRange(this.name, 'punchHole', hostOffset, lengthBytes);
    const size = this.store.size;
    let end = Math.min(hostOffset + lengthBytes, size);
    if (end <= hostOffset) return;
    // Bytes past the end of the file are zero already: a punch reaching the end may free its chunk.
    if (end === size) end = Math.ceil(size / CHUNK) * CHUNK;
    this.zeroRange(hostOffset, end - hostOffset);
  }

  pread(buf: Uint8Array, hostOffset: number): Promise<number> {
    try {
      return Promise.resolve(this.readSync(buf, hostOffset));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  pwrite(buf: Uint8Array, hostOffset: number): Promise<void> {
    try {
      this.writeSync(buf, hostOffset);
      return Promise.resolve();
    } catch (err) {
      return Promise.reject(err);
    }
  }

  async flush(): Promise<void> {}

  async truncate(sizeBytes: number): Promise<void> {
    this.truncateSync(sizeBytes);
  }

  async punchHole(hostOffset: number, lengthBytes: number): Promise<void> {
    this.punchHoleSync(hostOffset, lengthBytes);
  }

  async sizeBytes(): Promise<number> {
    return this.store.size;
  }

  async allocatedBytes(): Promise<number> {
    return this.store.chunks.size * CHUNK;
  }

  /** First offset >= hostOffset in an allocated chunk, or undefined (chunk granularity). */
  async seekData(hostOffset: number): Promise<number | undefined> {
    checkRange(this.name, 'seekData', hostOffset, 0);
    const size = this.store.size;
    if (hostOffset >= size) return undefined;
    const first = Math.floor(hostOffset / CHUNK);
    const last = Math.floor((size - 1) / CHUNK);
    let best: number | undefined;
    if (last - first < this.store.chunks.size) {
      for (let index = first; index <= last; index++) {
        if (this.store.chunks.has(index)) {
          best = index;
          break;
        }
      }
    } else {
      for (const index of this.store.chunks.keys()) {
        if (index >= first && (best === undefined || index < best)) best = index;
      }
    }
    if (best === undefined) return undefined;
    const offset = Math.max(hostOffset, best * CHUNK);
    return offset < size ? offset : undefined;
  }

  /** First offset >= hostOffset in a hole (the end of the file counts as one), or undefined past it. */
  async seekHole(hostOffset: number): Promise<number | undefined> {
    checkRange(this.name, 'seekHole', hostOffset, 0);
    const size = this.store.size;
    if (hostOffset >= size) return undefined;
    let index = Math.floor(hostOffset / CHUNK);
    while (this.store.chunks.has(index)) index++;
    return Math.min(size, Math.max(hostOffset, index * CHUNK));
  }

  supports(): HostFileFeatures {
    return MEMORY_FEATURES;
  }

  copyRange(source: HostFile, sourceOffset: number, targetOffset: number, lengthBytes: number): Promise<void> {
    return copyRangeByBytes(source, this, sourceOffset, targetOffset, lengthBytes);
  }

  async close(): Promise<void> {}

  private zeroRange(start: number, length: number): void {
    const end = start + length;
    const chunks = this.store.chunks;
    const firstWhole = Math.ceil(start / CHUNK);
    const endWhole = Math.floor(end / CHUNK); // exclusive
    if (firstWhole >= endWhole) {
      // Within one chunk, or straddling one boundary without covering a whole chunk.
      this.zeroPartial(start, Math.min(end, firstWhole * CHUNK));
      if (firstWhole * CHUNK < end) this.zeroPartial(firstWhole * CHUNK, end);
      return;
    }
    this.zeroPartial(start, firstWhole * CHUNK);
    this.zeroPartial(endWhole * CHUNK, end);
    if (endWhole - firstWhole <= chunks.size) {
      for (let index = firstWhole; index < endWhole; index++) chunks.delete(index);
    } else {
      for (const index of [...chunks.keys()]) if (index >= firstWhole && index < endWhole) chunks.delete(index);
    }
  }

  /** Zeroes [from, to), which lies inside one chunk. */
  private zeroPartial(from: number, to: number): void {
    if (to <= from) return;
    const index = Math.floor(from / CHUNK);
    this.store.chunks.get(index)?.fill(0, from - index * CHUNK, to - index * CHUNK);
  }

  private checkWritable(what: string): void {
    if (this.readOnly) throw new StorageError('READ_ONLY', `${what} on ${this.name}: the file is read-only`);
  }
}

function checkRange(name: string, what: string, hostOffset: number, length: number): void {
  if (
    Number.isSafeInteger(hostOffset) &&
    hostOffset >= 0 &&
    Number.isSafeInteger(length) &&
    length >= 0 &&
    Number.isSafeInteger(hostOffset + length)
  ) {
    return;
  }
  throw new StorageError('INVALID_ARGUMENT', `${what} on ${name}: invalid range: offset ${hostOffset}, length ${length}`);
}
