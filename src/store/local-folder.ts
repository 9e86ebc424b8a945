/** What the local stores (layer files, chunk objects) share about folders and errno codes. */
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
