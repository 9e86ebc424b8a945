/**
 * External tools for tests (qemu-img, qemu-io, fio, nbdkit, ...) and running commands.
 *
 * Gate a suite on a tool with
 *   describe.skipIf(!requireTool('qemu-img'))('against qemu-img', () => { ... });
 * Locally a missing tool skips the suite; in CI (CI=true, set by .ci/run) it throws while the file
 * is collected, so the file fails instead of silently skipping.
 */
import { spawn, spawnSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const STRATA_BIN = path.join(REPO_ROOT, 'bin', 'strata.js');

const found = new Map<string, string | undefined>();

/** The absolute path of an executable on PATH, or undefined. */
export function findTool(name: string): string | undefined {
  if (found.has(name)) return found.get(name);
  let result: string | undefined;
  const candidates = name.includes('/') ? [name] : (process.env.PATH ?? '').split(path.delimiter).filter(Boolean).map((dir) => path.join(dir, name));
  for (const candidate of candidates) {
    try {
      accessSync(candidate, constants.X_OK);
      result = path.resolve(candidate);
      break;
    } catch {
      // not here
    }
  }
  found.set(name, result);
  return result;
}

export function isCi(): boolean {
  return process.env.CI === 'true';
}

/**
 * True when every named tool is on PATH. When one is missing: throws under CI=true (the test file
 * fails), otherwise returns false so the caller can skip (describe.skipIf(!requireTool(...))).
 */
export function requireTool(...names: string[]): boolean {
  const missing = names.filter((name) => findTool(name) === undefined);
  if (missing.length === 0) return true;
  if (isCi()) {
    throw new Error(
      `required tool${missing.length > 1 ? 's' : ''} not found on PATH: ${missing.join(', ')} ` +
        '(CI=true: tests must not skip; install it in .ci/run)',
    );
  }
  return false;
}

export interface RunOptions {
  cwd?: string;
  /** Added to process.env. */
  env?: Record<string, string | undefined>;
  /** Written to the child's stdin. */
  input?: string | Uint8Array;
  /** Kill the child after this long (default 120 s). */
  timeoutMs?: number;
}

export interface RunResult {
  /** Exit status; null when the child was killed by a signal (see `signal`). */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

const DEFAULT_TIMEOUT_MS = 120_000;

function childEnv(extra: RunOptions['env']): NodeJS.ProcessEnv {
  return extra ? { ...process.env, ...extra } : process.env;
}

function describeCommand(cmd: string, args: readonly string[]): string {
  return [cmd, ...args].map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

/** Runs a command to completion (synchronously). Throws only if it could not be started. */
export function run(cmd: string, args: readonly string[] = [], opts: RunOptions = {}): RunResult {
  const result = spawnSync(cmd, args, {
    cwd: opts.cwd,
    env: childEnv(opts.env),
    input: opts.input,
    timeout: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    encoding: 'utf8',
    maxBuffer: 256 * 1024 * 1024,
  });
  if (result.error && result.status === null && result.signal === null) {
    throw new Error(`could not run ${describeCommand(cmd, args)}: ${result.error.message}`, { cause: result.error });
  }
  return { code: result.status, signal: result.signal, stdout: result.stdout ?? '', stderr: result.stderr ?? '' };
}

/** Runs a command without blocking the event loop (for tests that serve I/O while it runs). */
export function runAsync(cmd: string, args: readonly string[] = [], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, env: childEnv(opts.env), stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`could not run ${describeCommand(cmd, args)}: ${e.message}`, { cause: e }));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({
        code,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      });
    });
    child.stdin.on('error', () => {}); // the child may exit without reading its input
    child.stdin.end(opts.input ?? undefined);
  });
}

/** Throws (with the command's output) unless it exited 0; returns the result otherwise. */
export function expectSuccess(result: RunResult, what = 'command'): RunResult {
  if (result.code !== 0) {
    const status = result.code === null ? `killed by ${result.signal}` : `exit status ${result.code}`;
    throw new Error(`${what} failed (${status})\nstdout:\n${result.stdout}\nstderr:\n${result.stderr}`);
  }
  return result;
}

export function qemuImg(args: readonly string[], opts?: RunOptions): RunResult {
  return run('qemu-img', args, opts);
}

export function qemuImgAsync(args: readonly string[], opts?: RunOptions): Promise<RunResult> {
  return runAsync('qemu-img', args, opts);
}

/** `qemu-img <subcommand> --output=json ...` parsed; throws unless it succeeded. */
export function qemuImgJson<T = unknown>(subcommand: string, args: readonly string[], opts?: RunOptions): T {
  const result = expectSuccess(qemuImg([subcommand, '--output=json', ...args], opts), `qemu-img ${subcommand}`);
  return JSON.parse(result.stdout) as T;
}

export function qemuIo(args: readonly string[], opts?: RunOptions): RunResult {
  return run('qemu-io', args, opts);
}

export function qemuIoAsync(args: readonly string[], opts?: RunOptions): Promise<RunResult> {
  return runAsync('qemu-io', args, opts);
}

/** `node bin/strata.js ...` from the repository root (needs a build: npm test runs tsc first). */
export function strata(args: readonly string[], opts: RunOptions = {}): RunResult {
  return run(process.execPath, [STRATA_BIN, ...args], { cwd: REPO_ROOT, ...opts });
}

export function strataAsync(args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return runAsync(process.execPath, [STRATA_BIN, ...args], { cwd: REPO_ROOT, ...opts });
}
