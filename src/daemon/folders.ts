/**
 * Folders the daemon creates for paths an operator gives it: the data folder, and the folder of a
 * unix socket it listens on (a vhost-user attachment's, the NBD socket). A socket folder is created
 * when missing, since a folder under /run is gone after a reboot and an operator's
 * `--vhost-user /run/strata/vm1.sock` should not need a mkdir first; created socket folders are
 * private to the daemon's user (0700: the socket serves a disk). Existing folders are left as
 * they are.
 */
import { mkdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { StorageError } from '../core/errors.js';

const SOCKET_FOLDER_MODE = 0o700;

/** Why a folder could not be created, in words (the errno name follows in the message). */
const REASONS: Record<string, string> = {
  EACCES: 'permission denied',
  EPERM: 'permission denied',
  ENOTDIR: 'a file is in the way',
  EEXIST: 'a file is in the way',
  ENOENT: 'this file system does not allow creating it',
  EROFS: 'the file system is read-only',
  ENOSPC: 'no space left on the device',
  ENAMETOOLONG: 'the path is too long',
};

/** Whether dir is an existing folder; false when it or a folder above it is missing. */
function isFolder(dir: string): boolean {
  try {
    return statSync(dir).isDirectory();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return false;
    throw err;
  }
}

/**
 * Creates folder and the missing folders above it, each with mode (less the umask). Not
 * mkdirSync's recursive mode: that retries forever where mkdir answers ENOENT below an existing
 * folder (/proc, /sys), hanging the daemon. Throws the failing mkdir's error (its path says which).
 */
export function makeFolders(folder: string, mode?: number): void {
  const missing: string[] = [];
  for (let dir = path.resolve(folder); !isFolder(dir); dir = path.dirname(dir)) {
    missing.push(dir);
    if (path.dirname(dir) === dir) break;
  }
  for (const dir of missing.reverse()) {
    try {
      mkdirSync(dir, mode === undefined ? {} : { mode });
    } catch (err) {
      // Created meanwhile by someone else: as good as ours.
      if ((err as NodeJS.ErrnoException).code === 'EEXIST' && isFolder(dir)) continue;
      throw err;
    }
  }
}

/**
 * Creates socketPath's folder unless it exists (chooseAnother: how the client picks another path,
 * e.g. "choose another with --nbd-socket"). A failure is an INVALID_ARGUMENT naming the folder
 * and the reason: the path the client chose cannot be used (not a missing volume, which is what
 * NOT_FOUND would tell it).
 */
export function ensureSocketFolder(socketPath: string, what: string, chooseAnother: string): void {
  const folder = path.dirname(path.resolve(socketPath));
  try {
    makeFolders(folder, SOCKET_FOLDER_MODE);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const code = e.code ?? '';
    const where = e.path !== undefined && e.path !== folder ? ` at ${e.path}` : '';
    const reason = REASONS[code] ?? e.message;
    throw new StorageError(
      'INVALID_ARGUMENT',
      `cannot create the folder ${folder} for ${what} ${socketPath}: ${reason}${where}${code !== '' ? ` (${code})` : ''}; create it for the daemon's user, or ${chooseAnother} in a folder the daemon can write to`,
      { cause: err },
    );
  }
}
