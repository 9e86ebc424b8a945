/**
 * LocalLayerStore: each pool a folder `<root>/<pool>`, each layer a qcow2 file in it, opened as a
 * LocalHostFile. A backing name is the file name within the same pool and `../<pool>/<file>` across
 * pools, so `qemu-img info --backing-chain` works on any layer file in place.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { StorageError } from '../core/errors.js';
import type { HostFile } from '../core/host-file.js';
import { relativeBackingName, type LayerRef, type LayerStore } from '../core/layer-store.js';
import { LocalHostFile } from './local-file.js';

/** Pool and file names are single path components: nothing can name a file outside the root. */
export function checkComponent(what: string, name: string): void {
  if (name.length === 0 || name === '.' || name === '..' || name.includes('/') || name.includes('\0')) {
    throw new StorageError('INVALID_ARGUMENT', `${what} ${JSON.stringify(name)} is not a plain file name`);
  }
}

function errnoOf(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | null)?.code;
}

export class LocalLayerStore implements LayerStore {
  constructor(readonly rootDir: string) {}

  poolDir(pool: string): string {
    checkComponent('pool name', pool);
    return path.join(this.rootDir, pool);
  }

  path(ref: LayerRef): string {
    checkComponent('layer file name', ref.fileName);
    return path.join(this.poolDir(ref.pool), ref.fileName);
  }

  async prepare(): Promise<void> {
    await fs.mkdir(this.rootDir, { recursive: true });
  }

  async createPool(pool: string): Promise<void> {
    await fs.mkdir(this.poolDir(pool), { recursive: true });
    await this.syncDir(this.rootDir);
  }

  async removePool(pool: string): Promise<void> {
    try {
      await fs.rmdir(this.poolDir(pool));
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') return;
      if (errnoOf(err) === 'ENOTEMPTY' || errnoOf(err) === 'EEXIST') {
        throw new StorageError('BUSY', `pool folder ${this.poolDir(pool)} still holds files`, { cause: err });
      }
      throw new StorageError('IO_ERROR', `cannot remove ${this.poolDir(pool)}: ${(err as Error).message}`, { cause: err });
    }
    await this.syncDir(this.rootDir);
  }

  async create(ref: LayerRef, options: { ownerOnly?: boolean } = {}): Promise<HostFile> {
    if (options.ownerOnly !== true) return LocalHostFile.open(this.path(ref), { exclusive: true });
    // LocalHostFile creates files 0644: make the file 0600 first (O_EXCL keeps the creation ours).
    const file = this.path(ref);
    try {
      await (await fs.open(file, 'wx', 0o600)).close();
    } catch (err) {
      if (errnoOf(err) === 'EEXIST') throw new StorageError('ALREADY_EXISTS', `cannot create ${file}: it already exists`, { cause: err });
      throw new StorageError('IO_ERROR', `cannot create ${file}: ${(err as Error).message}`, { cause: err });
    }
    return LocalHostFile.open(file);
  }

  async open(ref: LayerRef, options: { readOnly: boolean }): Promise<HostFile> {
    return LocalHostFile.open(this.path(ref), { readOnly: options.readOnly });
  }

  async remove(ref: LayerRef): Promise<boolean> {
    try {
      await fs.unlink(this.path(ref));
      return true;
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') return false;
      throw new StorageError('IO_ERROR', `cannot delete ${this.path(ref)}: ${(err as Error).message}`, { cause: err });
    }
  }

  async listPools(): Promise<string[]> {
    try {
      const entries = await fs.readdir(this.rootDir, { withFileTypes: true });
      return entries.filter((e) => e.isDirectory()).map((e) => e.name).sort();
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') return [];
      throw new StorageError('IO_ERROR', `cannot list ${this.rootDir}: ${(err as Error).message}`, { cause: err });
    }
  }

  async list(pool: string): Promise<string[]> {
    try {
      return (await fs.readdir(this.poolDir(pool))).sort();
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') return [];
      throw new StorageError('IO_ERROR', `cannot list ${this.poolDir(pool)}: ${(err as Error).message}`, { cause: err });
    }
  }

  async allocatedBytes(ref: LayerRef): Promise<number> {
    try {
      return (await fs.stat(this.path(ref))).blocks * 512;
    } catch {
      return 0;
    }
  }

  async syncPool(pool: string): Promise<void> {
    return this.syncDir(this.poolDir(pool));
  }

  backingName(child: LayerRef, backing: LayerRef): string {
    checkComponent('layer file name', backing.fileName);
    return relativeBackingName(child, backing);
  }

  location(ref: LayerRef): string {
    return this.path(ref);
  }

  poolLocation(pool: string): string {
    return this.poolDir(pool);
  }

  /** fsync a folder, so that files created or removed in it survive a power cut. */
  private async syncDir(dir: string): Promise<void> {
    const handle = await fs.open(dir, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  }
}
