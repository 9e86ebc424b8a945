/**
 * LocalChunkStore: a ChunkStore over a local folder, one file per object; a key's '/'-separated
 * parts are sub-folders (`packs/00/0001` is `<root>/packs/00/0001`). The hot tier for packs, and a
 * cold tier on a slower disk (`file:///mnt/slow/strata`, issue 12).
 *
 * Crash safety: an object is written to a temporary file in `<root>/.strata-tmp` and made durable
 * (written with O_DSYNC, or fsynced), then renamed (put) or hard-linked (putIfAbsent: link(2)
 * fails if the name exists, so of concurrent callers exactly one wins, with no check-then-write
 * window) onto its name, and the folder is fsynced. A reader therefore sees the old object or the
 * new one, never a torn one, and an acknowledged put survives a power cut. A put killed mid-write
 * leaves only its temporary file: removeInterruptedPuts(), to be called at start-up before any
 * put, deletes those.
 *
 * Per put of up to 2 MiB, on libuv's thread pool: open, write, close, rename and the folder's
 * fsync (issue 14: each call is a hand-off to a pool thread and back); a 4 MiB pack adds two
 * writes and an fsync. On tmpfs (inlineSmallPuts, inline-put.ts) all five run on the calling
 * thread (the fsync once the folder is held open), where they never wait for a device. Otherwise
 * the folder fsync is shared by the puts renamed into that folder meanwhile (FolderSyncs), and a
 * folder is made (mkdir, fsynced in its parent) once, not per put: readyFolders remembers it.
 *
 * Keys are checked before any path is built: no empty, '.' or '..' part, no leading '/', nothing
 * that names the temporary folder; a key cannot climb out of the root. A key cannot also be the
 * folder of another key (`a` and `a/b`): the second put is INVALID_ARGUMENT. Folders emptied by
 * delete are removed.
 *
 * list walks the folders in key order and stops once it has a page: it reads the names of the
 * folders it passes through (one folder's names at a time), never objects, and skips folders whose
 * keys all sort before `after` or miss the prefix.
 */
import fsCallbacks, { type Dirent } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { CHUNK_LIST_PAGE_MAX, chunkStoreClosed, type ChunkListPage, type ChunkStore, type ChunkStoreCallOptions } from '../core/chunk-store.js';
import { StorageError } from '../core/errors.js';
import { FolderSyncs } from './folder-syncs.js';
import { closeDescriptor, errnoOf, fsyncDescriptor } from './local-folder.js';
import { OpenFileCache, type OpenFile } from './open-file-cache.js';
import { openObject, readRange } from './local-object-reads.js';
import { checkChunkKey, throwIfAborted } from './memory-chunk-store.js';
import { readNoWait } from '../sys/nowait-read.js';
import { writeTempNow } from './inline-put.js';
import { folderOnTmpfs } from '../sys/tmpfs.js';
import { randomHex } from '../sys/random-hex.js';

/** The folder of temporary files, in the root (same file system: rename and link stay atomic). */
export const LOCAL_CHUNK_TEMP_FOLDER = '.strata-tmp';
/** The longest file name Linux file systems take (NAME_MAX, bytes). */
const NAME_MAX_BYTES = 255;
/**
 * A put writes at most this much per write call (even slices), checking its AbortSignal between
 * them. Not one write of a whole 4 MiB pack: on ext4 (kernel 6.18, this machine) one 4 MiB
 * write took 3-4x the time and CPU of four 1 MiB writes, while 2 MiB writes were as fast.
 */
const WRITE_SLICE_MAX_BYTES = 2 * 1024 * 1024;
/**
 * Objects up to this size (a 1 MiB PUT's pack) are written in one write to a file opened with
 * O_DSYNC: the write returns once the bytes and the size are on the disk, as fdatasync would
 * after it, so the put needs no separate fsync call on the thread pool. Larger ones are written in
 * slices and fsynced (a synced write per slice would wait on the disk per slice).
 */
