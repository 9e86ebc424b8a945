/**
 * FolderChunkStore: a ChunkStore in a local folder, one file per object, for tests that need
 * objects to survive a process (the tiered store's crash test). A stand-in for the real
 * LocalChunkStore, which is written separately; it runs the ChunkStore conformance suite too.
 * Writes go to a temporary file, are synced, then renamed (put) or linked (putIfAbsent, which
 * fails atomically when the name exists), so an object is whole or absent after a crash.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { CHUNK_LIST_PAGE_MAX, type ChunkListPage, type ChunkStore, type ChunkStoreCallOptions } from '../../src/core/chunk-store.js';
import { StorageError } from '../../src/core/errors.js';
import { checkChunkKey, throwIfAborted } from '../../src/store/memory-chunk-store.js';

const TEMP_PREFIX = '.tmp-';

function isMissing(err: unknown): boolean {
  return (err as NodeJS.ErrnoException).code === 'ENOENT';
}

export class FolderChunkStore implements ChunkStore {
  constructor(readonly folder: string) {}

  static async open(folder: string): Promise<FolderChunkStore> {
    await fs.mkdir(folder, { recursive: true });
    return new FolderChunkStore(folder);
  }

  async get(key: string, options?: ChunkStoreCallOptions): Promise<Uint8Array | undefined> {
    this.check(key, options, 'get');
    try {
      return new Uint8Array(await fs.readFile(this.file(key)));
    } catch (err) {
      if (isMissing(err)) return undefined;
      throw err;
    }
  }

  async getRange(key: string, offsetBytes: number, lengthBytes: number, options?: ChunkStoreCallOptions): Promise<Uint8Array | undefined> {
    checkChunkKey(key);
    if (!Number.isSafeInteger(offsetBytes) || offsetBytes < 0 || !Number.isSafeInteger(lengthBytes) || lengthBytes < 0) {
      throw new StorageError('INVALID_ARGUMENT', `range ${offsetBytes}+${lengthBytes} of ${key} is not a byte range`);
    }
    throwIfAborted(options, `get ${key}`);
    let handle: fs.FileHandle;
    try {
      handle = await fs.open(this.file(key), 'r');
    } catch (err) {
      if (isMissing(err)) return undefined;
      throw err;
    }
    try {
      const out = new Uint8Array(lengthBytes);
      const { bytesRead } = await handle.read(out, 0, lengthBytes, offsetBytes);
      return out.subarray(0, bytesRead);
    } finally {
      await handle.close();
    }
  }

  async put(key: string, data: Uint8Array, options?: ChunkStoreCallOptions): Promise<void> {
    this.check(key, options, 'put');
    const temp = await this.writeTemp(data);
    await fs.rename(temp, this.file(key));
    await this.syncFolder();
  }

  async putIfAbsent(key: string, data: Uint8Array, options?: ChunkStoreCallOptions): Promise<boolean> {
    this.check(key, options, 'put');
    const temp = await this.writeTemp(data);
    try {
      await fs.link(temp, this.file(key));
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
    this.check(key, options, 'delete');
    await fs.rm(this.file(key), { force: true });
  }

  async list(prefix: string, options?: ChunkStoreCallOptions & { after?: string; limit?: number }): Promise<ChunkListPage> {
    throwIfAborted(options, `list ${prefix}`);
    const limit = Math.min(options?.limit ?? CHUNK_LIST_PAGE_MAX, CHUNK_LIST_PAGE_MAX);
    const after = options?.after;
    const keys = (await fs.readdir(this.folder))
      .filter((name) => !name.startsWith(TEMP_PREFIX))
      .map((name) => decodeURIComponent(name))
      .filter((key) => key.startsWith(prefix) && (after === undefined || key > after))
      .sort();
    const page = keys.slice(0, limit);
    return keys.length > limit ? { keys: page, nextAfter: page.at(-1) as string } : { keys: page };
  }

  private check(key: string, options: ChunkStoreCallOptions | undefined, what: string): void {
    checkChunkKey(key);
    throwIfAborted(options, `${what} ${key}`);
  }

  /** Key -> file name: every character but letters, digits and -_.!~*'() escaped, so names stay flat. */
  private file(key: string): string {
    return path.join(this.folder, encodeURIComponent(key).replace(/^\./, '%2E'));
  }

  private async writeTemp(data: Uint8Array): Promise<string> {
    const temp = path.join(this.folder, `${TEMP_PREFIX}${randomBytes(8).toString('hex')}`);
    const handle = await fs.open(temp, 'wx');
    try {
      await handle.writeFile(data);
      await handle.datasync();
    } finally {
      await handle.close();
    }
    return temp;
  }

  private async syncFolder(): Promise<void> {
    const handle = await fs.open(this.folder, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  }
}
