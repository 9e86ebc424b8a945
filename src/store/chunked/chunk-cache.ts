/**
 * ChunkCache: the chunks sealed layers read most recently, in memory, bounded in bytes, shared by
 * every ChunkedFile of one repository (a chunk shared by many layers is cached once). A guest's
 * 4 KiB reads would otherwise fetch and hash-check a whole 64 KiB chunk each time. Concurrent
 * readers of one chunk share one repository read. A failed read is not remembered: the next one
 * asks the repository again.
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
