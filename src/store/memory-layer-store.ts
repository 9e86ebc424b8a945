/**
 * MemoryLayerStore: layer files as MemoryHostFiles, for tests of the volume layer that need no
 * disk. A file keeps its bytes across close and reopen, like a file on disk.
 */
import { StorageError } from '../core/errors.js';
import type { HostFile } from '../core/host-file.js';
import { relativeBackingName, type LayerRef, type LayerStore, type StrayEntry } from '../core/layer-store.js';
import { MemoryHostFile } from './memory-file.js';

export class MemoryLayerStore implements LayerStore {
  private readonly pools = new Map<string, Map<string, MemoryHostFile>>();

  async prepare(): Promise<void> {}

  async createPool(pool: string): Promise<void> {
    if (!this.pools.has(pool)) this.pools.set(pool, new Map());
  }

  async removePool(pool: string): Promise<void> {
    const files = this.pools.get(pool);
    if (files !== undefined && files.size > 0) throw new StorageError('BUSY', `pool ${pool} still holds files`);
    this.pools.delete(pool);
  }

  async create(ref: LayerRef): Promise<HostFile> {
    const files = this.poolFiles(ref.pool);
    if (files.has(ref.fileName)) throw new StorageError('ALREADY_EXISTS', `${this.name(ref)} already exists`);
    const file = new MemoryHostFile(undefined, { name: this.name(ref) });
    files.set(ref.fileName, file);
    return file;
  }

  async open(ref: LayerRef, options: { readOnly: boolean }): Promise<HostFile> {
    const file = this.pools.get(ref.pool)?.get(ref.fileName);
    if (file === undefined) throw new StorageError('NOT_FOUND', `${this.name(ref)}: no such file`);
    return options.readOnly ? file.readOnlyView() : file;
  }

  async remove(ref: LayerRef): Promise<boolean> {
    return this.pools.get(ref.pool)?.delete(ref.fileName) ?? false;
  }

  async listPools(): Promise<string[]> {
    return [...this.pools.keys()].sort();
  }

  /** Its root holds pools and nothing else. */
  async listStrays(): Promise<StrayEntry[]> {
    return [];
  }

  async list(pool: string): Promise<string[]> {
    return [...(this.pools.get(pool)?.keys() ?? [])].sort();
  }

  async allocatedBytes(ref: LayerRef): Promise<number> {
    return (await this.pools.get(ref.pool)?.get(ref.fileName)?.allocatedBytes()) ?? 0;
  }

  async syncPool(): Promise<void> {}

  backingName(child: LayerRef, backing: LayerRef): string {
    return relativeBackingName(child, backing);
  }

  location(): undefined {
    return undefined;
  }

  poolLocation(): undefined {
    return undefined;
  }

  private poolFiles(pool: string): Map<string, MemoryHostFile> {
    const files = this.pools.get(pool);
    if (files === undefined) throw new StorageError('NOT_FOUND', `pool ${pool} has no namespace in this layer store`);
    return files;
  }

  private name(ref: LayerRef): string {
    return `memory:${ref.pool}/${ref.fileName}`;
  }
}
