/**
 * ChunkCache: the chunks sealed layers read most recently, in memory, bounded in bytes, shared by
 * every ChunkedFile of one repository (a chunk shared by many layers is cached once). It holds
 * only whole chunks, checked against their hash: a read of a whole chunk fills it, a read of part
 * of one uses it when the chunk is here and otherwise reads just that part (the repository's
 * readRange, checked block by block) without filling it. Concurrent readers of one whole chunk
 * share one repository read. A failed read is not remembered: the next one asks again.
 *
 * This is the in-memory read cache only; the tier's bounded local cache of packs (which decides
 * what to promote from S3) sits below the repository.
 */
import { StorageError } from '../../core/errors.js';
import type { ChunkHash } from '../dedup/repository.js';

/** What a ChunkedLayerStore caches by default: 512 chunks of 64 KiB. */
export const CHUNK_CACHE_DEFAULT_BYTES = 32 * 1024 * 1024;

export class ChunkCache {
  readonly capacityBytes: number;
  /** Least recently used first (a Map keeps insertion order; a hit re-inserts). */
  private readonly chunks = new Map<ChunkHash, Uint8Array>();
  private readonly loading = new Map<ChunkHash, Promise<Uint8Array>>();
  private usedBytes = 0;

  constructor(capacityBytes = CHUNK_CACHE_DEFAULT_BYTES) {
    if (!Number.isSafeInteger(capacityBytes) || capacityBytes < 0) {
      throw new StorageError('INVALID_ARGUMENT', `chunk cache size ${capacityBytes} is not a byte count`);
    }
    this.capacityBytes = capacityBytes;
  }

  /**
   * The chunk's bytes, from the cache or from `load` (the repository's checked read). The result
   * is shared: callers copy out of it and never write it.
   */
  get(hash: ChunkHash, load: () => Promise<Uint8Array>): Promise<Uint8Array> {
    const cached = this.chunks.get(hash);
    if (cached !== undefined) {
      this.chunks.delete(hash);
      this.chunks.set(hash, cached);
      return Promise.resolve(cached);
    }
    const pending = this.loading.get(hash);
    if (pending !== undefined) return pending;
    const loaded = load().then(
      (bytes) => {
        this.loading.delete(hash);
        this.remember(hash, bytes);
        return bytes;
      },
      (err: unknown) => {
        this.loading.delete(hash);
        throw err;
      },
    );
    this.loading.set(hash, loaded);
    return loaded;
  }

  /**
   * The cached chunk (shared: copy out, never write), or undefined; a hit counts as a use. Never
   * loads: a read of part of a chunk that is not cached reads just that part (ChunkedFile).
   */
  peek(hash: ChunkHash): Uint8Array | undefined {
    const cached = this.chunks.get(hash);
    if (cached === undefined) return undefined;
    this.chunks.delete(hash);
    this.chunks.set(hash, cached);
    return cached;
  }

  /** Bytes held now (at most capacityBytes). */
  sizeBytes(): number {
    return this.usedBytes;
  }

  private remember(hash: ChunkHash, bytes: Uint8Array): void {
    if (bytes.length > this.capacityBytes || this.chunks.has(hash)) return;
    this.chunks.set(hash, bytes);
    this.usedBytes += bytes.length;
    for (const [oldest, old] of this.chunks) {
      if (this.usedBytes <= this.capacityBytes) break;
      this.chunks.delete(oldest);
      this.usedBytes -= old.length;
    }
  }
}
