/**
 * The S3 speed bench (issue 14): Strata's S3 endpoint (`strata serve`, buckets in the default
 * local pool) against a single-node radosgw (Ceph, memstore OSD; test/support/s3-servers.ts) on
 * this machine, both driven by @aws-sdk/client-s3 from this process with the same settings.
 * radosgw's OSD is memstore by default (Ceph's in-memory test store: objects kept as the buffers
 * that arrived) or, with --radosgw-store bluestore, BlueStore (Ceph's production store) on a file
 * beside Strata's data folder (in /dev/shm with --strata-dir /dev/shm: both servers then write
 * their data into tmpfs files).
 *
 *   node dist/bench/s3-bench.js [--runs 3] [--sizes 4k,1m,256m|none] [--concurrency 1,16]
 *                               [--list-keys 100000] [--only strata|radosgw] [--skip-list]
 *                               [--strata-dir DIR]  (default the OS temp folder; /dev/shm: in memory as radosgw's memstore)
 *                               [--load N]  (N CPU-bound processes beside the timed rows, load.ts: the busy-machine run)
 *                               [--strata-bin PATH]  (another build's bin/strata.js: a before/after run with --only strata)
 *                               [--warmup-runs 1]  (untimed passes over the rows before run 1, each server; 0: none)
 *                               [--radosgw-store memstore|bluestore]
 *
 * Every row also reports each server's CPU seconds per GiB moved (Strata: the daemon; radosgw: the
 * radosgw, ceph-osd and ceph-mon processes of its folder, from /proc).
 * Rows: PUT then GET of objects of each size at each concurrency (every worker its own keys,
 * every object's 64 KiB blocks unique, so nothing dedups), and ListObjectsV2 of a bucket of
 * --list-keys keys, 1,000 a page. Servers alternate within a run (which goes first alternates
 * between runs); every run is printed, then the medians and the ratio strata / radosgw. A row a
 * server fails is printed as FAILED (with radosgw's last log error lines) and left out of the
 * medians; the run goes on. Between rows each server frees what the deleted row held (Strata's
 * pool GC, radosgw's GC).
 * Both clients: path style, checksums only when required (radosgw 16 refuses the SDK's trailer
 * checksums), the same keep-alive agent settings.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { CreateBucketCommand, DeleteObjectsCommand, GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { freePort, startRadosgw, type S3TestServer } from '../test/support/s3-servers.js';
import { argValue, exitOnHelp, loadArg, median } from './args.js';
import { loadAverage, loadNote, startLoad, type LoadGenerator } from './load.js';
import { warmMemoryNoted } from './warm-memory.js';
import { processCpuSeconds } from './cpu.js';
import { startStrata, STRATA_BIN, type StrataDaemon } from './strata-daemon.js';
import { objectBody, PIECE_BYTES, s3ClientFor, strataCliOutput, strataUserKey } from './s3-client.js';

const KiB = 1024;
const MiB = 1024 * KiB;

interface Target {
  readonly name: 'strata' | 'radosgw';
  readonly client: S3Client;
  readonly bucket: string;
  /** Frees what deleted objects held (Strata: a GC with no grace, else /dev/shm keeps every row's bytes). */
  readonly reclaim?: () => void;
  /** What the server's own logs say of a failure (their last error lines), when it has logs to read. */
  readonly diagnose?: () => string;
  /** The server's processes, whose CPU a row counts. */
  readonly pids: () => number[];
}

interface Sample {
  readonly row: string;
  readonly server: string;
  readonly run: number;
  readonly ops: number;
  readonly bytes: number;
  readonly seconds: number;
  readonly cpuSeconds: number;
}

/** CPU seconds the processes have used so far (a process gone since counts as 0). */
function cpuOf(pids: readonly number[]): number {
  let total = 0;
  for (const pid of pids) {
    try {
      total += processCpuSeconds(pid);
    } catch {
      // exited
    }
  }
  return total;
}

