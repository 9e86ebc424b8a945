/** Filling a (small, test-mounted) filesystem to the last byte, so the next allocation gets ENOSPC. */
import { closeSync, openSync, writeSync } from 'node:fs';

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
