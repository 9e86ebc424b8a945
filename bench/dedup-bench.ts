/**
 * Dedup pools and tiering (issue 12), side by side in one run: each cell runs Strata's dedup side
 * and its peer alternately, --runs times, printing every run; the table gives medians and ratios.
 *
 *   import    strata volume import of a seeded 1 GiB realistic source (file data, holes, repeated
 *             blocks) into a dedup pool, timed until its seal is done, vs into a local pool
 *   active    fio over NBD on a volume's active layer: dedup pool vs local pool, and a second
 *             local pool vs the first (the bench's noise floor: the same code on both sides)
 *   sealed    4 KiB random reads at QD 32 of a snapshot sealed into packs vs the same data as a
 *             plain qcow2 snapshot layer of a local pool (both exported read-only over NBD)
 *   evicted   1 MiB sequential reads (fio, QD 8) of a volume evicted to moto / radosgw vs `aws s3
 *             cp` of the same bytes as one object from the same server (dedup-evicted.ts)
 *   rss       the daemon's RSS with 20 GiB of unique chunks in a pool after a read pass (dedup-rss.ts)
 *
 *   npm run bench:dedup -- [--runs 3] [--cells import,active,sealed,evicted,rss] [--load N]
 *                          [--runtime 5] [--dir /tmp] [--servers moto,radosgw] [--evicted-mib 1024] [--rss-gib 20]
 *
 * --load N starts N CPU-bound processes (load.ts) for the whole run: the same load for both sides.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GiB } from '../src/core/units.js';
import { argValue, exitOnHelp } from './args.js';
import { writeRealisticSource } from './dedup-source.js';
import { CONTROL, DEDUP, LOCAL, createBenchPools, exportNbd, fillExport, timeImport } from './dedup-pools.js';
import { runEvictedCells } from './dedup-evicted.js';
import { runRssCell } from './dedup-rss.js';
import { TABLE_HEADER, tableLine, type TableRow } from './dedup-table.js';
import { fioNbd, NBD_BENCH_ROWS, type FioPattern } from './fio-nbd.js';
import { loadAverage, startLoad } from './load.js';
import { creationOrder, sideBySide } from './side-by-side.js';
import { startStrata, strataCli, waitForJobs, type StrataDaemon } from './strata-daemon.js';

const SOURCE_BYTES = GiB;
const SOURCE_SEED = 12;

/** Import: MiB/s of the source through `volume import` (dedup: until its seal is done). */
async function importCell(d: StrataDaemon, dir: string, runs: number, rows: TableRow[]): Promise<void> {
  const source = join(dir, 'source.raw');
  const shape = writeRealisticSource(source, SOURCE_BYTES, SOURCE_SEED);
  process.stderr.write(`source: ${JSON.stringify(shape)}\n`);
  const importOnly = new Map<string, number[]>([[DEDUP, []]]);
  const result = await sideBySide('import 1 GiB realistic source', [DEDUP, LOCAL], runs, async (side, run) => {
    const { importSeconds, sealedSeconds } = await timeImport(d, source, `${side}/import-${run}`);
    if (side === DEDUP) importOnly.get(DEDUP)!.push(SOURCE_BYTES / 2 ** 20 / importSeconds);
    return SOURCE_BYTES / 2 ** 20 / sealedSeconds;
  }, 'MiB/s');
  process.stderr.write(`  dedup import command alone (before its seal ended): ${importOnly.get(DEDUP)!.map((v) => v.toFixed(0)).join('/')} MiB/s\n`);
  rows.push({ cell: 'import 1 GiB realistic source (dedup: until sealed)', unit: 'MiB/s', strataSide: DEDUP, peerSide: LOCAL, target: 0.9, result });
  // The last import of each side stays for the sealed cell; the others go.
  for (let run = 0; run < runs - 1; run++) for (const side of [DEDUP, LOCAL]) strataCli(d, ['volume', 'delete', `${side}/import-${run}`, '--now']);
  for (const side of [DEDUP, LOCAL]) strataCli(d, ['volume', 'rename', `${side}/import-${runs - 1}`, 'source']);
  rmSync(source);
}

/**
 * Active layer: fio over NBD on a fresh volume of each pool (first 256 MiB written). Both sides'
 * active layers are plain local qcow2 files behind the same code, so a third side, a volume of a
 * second local pool (CONTROL), measures the bench's own noise: its row (local vs local) shows how far
 * apart two identical sides land in this run. The sides run in an order rotated per run
 * (sideBySide); the volumes are created once, in an order rotated by the run count (creationOrder).
 */
