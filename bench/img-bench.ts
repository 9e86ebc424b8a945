/**
 * `strata img bench` vs `qemu-img bench`, side by side in one run, on the same kind of image in
 * /dev/shm: 4 KiB allocating writes, 4 KiB reads, 1 MiB writes and reads, queue depth 32.
 *
 * Each row runs both tools several times, alternating which goes first, on fresh copies of the
 * same starting image; the median "Run completed in X seconds" of each gives ops/s and the ratio.
 *
 *   npm run build && node dist/bench/img-bench.js [--reps N] [--dir /dev/shm] [--markdown]
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { argValue, median } from './args.js';

interface Row {
  name: string;
  write: boolean;
  requestBytes: number;
  count: number;
  /** Start from an image whose benchmarked region is already written (for reads and overwrites). */
  prefilled: boolean;
}

const QUEUE_DEPTH = 32;
const IMAGE_SIZE = '8G';

const ROWS: Row[] = [
  { name: '4 KiB writes, allocating', write: true, requestBytes: 4096, count: 200_000, prefilled: false },
  { name: '4 KiB reads', write: false, requestBytes: 4096, count: 200_000, prefilled: true },
  { name: '1 MiB writes, allocating', write: true, requestBytes: 1 << 20, count: 3000, prefilled: false },
  { name: '1 MiB reads', write: false, requestBytes: 1 << 20, count: 3000, prefilled: true },
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

function main(): void {
  const reps = Number(argValue('--reps', '3'));
  const baseDir = argValue('--dir', existsSync('/dev/shm') ? '/dev/shm' : '/tmp');
  const dir = mkdtempSync(join(baseDir, 'strata-img-bench-'));
  const qemuVersion = execFileSync('qemu-img', ['--version'], { encoding: 'utf8' }).split('\n')[0];
  try {
    const empty = join(dir, 'empty.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', empty, IMAGE_SIZE]);
    const results: { row: Row; qemuOps: number; strataOps: number }[] = [];
    for (const row of ROWS) {
      const start = join(dir, 'start.qcow2');
      copyFileSync(empty, start);
      if (row.prefilled) runQemu({ ...row, write: true }, start);
      const qemuSeconds: number[] = [];
      const strataSeconds: number[] = [];
      for (let rep = 0; rep < reps; rep++) {
        const order = rep % 2 === 0 ? (['qemu', 'strata'] as const) : (['strata', 'qemu'] as const);
        for (const who of order) {
          const image = join(dir, `run-${who}.qcow2`);
          copyFileSync(start, image);
          if (who === 'qemu') qemuSeconds.push(runQemu(row, image));
          else strataSeconds.push(runStrata(row, image));
          rmSync(image);
        }
      }
      const qemuOps = row.count / median(qemuSeconds);
      const strataOps = row.count / median(strataSeconds);
      results.push({ row, qemuOps, strataOps });
      process.stderr.write(`${row.name}: qemu-img ${qemuOps.toFixed(0)} ops/s, strata ${strataOps.toFixed(0)} ops/s\n`);
    }
    const lines = [
      `| QD ${QUEUE_DEPTH}, qcow2 in ${baseDir} | qemu-img bench (ops/s) | strata img bench (ops/s) | ratio strata / qemu |`,
      '|---|---:|---:|---:|',
      ...results.map(
        (r) => `| ${r.row.name} | ${r.qemuOps.toFixed(0)} | ${r.strataOps.toFixed(0)} | ${(r.strataOps / r.qemuOps).toFixed(2)} |`,
      ),
      '',
      `${qemuVersion}; node ${process.version}; median of ${reps} runs each, alternating order; ${new Date().toISOString().slice(0, 10)}.`,
    ];
    process.stdout.write(lines.join('\n') + '\n');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main();
