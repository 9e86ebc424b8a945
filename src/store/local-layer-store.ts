/**
 * LocalLayerStore: each pool a folder `<root>/<pool>`, each layer a qcow2 file in it, opened as a
 * LocalHostFile. A backing name is the file name within the same pool and `../<pool>/<file>` across
 * pools, so `qemu-img info --backing-chain` works on any layer file in place.
 */
import type { Dirent } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { StorageError } from '../core/errors.js';
import type { HostFile } from '../core/host-file.js';
import { relativeBackingName, type LayerRef, type LayerStore, type StrayEntry } from '../core/layer-store.js';
import { LocalHostFile } from './local-file.js';
import { errnoOf, syncFolder } from './local-folder.js';

/** Pool and file names are single path components: nothing can name a file outside the root. */
export function checkComponent(what: string, name: string): void {
  if (name.length === 0 || name === '.' || name === '..' || name.includes('/') || name.includes('\0')) {
    throw new StorageError('INVALID_ARGUMENT', `${what} ${JSON.stringify(name)} is not a plain file name`);
  }
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
    await syncFolder(this.rootDir);
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
    await syncFolder(this.rootDir);
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
    return (await this.rootEntries()).filter((e) => e.isDirectory()).map((e) => e.name);
  }

  /** Anything in the root but a folder (a symlink too: pools are real folders). */
  async listStrays(): Promise<StrayEntry[]> {
    return (await this.rootEntries()).filter((e) => !e.isDirectory()).map((e) => ({ name: e.name, location: path.join(this.rootDir, e.name) }));
  }

  private async rootEntries(): Promise<Dirent[]> {
    try {
      return (await fs.readdir(this.rootDir, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
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
    return syncFolder(this.poolDir(pool));
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
}
