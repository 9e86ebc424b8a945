/** What the local stores (layer files, chunk objects) share about folders and errno codes. */
import fsCallbacks from 'node:fs';
import fs from 'node:fs/promises';

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
