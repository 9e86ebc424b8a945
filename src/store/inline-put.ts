/**
 * A local chunk store's small put written on the calling thread, for a folder on tmpfs.
 *
 * Why: a put through libuv's thread pool is four hand-offs before the folder's fsync (open, write,
 * close, rename: each a pool thread woken and the event loop woken back), and on a busy machine
 * each waits for a time slice; 1 MiB PUTs one at a time beside two CPU-bound processes ran ~5%
 * faster with them done here (12 alternating pairs, 8 ahead; bench/RESULTS.md). On tmpfs none of these
 * calls waits for a device: they cost the calling thread a page-cache copy (~0.2 ms for 1 MiB),
 * as LocalHostFile's synchronous tmpfs I/O does for volumes. Elsewhere puts stay on the pool.
 *
 * The same steps and guarantees as the pool's path (local-chunk-store.ts): a new temporary file
 * opened O_CREAT | O_EXCL | O_DSYNC and all bytes written to it here; the store renames it and
 * fsyncs the folder.
 */
import fsCallbacks from 'node:fs';
import { errnoOf } from './local-folder.js';

/**
 * Writes `data` to the new file `temp` (O_DSYNC) on this thread. False when the temporary folder
 * does not exist yet (the pool's path makes it); other errors are thrown as they come, the file
 * removed first.
 */
export function writeTempNow(temp: string, data: Uint8Array): boolean {
  const { O_WRONLY, O_CREAT, O_EXCL, O_DSYNC } = fsCallbacks.constants;
  let fd: number;
  try {
    fd = fsCallbacks.openSync(temp, O_WRONLY | O_CREAT | O_EXCL | O_DSYNC, 0o644);
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return false;
    throw err;
  }
  try {
    try {
      for (let written = 0; written < data.length; ) written += fsCallbacks.writeSync(fd, data, written, data.length - written, written);
    } finally {
      fsCallbacks.closeSync(fd);
    }
  } catch (err) {
    fsCallbacks.rmSync(temp, { force: true });
    throw err;
  }
  return true;
}
