/**
 * Content export and import through the daemon and the CLI (issue 10): a 10 GiB volume, empty or
 * with 30 MB of data in 10 pieces spread over it, exported with `strata volume export` to a file,
 * to stdout redirected to a file, and into a pipe (`| cat > /dev/null`, `| wc -c`), as raw and
 * qcow2; imported from a sparse 10 GiB raw file. Yardsticks: `qemu-img convert -O raw` of the same
 * layer, and 10 GiB of /dev/zero through the same pipe. Wall time of each command (shell included),
 * median of --reps runs.
 *
 *   npm run bench:export [-- --reps 3] [--dir /dev/shm] [--out /tmp]
 */
import { execFileSync, execSync } from 'node:child_process';
import { closeSync, existsSync, ftruncateSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GiB } from '../src/core/units.js';
import { startStrata, STRATA_BIN, strataCli, strataEnv, type StrataDaemon } from './strata-daemon.js';
import { argValue, exitOnHelp, median } from './args.js';

const VOLUME_BYTES = 10 * GiB;
const PIECE_BYTES = 3_000_000;
const PIECES = 10;

/** Seconds a shell command takes (median of reps), removing `cleanup` files after each run. */
function timeShell(command: string, env: NodeJS.ProcessEnv, reps: number, cleanup: string[] = []): number {
  const seconds: number[] = [];
  for (let i = 0; i < reps; i++) {
    for (const file of cleanup) rmSync(file, { force: true });
    const start = process.hrtime.bigint();
    execSync(command, { env, stdio: ['ignore', 'ignore', 'inherit'], shell: '/bin/bash' });
    seconds.push(Number(process.hrtime.bigint() - start) / 1e9);
  }
  for (const file of cleanup) rmSync(file, { force: true });
  return median(seconds);
}

/** A sparse raw file of VOLUME_BYTES with PIECES pieces of data spread over it. */
function writeScatteredRaw(file: string): void {
  const fd = openSync(file, 'w');
  const piece = Buffer.alloc(PIECE_BYTES);
  for (let i = 0; i < PIECES; i++) {
    piece.fill(i + 1);
    writeSync(fd, piece, 0, PIECE_BYTES, Math.floor((i * VOLUME_BYTES) / PIECES) + i * 12_345);
  }
  ftruncateSync(fd, VOLUME_BYTES);
  closeSync(fd);
}

function layerOf(d: StrataDaemon, volume: string): string {
  const out = execFileSync(process.execPath, [STRATA_BIN, 'volume', 'info', volume, '--json'], { env: strataEnv(d), encoding: 'utf8' });
  return (JSON.parse(out) as { location: string }).location;
}

async function main(): Promise<void> {
  exitOnHelp(import.meta.url);
  const reps = Number(argValue('--reps', '3'));
  const dataBase = argValue('--dir', existsSync('/dev/shm') ? '/dev/shm' : tmpdir());
  const dir = mkdtempSync(join(dataBase, 'strata-export-bench-'));
  const outDir = mkdtempSync(join(argValue('--out', tmpdir()), 'strata-export-bench-out-'));
  const out = (name: string) => join(outDir, name);
  const strata = `'${process.execPath}' '${STRATA_BIN}'`;
  const daemon = await startStrata(join(dir, 'data'));
  const env = strataEnv(daemon);
  const rows: Array<[string, number]> = [];
  const row = (name: string, seconds: number) => {
    rows.push([name, seconds]);
    process.stderr.write(`${name}: ${seconds.toFixed(3)} s\n`);
  };
  try {
    strataCli(daemon, ['volume', 'create', 'empty', '10G']);
    strataCli(daemon, ['snap', 'create', 'empty@base']);
    const emptyLayer = layerOf(daemon, 'empty');
    const source = join(dir, 'scattered.raw');
    writeScatteredRaw(source);

    row('qemu-img convert -O raw (the empty layer) to a file', timeShell(`qemu-img convert -O raw '${emptyLayer}' '${out('q.raw')}'`, env, reps, [out('q.raw')]));
    row('empty: export to a file', timeShell(`${strata} volume export empty@base '${out('e.raw')}'`, env, reps, [out('e.raw')]));
    row('empty: export - > file', timeShell(`${strata} volume export empty@base - > '${out('e.raw')}'`, env, reps, [out('e.raw')]));
    row('empty: export - | cat > /dev/null', timeShell(`${strata} volume export empty@base - | cat > /dev/null`, env, reps));
    row('empty: export - | wc -c', timeShell(`${strata} volume export empty@base - | wc -c`, env, reps));
    row('yardstick: dd if=/dev/zero bs=4M count=2560 | cat > /dev/null', timeShell(`dd if=/dev/zero bs=4M count=${VOLUME_BYTES / (4 * 1024 * 1024)} status=none | cat > /dev/null`, env, reps));
    row('empty: export --format qcow2 to a file', timeShell(`${strata} volume export empty@base '${out('e.qcow2')}' --format qcow2`, env, reps, [out('e.qcow2')]));

    // A new volume name per run (the shell's clock in nanoseconds).
    row('scattered: import of the sparse raw file', timeShell(`${strata} volume import '${source}' "imported-$(date +%s%N)"`, env, reps));
    strataCli(daemon, ['volume', 'import', source, 'scattered']);
    strataCli(daemon, ['snap', 'create', 'scattered@s']);
    row('scattered: export to a file', timeShell(`${strata} volume export scattered@s '${out('s.raw')}'`, env, reps, [out('s.raw')]));
    row('scattered: export - | cat > /dev/null', timeShell(`${strata} volume export scattered@s - | cat > /dev/null`, env, reps));
    row('scattered: export --format qcow2 to a file', timeShell(`${strata} volume export scattered@s '${out('s.qcow2')}' --format qcow2`, env, reps, [out('s.qcow2')]));

    const lines = [
      '| 10 GiB volume | time (s) |',
      '|---|---:|',
      ...rows.map(([name, seconds]) => `| ${name.replaceAll('|', '\\|')} | ${seconds.toFixed(3)} |`),
      '',
      `${execFileSync('qemu-img', ['--version'], { encoding: 'utf8' }).split('\n')[0]}; node ${process.version}; data in ${dataBase}, output in ${argValue('--out', tmpdir())}; median of ${reps}; ${new Date().toISOString().slice(0, 10)}.`,
    ];
    process.stdout.write(lines.join('\n') + '\n');
  } finally {
    daemon.child.kill('SIGTERM');
    await new Promise((resolve) => daemon.child.once('exit', resolve));
    rmSync(dir, { recursive: true, force: true });
    rmSync(outDir, { recursive: true, force: true });
  }
}

await main();
