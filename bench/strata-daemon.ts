/** A `strata serve` for benchmarks: the built CLI (dist/) on a free API port, driven by the CLI. */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = resolve(fileURLToPath(import.meta.url), '..');
/** bin/strata.js, from dist/bench/. */
export const STRATA_BIN = join(here, '..', '..', 'bin', 'strata.js');

export interface StrataDaemon {
  child: ChildProcess;
  url: string;
  dataDir: string;
}

/** `strata serve` on a free API port, NBD on its unix socket only; resolves once it listens. */
export async function startStrata(dataDir: string, extra: string[] = []): Promise<StrataDaemon> {
  const child = spawn(process.execPath, [STRATA_BIN, 'serve', '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--nbd-listen', 'off', '--s3-listen', 'off', ...extra], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let log = '';
  const url = await new Promise<string>((resolveUrl, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      log += d.toString();
      const m = /\blistening\b.*url=(http:\/\/\S+)/.exec(log);
      if (m) resolveUrl(m[1]!);
    });
    child.on('exit', (code) => reject(new Error(`strata serve exited (${code}):\n${log}`)));
  });
  child.stdout!.resume();
  return { child, url, dataDir };
}

/** The environment that points the CLI at the daemon. */
export function strataEnv(d: StrataDaemon): NodeJS.ProcessEnv {
  return { ...process.env, STRATA_URL: d.url, STRATA_DATA_DIR: d.dataDir };
}

export function strataCli(d: StrataDaemon, args: string[]): void {
  execFileSync(process.execPath, [STRATA_BIN, ...args], { env: strataEnv(d), stdio: 'ignore' });
}