const SYNCED_WRITE_MAX_BYTES = WRITE_SLICE_MAX_BYTES;
/** Retries of a put whose folder a concurrent delete removed between mkdir and rename. */
const FOLDER_RACE_RETRIES = 8;

function ioError(what: string, err: unknown): StorageError {
  const code = errnoOf(err);
  if (code === 'ENOSPC' || code === 'EDQUOT') return new StorageError('NO_SPACE', `${what}: the disk is full (${code}); free space or add a disk`, { cause: err });
  return new StorageError('IO_ERROR', `${what}: ${(err as Error).message}`, { cause: err });
}

function cancelled(what: string): StorageError {
  return new StorageError('CANCELLED', `${what} was cancelled`);
}

/** A new file for writing (O_CREAT | O_EXCL, with O_DSYNC when `synced`), its descriptor. */
function openNew(file: string, synced: boolean): Promise<number> {
  const { O_WRONLY, O_CREAT, O_EXCL, O_DSYNC } = fsCallbacks.constants;
  const flags = O_WRONLY | O_CREAT | O_EXCL | (synced ? O_DSYNC : 0);
  return new Promise((resolve, reject) => fsCallbacks.open(file, flags, 0o644, (err, fd) => (err ? reject(err) : resolve(fd))));
}

/** One pwrite of `lengthBytes` from `data[offsetBytes]` at file offset `offsetBytes`: the bytes written. */
function writeAt(fd: number, data: Uint8Array, offsetBytes: number, lengthBytes: number): Promise<number> {
  return new Promise((resolve, reject) => fsCallbacks.write(fd, data, offsetBytes, lengthBytes, offsetBytes, (err, written) => (err ? reject(err) : resolve(written))));
}


/** The key's folder parts and file name; INVALID_ARGUMENT for a key that is not a safe relative name. */
export function localKeyParts(key: string): string[] {
  checkChunkKey(key);
  const parts = key.split('/');
  const problem = (what: string) =>
    new StorageError('INVALID_ARGUMENT', `chunk key ${JSON.stringify(key)} ${what}: keys are '/'-separated names without empty, '.' or '..' parts`);
  if (parts[0] === '') throw problem('is absolute (starts with /)');
  for (const part of parts) {
    if (part === '') throw problem('has an empty part (// or a trailing /)');
    if (part === '.' || part === '..') throw problem(`has a "${part}" part`);
    if (Buffer.byteLength(part) > NAME_MAX_BYTES) throw problem(`has a part longer than ${NAME_MAX_BYTES} bytes`);
  }
  if (parts[0] === LOCAL_CHUNK_TEMP_FOLDER) throw problem(`starts with ${LOCAL_CHUNK_TEMP_FOLDER}, the store's own temporary folder`);
  return parts;
}

function checkRange(key: string, offsetBytes: number, lengthBytes: number): void {
  if (!Number.isSafeInteger(offsetBytes) || offsetBytes < 0 || !Number.isSafeInteger(lengthBytes) || lengthBytes < 0) {
    throw new StorageError('INVALID_ARGUMENT', `range ${offsetBytes}+${lengthBytes} of ${key} is not a byte range`);
  }
}

interface ListEntry {
  name: string;
  folder: boolean;
  /** What the entry's keys sort by: the name, and a folder's name with its '/'. */
  sortKey: string;
}

export interface LocalChunkStoreOptions {
  /**
   * Keep up to this many objects open between getRange calls (OpenFileCache; default 0: open and
   * close per call). Only for a store that is the one writer of its folder: it forgets a handle
   * when it replaces or deletes that object itself, and would not see another writer do so.
   */
  readonly openFilesMax?: number;
  /**
   * Keep the folders puts go into open between their fsyncs (FolderSyncs: one thread-pool call
   * per folder fsync, not three). Only for the one writer of its folder, as openFilesMax: a folder
   * removed and made again by someone else would be fsynced through the old one's descriptor.
   */
  readonly holdFolders?: boolean;
  /**
   * Write puts of up to 2 MiB (a 1 MiB PUT's pack) on the calling thread (inline-put.ts) instead of
   * libuv's pool: 'auto' (the default) where the folder is on tmpfs, whose calls never wait for a
   * device; true everywhere (tests); false never.
   */
  readonly inlineSmallPuts?: boolean | 'auto';
}