/** Runs a row and measures the target's CPU through it. */
async function measured<T extends { ops: number; seconds: number }>(target: Target, row: () => Promise<T>): Promise<T & { cpuSeconds: number }> {
  const pids = target.pids();
  const before = cpuOf(pids);
  const result = await row();
  return { ...result, cpuSeconds: cpuOf(pids) - before };
}

function parseSize(text: string): number {
  const m = /^(\d+)([kmg]?)$/i.exec(text.trim());
  if (!m) throw new Error(`--sizes: '${text}' is not a size like 4k, 1m or 256m`);
  return Number(m[1]) * { '': 1, k: KiB, m: MiB, g: 1024 * MiB }[m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g'];
}

function sizeName(bytes: number): string {
  return bytes >= MiB ? `${bytes / MiB} MiB` : `${bytes / KiB} KiB`;
}

/** Operations per worker for a size: about the same bytes per row, bounded for tiny and huge objects. */
function opsPerWorker(sizeBytes: number, concurrency: number): number {
  if (sizeBytes >= 64 * MiB) return 1;
  const totalBytes = sizeBytes >= MiB ? 320 * MiB : 2000 * sizeBytes;
  return Math.max(4, Math.round(totalBytes / sizeBytes / concurrency));
}

let objectCounter = 1;

/** Runs every worker to its end (none left running into the next row when one fails), then fails with the first failure. */
async function allWorkers(concurrency: number, work: (worker: number) => Promise<void>): Promise<void> {
  const outcomes = await Promise.allSettled(Array.from({ length: concurrency }, (_, worker) => work(worker)));
  const failed = outcomes.find((outcome) => outcome.status === 'rejected');
  if (failed !== undefined) throw failed.reason;
}

async function putRow(target: Target, sizeBytes: number, concurrency: number, base: Buffer): Promise<{ ops: number; seconds: number }> {
  const perWorker = opsPerWorker(sizeBytes, concurrency);
  const started = process.hrtime.bigint();
  await allWorkers(concurrency, async (worker) => {
    for (let i = 0; i < perWorker; i++) {
      const key = `obj-${sizeBytes}-${worker}-${i}`;
      await target.client.send(new PutObjectCommand({ Bucket: target.bucket, Key: key, Body: objectBody(base, objectCounter++, sizeBytes), ContentLength: sizeBytes }));
    }
  });
  return { ops: perWorker * concurrency, seconds: Number(process.hrtime.bigint() - started) / 1e9 };
}

async function getRow(target: Target, sizeBytes: number, concurrency: number): Promise<{ ops: number; seconds: number }> {
  const perWorker = opsPerWorker(sizeBytes, concurrency);
  const started = process.hrtime.bigint();
  await allWorkers(concurrency, async (worker) => {
    for (let i = 0; i < perWorker; i++) {
      const got = await target.client.send(new GetObjectCommand({ Bucket: target.bucket, Key: `obj-${sizeBytes}-${worker}-${i}` }));
      let received = 0;
      for await (const piece of got.Body as Readable) received += (piece as Buffer).length;
      if (received !== sizeBytes) throw new Error(`${target.name}: GET returned ${received} bytes, expected ${sizeBytes}`);
    }
  });
  return { ops: perWorker * concurrency, seconds: Number(process.hrtime.bigint() - started) / 1e9 };
}

/**
 * Deletes a row's objects (not timed), so neither server holds every row's bytes at once: radosgw's
 * memstore OSD holding the 256 MiB rows' overwritten objects grew past 16 GiB and was OOM-killed,
 * and again at 6.8 GiB when Strata's deleted objects (kept for GC's grace period) filled /dev/shm.
 */
async function deleteRow(target: Target, sizeBytes: number, concurrency: number): Promise<void> {
  const perWorker = opsPerWorker(sizeBytes, concurrency);
  const keys = Array.from({ length: concurrency * perWorker }, (_, n) => ({ Key: `obj-${sizeBytes}-${Math.floor(n / perWorker)}-${n % perWorker}` }));
  for (let at = 0; at < keys.length; at += DELETE_BATCH_KEYS) {
    const done = await target.client.send(new DeleteObjectsCommand({ Bucket: target.bucket, Delete: { Objects: keys.slice(at, at + DELETE_BATCH_KEYS), Quiet: true } }));
    if ((done.Errors ?? []).length > 0) throw new Error(`${target.name}: DeleteObjects failed for ${done.Errors!.length} keys (${done.Errors![0]!.Code ?? 'no code'})`);
  }
  target.reclaim?.();
}

/** From this size up a warm-up pass runs only the concurrency-1 row (one object, not 16 of 256 MiB). */
const WARMUP_CONCURRENT_BYTES_MAX = 64 * MiB - 1;

/**
 * Untimed passes over the rows before run 1, for every server, under the same load: both servers
 * are long-lived daemons in real use, and a first pass times start-up effects instead (V8 compiling
 * Strata's request path, and radosgw's and memstore's first allocations): Strata's first PUT rows
 * on a busy machine were 10-30% below its later ones.
 */
async function warmUp(targets: readonly Target[], sizes: readonly number[], concurrencies: readonly number[], passes: number, base: Buffer): Promise<void> {
  if (passes === 0) return;
  const started = Date.now();
  for (let pass = 0; pass < passes; pass++) {
    for (const target of targets) {
      for (const sizeBytes of sizes) {
        for (const concurrency of concurrencies) {
          if (concurrency > 1 && sizeBytes > WARMUP_CONCURRENT_BYTES_MAX) continue;
          await putRow(target, sizeBytes, concurrency, base);
          await getRow(target, sizeBytes, concurrency);
          await deleteRow(target, sizeBytes, concurrency);
        }
      }
    }
  }
  process.stdout.write(`  warm-up: ${passes} untimed pass(es) over the rows for each server in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
}

/** S3's limit on keys in one DeleteObjects request. */
const DELETE_BATCH_KEYS = 1000;

/** Fills the listing bucket with `count` one-byte objects (once, not timed). */
async function fillListBucket(target: Target, bucket: string, count: number): Promise<void> {
  let next = 0;
  const started = Date.now();
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      for (;;) {
        const i = next++;
        if (i >= count) return;
        await target.client.send(new PutObjectCommand({ Bucket: bucket, Key: `dir-${i % 100}/key-${String(i).padStart(7, '0')}`, Body: Buffer.from([i & 0xff]) }));
      }
    }),
  );
  process.stdout.write(`  filled ${target.name}'s listing bucket with ${count} keys in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
}

async function listAll(target: Target, bucket: string): Promise<{ ops: number; seconds: number; keys: number }> {
  const started = process.hrtime.bigint();
  let token: string | undefined;
  let keys = 0;
  let pages = 0;
  do {
    const page = await target.client.send(new ListObjectsV2Command({ Bucket: bucket, MaxKeys: 1000, ...(token === undefined ? {} : { ContinuationToken: token }) }));
    keys += page.KeyCount ?? 0;
    pages++;
    token = page.NextContinuationToken;
  } while (token !== undefined);
  return { ops: pages, seconds: Number(process.hrtime.bigint() - started) / 1e9, keys };
}

async function strataTarget(dir: string, bin: string): Promise<{ target: Omit<Target, 'bucket'>; daemon: StrataDaemon }> {
  const port = await freePort();
  // Its log to a file, as radosgw's: this process is the client of every row.
  const daemon = await startStrata(join(dir, 'strata'), ['--s3-listen', `127.0.0.1:${port}`], process.env, bin, join(dir, 'strata.log'));
  const key = strataUserKey(daemon, bin, 'bench');
  const reclaim = (): void => void strataCliOutput(daemon, bin, ['pool', 'gc', 'default', '--grace', '0']);
  return { target: { name: 'strata', client: s3ClientFor(`http://127.0.0.1:${port}`, key.id, key.secret), reclaim, pids: () => [daemon.child.pid!] }, daemon };
}

function radosgwTarget(server: S3TestServer): Omit<Target, 'bucket'> {
  // Its processes are those whose command line names its folder (ceph-osd restarted by setup included).
  const pids = (): number[] => {
    try {
      return execFileSync('pgrep', ['-f', server.dir], { encoding: 'utf8' }).split('\n').filter(Boolean).map(Number);
    } catch {
      return [];
    }
  };
  // A deleted row's data stays in the memstore OSD until radosgw's GC gets to it, which on a busy
  // machine fell rows behind: run 3 of a busy 256 MiB c16 row failed (EPIPE, the gateway refusing
  // PUTs). Collected now, as Strata's reclaim does, so no row meets an OSD full of the last rows.
  const reclaim = (): void => {
    try {
      execFileSync('radosgw-admin', ['-c', join(server.dir, 'ceph.conf'), 'gc', 'process', '--include-all'], { stdio: 'ignore', timeout: RADOSGW_GC_TIMEOUT_MS });
    } catch (err) {
      process.stderr.write(`radosgw-admin gc process failed (the next row may meet a fuller OSD): ${err instanceof Error ? err.message.split('\n')[0] : String(err)}\n`);
    }
  };
  const diagnose = (): string => {
    const lines: string[] = [];
    for (const name of ['client.rgw.a', 'osd.0']) {
      const file = join(server.dir, 'log', `${name}.log`);
      const errors = existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter((line) => /error|fail|full/i.test(line)) : [];
      lines.push(...errors.slice(-LOG_ERROR_LINES).map((line) => `    ${name}: ${line}`));
    }
    return lines.length === 0 ? '' : `${lines.join('\n')}\n`;
  };
  return { name: 'radosgw', client: s3ClientFor(server.endpoint, server.accessKeyId, server.secretAccessKey), reclaim, diagnose, pids };
}

/** Error lines of each radosgw log printed under a failed row. */
const LOG_ERROR_LINES = 8;

/** The longest the untimed GC between rows may take (4 GiB of deleted 256 MiB objects: seconds). */
const RADOSGW_GC_TIMEOUT_MS = 300_000;

function printSample(sample: Sample): void {
  const mibPerSecond = sample.bytes / MiB / sample.seconds;
  const cpu = sample.bytes > 0 ? `${(sample.cpuSeconds / (sample.bytes / (1024 * MiB))).toFixed(2)} CPU s/GiB` : `${sample.cpuSeconds.toFixed(2)} CPU s`;
  process.stdout.write(`  run ${sample.run} ${sample.server.padEnd(8)} ${sample.row.padEnd(28)} ${(sample.ops / sample.seconds).toFixed(1).padStart(9)} ops/s ${mibPerSecond.toFixed(1).padStart(8)} MiB/s  ${cpu}  (${sample.ops} ops, ${sample.seconds.toFixed(2)} s)\n`);
}

async function main(): Promise<void> {
  exitOnHelp(import.meta.url);
  const runs = Number(argValue('--runs', '3'));
  const sizesText = argValue('--sizes', '4k,1m,256m');
  const sizes = sizesText === 'none' ? [] : sizesText.split(',').map(parseSize);
  const concurrencies = argValue('--concurrency', '1,16').split(',').map(Number);
  const listKeys = Number(argValue('--list-keys', '100000'));
  const only = argValue('--only', '');
  const skipList = process.argv.includes('--skip-list');
  const warmupRuns = Number(argValue('--warmup-runs', '1'));
  if (!Number.isInteger(warmupRuns) || warmupRuns < 0) throw new Error(`--warmup-runs must be a whole number, not ${argValue('--warmup-runs', '1')}`);
  const radosgwStore = argValue('--radosgw-store', 'memstore');
  if (radosgwStore !== 'memstore' && radosgwStore !== 'bluestore') throw new Error(`--radosgw-store must be memstore or bluestore, not ${radosgwStore}`);
  const loadProcesses = loadArg();
  let load: LoadGenerator | undefined;
  // Strata's data folder: on disk by default (it fsyncs what it acknowledges); radosgw's memstore is in memory.
  const dir = mkdtempSync(join(argValue('--strata-dir', tmpdir()), 'strata-s3-bench-'));
  process.stdout.write(`S3 bench: runs ${runs}, sizes ${sizes.map(sizeName).join(', ')}, concurrency ${concurrencies.join(', ')}, list ${skipList ? 'skipped' : `${listKeys} keys`}, radosgw on ${radosgwStore}; load average ${loadavg().map((l) => l.toFixed(1)).join(' ')}\n`);
  const biggest = Math.max(4 * KiB, ...sizes);
  let strata: StrataDaemon | undefined;
  let rgw: S3TestServer | undefined;
  try {
    const targets: Target[] = [];
    if (only !== 'radosgw') {
      const made = await strataTarget(dir, argValue('--strata-bin', STRATA_BIN));
      strata = made.daemon;
      const child = made.daemon.child;
      process.once('exit', () => child.kill('SIGTERM'));
      await made.target.client.send(new CreateBucketCommand({ Bucket: 'bench' }));
      targets.push({ ...made.target, bucket: 'bench' });
    }
    if (only !== 'strata') {
      // Memstore keeps everything in memory, and BlueStore's block file keeps every page it wrote:
      // room for the largest row twice over either way, and garbage (overwritten tails) collected
      // at once instead of after radosgw's default 2 hours.
      const rowBytes = Math.max(...concurrencies) * biggest * opsPerWorker(biggest, Math.max(...concurrencies));
      const storeBytes = Math.max(4 * 1024 * MiB, 3 * rowBytes + 2 * 1024 * MiB);
      const store = radosgwStore === 'memstore' ? { memstoreBytes: storeBytes } : { bluestore: { blockPath: join(dir, 'radosgw-bluestore-block'), blockBytes: storeBytes } };
      rgw = await startRadosgw({ ...store, gatewayConf: ['rgw gc obj min wait = 0', 'rgw gc processor period = 10'],
        // Without it beast's small responses wait out the client's delayed ACK (about 40 ms each).
        frontendOptions: 'tcp_nodelay=1',
      });
      const target = radosgwTarget(rgw);
      await target.client.send(new CreateBucketCommand({ Bucket: 'bench' }));
      targets.push({ ...target, bucket: 'bench' });
    }
    const base = randomBytes(PIECE_BYTES);
    const samples: Sample[] = [];
    const failures: string[] = [];
    // The load runs from here to the end: both servers are set up, every timed row has it (the
    // listing bucket's untimed fill too).
    warmMemoryNoted();
    load = startLoad(loadProcesses);
    const loadStart = loadAverage();
    await warmUp(targets, sizes, concurrencies, warmupRuns, base);
    for (let run = 1; run <= runs; run++) {
      const order = run % 2 === 1 ? targets : [...targets].reverse();
      for (const sizeBytes of sizes) {
        for (const concurrency of concurrencies) {
          for (const target of order) {
            const sampleOf = (verb: 'PUT' | 'GET', result: { ops: number; seconds: number; cpuSeconds: number }): Sample => ({
              row: `${verb} ${sizeName(sizeBytes)} c${concurrency}`,
              server: target.name,
              run,
              ops: result.ops,
              bytes: result.ops * sizeBytes,
              seconds: result.seconds,
              cpuSeconds: result.cpuSeconds,
            });
            try {
              const putSample = sampleOf('PUT', await measured(target, () => putRow(target, sizeBytes, concurrency, base)));
              printSample(putSample);
              const getSample = sampleOf('GET', await measured(target, () => getRow(target, sizeBytes, concurrency)));
              printSample(getSample);
              samples.push(putSample, getSample);
            } catch (err) {
              // A server failing a row (radosgw's gateway once refused a busy 256 MiB c16 row) costs
              // that sample, not the run: it is listed under the medians, which cover what finished.
              const failure = `run ${run} ${target.name} ${sizeName(sizeBytes)} c${concurrency}: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`;
              failures.push(failure);
              process.stdout.write(`  FAILED ${failure}\n${target.diagnose?.() ?? ''}`);
            }
            await deleteRow(target, sizeBytes, concurrency).catch((err: unknown) => process.stderr.write(`${target.name}: deleting the row failed: ${String(err)}\n`));
          }
        }
      }
    }
    if (!skipList) {
      for (const target of targets) {
        await target.client.send(new CreateBucketCommand({ Bucket: 'listing' }));
        await fillListBucket(target, 'listing', listKeys);
      }
      for (let run = 1; run <= runs; run++) {
        for (const target of run % 2 === 1 ? targets : [...targets].reverse()) {
          const listed = await measured(target, () => listAll(target, 'listing'));
          if (listed.keys !== listKeys) throw new Error(`${target.name} listed ${listed.keys} keys, expected ${listKeys}`);
          const sample = { row: `ListObjectsV2 ${listKeys} keys`, server: target.name, run, ops: listed.ops, bytes: 0, seconds: listed.seconds, cpuSeconds: listed.cpuSeconds };
          printSample(sample);
          samples.push(sample);
        }
      }
    }
    process.stdout.write(`\nmedians (${loadNote(loadProcesses, loadStart)}):\n| row | strata | radosgw | strata / radosgw | CPU strata | CPU radosgw |\n|---|---:|---:|---:|---:|---:|\n`);
    const rows = [...new Set(samples.map((s) => s.row))];
    for (const row of rows) {
      const rate = (server: string): number | undefined => {
        const mine = samples.filter((s) => s.row === row && s.server === server);
        if (mine.length === 0) return undefined;
        return median(mine.map((s) => (row.startsWith('List') ? 1 / s.seconds : s.bytes / MiB / s.seconds)));
      };
      const [a, b] = [rate('strata'), rate('radosgw')];
      const unit = row.startsWith('List') ? 'listings/s' : 'MiB/s';
      const show = (v: number | undefined): string => (v === undefined ? '-' : `${v < 10 ? v.toFixed(2) : v.toFixed(1)} ${unit}`);
      // CPU per GiB moved (per listing for the list row), median of the runs.
      const cpu = (server: string): string => {
        const mine = samples.filter((s) => s.row === row && s.server === server);
        if (mine.length === 0) return '-';
        const value = median(mine.map((s) => (s.bytes > 0 ? s.cpuSeconds / (s.bytes / (1024 * MiB)) : s.cpuSeconds)));
        return `${value.toFixed(2)} ${row.startsWith('List') ? 's' : 's/GiB'}`;
      };
      process.stdout.write(`| ${row} | ${show(a)} | ${show(b)} | ${a !== undefined && b !== undefined ? (a / b).toFixed(2) : '-'} | ${cpu('strata')} | ${cpu('radosgw')} |\n`);
    }
    if (failures.length > 0) process.stdout.write(`\nFailed rows (not in the medians):\n${failures.map((failure) => `- ${failure}`).join('\n')}\n`);
  } finally {
    await load?.stop();
    if (strata !== undefined && strata.child.exitCode === null) {
      const exited = new Promise((resolve) => strata!.child.once('exit', resolve));
      strata.child.kill('SIGTERM');
      await exited;
    }
    await rgw?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

// Interrupted: the exit handler of s3-servers.ts kills radosgw's processes; the daemon gets SIGTERM.
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => process.exit(130));

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
