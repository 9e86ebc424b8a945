/** What the local stores (layer files, chunk objects) share about folders and errno codes. */
import fsCallbacks from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';

/** The errno code (ENOENT, EEXIST, ...) of a failed fs call, if it has one. */
export function errnoOf(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | null)?.code;
}

/** fsync a folder, so that names created or removed in it survive a power cut. */
export async function syncFolder(dir: string): Promise<void> {
  const handle = await fs.open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * fsync and close of a bare descriptor through the callback API: no FileHandle (a promise object
 * and a handle to collect per call) on paths that make several pool calls per put (issue 14).
 */
export function fsyncDescriptor(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fsCallbacks.fsync(fd, (err) => (err ? reject(err) : resolve())));
}

export function closeDescriptor(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fsCallbacks.close(fd, (err) => (err ? reject(err) : resolve())));
}

/**
 * Removes `dir` and the folders under it when none of them holds a file (a deleted pool's empty
 * folders); a folder with a file anywhere below it stays, as does that file. A missing dir is fine.
 * True when dir is gone.
 */
export async function removeEmptyTree(dir: string): Promise<boolean> {
  let entries: fsCallbacks.Dirent[];
  try {
    entries = await fs.readdir(dir, { withFileTypes: true });
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return true;
    throw err;
  }
  let empty = true;
  for (const entry of entries) {
    if (!entry.isDirectory() || !(await removeEmptyTree(path.join(dir, entry.name)))) empty = false;
  }
  if (!empty) return false;
  try {
    await fs.rmdir(dir);
    return true;
  } catch (err) {
    // Something was put there meanwhile: it stays.
    if (errnoOf(err) === 'ENOTEMPTY' || errnoOf(err) === 'EEXIST') return false;
    if (errnoOf(err) === 'ENOENT') return true;
    throw err;
  }
}
