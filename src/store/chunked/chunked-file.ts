/**
 * ChunkedFile: a sealed layer read through its chunk manifest. A read-only HostFile whose bytes
 * come from the pool's ChunkRepository, chunk by chunk, so formats/qcow2 reads a sealed layer
 * exactly as it reads a local file. Zero chunks read as zeroes without asking the repository; a
 * read spanning many chunks fetches them concurrently, a bounded number at a time. A read of part
 * of a chunk (a guest's 4 KiB read of a 64 KiB chunk) asks for just that part (readRange) unless
 * the chunk cache holds the whole chunk; a read of a whole chunk is copied from the cache when it
 * holds it, else read straight into the caller's buffer when the repository can (readInto: no
 * buffer per chunk; not cached), else through the cache.
 *
 * A repository error (CORRUPT, NOT_FOUND, an outage) fails the pread that met it, with that error,
 * and nothing else: the next pread asks again.
 */
import { StorageError } from '../../core/errors.js';
import type { HostFile, HostFileFeatures } from '../../core/host-file.js';
import { checkCopyRange } from '../copy-range.js';
import type { ChunkRepository } from '../dedup/repository.js';
import type { ChunkCache } from './chunk-cache.js';
import type { ChunkManifest } from './manifest.js';

/** Chunk reads one pread keeps in flight: enough to hide a remote store's latency, bounded. */
export const CHUNKED_READS_IN_FLIGHT_MAX = 16;

/** Copy by reference: the manifest shares chunks; punching holes or writing is not possible. */
const CHUNKED_FEATURES: HostFileFeatures = { punchHole: false, seekData: true, copyByReference: true };

export interface ChunkedFileOptions {
  /** Shown in errors and logs (the layer's name). */
  name: string;
  /** Chunk reads one pread keeps in flight; CHUNKED_READS_IN_FLIGHT_MAX by default. */
  readsInFlightMax?: number;
  /** Recently read chunks, shared by the files of this repository; none by default. */
  cache?: ChunkCache;
}

export class ChunkedFile implements HostFile {
  readonly name: string;
  readonly readOnly = true;
  readonly manifest: ChunkManifest;
  private readonly repository: ChunkRepository;
  private readonly readsInFlightMax: number;
  private readonly cache: ChunkCache | undefined;
  private closed = false;

  constructor(manifest: ChunkManifest, repository: ChunkRepository, options: ChunkedFileOptions) {
    this.manifest = manifest;
    this.repository = repository;
    this.name = options.name;
    this.readsInFlightMax = Math.max(1, options.readsInFlightMax ?? CHUNKED_READS_IN_FLIGHT_MAX);
    this.cache = options.cache;
  }

  async pread(buf: Uint8Array, hostOffset: number): Promise<number> {
    this.checkOpen('pread');
    checkRange(this.name, 'pread', hostOffset, buf.length);
    const fileSize = this.manifest.fileSizeBytes;
    const existing = Math.max(0, Math.min(buf.length, fileSize - hostOffset));
    buf.fill(0, existing);
    if (existing === 0) return 0;
    const chunkSize = this.manifest.chunkSizeBytes;
    const first = Math.floor(hostOffset / chunkSize);
    const last = Math.floor((hostOffset + existing - 1) / chunkSize);
    if (first === last && this.readPartNow(first, buf, hostOffset, existing)) return existing;
    // Chunks to fetch; zero chunks are filled here and never reach the repository.
    const stored: number[] = [];
    for (let index = first; index <= last; index++) {
      if (!this.manifest.isZero(index)) {
        stored.push(index);
        continue;
      }
      const [from, to] = this.bufferRangeOf(index, hostOffset, existing);
      buf.fill(0, from, to);
    }
    await this.fetchInto(buf, hostOffset, existing, stored);
    return existing;
  }

  async pwrite(): Promise<void> {
    throw this.readOnlyError('pwrite');
  }

  async flush(): Promise<void> {
    this.checkOpen('flush');
  }

  async truncate(): Promise<void> {
    throw this.readOnlyError('truncate');
  }

  async punchHole(): Promise<void> {
    throw this.readOnlyError('punchHole');
  }

  async sizeBytes(): Promise<number> {
    this.checkOpen('sizeBytes');
    return this.manifest.fileSizeBytes;
  }

  /**
   * The bytes of this file's stored (non-zero) chunks. A chunk this file shares with other layers
   * (or uses twice) is counted here in full each time: the pool's real usage is the repository's.
   */
  async allocatedBytes(): Promise<number> {
    this.checkOpen('allocatedBytes');
    return this.manifest.storedBytes();
  }

  /** First offset >= hostOffset in a stored chunk, or undefined (chunk granularity). */
  async seekData(hostOffset: number): Promise<number | undefined> {
    return this.seek('seekData', hostOffset, false);
  }

  /** First offset >= hostOffset in a zero chunk (the end of the file counts), or undefined past it. */
  async seekHole(hostOffset: number): Promise<number | undefined> {
    return this.seek('seekHole', hostOffset, true);
  }

  supports(): HostFileFeatures {
    return CHUNKED_FEATURES;
  }

