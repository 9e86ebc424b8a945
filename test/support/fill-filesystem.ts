/** A small tmpfs mounted for a test, and filling it to the last byte, so the next allocation gets ENOSPC. */
import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { isCi, run } from './tools.js';

/**
 * Makes `dir` and mounts a tmpfs of `sizeBytes` there (mount needs root): true when mounted; false
 * where it cannot be (the caller skips), except under CI=true, where tests must not skip.
 */
export function mountSmallTmpfs(dir: string, sizeBytes: number): boolean {
  mkdirSync(dir, { recursive: true });
  const mounted = run('mount', ['-t', 'tmpfs', '-o', `size=${sizeBytes}`, 'tmpfs', dir]);
  if (mounted.code === 0) return true;
  if (isCi()) throw new Error(`cannot mount a ${sizeBytes}-byte tmpfs at ${dir} (CI=true: tests must not skip; run them as root): ${mounted.stderr}`);
  return false;
}

/** Unmounts what mountSmallTmpfs mounted. */
export function unmountSmallTmpfs(dir: string): void {
  run('umount', [dir]);
}

/**
 * Writes `file` until its filesystem refuses another byte: large writes first, then ever smaller
 * ones, so no block is left that a later small allocation could still take.
 */
export function fillUp(file: string): void {
  const fd = openSync(file, 'w');
  try {
    for (const size of [1024 * 1024, 64 * 1024, 4096, 512, 1]) {
      const chunk = new Uint8Array(size).fill(0xee);
      for (;;) {
        try {
          writeSync(fd, chunk);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENOSPC') break;
          throw err;
        }
      }
    }
  } finally {
    closeSync(fd);
  }
}
