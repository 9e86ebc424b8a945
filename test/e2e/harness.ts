/**
 * End-to-end harness: runs `strata serve` as a separate process (node bin/strata.js, the built
 * CLI) on a free port with its own data folder, and drives it as an operator would: through the
 * CLI (`strata ...` with STRATA_URL and STRATA_DATA_DIR set) and through the REST API (fetch).
 *
 * The daemon's output goes to a log file (never a pipe the test could forget to drain); the URL
 * comes from its "listening url=..." line (it listens on port 0).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, expect } from 'vitest';
import type { JobJson } from '../../src/api/rest/schemas.js';
import { makeTempDir } from '../support/tmp.js';
import { REPO_ROOT, STRATA_BIN, expectSuccess, qemuImg, run, type RunOptions, type RunResult } from '../support/tools.js';

export const BUILT = existsSync(path.join(REPO_ROOT, 'dist', 'src', 'cli', 'main.js'));

export function assertBuilt(): void {
  if (!BUILT) throw new Error('the CLI is not built: run `npx tsc -p .` (npm test does) before these tests');
}

/** Environment without the variables that would point the CLI or daemon elsewhere. */
function cleanEnv(extra: Record<string, string | undefined> = {}): Record<string, string | undefined> {
  return {
    STRATA_URL: undefined,
    STRATA_TOKEN: undefined,
    STRATA_DATA_DIR: undefined,
    STRATA_LISTEN: undefined,
    STRATA_LOG_FORMAT: undefined,
    STRATA_LOG_LEVEL: undefined,
    STRATA_NBD_LISTEN: undefined,
    STRATA_NBD_SOCKET: undefined,
    STRATA_S3_DOMAIN: undefined,
    // The S3 endpoint on a free port (7480 would collide between test daemons).
    STRATA_S3_LISTEN: '127.0.0.1:0',
    ...extra,
  };
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface StartOptions {
  /** Extra arguments after `serve` (default: --data-dir DIR --listen 127.0.0.1:0). */
  args?: readonly string[];
  /** Replace the default --data-dir/--listen arguments entirely. */
  replaceArgs?: boolean;
  env?: Record<string, string | undefined>;
  /** Where the log goes (default <dataDir>.log). */
  logFile?: string;
  /** cwd of the daemon (default the data folder's parent). */
  cwd?: string;
  timeoutMs?: number;
}

export class Daemon {
  readonly exited: Promise<Exit>;
  private exit: Exit | undefined;
  url = '';
  /** host:port NBD listens on over TCP (from the log). */
  nbdAddress: string | undefined;
  /** The S3 endpoint (http://host:port) when it listens. */
  s3Url: string | undefined;

  constructor(
    readonly dataDir: string,
    readonly proc: ChildProcess,
    readonly logFile: string,
  ) {
    this.exited = new Promise((resolve) => {
      proc.on('exit', (code, signal) => {
        this.exit = { code, signal };
        resolve(this.exit);
      });
    });
  }

  get running(): boolean {
    return this.exit === undefined;
  }

  logs(): string {
    try {
      return readFileSync(this.logFile, 'utf8');
    } catch {
      return '';
    }
  }

  /**
   * The log once it matches `pattern`: a line written after the client had its answer (fastify's
   * onResponse hook logs once the response is out) may not be in the file yet when the client
   * looks. Throws with the log when it never appears within `boundMs`.
   */
  async logsMatching(pattern: RegExp, boundMs = 15_000): Promise<string> {
    const deadline = Date.now() + boundMs;
    for (;;) {
      const log = this.logs();
      if (pattern.test(log)) return log;
      if (Date.now() > deadline) throw new Error(`the daemon's log never matched ${pattern}:\n${log}`);
      await sleep(50);
    }
  }

  get token(): string {
    return readFileSync(path.join(this.dataDir, 'token'), 'utf8').trim();
  }

  /** Environment for a CLI run against this daemon. */
  env(extra: Record<string, string | undefined> = {}): Record<string, string | undefined> {
    return cleanEnv({ STRATA_URL: this.url, STRATA_DATA_DIR: this.dataDir, ...extra });
  }

  /** `strata ARGS` against this daemon. */
  cli(args: readonly string[], opts: RunOptions = {}): RunResult {
    return run(process.execPath, [STRATA_BIN, ...args], { cwd: REPO_ROOT, timeoutMs: 120_000, ...opts, env: this.env(opts.env) });
  }

  /** `strata ARGS` with stdout kept as bytes (exports to '-'). */
  cliBytes(args: readonly string[], opts: { input?: Uint8Array } = {}): { code: number | null; stdout: Buffer; stderr: string } {
    const r = spawnSync(process.execPath, [STRATA_BIN, ...args], {
      cwd: REPO_ROOT,
      env: { ...process.env, ...this.env() } as NodeJS.ProcessEnv,
      input: opts.input,
      maxBuffer: 1024 * 1024 * 1024,
      timeout: 120_000,
    });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr.toString('utf8') };
  }

  cliOk(args: readonly string[], opts: RunOptions = {}): RunResult {
    return expectSuccess(this.cli(args, opts), `strata ${args.join(' ')}`);
  }

  /** `strata ARGS --json`, parsed. */
  json<T = any>(args: readonly string[], opts: RunOptions = {}): T {
    return JSON.parse(this.cliOk([...args, '--json'], opts).stdout) as T;
  }

  /** Runs the CLI and checks its exit status and that stderr mentions every given text. */
  cliFails(args: readonly string[], status: number, ...mentions: (string | RegExp)[]): RunResult {
    const r = this.cli(args);
    if (r.code !== status) {
      throw new Error(`strata ${args.join(' ')}: expected exit status ${status}, got ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
    }
    expect(r.stderr).toMatch(/^strata: /);
    for (const m of mentions) expect(r.stderr).toMatch(m);
    return r;
  }

  /** A REST call with the token (unless token: null). */
  async api(method: string, urlPath: string, opts: { body?: unknown; token?: string | null; headers?: Record<string, string>; raw?: RequestInit['body'] } = {}): Promise<Response> {
    const headers: Record<string, string> = { ...(opts.headers ?? {}) };
    const token = opts.token === undefined ? this.token : opts.token;
    if (token !== null) headers['authorization'] = `Bearer ${token}`;
    let body: RequestInit['body'] | undefined = opts.raw;
    if (opts.body !== undefined) {
      headers['content-type'] ??= 'application/json';
      body = typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body);
    }
    return fetch(`${this.url}${urlPath}`, { method, headers, ...(body !== undefined ? { body, duplex: 'half' } : {}) } as RequestInit);
  }

  async apiJson<T = any>(method: string, urlPath: string, body?: unknown, expectStatus?: number): Promise<T> {
    const res = await this.api(method, urlPath, body === undefined ? {} : { body });
    const text = await res.text();
    if (expectStatus !== undefined && res.status !== expectStatus) throw new Error(`${method} ${urlPath}: ${res.status} ${text}`);
    if (expectStatus === undefined && res.status >= 400) throw new Error(`${method} ${urlPath}: ${res.status} ${text}`);
    return (text === '' ? undefined : JSON.parse(text)) as T;
  }

  /** Sends a signal and waits for the exit. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 30_000): Promise<Exit> {
    if (this.exit) return this.exit;
    this.proc.kill(signal);
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), timeoutMs);
    const exit = await this.exited;
    clearTimeout(timer);
    return exit;
  }

  kill(): Promise<Exit> {
    return this.stop('SIGKILL');
  }
}

/** Starts `strata serve` on a free port over dataDir and waits until it listens. */
export async function startDaemon(dataDir: string, options: StartOptions = {}): Promise<Daemon> {
  const logFile = options.logFile ?? `${dataDir}.log`;
  // The log file is appended to across restarts: read only what this process writes.
  const startLen = existsSync(logFile) ? statSync(logFile).size : 0;
  const fd = openSync(logFile, 'a');
  const args = options.replaceArgs ? [...(options.args ?? [])] : ['--data-dir', dataDir, '--listen', '127.0.0.1:0', ...(options.args ?? [])];
  const proc = spawn(process.execPath, [STRATA_BIN, 'serve', ...args], {
    cwd: options.cwd ?? path.dirname(dataDir),
    // NBD on a free port (10809 would collide between test daemons); a flag or options.env overrides.
    env: { ...process.env, ...cleanEnv({ STRATA_NBD_LISTEN: '127.0.0.1:0', ...options.env }) } as NodeJS.ProcessEnv,
    stdio: ['ignore', fd, fd],
  });
  closeSync(fd);
  const daemon = new Daemon(dataDir, proc, logFile);
  const deadline = Date.now() + (options.timeoutMs ?? 30_000);
  for (;;) {
    const log = readFileSync(logFile).subarray(startLen).toString('utf8');
    const m = /\blistening\b.*url=(http:\/\/\S+)/.exec(log) ?? /"url":"(http:\/\/[^"]+)"[^\n]*"msg":"listening"/.exec(log);
    if (m) {
      daemon.url = m[1] as string;
      const nbd = /\bnbd listening\b.*?\btcp=(\S+)/.exec(log) ?? /"tcp":"([^"]+)"[^\n]*"msg":"nbd listening"/.exec(log);
      daemon.nbdAddress = nbd?.[1];
      const s3 = /\bs3 endpoint ready\b.*?\bendpoint=(http:\/\/\S+)/.exec(log) ?? /"endpoint":"(http:\/\/[^"]+)"[^\n]*"msg":"s3 endpoint ready"/.exec(log);
      daemon.s3Url = s3?.[1];
      return daemon;
    }
    if (!daemon.running) throw new Error(`strata serve exited (${JSON.stringify(await daemon.exited)}) before listening:\n${log}`);
    if (Date.now() > deadline) {
      await daemon.kill();
      throw new Error(`strata serve did not start listening in time:\n${log}`);
    }
    await sleep(50);
  }
}

/** A daemon shared by the tests of a describe block, and the temporary folder it lives in. */
export interface DaemonSuite {
  /** The running daemon; a test that restarts it assigns the new one here. */
  d: Daemon;
  /** A path in the suite's temporary folder (the data folder is `data` in it). */
  file(...parts: string[]): string;
}

/**
 * Starts a daemon before the tests of the enclosing describe block (on a fresh folder under
 * os.tmpdir(), not /dev/shm: unix socket paths there stay short), stops it and removes the folder
 * after them.
 */
export function useDaemon(options: StartOptions = {}): DaemonSuite {
  let tmp: { path: string; cleanup: () => void } | undefined;
  const suite: DaemonSuite = {
    d: undefined as unknown as Daemon,
    file: (...parts) => path.join(tmp!.path, ...parts),
  };
  beforeAll(async () => {
    tmp = makeTempDir();
    suite.d = await startDaemon(suite.file('data'), options);
  });
  afterAll(async () => {
    await suite.d?.stop();
    tmp?.cleanup();
  });
  return suite;
}

/** Runs `strata serve` expecting it to fail at start; returns its exit and output. */
export async function serveFails(args: readonly string[], env: Record<string, string | undefined> = {}, cwd?: string): Promise<RunResult> {
  return run(process.execPath, [STRATA_BIN, 'serve', ...args], { cwd: cwd ?? REPO_ROOT, env: cleanEnv({ STRATA_NBD_LISTEN: '127.0.0.1:0', ...env }), timeoutMs: 30_000 });
}

// ------------------------------------------------------------------------------------------------
// Data helpers

/** A deterministic pseudo-random buffer (xorshift32). */
export function patternBytes(length: number, seed: number): Buffer {
  const buf = Buffer.alloc(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i + 4 <= length; i += 4) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    buf.writeUInt32LE(x, i);
  }
  return buf;
}

/** Writes a raw image of sizeBytes with the given extents filled (the rest zero, sparse). */
export function writeRawImage(file: string, sizeBytes: number, extents: ReadonlyArray<{ offset: number; data: Buffer }>): Buffer {
  const image = Buffer.alloc(sizeBytes);
  for (const e of extents) e.data.copy(image, e.offset);
  writeFileSync(file, image);
  return image;
}

export type DiffRecord = { kind: 'd'; offset: number; data: Buffer } | { kind: 'z'; offset: number; length: number };

/** A diff stream in Strata's format (docs/daemon.md), built by hand from records. */
export function diffStream(sizeBytes: number, from: string | null, to: string | null, records: readonly DiffRecord[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`${JSON.stringify({ format: 'strata-diff', version: 1, sizeBytes, from, to })}\n`)];
  const head = (kind: string, offset: number, length: number) => {
    const b = Buffer.alloc(17);
    b[0] = kind.charCodeAt(0);
    b.writeBigUInt64BE(BigInt(offset), 1);
    b.writeBigUInt64BE(BigInt(length), 9);
    return b;
  };
  for (const r of records) {
    if (r.kind === 'd') parts.push(head('d', r.offset, r.data.length), r.data);
    else parts.push(head('z', r.offset, r.length));
  }
  parts.push(head('e', 0, 0));
  return Buffer.concat(parts);
}

/** Applies diff records to an in-memory model of a volume. */
export function applyToModel(model: Buffer, records: readonly DiffRecord[]): void {
  for (const r of records) {
    if (r.kind === 'd') r.data.copy(model, r.offset);
    else model.fill(0, r.offset, r.offset + r.length);
  }
}

/** qemu-img check must report a clean image. */
export function expectCleanCheck(file: string): void {
  const r = qemuImg(['check', '-f', 'qcow2', '-U', file]);
  if (r.code !== 0) throw new Error(`qemu-img check ${file}: exit ${r.code}\n${r.stdout}\n${r.stderr}`);
}

/** Bytes of the files under a folder (what a pool's chunks take on disk). */
export function folderBytes(dir: string): number {
  if (!existsSync(dir)) return 0;
  let total = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    total += entry.isDirectory() ? folderBytes(full) : statSync(full).size;
  }
  return total;
}

/** Layer files of a pool folder (*.qcow2), as absolute paths. */
export function poolFiles(dataDir: string, pool: string): string[] {
  const dir = path.join(dataDir, 'pools', pool);
  if (!existsSync(dir)) return [];
  return readdirSync(dir).map((f) => path.join(dir, f));
}

/** The files of a qcow2 backing chain, from qemu-img info --backing-chain. */
export function chainFiles(activeLayer: string): string[] {
  const r = expectSuccess(qemuImg(['info', '--backing-chain', '-U', '--output=json', activeLayer]), `qemu-img info ${activeLayer}`);
  const infos = JSON.parse(r.stdout) as Array<{ filename: string }>;
  return infos.map((i) => path.resolve(path.dirname(activeLayer), i.filename));
}

/** Compares a raw export with the expected bytes, with qemu-img compare as the judge. */
export function qemuCompare(a: string, b: string, formatA = 'raw', formatB = 'raw'): RunResult {
  return qemuImg(['compare', '-f', formatA, '-F', formatB, a, b]);
}

/**
 * Waits for the seal jobs of a dedup pool (targets under `pool/`) that are not in `skip` to end;
 * returns them as they ended.
 */
export function waitForSeals(d: Daemon, pool: string, skip: ReadonlySet<string> = new Set()): JobJson[] {
  const seals = d.json<JobJson[]>(['job', 'list']).filter((j) => j.kind === 'seal' && j.target.startsWith(`${pool}/`) && !skip.has(j.id));
  for (const job of seals) {
    if (job.state === 'queued' || job.state === 'running') d.cliOk(['job', 'watch', job.id]);
  }
  return d.json<JobJson[]>(['job', 'list']).filter((j) => seals.some((s) => s.id === j.id));
}

/** A volume's snapshot as raw bytes, through the REST content route (async: other I/O goes on meanwhile). */
export async function snapshotContent(d: Daemon, pool: string, volume: string, snapshot: string): Promise<Buffer> {
  const res = await d.api('GET', `/v1/pools/${encodeURIComponent(pool)}/volumes/${encodeURIComponent(volume)}/content?format=raw&snapshot=${encodeURIComponent(snapshot)}`);
  if (res.status !== 200) throw new Error(`export ${pool}/${volume}@${snapshot}: ${res.status} ${await res.text()}`);
  return Buffer.from(await res.arrayBuffer());
}
