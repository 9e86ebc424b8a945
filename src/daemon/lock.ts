/**
 * The data folder's lock: <data>/strata.pid, held with flock(LOCK_EX | LOCK_NB) for the daemon's
 * lifetime and holding its pid. The kernel drops the lock when the process dies, even by SIGKILL,
 * so a stale file never blocks a restart and a reused pid never fools it. A second daemon on the
 * same folder fails at once with BUSY and the first one's pid.
 *
 * Where flock cannot be bound (not glibc Linux) the file is created with O_EXCL instead and a
 * leftover file whose pid is not alive is taken over.
 */
import fs from 'node:fs';
import path from 'node:path';
import { StorageError } from '../core/errors.js';
import { fileSyscalls, LOCK_EX, LOCK_NB } from '../sys/file-syscalls.js';

export const LOCK_FILE_NAME = 'strata.pid';

export interface DataDirLock {
  readonly path: string;
  release(): void;
}

function readPid(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8').trim() || 'unknown';
  } catch {
    return 'unknown';
  }
}

function busy(file: string, dataDir: string): StorageError {
  return new StorageError(
    'BUSY',
    `another strata daemon (pid ${readPid(file)}) is using the data folder ${dataDir} (lock ${file}); stop it first or use another --data-dir`,
  );
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Takes the data folder's lock or throws BUSY. The folder must exist. */
export function lockDataDir(dataDir: string): DataDirLock {
  const file = path.join(dataDir, LOCK_FILE_NAME);
  const syscalls = fileSyscalls();
  if (syscalls === null) return lockWithExclusiveCreate(file, dataDir);
  for (let attempt = 0; attempt < 10; attempt++) {
    const fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o644);
    if (syscalls.flock(fd, LOCK_EX | LOCK_NB) !== 0) {
      fs.closeSync(fd);
      throw busy(file, dataDir);
    }
    // The holder before us may have unlinked the file between our open and our flock: then we
    // hold a lock on a file nobody else sees. Retry until the path is the file we locked.
    let same = false;
    try {
      const a = fs.fstatSync(fd);
      const b = fs.statSync(file);
      same = a.ino === b.ino && a.dev === b.dev;
    } catch {
      same = false;
    }
    if (!same) {
      fs.closeSync(fd);
      continue;
    }
    fs.ftruncateSync(fd, 0);
    fs.writeSync(fd, `${process.pid}\n`, 0);
    let released = false;
    return {
      path: file,
      release: () => {
        if (released) return;
        released = true;
        try {
          fs.unlinkSync(file);
        } catch {
          // already gone
        }
        fs.closeSync(fd);
      },
    };
  }
  throw busy(file, dataDir);
}

function lockWithExclusiveCreate(file: string, dataDir: string): DataDirLock {
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      fs.writeFileSync(file, `${process.pid}\n`, { flag: 'wx', mode: 0o644 });
      return {
        path: file,
        release: () => {
          try {
            fs.unlinkSync(file);
          } catch {
            // already gone
          }
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const pid = Number(readPid(file));
      if (Number.isInteger(pid) && pid > 0 && isAlive(pid)) throw busy(file, dataDir);
      fs.rmSync(file, { force: true });
    }
  }
  throw busy(file, dataDir);
}
