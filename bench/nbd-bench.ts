/**
 * NBD: fio (ioengine=nbd, one job) against Strata, qemu-nbd and `nbdkit memory`, side by side in
 * one run, on qcow2 images in /dev/shm whose first 256 MiB are written (nbdkit memory: written by a
 * fio pass first). Rows: 4 KiB random read and write at QD 1 and 32, 1 MiB sequential read and
 * write at QD 8. Prints IOPS and the ratio to qemu-nbd. Strata is the daemon (`strata serve`) with
 * the image imported as a volume and exported with `strata volume export-nbd`.
 *
 * Each cell is the median of --reps runs (default 5), since at queue depth 1 one run's spread is as
 * large as the differences measured. Every rep creates every server afresh (its own image copy or
 * imported volume, the server, a 2 s unmeasured random-read warm-up) in an order rotated per rep
 * (creationOrder), runs every row with the servers' order rotated per rep and row (runOrder), then stops them;
 * each row's line names its creation and run order (with the same build on two sides the one
 * created first measured slower, so no server may keep that place). The CPU table gives
 * each server process's CPU seconds (from /proc, threads and reaped children included) per GiB
 * moved and per 100k requests over all runs of a row. --load N runs N CPU-bound processes beside
 * the whole bench (load.ts), the same for every server.
 *
 *   npm run build && node dist/bench/nbd-bench.js [--runtime 3] [--reps 5] [--only "QD 1"] [--load N]
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { startStrata, strataCli } from './strata-daemon.js';
import { argNumber, argValue, exitOnHelp, loadArg } from './args.js';
import { cpuWindow, type CpuSample } from './cpu.js';
import { fioNbd as fio, fioNbdRun, NBD_BENCH_ROWS, waitForSocket, type NbdBenchRow } from './fio-nbd.js';
import { endBench, loadAverage, loadNote, startLoad } from './load.js';
import { warmMemoryNoted } from './warm-memory.js';
import { cpuTable, type Side } from './report.js';
import { creationOrder, removeServer, runOrder } from './side-by-side.js';

type Row = NbdBenchRow;

const ROWS = NBD_BENCH_ROWS;

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

interface ServerSpec {
  name: string;
  /** The rows this server runs (all when undefined). */
  rows?: (row: Row) => boolean;
}

interface Server extends ServerSpec {
  uri: string;
  /** The serving process (its CPU is what the CPU table reports). */
  pid: number;
  child: ChildProcess;
  /** Its image copy, data folder and socket: removed when the server is stopped. */
  files: string[];
}

/** A fresh server: its own copy of the template (a volume imported from it for Strata), started and listening. */
async function createServer(spec: ServerSpec, dir: string, template: string): Promise<Server> {
  if (spec.name.startsWith('strata')) {
    // The daemon as operators run it: the image imported as a volume, exported with the CLI.
    const pollOff = spec.name !== 'strata';
    const dataDir = join(dir, pollOff ? 'strata-data-nopoll' : 'strata-data');
    const daemon = await startStrata(dataDir, pollOff ? ['--nbd-poll-us', '0'] : []);
    const server: Server = { ...spec, uri: `nbd+unix:///default/bench?socket=${join(dataDir, 'nbd.sock')}`, pid: daemon.child.pid!, child: daemon.child, files: [dataDir] };
    try {
      strataCli(daemon, ['volume', 'import', template, 'bench', '--no-progress']);
      strataCli(daemon, ['volume', 'export-nbd', 'bench']);
    } catch (err) {
      await removeServer(server);
      throw err;
    }
    return server;
  }
  const socket = join(dir, `${spec.name.replace(/[^a-z-]/g, '')}.sock`);
  if (spec.name === 'qemu-nbd') {
    const image = join(dir, 'qemu-nbd.qcow2');
    copyFileSync(template, image);
    const child = spawn('qemu-nbd', ['-t', '-f', 'qcow2', '--cache=writeback', '--aio=threads', '-k', socket, image], { stdio: 'ignore' });
    const server: Server = { ...spec, uri: `nbd+unix:///?socket=${socket}`, pid: child.pid!, child, files: [image, socket] };
    await waitForSocket(socket).catch(async (err: unknown) => {
      await removeServer(server);
      throw err;
    });
    return server;
  }
  const child = spawn('nbdkit', ['-f', '-U', socket, 'memory', '1G'], { stdio: 'ignore' });
  const server: Server = { ...spec, uri: `nbd+unix:///?socket=${socket}`, pid: child.pid!, child, files: [socket] };
  try {
    await waitForSocket(socket);
    fio(server.uri, { rw: 'write', bs: '1M', iodepth: 8 }, undefined); // its first 256 MiB written, like the images
  } catch (err) {
    await removeServer(server);
    throw err;
  }
  return server;
}