  async copyRange(source: HostFile, sourceOffset: number, targetOffset: number, lengthBytes: number): Promise<void> {
    checkCopyRange(source, this, sourceOffset, targetOffset, lengthBytes);
    throw this.readOnlyError('copyRange'); // checkCopyRange refuses first; kept for the type's sake
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  /** Reads the listed chunks into their parts of buf, readsInFlightMax at a time. */
  private async fetchInto(buf: Uint8Array, hostOffset: number, existing: number, stored: readonly number[]): Promise<void> {
    let next = 0;
    let failure: unknown;
    const worker = async (): Promise<void> => {
      while (failure === undefined && next < stored.length) {
        const index = stored[next++]!;
        try {
          await this.readChunkInto(index, buf, hostOffset, existing);
        } catch (err) {
          failure ??= err;
        }
      }
    };
    const workers: Promise<void>[] = [];
    for (let i = 0; i < Math.min(this.readsInFlightMax, stored.length); i++) workers.push(worker());
    // Every started read settles before pread does, so nothing writes into buf after it returns.
    await Promise.all(workers);
    if (failure !== undefined) throw failure;
  }

  private async readChunkInto(index: number, buf: Uint8Array, hostOffset: number, existing: number): Promise<void> {
    const hash = this.manifest.hashAt(index)!;
    const lengthBytes = this.manifest.chunkLengthBytes(index);
    const [from, to] = this.bufferRangeOf(index, hostOffset, existing);
    const within = hostOffset + from - index * this.manifest.chunkSizeBytes;
    const wanted = to - from;
    const cached = this.cache?.peek(hash);
    if (wanted < lengthBytes && cached === undefined) {
      // Part of a chunk: read and check just that part, no whole chunk read, hashed or allocated.
      const part = await this.repository.readRange(hash, within, wanted);
      if (part.length !== wanted) {
        throw new StorageError('CORRUPT', `${this.name}: chunk ${index} (${hash}) gave ${part.length} bytes where ${wanted} at ${within} were asked for`);
      }
      buf.set(part, from);
      return;
    }
    if (cached === undefined && this.repository.readInto !== undefined) {
      // A whole chunk not cached: straight into its part of buf (a stream's read; not cached,
      // so a sequential read through a layer does not flush what random readers keep here).
      await this.repository.readInto(hash, buf.subarray(from, to));
      return;
    }
    const load = (): Promise<Uint8Array> => this.repository.read(hash);
    const bytes = cached ?? (await (this.cache === undefined ? load() : this.cache.get(hash, load)));
    if (bytes.length !== lengthBytes) {
      throw new StorageError(
        'CORRUPT',
        `${this.name}: chunk ${index} (${hash}) is ${bytes.length} bytes where the manifest needs ${lengthBytes}`,
      );
    }
    buf.set(bytes.subarray(within, within + wanted), from);
  }

  /**
   * A read within one stored chunk, of part of it, done without waiting when the repository can
   * (readRangeNow) and the chunk cache does not hold it: the common guest 4 KiB read. False: the
   * caller takes the general path (which also reports any error).
   */
  private readPartNow(index: number, buf: Uint8Array, hostOffset: number, existing: number): boolean {
    if (this.repository.readRangeNow === undefined || this.manifest.isZero(index)) return false;
    const within = hostOffset - index * this.manifest.chunkSizeBytes;
    if (existing >= this.manifest.chunkLengthBytes(index)) return false; // a whole chunk: through the cache
    const hash = this.manifest.hashAt(index)!;
    if (this.cache?.peek(hash) !== undefined) return false;
    const target = existing === buf.length ? buf : buf.subarray(0, existing);
    return this.repository.readRangeNow(hash, within, target);
  }

  /** The part of buf [from, to) that chunk `index` supplies, for a read of `existing` bytes. */
  private bufferRangeOf(index: number, hostOffset: number, existing: number): [number, number] {
    const chunkStart = index * this.manifest.chunkSizeBytes;
    const from = Math.max(0, chunkStart - hostOffset);
    const to = Math.min(existing, chunkStart + this.manifest.chunkSizeBytes - hostOffset);
    return [from, to];
  }

  private async seek(what: string, hostOffset: number, wantZero: boolean): Promise<number | undefined> {
    this.checkOpen(what);
    checkRange(this.name, what, hostOffset, 0);
    const { fileSizeBytes, chunkSizeBytes, entryCount } = this.manifest;
    if (hostOffset >= fileSizeBytes) return undefined;
    let index = Math.floor(hostOffset / chunkSizeBytes);
    while (index < entryCount && this.manifest.isZero(index) !== wantZero) index++;
    const offset = Math.max(hostOffset, index * chunkSizeBytes);
    if (wantZero) return Math.min(offset, fileSizeBytes);
    return offset < fileSizeBytes ? offset : undefined;
  }

  private checkOpen(what: string): void {
    if (this.closed) throw new StorageError('IO_ERROR', `${what} on ${this.name}: the file is closed`);
  }

  private readOnlyError(what: string): StorageError {
    return new StorageError('READ_ONLY', `${what} on ${this.name}: a sealed layer is read-only (write to an overlay on it)`);
  }
}

function checkRange(name: string, what: string, hostOffset: number, lengthBytes: number): void {
  if (Number.isSafeInteger(hostOffset) && hostOffset >= 0 && Number.isSafeInteger(hostOffset + lengthBytes)) return;
  throw new StorageError('INVALID_ARGUMENT', `${what} on ${name}: invalid range: offset ${hostOffset}, length ${lengthBytes}`);
}
