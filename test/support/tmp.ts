/**
 * Per-test temporary directories, removed when the test finishes (kept when STRATA_KEEP_TMP=1, for
 * debugging; the path is printed then).
 *
 *   it('...', async () => { const dir = tempDir(); ... });          // under os.tmpdir()
 *   it('...', async () => { const dir = shmTempDir(); ... });       // under /dev/shm if present
 *
 * or, for every test of a suite: `const tmp = useTempDir();` then `tmp.path` inside tests.
 */
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, onTestFinished } from 'vitest';

const SHM = '/dev/shm';
const PREFIX = 'strata-test-';

function keep(): boolean {
  return process.env.STRATA_KEEP_TMP === '1';
}

function remove(dir: string): void {
  if (keep()) {
    process.stderr.write(`STRATA_KEEP_TMP=1: keeping ${dir}\n`);
    return;
  }
  rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
}

/** True when /dev/shm exists and is a writable directory (tmpfs on Linux). */
export function shmAvailable(): boolean {
  try {
    if (!existsSync(SHM) || !statSync(SHM).isDirectory()) return false;
    const probe = mkdtempSync(path.join(SHM, PREFIX));
    rmSync(probe, { recursive: true, force: true });
    return true;
  } catch {
    return false;
  }
}

let shmChecked: boolean | undefined;

/** The base directory shmTempDir uses: /dev/shm when available, else os.tmpdir(). */
export function shmBase(): string {
  shmChecked ??= shmAvailable();
  return shmChecked ? SHM : os.tmpdir();
}

/** Creates a fresh directory under base; the caller removes it (see tempDir for automatic cleanup). */
export function makeTempDir(base: string = os.tmpdir()): { path: string; cleanup: () => void } {
  const dir = mkdtempSync(path.join(base, PREFIX));
  return { path: dir, cleanup: () => remove(dir) };
}

/** A directory under os.tmpdir() removed when the current test finishes. Call inside a test. */
export function tempDir(): string {
  const { path: dir, cleanup } = makeTempDir(os.tmpdir());
  onTestFinished(cleanup);
  return dir;
}

/** Like tempDir, under /dev/shm when available (falls back to os.tmpdir()). */
export function shmTempDir(): string {
  const { path: dir, cleanup } = makeTempDir(shmBase());
  onTestFinished(cleanup);
  return dir;
}

/** Registers beforeEach/afterEach in the calling suite: `.path` is a fresh directory in each test. */
export function useTempDir(options: { shm?: boolean } = {}): { readonly path: string } {
  let current: { path: string; cleanup: () => void } | undefined;
  beforeEach(() => {
    current = makeTempDir(options.shm ? shmBase() : os.tmpdir());
  });
  afterEach(() => {
    current?.cleanup();
    current = undefined;
  });
  return {
    get path(): string {
      if (!current) throw new Error('useTempDir: .path is only available inside a test');
      return current.path;
    },
  };
}