export class LocalChunkStore implements ChunkStore {
  /** The root folder, absolute (made by the first put if missing). */
  readonly rootDir: string;
  private readonly tempDir: string;
  private readonly openFiles: OpenFileCache | undefined;
  /** False once a read without waiting was refused as unsupported here (getRangeNow). */
  private readsWithoutWaiting = true;
  /** Folder fsyncs, shared by concurrent puts and deletes in one folder. */
  private readonly folderSyncs: FolderSyncs;
  /**
   * Folders of keys made (or found) by this store and made durable in their parents: a put into
   * one skips its mkdir. Settles once the folder is durable; a failed one is forgotten. A folder
   * removed since (an emptying delete, here or elsewhere) fails the put's rename with ENOENT,
   * which forgets it and makes it again.
   */
  private readonly readyFolders = new Map<string, Promise<void>>();
  private readonly inlineSmallPuts: boolean | 'auto';
  /** Whether small puts are written on the calling thread, once known ('auto': once the folder exists to be asked). */
  private putsInline: boolean | undefined;
  private closed = false;

  constructor(rootDir: string, options: LocalChunkStoreOptions = {}) {
    this.rootDir = path.resolve(rootDir);
    this.tempDir = path.join(this.rootDir, LOCAL_CHUNK_TEMP_FOLDER);
    const openFilesMax = options.openFilesMax ?? 0;
    this.openFiles = openFilesMax > 0 ? new OpenFileCache(openFilesMax) : undefined;
    this.folderSyncs = new FolderSyncs(options.holdFolders === true);
    this.inlineSmallPuts = options.inlineSmallPuts ?? 'auto';
  }

  /** Closes the packs kept open and the folders held between fsyncs; later calls fail. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.openFiles?.closeAll();
    await this.folderSyncs.close();
  }

  private checkOpen(what: string): void {
    if (this.closed) throw chunkStoreClosed(this.rootDir, what);
  }

  /** The file an object is stored in (the key checked first). */
  objectPath(key: string): string {
    return path.join(this.rootDir, ...localKeyParts(key));
  }

  /**
   * Deletes the temporary files of puts that never finished (the process died mid-write); their
   * objects were never renamed into place. Start-up only: a put running meanwhile would fail.
   * Returns the names removed.
   */
  async removeInterruptedPuts(): Promise<string[]> {
    let names: string[];
    try {
      names = await fs.readdir(this.tempDir);
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') return [];
      throw ioError(`cannot list ${this.tempDir}`, err);
    }
    for (const name of names) await fs.rm(path.join(this.tempDir, name), { force: true, recursive: true });
    return names.sort();
  }

  async get(key: string, options?: ChunkStoreCallOptions): Promise<Uint8Array | undefined> {
    this.checkOpen(`get ${key}`);
    const file = this.objectPath(key);
    throwIfAborted(options, `get ${key}`);
    try {
      const data = await fs.readFile(file, { signal: options?.signal });
      return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    } catch (err) {
      if (options?.signal?.aborted === true) throw cancelled(`get ${key}`);
      // A missing object, or a folder of other keys: no object of this key.
      if (errnoOf(err) === 'ENOENT' || errnoOf(err) === 'EISDIR' || errnoOf(err) === 'ENOTDIR') return undefined;
      throw ioError(`cannot read ${file}`, err);
    }
  }

