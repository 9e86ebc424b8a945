/**
 * A small cache of chunks recently read and verified, bounded by bytes, least recently used out
 * first. Chunks are named by their content, so an entry is never stale: it only spares a trip to
 * the pack (a disk read, or a ranged GET once the pack is on S3) and the hash check.
 */
export class ChunkReadCache {
  /** Map order is use order: the first key is the least recently used. */
  private readonly entries = new Map<string, Uint8Array>();
  private sizeBytes = 0;

  constructor(private readonly sizeBytesMax: number) {}

  /** A copy of the cached chunk (callers may change what they get), or undefined. */
  get(hash: string): Uint8Array | undefined {
    const data = this.entries.get(hash);
    if (data === undefined) return undefined;
    this.entries.delete(hash);
    this.entries.set(hash, data);
    return data.slice();
  }

  /** A copy of `lengthBytes` of the cached chunk from `offsetBytes`, or undefined (not cached, or the range runs past it). */
  getRange(hash: string, offsetBytes: number, lengthBytes: number): Uint8Array | undefined {
    const data = this.entries.get(hash);
    if (data === undefined || offsetBytes + lengthBytes > data.length) return undefined;
    this.entries.delete(hash);
    this.entries.set(hash, data);
    return data.slice(offsetBytes, offsetBytes + lengthBytes);
  }

  /** Copies the cached chunk into `target` (exactly its length): false when it is not cached or has another length. */
  copyInto(hash: string, target: Uint8Array): boolean {
    const data = this.entries.get(hash);
    if (data === undefined || data.length !== target.length) return false;
    this.entries.delete(hash);
    this.entries.set(hash, data);
    target.set(data);
    return true;
  }

  delete(hash: string): void {
    const data = this.entries.get(hash);
    if (data === undefined) return;
    this.entries.delete(hash);
    this.sizeBytes -= data.length;
  }

  /** Keeps `data` (the cache's own from now on: pass a copy the caller will not change). */
  set(hash: string, data: Uint8Array): void {
    if (data.length > this.sizeBytesMax / 4 || this.entries.has(hash)) return;
    this.entries.set(hash, data);
    this.sizeBytes += data.length;
    for (const [oldest, old] of this.entries) {
      if (this.sizeBytes <= this.sizeBytesMax) break;
      this.entries.delete(oldest);
      this.sizeBytes -= old.length;
    }
  }
}