async function main(): Promise<void> {
  exitOnHelp(import.meta.url);
  const runtimeSeconds = argNumber('--runtime', 3);
  const reps = argNumber('--reps', 5);
  const loadProcesses = loadArg();
  const only = argValue('--only', '');
  const dir = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : '/tmp', 'strata-nbd-bench-'));
  let live: Server[] = [];
  warmMemoryNoted();
  const load = startLoad(loadProcesses);
  const loadStart = loadAverage();
  try {
    const template = join(dir, 'template.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', template, '1G']);
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 1 0 256M', template], { stdio: 'ignore' });
    const rows = ROWS.filter((r) => r.name.includes(only));
    // 'strata, polling off' is the same daemon with --nbd-poll-us 0, run on the QD 1 rows only
    // (deeper queues never leave a connection idle, so polling cannot matter there).
    const qd1 = (row: Row): boolean => row.iodepth === 1;
    const specs: ServerSpec[] = [
      { name: 'strata' },
      ...(rows.some(qd1) ? [{ name: 'strata, polling off', rows: qd1 }] : []),
      { name: 'qemu-nbd' },
      { name: 'nbdkit memory' },
    ];
    const runs = rows.map((row) => new Map<string, number[]>(specs.filter((s) => s.rows?.(row) ?? true).map((s) => [s.name, []])));
    const cpu = rows.map((row) => new Map<string, CpuSample[]>(specs.filter((s) => s.rows?.(row) ?? true).map((s) => [s.name, []])));
    const creations: string[] = [];
    for (let rep = 0; rep < reps; rep++) {
      const creation = creationOrder(specs, rep);
      creations.push(`rep ${rep + 1}: ${creation.map((s) => s.name).join(' / ')}`);
      for (const spec of creation) live.push(await createServer(spec, dir, template));
      // Warm-up: every fresh server first serves a short random-read pass (its metadata caches
      // fill, the JIT compiles Strata's paths), so the first row does not measure start-up.
      for (const s of live) fio(s.uri, { rw: 'randread', bs: '4k', iodepth: 8 }, 2);
      const columns = specs.map((spec) => live.find((s) => s.name === spec.name)!);
      for (const [rowIndex, row] of rows.entries()) {
        const inRow = columns.filter((s) => s.rows?.(row) ?? true);
        const order = runOrder(inRow, rep, rowIndex);
        for (const s of order) {
          const window = cpuWindow(s.pid);
          const r = fioNbdRun(s.uri, row, runtimeSeconds);
          cpu[rowIndex]!.get(s.name)!.push({ cpuSeconds: window.stop(), bytes: r.bytes, requests: r.requests });
          runs[rowIndex]!.get(s.name)!.push(r.iops);
        }
        const iops = inRow.map((s) => `${s.name} ${runs[rowIndex]!.get(s.name)!.at(-1)!.toFixed(0)}`).join(', ');
        process.stderr.write(`rep ${rep + 1} (created ${creation.map((s) => s.name).join(' / ')}; ran ${order.map((s) => s.name).join(' / ')}) ${row.name}: ${iops} IOPS (load ${loadAverage().toFixed(2)})\n`);
      }
      for (const s of live) await removeServer(s);
      live = [];
    }

    const lines = [
      '| fio nbd, one job, 256 MiB region | Strata (IOPS) | qemu-nbd (IOPS) | nbdkit memory (IOPS) | Strata / qemu-nbd | Strata, polling off (IOPS) | polling off / qemu-nbd |',
      '|---|---:|---:|---:|---:|---:|---:|',
    ];
    const cpuRows: { name: string; runs: Map<string, number[]>; cpu: Map<string, CpuSample[]> }[] = [];
    for (const [rowIndex, row] of rows.entries()) {
      const rowRuns = runs[rowIndex]!;
      cpuRows.push({ name: row.name, runs: rowRuns, cpu: cpu[rowIndex]! });
      const strata = median(rowRuns.get('strata')!);
      const qemu = median(rowRuns.get('qemu-nbd')!);
      const nbdkit = median(rowRuns.get('nbdkit memory')!);
      process.stderr.write(`  runs: ${[...rowRuns].map(([n, v]) => `${n} ${v.map((x) => x.toFixed(0)).join('/')}`).join(', ')}\n`);
      const noPollRuns = rowRuns.get('strata, polling off');
      const noPoll = noPollRuns === undefined ? undefined : median(noPollRuns);
      const noPollCells = noPoll === undefined ? '| - | - |' : `| ${noPoll.toFixed(0)} | ${(noPoll / qemu).toFixed(2)} |`;
      lines.push(`| ${row.name} | ${strata.toFixed(0)} | ${qemu.toFixed(0)} | ${nbdkit.toFixed(0)} | ${(strata / qemu).toFixed(2)} ${noPollCells}`);
      process.stderr.write(`${row.name}: strata ${strata.toFixed(0)}, qemu-nbd ${qemu.toFixed(0)}, nbdkit ${nbdkit.toFixed(0)}\n`);
    }
    lines.push(
      '',
      ...cpuTable('server process CPU', specs.map((sv): Side => ({ name: sv.name, label: sv.name })), 'strata', cpuRows),
      '',
      `${execFileSync('fio', ['--version'], { encoding: 'utf8' }).trim()}; ${execFileSync('qemu-nbd', ['--version'], { encoding: 'utf8' }).split('\n')[0]}; node ${process.version}; median of ${reps} runs of ${runtimeSeconds} s per cell, run order rotated per rep and row; ` +
        `every server created afresh each rep (image copy or volume import, server, 2 s unmeasured warm-up), creation order rotating (${creations.join('; ')}); ` +
        `${loadNote(loadProcesses, loadStart)}; ${new Date().toISOString().slice(0, 10)}.`,
    );
    process.stdout.write(lines.join('\n') + '\n');
  } finally {
    for (const s of live) await removeServer(s).catch(() => undefined);
    await endBench(load, [], dir);
  }
}

await main();
