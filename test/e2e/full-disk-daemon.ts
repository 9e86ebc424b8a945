/**
 * A `strata serve` whose data folder is on a small tmpfs, so a test can fill its disk for real:
 * mounted when the test starts it (root only: the test is skipped where it cannot be, never under
 * CI), the daemon killed and the tmpfs unmounted after the suite. The log stays off the full
 * filesystem (it must be readable, and it is not what the test fills).
 */
import path from 'node:path';
import { afterAll, type TestContext } from 'vitest';
import { mountSmallTmpfs, unmountSmallTmpfs } from '../support/fill-filesystem.js';
import { makeTempDir } from '../support/tmp.js';
import { startDaemon, type Daemon } from './harness.js';

export interface FullDiskDaemon {
  /** The tmpfs's mount point (the data folder is `data` in it). */
  readonly mnt: string;
  /** A folder off the tmpfs for sockets and the log. */
  readonly outside: string;
  /** Mounts the tmpfs and starts the daemon on it; skips the test where mounting is refused. */
  start(ctx: TestContext): Promise<Daemon>;
}

/** Call in a describe: registers the cleanup. */
export function useFullDiskDaemon(tmpfsBytes: number): FullDiskDaemon {
  const tmp = makeTempDir();
  const mnt = path.join(tmp.path, 'mnt');
  let mounted = false;
  let d: Daemon | undefined;
  afterAll(async () => {
    await d?.kill();
    if (mounted) unmountSmallTmpfs(mnt);
    tmp.cleanup();
  });
  return {
    mnt,
    outside: tmp.path,
    async start(ctx: TestContext): Promise<Daemon> {
      if (!mountSmallTmpfs(mnt, tmpfsBytes)) ctx.skip();
      mounted = true;
      d = await startDaemon(path.join(mnt, 'data'), { logFile: path.join(tmp.path, 'daemon.log') });
      return d;
    },
  };
}