  /** Reads only the range (pread), never the whole object. */
  async getRange(key: string, offsetBytes: number, lengthBytes: number, options?: ChunkStoreCallOptions): Promise<Uint8Array | undefined> {
    this.checkOpen(`get ${key}`);
    // A key whose file is held open was checked when it was opened: no path built, no re-check.
    const held = this.openFiles?.peek(key) !== undefined;
    const file = held ? undefined : this.objectPath(key);
    checkRange(key, offsetBytes, lengthBytes);
    throwIfAborted(options, `get ${key}`);
    if (this.openFiles !== undefined) {
      try {
        return await this.openFiles.use(key, () => openObject(file ?? this.objectPath(key)), (object) => readRange(object, offsetBytes, lengthBytes, () => throwIfAborted(options, `get ${key}`), options?.into));
      } catch (err) {
        if (err instanceof StorageError) throw err;
        throw ioError(`cannot read ${file ?? this.objectPath(key)}`, err);
      }
    }
    const objectFile = file ?? this.objectPath(key);
    let object: OpenFile | undefined;
    try {
      object = await openObject(objectFile);
    } catch (err) {
      throw ioError(`cannot open ${objectFile}`, err);
    }
    if (object === undefined) return undefined;
    try {
      return await readRange(object, offsetBytes, lengthBytes, () => throwIfAborted(options, `get ${key}`), options?.into);
    } catch (err) {
      if (err instanceof StorageError) throw err;
      throw ioError(`cannot read ${objectFile}`, err);
    } finally {
      await object.handle.close();
    }
  }

  /**
   * From a pack kept open (openFilesMax), when the page cache holds the bytes: one preadv2
   * (RWF_NOWAIT) on this thread, no path built, no key re-checked (an open handle's key was
   * checked when it was opened). False when the object is not open now or the read would wait.
   */
  getRangeNow(key: string, offsetBytes: number, target: Uint8Array): boolean {
    if (!this.readsWithoutWaiting || this.closed) return false;
    const object = this.openFiles?.peek(key);
    if (object === undefined || !Number.isSafeInteger(offsetBytes) || offsetBytes < 0 || offsetBytes + target.length > object.sizeBytes) return false;
    const outcome = readNoWait(object.handle.fd, offsetBytes, target);
    if (outcome === 'unsupported') this.readsWithoutWaiting = false; // this folder's file system cannot (tmpfs): stop asking
    return outcome === 'read';
  }

  async put(key: string, data: Uint8Array, options?: ChunkStoreCallOptions): Promise<void> {
    this.checkOpen(`put ${key}`);
    const parts = localKeyParts(key);
    throwIfAborted(options, `put ${key}`);
    if (data.length > 0 && data.length <= SYNCED_WRITE_MAX_BYTES && (await this.smallPutsInline()) && (await this.putInline(key, parts, data, options))) return;
    const temp = await this.writeTemp(key, data, options);
    try {
      await this.placeTemp(key, parts, temp, options, async (target) => {
        await fs.rename(temp, target);
        await this.openFiles?.forget(key);
        return true;
      });
    } catch (err) {
      await fs.rm(temp, { force: true });
      throw err;
    }
  }

  async putIfAbsent(key: string, data: Uint8Array, options?: ChunkStoreCallOptions): Promise<boolean> {
    this.checkOpen(`put ${key}`);
    const parts = localKeyParts(key);
    throwIfAborted(options, `put ${key}`);
    const temp = await this.writeTemp(key, data, options);
    try {
      return await this.placeTemp(key, parts, temp, options, async (target) => {
        try {
          await fs.link(temp, target);
          await this.openFiles?.forget(key);
          return true;
        } catch (err) {
          if (errnoOf(err) !== 'EEXIST') throw err;
          if ((await fs.lstat(target)).isDirectory()) throw Object.assign(new Error('a folder of other keys'), { code: 'EISDIR' });
          return false;
        }
      });
    } finally {
      await fs.rm(temp, { force: true });
    }
  }

  async delete(key: string, options?: ChunkStoreCallOptions): Promise<void> {
    this.checkOpen(`delete ${key}`);
    const parts = localKeyParts(key);
    throwIfAborted(options, `delete ${key}`);
    const file = path.join(this.rootDir, ...parts);
    try {
      await fs.unlink(file);
      await this.openFiles?.forget(key);
    } catch (err) {
      const code = errnoOf(err);
      if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR' || code === 'EPERM') return;
      throw ioError(`cannot delete ${file}`, err);
    }
    try {
      await this.folderSyncs.sync(path.dirname(file));
    } catch (err) {
      // A concurrent delete of the folder's last other key removed the folder between our unlink
      // and this sync (an rmdir succeeds only on an empty folder): our entry went with it.
      if (errnoOf(err) !== 'ENOENT') throw ioError(`cannot sync ${path.dirname(file)}`, err);
    }
    await this.removeEmptyFolders(parts.slice(0, -1));
  }

