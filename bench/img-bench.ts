/**
 * `strata img bench` vs `qemu-img bench`, side by side in one run, on the same kind of image in
 * /dev/shm: 4 KiB allocating writes, 4 KiB reads, 1 MiB writes and reads, queue depth 32 (the 1 MiB
 * reads over a 2 GiB image written whole, ten passes).
 *
 * Each row runs both tools several times, alternating which goes first, on fresh copies of the
 * same starting image; the median of each run's "Run completed in X seconds" gives ops/s and the
 * ratio. Every run is printed. The CPU table gives each tool's CPU seconds (the whole process: it
 * serves its own requests) per GiB moved and per 100k requests, summed over the runs; Strata's
 * includes Node's start-up (~0.1 s a run). --load N runs N CPU-bound processes beside the whole
 * bench (load.ts), the same for both tools. --rows TEXT keeps the rows whose name contains TEXT.
 *
 *   npm run build && node dist/bench/img-bench.js [--reps N] [--dir /dev/shm] [--load N] [--rows "1 MiB"]
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { argNumber, argValue, exitOnHelp, loadArg } from './args.js';
import { reapedChildrenCpuSeconds, type CpuSample } from './cpu.js';
import { loadAverage, loadNote, startLoad } from './load.js';
import { warmMemoryNoted } from './warm-memory.js';
import { cpuTable, medianTable, pairedTable, roundsInOrder, type RowRuns, type Side } from './report.js';

interface Row {
  name: string;
  write: boolean;
  requestBytes: number;
  count: number;
  /** Start from an image whose benchmarked region is already written (for reads and overwrites). */
  prefilled: boolean;
  /**
   * The image's virtual size for this row (IMAGE_SIZE otherwise). Both tools wrap their offsets at
   * the image's end, so a prefilled image this small is read over and over, every read of written
   * clusters: 20,480 reads of 1 MiB take ~1.2 s, where 3,000 took ~0.2 s, too short for the runs of
   * one tool to agree.
   */
  imageSize?: string;
  /** Requests of the prefill (row.count otherwise): the whole of a small image. */
  prefillCount?: number;
}

const QUEUE_DEPTH = 32;
const IMAGE_SIZE = '8G';

const ROWS: Row[] = [
  { name: '4 KiB writes, allocating', write: true, requestBytes: 4096, count: 200_000, prefilled: false },
  { name: '4 KiB reads', write: false, requestBytes: 4096, count: 200_000, prefilled: true },
  { name: '1 MiB writes, allocating', write: true, requestBytes: 1 << 20, count: 3000, prefilled: false },
  { name: '1 MiB reads', write: false, requestBytes: 1 << 20, count: 20_480, prefilled: true, imageSize: '2G', prefillCount: 2048 },
];

const repoRoot = resolve(fileURLToPath(import.meta.url), '../../..');
const strataBin = join(repoRoot, 'bin/strata.js');

function benchArgs(row: Row, image: string): string[] {
  const args = ['bench', '-f', 'qcow2', '-d', String(QUEUE_DEPTH), '-s', String(row.requestBytes), '-c', String(row.count)];
  if (row.write) args.push('-w');
  args.push(image);
  return args;
}

function secondsFrom(output: string): number {
  const match = /Run completed in ([\d.]+) seconds/.exec(output);
  if (!match) throw new Error(`no "Run completed" line in:\n${output}`);
  return Number(match[1]);
}

function runQemu(row: Row, image: string): number {
  return secondsFrom(execFileSync('qemu-img', benchArgs(row, image), { encoding: 'utf8' }));
}

function runStrata(row: Row, image: string): number {
  return secondsFrom(execFileSync(process.execPath, [strataBin, 'img', ...benchArgs(row, image)], { encoding: 'utf8' }));
}

/** One tool run: its seconds, and its CPU (the tool is a child this process waits for and reaps). */
function measured(row: Row, run: () => number): { seconds: number; sample: CpuSample } {
  const before = reapedChildrenCpuSeconds();
  const seconds = run();
  return { seconds, sample: { cpuSeconds: reapedChildrenCpuSeconds() - before, bytes: row.count * row.requestBytes, requests: row.count } };
}

const SIDES: Side[] = [
  { name: 'qemu', label: 'qemu-img bench' },
  { name: 'strata', label: 'strata img bench' },
];

async function main(): Promise<void> {
  exitOnHelp(import.meta.url);
  const reps = argNumber('--reps', 3);
  const loadProcesses = loadArg();
  const baseDir = argValue('--dir', existsSync('/dev/shm') ? '/dev/shm' : '/tmp');
  const dir = mkdtempSync(join(baseDir, 'strata-img-bench-'));
  const qemuVersion = execFileSync('qemu-img', ['--version'], { encoding: 'utf8' }).split('\n')[0];
  warmMemoryNoted();
  const load = startLoad(loadProcesses);
  const loadStart = loadAverage();
  try {
    const results: RowRuns[] = [];
    const rowFilter = argValue('--rows', '');
    const rows = ROWS.filter((r) => r.name.includes(rowFilter));
    if (rows.length === 0) throw new Error(`--rows '${rowFilter}' matches no row: ${ROWS.map((r) => r.name).join(', ')}`);
    for (const row of rows) {
      const start = join(dir, 'start.qcow2');
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', start, row.imageSize ?? IMAGE_SIZE]);
      if (row.prefilled) runQemu({ ...row, write: true, count: row.prefillCount ?? row.count }, start);
      const runs = new Map<string, number[]>(SIDES.map((s) => [s.name, []]));
      const cpu = new Map<string, CpuSample[]>(SIDES.map((s) => [s.name, []]));
      for (let rep = 0; rep < reps; rep++) {
        const order = rep % 2 === 0 ? (['qemu', 'strata'] as const) : (['strata', 'qemu'] as const);
        for (const who of order) {
          const image = join(dir, `run-${who}.qcow2`);
          copyFileSync(start, image);
          const m = measured(row, () => (who === 'qemu' ? runQemu(row, image) : runStrata(row, image)));
          rmSync(image);
          runs.get(who)!.push(row.count / m.seconds);
          cpu.get(who)!.push(m.sample);
          process.stderr.write(`  ${row.name}, run ${rep + 1}, ${who}: ${(row.count / m.seconds).toFixed(0)} ops/s, ${m.sample.cpuSeconds.toFixed(2)} CPU s (load ${loadAverage().toFixed(2)})\n`);
        }
      }
      results.push({ name: row.name, runs, cpu, rounds: roundsInOrder(runs) });
    }
    const lines = [
      ...medianTable(`QD ${QUEUE_DEPTH}, qcow2 in ${baseDir}`, SIDES, 'strata', results, 'ops/s'),
      '',
      ...pairedTable('runs paired (the two tools back to back)', SIDES, 'strata', results),
      '',
      ...cpuTable('CPU of the bench process', SIDES, 'strata', results),
      '',
      `${qemuVersion}; node ${process.version}; median of ${reps} runs each, alternating order; ${loadNote(loadProcesses, loadStart)}; ` +
        `${new Date().toISOString().slice(0, 10)}.`,
    ];
    process.stdout.write(lines.join('\n') + '\n');
  } finally {
    await load.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
