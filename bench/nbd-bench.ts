/**
 * NBD: fio (ioengine=nbd, one job) against Strata, qemu-nbd and `nbdkit memory`, side by side in
 * one run, on qcow2 images in /dev/shm whose first 256 MiB are written (nbdkit memory: written by a
 * fio pass first). Rows: 4 KiB random read and write at QD 1 and 32, 1 MiB sequential read and
 * write at QD 8. Prints IOPS and the ratio to qemu-nbd. Strata is the daemon (`strata serve`) with
 * the image imported as a volume and exported with `strata volume export-nbd`.
 *
 * Each cell is the median of --reps runs (default 5), the servers' order alternating per run, since
 * at queue depth 1 one run's spread is as large as the differences measured. The CPU table gives
 * each server process's CPU seconds (from /proc, threads and reaped children included) per GiB
 * moved and per 100k requests over all runs of a row. --load N runs N CPU-bound processes beside
 * the whole bench (load.ts), the same for every server.
 *
 *   npm run build && node dist/bench/nbd-bench.js [--runtime 3] [--reps 5] [--only "QD 1"] [--load N]
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { startStrata, strataCli } from './strata-daemon.js';
import { argNumber, argValue, loadArg } from './args.js';
import { cpuWindow, type CpuSample } from './cpu.js';
import { fioNbd as fio, fioNbdRun, NBD_BENCH_ROWS, waitForSocket, type NbdBenchRow } from './fio-nbd.js';
import { endBench, loadAverage, loadNote, startLoad } from './load.js';
import { cpuTable, type Side } from './report.js';

type Row = NbdBenchRow;

const ROWS = NBD_BENCH_ROWS;

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

async function main(): Promise<void> {
  const runtimeSeconds = argNumber('--runtime', 3);
  const reps = argNumber('--reps', 5);
  const loadProcesses = loadArg();
  const only = argValue('--only', '');
  const dir = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : '/tmp', 'strata-nbd-bench-'));
  const children: ChildProcess[] = [];
  const load = startLoad(loadProcesses);
  const loadStart = loadAverage();
  try {
    // 'strata, polling off' is the same daemon with --nbd-poll-us 0, run on the QD 1 rows only
    // (deeper queues never leave a connection idle, so polling cannot matter there).
    const servers: { name: string; uri: string; pid: number; rows?: (row: Row) => boolean }[] = [];
    for (const who of ['strata', 'strata, polling off', 'qemu-nbd']) {
      const image = join(dir, `${who.replace(/[^a-z-]/g, '')}.qcow2`);
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', image, '1G']);
      execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 1 0 256M', image], { stdio: 'ignore' });
      if (who.startsWith('strata')) {
        // The daemon as operators run it: the image imported as a volume, exported with the CLI.
        const pollOff = who !== 'strata';
        const dataDir = join(dir, pollOff ? 'strata-data-nopoll' : 'strata-data');
        const daemon = await startStrata(dataDir, pollOff ? ['--nbd-poll-us', '0'] : []);
        children.push(daemon.child);
        strataCli(daemon, ['volume', 'import', image, 'bench', '--no-progress']);
        strataCli(daemon, ['volume', 'export-nbd', 'bench']);
        servers.push({
          name: who,
          uri: `nbd+unix:///default/bench?socket=${join(dataDir, 'nbd.sock')}`,
          pid: daemon.child.pid!,
          ...(pollOff ? { rows: (row: Row) => row.iodepth === 1 } : {}),
        });
        continue;
      }
      const socket = join(dir, `${who}.sock`);
      const qemuNbd = spawn('qemu-nbd', ['-t', '-f', 'qcow2', '--cache=writeback', '--aio=threads', '-k', socket, image], { stdio: 'ignore' });
      children.push(qemuNbd);
      await waitForSocket(socket);
      servers.push({ name: who, uri: `nbd+unix:///?socket=${socket}`, pid: qemuNbd.pid! });
    }
    const nbdkitSocket = join(dir, 'nbdkit.sock');
    const nbdkit = spawn('nbdkit', ['-f', '-U', nbdkitSocket, 'memory', '1G'], { stdio: 'ignore' });
    children.push(nbdkit);
    await waitForSocket(nbdkitSocket);
    const nbdkitUri = `nbd+unix:///?socket=${nbdkitSocket}`;
    fio(nbdkitUri, { rw: 'write', bs: '1M', iodepth: 8 }, 2); // write its first 256 MiB, like the images
    servers.push({ name: 'nbdkit memory', uri: nbdkitUri, pid: nbdkit.pid! });

    // Warm-up: every server first serves a short random-read pass (its metadata caches fill, the
    // JIT compiles Strata's paths), so the first row does not measure start-up.
    for (const s of servers) fio(s.uri, { rw: 'randread', bs: '4k', iodepth: 8 }, 2);

    const lines = [
      '| fio nbd, one job, 256 MiB region | Strata (IOPS) | qemu-nbd (IOPS) | nbdkit memory (IOPS) | Strata / qemu-nbd | Strata, polling off (IOPS) | polling off / qemu-nbd |',
      '|---|---:|---:|---:|---:|---:|---:|',
    ];
    const cpuRows: { name: string; runs: Map<string, number[]>; cpu: Map<string, CpuSample[]> }[] = [];
    let turn = 0;
    for (const row of ROWS.filter((r) => r.name.includes(only))) {
      const inRow = servers.filter((s) => s.rows === undefined || s.rows(row));
      const runs = new Map<string, number[]>(inRow.map((s) => [s.name, []]));
      const cpu = new Map<string, CpuSample[]>(inRow.map((s) => [s.name, []]));
      for (let rep = 0; rep < reps; rep++) {
        // Alternate the order so neither server always runs on a warmer machine.
        const order = turn++ % 2 === 0 ? inRow : [...inRow].reverse();
        for (const s of order) {
          const window = cpuWindow(s.pid);
          const r = fioNbdRun(s.uri, row, runtimeSeconds);
          cpu.get(s.name)!.push({ cpuSeconds: window.stop(), bytes: r.bytes, requests: r.requests });
          runs.get(s.name)!.push(r.iops);
        }
      }
      cpuRows.push({ name: row.name, runs, cpu });
      const strata = median(runs.get('strata')!);
      const qemu = median(runs.get('qemu-nbd')!);
      const nbdkit = median(runs.get('nbdkit memory')!);
      process.stderr.write(`  runs: ${[...runs].map(([n, v]) => `${n} ${v.map((x) => x.toFixed(0)).join('/')}`).join(', ')}\n`);
      const noPollRuns = runs.get('strata, polling off');
      const noPoll = noPollRuns === undefined ? undefined : median(noPollRuns);
      const noPollCells = noPoll === undefined ? '| - | - |' : `| ${noPoll.toFixed(0)} | ${(noPoll / qemu).toFixed(2)} |`;
      lines.push(`| ${row.name} | ${strata.toFixed(0)} | ${qemu.toFixed(0)} | ${nbdkit.toFixed(0)} | ${(strata / qemu).toFixed(2)} ${noPollCells}`);
      process.stderr.write(`${row.name}: strata ${strata.toFixed(0)}, qemu-nbd ${qemu.toFixed(0)}, nbdkit ${nbdkit.toFixed(0)}\n`);
    }
    lines.push(
      '',
      ...cpuTable('server process CPU', servers.map((sv): Side => ({ name: sv.name, label: sv.name })), 'strata', cpuRows),
      '',
      `${execFileSync('fio', ['--version'], { encoding: 'utf8' }).trim()}; ${execFileSync('qemu-nbd', ['--version'], { encoding: 'utf8' }).split('\n')[0]}; node ${process.version}; median of ${reps} runs of ${runtimeSeconds} s per cell; ` +
        `${loadNote(loadProcesses, loadStart)}; ${new Date().toISOString().slice(0, 10)}.`,
    );
    process.stdout.write(lines.join('\n') + '\n');
  } finally {
    await endBench(load, children, dir);
  }
}

await main();