  async list(prefix: string, options?: ChunkStoreCallOptions & { after?: string; limit?: number }): Promise<ChunkListPage> {
    this.checkOpen(`list ${prefix}`);
    throwIfAborted(options, `list ${prefix}`);
    const limit = Math.min(options?.limit ?? CHUNK_LIST_PAGE_MAX, CHUNK_LIST_PAGE_MAX);
    if (!Number.isSafeInteger(limit) || limit < 1) throw new StorageError('INVALID_ARGUMENT', `list limit ${limit} is not a positive whole number`);
    // Every key with this prefix lies under the prefix's folder part; a folder part no key can
    // have (an empty, '.' or '..' part) holds none.
    const folderParts = prefix.split('/').slice(0, -1);
    if (folderParts.some((p) => p === '' || p === '.' || p === '..' || p.includes('\0')) || folderParts[0] === LOCAL_CHUNK_TEMP_FOLDER) return { keys: [] };
    const keys: string[] = [];
    // One key past the page tells whether there is a next page.
    for await (const key of this.walk(folderParts, prefix, options?.after, options)) {
      keys.push(key);
      if (keys.length > limit) break;
    }
    if (keys.length <= limit) return { keys };
    const page = keys.slice(0, limit);
    return { keys: page, nextAfter: page[page.length - 1] as string };
  }

  // --- put ---------------------------------------------------------------------------------------

  private async smallPutsInline(): Promise<boolean> {
    if (this.putsInline !== undefined) return this.putsInline;
    if (this.inlineSmallPuts !== 'auto') return (this.putsInline = this.inlineSmallPuts);
    const onTmpfs = await folderOnTmpfs(this.rootDir);
    if (onTmpfs !== undefined) this.putsInline = onTmpfs;
    return onTmpfs ?? false;
  }

  /** put written and renamed on this thread, then the folder's fsync; false when a folder was missing (the pool's path makes it). */
  private async putInline(key: string, parts: string[], data: Uint8Array, options: ChunkStoreCallOptions | undefined): Promise<boolean> {
    const target = path.join(this.rootDir, ...parts);
    await this.makeFolders(key, parts.slice(0, -1));
    throwIfAborted(options, `put ${key}`);
    const temp = this.newTempPath();
    try {
      if (!writeTempNow(temp, data)) return false;
    } catch (err) {
      throw ioError(`cannot write ${temp}`, err);
    }
    try {
      fsCallbacks.renameSync(temp, target);
    } catch (err) {
      fsCallbacks.rmSync(temp, { force: true });
      if (errnoOf(err) === 'ENOENT') return false; // a delete removed the emptied folder: the pool's path makes it again
      throw this.placeFailure(key, target, temp, err);
    }
    await this.openFiles?.forget(key);
    await this.syncOrFail(path.dirname(target), true);
    return true;
  }

  private newTempPath(): string {
    return path.join(this.tempDir, `${process.pid}-${randomHex(8)}`);
  }

