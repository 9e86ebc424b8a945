/**
 * FolderChunkStore: a durable ChunkStore for the dedup crash test only, one file per object in a
 * flat folder (the key, URI-encoded, is the file name). A stand-in until the daemon's local chunk
 * store exists: it is written whole to a temporary file, fsynced, renamed onto its name (linked,
 * for putIfAbsent) and the folder fsynced, so a SIGKILL leaves the old object or the new one.
 * Compiled into dist/ (tsconfig.json) because the crash test's child process runs from there.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { CHUNK_LIST_PAGE_MAX, type ChunkListPage, type ChunkStore, type ChunkStoreCallOptions } from '../../../src/core/chunk-store.js';
import { StorageError } from '../../../src/core/errors.js';
import { checkChunkKey, throwIfAborted } from '../../../src/store/memory-chunk-store.js';

const TEMP_PREFIX = '.tmp-';

export class FolderChunkStore implements ChunkStore {
  private constructor(
    readonly root: string,
    private readonly afterPut: ((key: string) => void) | undefined,
  ) {}

  /** `afterPut` is told each key once its put is durable (the crash test's child announces them). */
  static async open(root: string, afterPut?: (key: string) => void): Promise<FolderChunkStore> {
    await fs.mkdir(root, { recursive: true });
    return new FolderChunkStore(root, afterPut);
  }

  private file(key: string): string {
    checkChunkKey(key);
    return path.join(this.root, encodeURIComponent(key));
  }

  async get(key: string, options?: ChunkStoreCallOptions): Promise<Uint8Array | undefined> {
    const file = this.file(key);
    throwIfAborted(options, `get ${key}`);
    return fs.readFile(file).then((data) => new Uint8Array(data), notFound);
  }

  async getRange(key: string, offsetBytes: number, lengthBytes: number, options?: ChunkStoreCallOptions): Promise<Uint8Array | undefined> {
    const file = this.file(key);
    if (!Number.isSafeInteger(offsetBytes) || offsetBytes < 0 || !Number.isSafeInteger(lengthBytes) || lengthBytes < 0) {
      throw new StorageError('INVALID_ARGUMENT', `range ${offsetBytes}+${lengthBytes} of ${key} is not a byte range`);
    }
    throwIfAborted(options, `get ${key}`);
    const handle = await fs.open(file, 'r').catch(notFound);
    if (handle === undefined) return undefined;
    try {
      const data = new Uint8Array(lengthBytes);
      const { bytesRead } = await handle.read(data, 0, lengthBytes, offsetBytes);
      return data.subarray(0, bytesRead);
    } finally {
      await handle.close();
    }
  }

  async put(key: string, data: Uint8Array, options?: ChunkStoreCallOptions): Promise<void> {
    const file = this.file(key);
    throwIfAborted(options, `put ${key}`);
    const temp = await this.writeTemp(data);
    await fs.rename(temp, file);
    await this.syncFolder();
    this.afterPut?.(key);
  }

  async putIfAbsent(key: string, data: Uint8Array, options?: ChunkStoreCallOptions): Promise<boolean> {
    const file = this.file(key);
    throwIfAborted(options, `put ${key}`);
    const temp = await this.writeTemp(data);
    try {
      await fs.link(temp, file);
      await this.syncFolder();
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
      throw err;
    } finally {
      await fs.rm(temp, { force: true });
    }
  }

  async delete(key: string, options?: ChunkStoreCallOptions): Promise<void> {
    const file = this.file(key);
    throwIfAborted(options, `delete ${key}`);
    await fs.rm(file, { force: true });
    await this.syncFolder();
  }

  async list(prefix: string, options?: ChunkStoreCallOptions & { after?: string; limit?: number }): Promise<ChunkListPage> {
    throwIfAborted(options, `list ${prefix}`);
    const limit = Math.min(options?.limit ?? CHUNK_LIST_PAGE_MAX, CHUNK_LIST_PAGE_MAX);
    const after = options?.after;
    const keys = (await fs.readdir(this.root))
      .filter((name) => !name.startsWith(TEMP_PREFIX))
      .map((name) => decodeURIComponent(name))
      .filter((key) => key.startsWith(prefix) && (after === undefined || key > after))
      .sort();
    const page = keys.slice(0, limit);
    return keys.length > limit ? { keys: page, nextAfter: page.at(-1)! } : { keys: page };
  }

  private async writeTemp(data: Uint8Array): Promise<string> {
    const temp = path.join(this.root, `${TEMP_PREFIX}${randomBytes(8).toString('hex')}`);
    const handle = await fs.open(temp, 'wx');
    try {
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
    return temp;
  }

  private async syncFolder(): Promise<void> {
    const handle = await fs.open(this.root, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  }
}

function notFound(err: unknown): undefined {
  if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
  throw err;
}
