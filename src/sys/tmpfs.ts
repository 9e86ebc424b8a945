/**
 * Whether a folder is on tmpfs: memory, where a file call never waits for a device. Strata's local
 * stores and its catalog make calls there on the calling thread that elsewhere go through libuv's
 * thread pool (a hand-off is two thread wake-ups, each a wait for a time slice on a busy machine).
 */
import fs from 'node:fs';

/** statfs f_type of tmpfs (and of /dev/shm). */
const TMPFS_MAGIC = 0x01021994;

/** Whether `path` is on tmpfs; undefined when statfs cannot tell (the path does not exist yet). */
export function folderOnTmpfs(path: string): Promise<boolean | undefined> {
  return new Promise((resolve) => {
    fs.statfs(path, (err, st) => resolve(err ? undefined : st.type === TMPFS_MAGIC));
  });
}