  /** Writes data to a new temporary file and fsyncs it; on any failure or abort, leaves none. */
  private async writeTemp(key: string, data: Uint8Array, options: ChunkStoreCallOptions | undefined): Promise<string> {
    const temp = this.newTempPath();
    // Descriptors through the callback API, not FileHandle: a put is 4+ thread-pool calls and
    // FileHandle adds a promise object and a handle to collect to each (issue 14).
    // An empty object has no write to sync its new inode: it takes the fsync.
    const synced = data.length > 0 && data.length <= SYNCED_WRITE_MAX_BYTES;
    let fd: number;
    try {
      fd = await openNew(temp, synced);
    } catch (err) {
      if (errnoOf(err) !== 'ENOENT') throw ioError(`cannot create ${temp}`, err);
      await fs.mkdir(this.tempDir, { recursive: true });
      fd = await openNew(temp, synced).catch((again: unknown) => {
        throw ioError(`cannot create ${temp}`, again);
      });
    }
    let open = true;
    try {
      const sliceBytes = Math.ceil(data.length / Math.max(1, Math.ceil(data.length / WRITE_SLICE_MAX_BYTES)));
      let written = 0;
      do {
        throwIfAborted(options, `put ${key}`);
        const end = Math.min(data.length, written + sliceBytes);
        written += await writeAt(fd, data, written, end - written);
      } while (written < data.length);
      throwIfAborted(options, `put ${key}`);
      if (!synced) await fsyncDescriptor(fd);
      open = false;
      await closeDescriptor(fd);
      return temp;
    } catch (err) {
      if (open) await closeDescriptor(fd).catch(() => {});
      await fs.rm(temp, { force: true });
      if (err instanceof StorageError) throw err;
      throw ioError(`cannot write ${temp}`, err);
    }
  }

  /**
   * Makes the key's folders, then `place(target)` (rename or link) and fsyncs the folder. The last
   * abort check is before place: once the object is in place the put has happened.
   */
  private async placeTemp(
    key: string,
    parts: string[],
    temp: string,
    options: ChunkStoreCallOptions | undefined,
    place: (target: string) => Promise<boolean>,
  ): Promise<boolean> {
    const target = path.join(this.rootDir, ...parts);
    const folder = path.dirname(target);
    for (let attempt = 0; ; attempt++) {
      await this.makeFolders(key, parts.slice(0, -1));
      throwIfAborted(options, `put ${key}`);
      let placed: boolean;
      try {
        placed = await place(target);
      } catch (err) {
        const code = errnoOf(err);
        // A delete removed the emptied folder since it was made (or remembered): make it again.
        if (code === 'ENOENT' && attempt < FOLDER_RACE_RETRIES) {
          this.readyFolders.delete(folder);
          continue;
        }
        throw this.placeFailure(key, target, temp, err);
      }
      // Also when another caller placed it: the object must be durable before anyone relies on it.
      await this.syncOrFail(folder);
      return placed;
    }
  }

  /**
   * mkdir -p of the key's folders, each made durable in its parent, once per folder while it
   * stays (readyFolders): later puts into it, and puts meanwhile, wait for that, not a mkdir.
   */
  private async makeFolders(key: string, folderParts: string[]): Promise<void> {
    if (folderParts.length === 0) return;
    const folder = path.join(this.rootDir, ...folderParts);
    let ready = this.readyFolders.get(folder);
    if (ready === undefined) {
      const making = this.makeFolder(key, folderParts, folder);
      this.readyFolders.set(folder, making);
      making.catch(() => {
        if (this.readyFolders.get(folder) === making) this.readyFolders.delete(folder);
      });
      ready = making;
    }
    await ready;
  }