async function activeCell(d: StrataDaemon, runs: number, runtimeSeconds: number, rows: TableRow[]): Promise<void> {
  const sides = [DEDUP, LOCAL, CONTROL];
  const uris = new Map<string, string>();
  for (const side of creationOrder(sides, runs)) {
    strataCli(d, ['volume', 'create', `${side}/active`, '1G']);
    uris.set(side, exportNbd(d, `${side}/active`));
    fillExport(uris.get(side)!, '256M');
  }
  for (const row of NBD_BENCH_ROWS) {
    const result = await sideBySide(`active, ${row.name}`, sides, runs, (side) => fioNbd(uris.get(side)!, row, runtimeSeconds), 'IOPS');
    rows.push({ cell: `active layer over NBD: ${row.name}`, unit: 'IOPS', strataSide: DEDUP, peerSide: LOCAL, target: 0.95, result });
    rows.push({ cell: `(control: local vs local) ${row.name}`, unit: 'IOPS', strataSide: CONTROL, peerSide: LOCAL, target: 0, result });
  }
}

/** Sealed: 4 KiB random reads at QD 32 over the whole imported source, snapshot exported read-only. */
async function sealedCell(d: StrataDaemon, runs: number, runtimeSeconds: number, rows: TableRow[]): Promise<void> {
  const uris = new Map<string, string>();
  for (const side of [DEDUP, LOCAL]) {
    strataCli(d, ['snap', 'create', `${side}/source@sealed`]);
    uris.set(side, exportNbd(d, `${side}/source@sealed`));
  }
  await waitForJobs(d);
  const pattern: FioPattern = { rw: 'randread', bs: '4k', iodepth: 32 };
  const sides = [DEDUP, LOCAL];
  // Warm-up: one pass each (the page cache holds the packs and the qcow2 file alike).
  for (const side of sides) fioNbd(uris.get(side)!, pattern, 2, '1G');
  const result = await sideBySide('sealed 4 KiB random read, QD 32', sides, runs, (side) => fioNbd(uris.get(side)!, pattern, runtimeSeconds, '1G'), 'IOPS');
  rows.push({ cell: 'sealed snapshot (packs) vs qcow2 snapshot: 4 KiB random read, QD 32', unit: 'IOPS', strataSide: DEDUP, peerSide: LOCAL, target: 0.8, result });
}

async function main(): Promise<void> {
  exitOnHelp(import.meta.url);
  const runs = Number(argValue('--runs', '3'));
  const runtimeSeconds = Number(argValue('--runtime', '5'));
  const cells = argValue('--cells', 'import,active,sealed,evicted').split(',');
  const loadProcesses = Number(argValue('--load', '0'));
  const base = argValue('--dir', tmpdir());
  const rows: TableRow[] = [];
  const notes: string[] = [];
  const load = startLoad(loadProcesses);
  const dir = mkdtempSync(join(base, 'strata-dedup-bench-'));
  try {
    if (cells.some((c) => ['import', 'active', 'sealed'].includes(c))) {
      const d = await startStrata(join(dir, 'data'));
      try {
        createBenchPools(d);
        if (cells.includes('import') || cells.includes('sealed')) await importCell(d, dir, runs, rows);
        if (cells.includes('active')) await activeCell(d, runs, runtimeSeconds, rows);
        if (cells.includes('sealed')) await sealedCell(d, runs, runtimeSeconds, rows);
      } finally {
        d.child.kill('SIGTERM');
        await new Promise((resolve) => d.child.once('exit', resolve));
      }
    }
    if (cells.includes('evicted')) await runEvictedCells(dir, runs, argValue('--servers', 'moto,radosgw').split(','), Number(argValue('--evicted-mib', '1024')) * 2 ** 20, rows);
    if (cells.includes('rss')) notes.push(await runRssCell(base, Number(argValue('--rss-gib', '20'))));
  } finally {
    await load.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  const lines = [
    ...TABLE_HEADER,
    ...rows.map(tableLine),
    '',
    ...notes,
    `fio ${execFileSync('fio', ['--version'], { encoding: 'utf8' }).trim()}; node ${process.version}; ${runs} runs per cell alternating, ${runtimeSeconds} s per fio run; ` +
      `load generator: ${loadProcesses} processes; load average at the end ${loadAverage().toFixed(1)}; data in ${base}; ${new Date().toISOString().slice(0, 16)}Z.`,
  ];
  process.stdout.write(lines.join('\n') + '\n');
}

await main();
