/**
 * OpenFileCache: open read-only handles of a folder's object files, kept between reads. A dedup
 * pool reads a 64 KiB chunk at a time out of packs of a few MiB; opening, stat-ing and closing
 * the pack around every such read cost three thread-pool round trips besides the read itself
 * (measured: open, fstat and close took as long as the reads, 3.5 s of 14 s of the daemon's CPU
 * in 4 KiB random reads of a sealed volume). Objects are replaced by rename and never changed in
 * place, so an open handle and the size taken when it was opened stay true for that file; the
 * owner calls forget(key) after it replaces or removes the file, and later reads open the new one.
 *
 * Bounded: at most `openFilesMax` handles, the least recently used closed first. A handle in use
 * by a read is closed when its last reader is done, never under one.
 */
import fs from 'node:fs/promises';

export interface OpenFile {
  readonly handle: fs.FileHandle;
  /** The file's size when it was opened (objects never change in place). */
  readonly sizeBytes: number;
}

interface Entry {
  readonly opening: Promise<OpenFile | undefined>;
  /** The open file once `opening` has resolved to one (what peek answers without waiting). */
  file?: OpenFile;
  users: number;
  /** Dropped from the cache (forgotten or pushed out): close once no reader uses it. */
  dropped: boolean;
}

export class OpenFileCache {
  /** Keys in least recently used order. */
  private readonly entries = new Map<string, Entry>();

  constructor(private readonly openFilesMax: number) {}

  /** Open handles and handles being opened (for tests). */
  get size(): number {
    return this.entries.size;
  }

  /**
   * Runs `read` with the key's open file, opening it with `open` when it is not cached (undefined:
   * there is no such file, and nothing is cached). A failed open is not cached either.
   */
  async use<T>(key: string, open: () => Promise<OpenFile | undefined>, read: (file: OpenFile) => Promise<T>): Promise<T | undefined> {
    let entry = this.entries.get(key);
    if (entry === undefined) {
      const opening = open();
      const created: Entry = { opening, users: 0, dropped: false };
      opening.then((file) => (created.file = file), () => undefined);
      entry = created;
      this.entries.set(key, entry);
      this.trim();
    } else {
      this.entries.delete(key);
      this.entries.set(key, entry);
    }
    entry.users++;
    try {
      let file: OpenFile | undefined;
      try {
        file = await entry.opening;
      } catch (err) {
        this.drop(key, entry);
        throw err;
      }
      if (file === undefined) {
        this.drop(key, entry);
        return undefined;
      }
      return await read(file);
    } finally {
      entry.users--;
      if (entry.dropped) await this.closeIfUnused(entry);
    }
  }

  /**
   * The key's file when it is open now (not being opened, not dropped), without waiting. The
   * caller uses it synchronously, before any await: a handle is closed only after it was dropped
   * from here, never while a synchronous caller holds it. Counts as a use (LRU order).
   */
  peek(key: string): OpenFile | undefined {
    const entry = this.entries.get(key);
    if (entry?.file === undefined) return undefined;
    this.entries.delete(key);
    this.entries.set(key, entry);
    return entry.file;
  }

  /** Drops the key's handle: the file was replaced or removed (call after the rename or unlink). */
  async forget(key: string): Promise<void> {
    const entry = this.entries.get(key);
    if (entry === undefined) return;
    this.drop(key, entry);
    await this.closeIfUnused(entry);
  }

  /** Drops every handle: closed now, or once its readers are done (the owner is closing). */
  async closeAll(): Promise<void> {
    const entries = [...this.entries];
    for (const [key, entry] of entries) this.drop(key, entry);
    await Promise.all(entries.map(([, entry]) => this.closeIfUnused(entry)));
  }

  private drop(key: string, entry: Entry): void {
    entry.dropped = true;
    if (this.entries.get(key) === entry) this.entries.delete(key);
  }

  /** Closes the least recently used handles beyond the bound (once their readers are done). */
  private trim(): void {
    for (const [key, entry] of this.entries) {
      if (this.entries.size <= this.openFilesMax) return;
      this.drop(key, entry);
      void this.closeIfUnused(entry);
    }
  }

  private async closeIfUnused(entry: Entry): Promise<void> {
    if (entry.users > 0) return;
    entry.users = -1; // closed: no second close
    const file = await entry.opening.catch(() => undefined);
    await file?.handle.close().catch(() => undefined);
  }
}
