/**
 * QoS (issue 15): does a volume under its limit pay for being limited? fio (ioengine=nbd, 4 KiB
 * random reads at QD 1, the latency-bound case) against two volumes of one `strata serve`: one
 * with limits far above what it can do (1M read IOPS, 64 GiB/s), one without limits. Runs
 * alternate between the two (the machine is shared: neighbours' load drifts); each cell is the
 * median of --reps runs. Prints IOPS, mean and p99 completion latency, and limited / unlimited.
 * Both volumes' first 64 MiB are written first, so the reads return data (not holes).
 * Before that, in process: what one QosThrottle.admit() costs under the limits (the whole price a
 * request under its limits pays), against an unlimited throttle.
 *
 *   npx tsc -p tsconfig.json && node dist/bench/qos-bench.js [--runtime 3] [--reps 7]
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { argValue, exitOnHelp, median } from './args.js';
import { startStrata, strataCli } from './strata-daemon.js';
import { QosThrottle } from '../src/volume/qos/throttle.js';

/** Nanoseconds per admit() of a 4 KiB read, over `count` calls (the best of 5 passes). */
function admitNs(throttle: QosThrottle, count: number): number {
  let best = Infinity;
  for (let pass = 0; pass < 5; pass++) {
    const start = process.hrtime.bigint();
    for (let i = 0; i < count; i++) {
      if (throttle.admit('read', 4096) !== undefined) throw new Error('a request under the limits waited');
    }
    best = Math.min(best, Number(process.hrtime.bigint() - start) / count);
  }
  return best;
}

interface Sample {
  iops: number;
  meanUs: number;
  p99Us: number;
}

function fio(uri: string, args: string[]): Sample {
  const out = execFileSync('fio', ['--name=j', '--ioengine=nbd', `--uri=${uri}`, '--size=64M', '--output-format=json', ...args], { encoding: 'utf8' });
  const job = JSON.parse(out.slice(out.indexOf('{'))).jobs[0] as { read: { iops: number; clat_ns: { mean: number; percentile: Record<string, number> } } };
  return { iops: job.read.iops, meanUs: job.read.clat_ns.mean / 1000, p99Us: (job.read.clat_ns.percentile['99.000000'] ?? 0) / 1000 };
}

async function main(): Promise<void> {
  exitOnHelp(import.meta.url);
  const runtime = Number(argValue('--runtime', '3'));
  const reps = Number(argValue('--reps', '7'));
  const count = 1_000_000;
  const far = new QosThrottle({ readIops: 1e12, readBps: 1e15, totalIops: 1e12 });
  console.log(`admit() of a 4 KiB read, in process (best of 5 passes of ${count}):`);
  console.log(`  no limits: ${admitNs(new QosThrottle(undefined), count).toFixed(1)} ns; limits far above: ${admitNs(far, count).toFixed(1)} ns`);
  const dir = mkdtempSync('/dev/shm/qos-bench-');
  const daemon = await startStrata(join(dir, 'data'));
  try {
    const socket = join(dir, 'data', 'nbd.sock');
    const uri = (volume: string) => `nbd+unix:///default/${volume}?socket=${socket}`;
    strataCli(daemon, ['volume', 'create', 'limited', '256M', '--read-iops', '1000000', '--read-bps', '64G']);
    strataCli(daemon, ['volume', 'create', 'free', '256M']);
    for (const volume of ['limited', 'free']) {
      strataCli(daemon, ['volume', 'export-nbd', volume]);
      execFileSync('fio', ['--name=fill', '--ioengine=nbd', `--uri=${uri(volume)}`, '--size=64M', '--rw=write', '--bs=1M', '--iodepth=8'], { stdio: 'ignore' });
    }
    const samples: Record<string, Sample[]> = { limited: [], free: [] };
    const row = ['--rw=randread', '--bs=4k', '--iodepth=1', `--runtime=${runtime}`, '--time_based'];
    for (let rep = 0; rep < reps; rep++) {
      const order = rep % 2 === 0 ? ['limited', 'free'] : ['free', 'limited'];
      for (const volume of order) samples[volume]!.push(fio(uri(volume), row));
    }
    const cell = (volume: string, field: keyof Sample) => median(samples[volume]!.map((s) => s[field]));
    console.log(`4 KiB random read, QD 1, NBD unix socket; median of ${reps} runs of ${runtime} s, alternating`);
    console.log('| volume | IOPS | mean latency (µs) | p99 latency (µs) |');
    console.log('| --- | ---: | ---: | ---: |');
    for (const volume of ['free', 'limited']) {
      console.log(`| ${volume === 'free' ? 'no limits' : 'limits far above (1M IOPS, 64 GiB/s)'} | ${cell(volume, 'iops').toFixed(0)} | ${cell(volume, 'meanUs').toFixed(1)} | ${cell(volume, 'p99Us').toFixed(1)} |`);
    }
    console.log(`limited / unlimited: IOPS ${(cell('limited', 'iops') / cell('free', 'iops')).toFixed(3)}, mean latency ${(cell('limited', 'meanUs') / cell('free', 'meanUs')).toFixed(3)}`);
  } finally {
    daemon.child.kill('SIGTERM');
    await new Promise((resolve) => daemon.child.once('exit', resolve));
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