  private async makeFolder(key: string, folderParts: string[], folder: string): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      let first: string | undefined;
      try {
        first = await fs.mkdir(folder, { recursive: true });
        // Every folder from the first one made down to the key's: sync each one's parent. A folder
        // that was there already is synced in its parents too (once, as it is remembered from now
        // on): a process that died between its mkdir and those syncs may have left it not durable.
        const top = first ?? path.join(this.rootDir, folderParts[0]!);
        for (let dir = folder; ; dir = path.dirname(dir)) {
          await this.folderSyncs.sync(path.dirname(dir));
          if (dir === top || dir.length <= this.rootDir.length) break;
        }
        return;
      } catch (err) {
        const code = errnoOf(err);
        // A delete emptied and removed a folder of the key's meanwhile (mkdir -p saw it, then
        // not: ENOENT; or a sync found it gone): make it again.
        if (code === 'ENOENT' && attempt < FOLDER_RACE_RETRIES) continue;
        if (code === 'ENOTDIR' || code === 'EEXIST') throw this.folderConflict(key, folderParts.join('/'));
        throw ioError(`cannot create ${folder}`, err);
      }
    }
  }

  /** The error of a rename or link of `temp` onto `target` that failed for another reason than a missing folder. */
  private placeFailure(key: string, target: string, temp: string, err: unknown): StorageError {
    const code = errnoOf(err);
    if (code === 'EISDIR' || code === 'ENOTEMPTY' || code === 'EEXIST') return this.folderConflict(key, key);
    return ioError(`cannot store ${target} (from ${temp})`, err);
  }

  private folderConflict(key: string, clash: string): StorageError {
    return new StorageError(
      'INVALID_ARGUMENT',
      `chunk key ${JSON.stringify(key)} clashes with ${JSON.stringify(clash)}: in a local chunk store a key cannot also be the folder of other keys (as "a" and "a/b"); choose keys that do not nest`,
    );
  }

  /** `onThisThread`: the folder is on tmpfs, whose fsync waits for nothing (FolderSyncs.syncNow). */
  private async syncOrFail(dir: string, onThisThread = false): Promise<void> {
    try {
      if (!onThisThread || !this.folderSyncs.syncNow(dir)) await this.folderSyncs.sync(dir);
    } catch (err) {
      throw ioError(`cannot sync ${dir}`, err);
    }
  }

  /** Removes the key's folders that delete left empty, deepest first; stops at one still in use. */
  private async removeEmptyFolders(folderParts: string[]): Promise<void> {
    for (let n = folderParts.length; n > 0; n--) {
      const dir = path.join(this.rootDir, ...folderParts.slice(0, n));
      const remembered = this.readyFolders.get(dir);
      try {
        await this.folderSyncs.remove(dir, () => fs.rmdir(dir));
      } catch {
        return; // not empty (another key, or a put making it right now), or gone already
      }
      // Not a newer entry: a put that made the folder again meanwhile made that one.
      if (this.readyFolders.get(dir) === remembered) this.readyFolders.delete(dir);
    }
  }

  // --- list --------------------------------------------------------------------------------------

  /** Keys under a folder in key order, from after `after`, with the prefix; one folder read at a time. */
  private async *walk(folderParts: string[], prefix: string, after: string | undefined, options: ChunkStoreCallOptions | undefined): AsyncGenerator<string> {
    const folderKey = folderParts.length === 0 ? '' : `${folderParts.join('/')}/`;
    let dirents: Dirent[];
    try {
      dirents = await fs.readdir(path.join(this.rootDir, ...folderParts), { withFileTypes: true });
    } catch (err) {
      if (errnoOf(err) === 'ENOENT' || errnoOf(err) === 'ENOTDIR') return;
      throw ioError(`cannot list ${path.join(this.rootDir, ...folderParts)}`, err);
    }
    const entries: ListEntry[] = [];
    for (const d of dirents) {
      if (folderParts.length === 0 && d.name === LOCAL_CHUNK_TEMP_FOLDER) continue;
      const folder = d.isDirectory();
      if (!folder && !d.isFile()) continue; // not something a put makes
      entries.push({ name: d.name, folder, sortKey: folder ? `${d.name}/` : d.name });
    }
    entries.sort((a, b) => (a.sortKey < b.sortKey ? -1 : a.sortKey > b.sortKey ? 1 : 0));
    for (const entry of entries) {
      throwIfAborted(options, `list ${prefix}`);
      const key = folderKey + entry.name;
      if (!entry.folder) {
        if (key.startsWith(prefix) && (after === undefined || key > after)) yield key;
        continue;
      }
      const keysStart = `${key}/`;
      if (!keysStart.startsWith(prefix) && !prefix.startsWith(keysStart)) continue;
      // Every key below starts with keysStart: all sort before `after` unless `after` runs into them.
      if (after !== undefined && keysStart < after && !after.startsWith(keysStart)) continue;
      yield* this.walk([...folderParts, entry.name], prefix, after, options);
    }
  }
}
