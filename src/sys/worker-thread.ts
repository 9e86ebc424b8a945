/**
 * Starting a worker thread whose body is a file beside the calling module, the way the hashing
 * pools do (src/objects/hash-workers.ts, src/store/dedup/chunk-hash-workers.ts): from src/ (tests,
 * type stripping) the body is the .ts file, from dist/ the .js; the thread does not keep the
 * process alive until its owner refs it; `onDeath` is told once, whether it failed or exited.
 * Both pools size themselves with poolThreadsBesideMain.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';

/** Threads a hashing pool runs at most, whatever the cores. */
const POOL_THREADS_MAX = 4;

/** A pool's size: the cores beside the main thread's, at least one, at most POOL_THREADS_MAX. */
export function poolThreadsBesideMain(): number {
  return Math.max(1, Math.min(POOL_THREADS_MAX, availableParallelism() - 1));
}

export function startWorkerBeside<Reply>(moduleUrl: string, baseName: string, onMessage: (reply: Reply) => void, onDeath: (why: string) => void, workerData?: unknown): Worker {
  const worker = new Worker(new URL(`./${baseName}${moduleUrl.endsWith('.ts') ? '.ts' : '.js'}`, moduleUrl), { workerData });
  worker.unref();
  worker.on('message', onMessage);
  let dead = false;
  const die = (why: string): void => {
    if (dead) return;
    dead = true;
    onDeath(why);
  };
  worker.on('error', (err) => die(err.message));
  worker.on('exit', (code) => die(`exit code ${code}`));
  return worker;
}
