/** A `strata serve` for benchmarks: the built CLI (dist/) on a free API port, driven by the CLI. */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = resolve(fileURLToPath(import.meta.url), '..');
/** bin/strata.js, from dist/bench/. */
export const STRATA_BIN = join(here, '..', '..', 'bin', 'strata.js');

export interface StrataDaemon {
  child: ChildProcess;
  url: string;
  dataDir: string;
  /** The CLI this daemon runs (another build's bin/strata.js for a before/after run). */
  bin: string;
}

/** How often a daemon writing its log to a file is checked for its "listening" line. */
const LOG_POLL_MS = 50;

/**
 * `strata serve` on a free API port, NBD on its unix socket only; resolves once it listens. `env`:
 * its environment (S3 credentials for a tier). `logFile`: the daemon's log goes to that file, as
 * radosgw's does, instead of a pipe into this process; a bench whose process is also the client
 * (bench:s3) would otherwise pay for reading a log line per request on the client's event loop,
 * and the daemon would stall on a full pipe when that loop is slow to drain it.
 */
export async function startStrata(dataDir: string, extra: string[] = [], env: NodeJS.ProcessEnv = process.env, bin = STRATA_BIN, logFile?: string): Promise<StrataDaemon> {
  const logFd = logFile === undefined ? undefined : openSync(logFile, 'w');
  const child = spawn(process.execPath, [bin, 'serve', '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--nbd-listen', 'off', '--s3-listen', 'off', ...extra], {
    stdio: ['ignore', logFd ?? 'pipe', 'inherit'],
    env,
  });
  if (logFd !== undefined) closeSync(logFd); // the child holds its own copy
  let log = '';
  const url = await new Promise<string>((resolveUrl, reject) => {
    const listeningUrl = (): string | undefined => /\blistening\b.*url=(http:\/\/\S+)/.exec(log)?.[1];
    child.on('exit', (code) => reject(new Error(`strata serve exited (${code}):\n${log}`)));
    if (logFile !== undefined) {
      const timer = setInterval(() => {
        log = readFileSync(logFile, 'utf8');
        const found = listeningUrl();
        if (found === undefined) return;
        clearInterval(timer);
        log = '';
        resolveUrl(found);
      }, LOG_POLL_MS);
      child.once('exit', () => clearInterval(timer));
      return;
    }
    const onData = (d: Buffer): void => {
      log += d.toString();
      const found = listeningUrl();
      if (found === undefined) return;
      // Stop collecting once the daemon listens: it logs a line per request, and a log kept (and
      // searched) for the daemon's whole life would slow the bench process.
      child.stdout!.off('data', onData);
      log = '';
      resolveUrl(found);
    };
    child.stdout!.on('data', onData);
  });
  child.stdout?.resume();
  return { child, url, dataDir, bin };
}

/** The environment that points the CLI at the daemon. */
export function strataEnv(d: StrataDaemon): NodeJS.ProcessEnv {
  return { ...process.env, STRATA_URL: d.url, STRATA_DATA_DIR: d.dataDir };
}

export function strataCli(d: StrataDaemon, args: string[]): void {
  execFileSync(process.execPath, [d.bin, ...args], { env: strataEnv(d), stdio: 'ignore' });
}

/** The CLI's `--json` answer to a command. */
export function strataJson<T>(d: StrataDaemon, args: string[]): T {
  return JSON.parse(execFileSync(process.execPath, [d.bin, ...args, '--json'], { env: strataEnv(d), encoding: 'utf8' })) as T;
}

/** Resolves once the daemon runs no queued or running job (seals start right after an import or snapshot). */
export async function waitForJobs(d: StrataDaemon): Promise<void> {
  // The REST API straight (a CLI process per poll would add its start-up to what a cell times).
  const headers = { authorization: `Bearer ${readFileSync(join(d.dataDir, 'token'), 'utf8').trim()}` };
  for (;;) {
    const jobs = await getJson<{ id: string; kind: string; state: string }[]>(`${d.url}/v1/jobs`, headers);
    const failed = jobs.find((j) => j.state === 'failed');
    if (failed !== undefined) throw new Error(`job ${failed.id} (${failed.kind}) failed: ${JSON.stringify(failed)}`);
    if (!jobs.some((j) => j.state === 'queued' || j.state === 'running')) return;
    // The job list has no "all done" event: poll it at a short interval.
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** GET of a JSON answer; a connection the server closed between polls (EPIPE, reset) is tried again. */
async function getJson<T>(url: string, headers: Record<string, string>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return (await (await fetch(url, { headers })).json()) as T;
    } catch (err) {
      if (attempt >= 5) throw err;
    }
  }
}

/** The daemon process's resident set (VmRSS) and its peak (VmHWM), in bytes, from /proc. */
export function daemonMemory(d: StrataDaemon): { rssBytes: number; peakRssBytes: number } {
  const status = readFileSync(`/proc/${d.child.pid}/status`, 'utf8');
  const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024;
  return { rssBytes: kib('VmRSS'), peakRssBytes: kib('VmHWM') };
}
