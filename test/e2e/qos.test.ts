/**
 * QoS through `strata serve` (issue 15): fio over NBD measures what a throttled volume does.
 *   - an IOPS limit and a bytes/s limit, each measured over 10 s after a second of ramp (the
 *     bucket's tenth of a second of slack is spent by then), within 10%;
 *   - a burst: an idle volume runs at the burst rate for the burst length, then at the limit;
 *     the limits are changed on the exported volume (no reattach);
 *   - isolation: a throttled, saturated volume next to an unthrottled one on the same daemon;
 *     the unthrottled one keeps at least 80% of what it does alone (runs alone and together
 *     alternate, and the best of each counts: the machine is shared);
 *   - the CLI and REST surface, and the QoS series on /metrics.
 * The rates asserted are the acceptance numbers, measured by fio, not times of Strata's.
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTempDir, shmBase } from '../support/tmp.js';
import { requireTool, runAsync } from '../support/tools.js';
import { assertBuilt, startDaemon, type Daemon } from './harness.js';

assertBuilt();

const MiB = 1 << 20;

interface FioSide {
  iops: number;
  bw_bytes: number;
  total_ios: number;
}
interface FioJob {
  jobname: string;
  error: number;
  read: FioSide;
  write: FioSide;
}

describe.skipIf(!requireTool('fio'))('QoS over NBD (fio)', () => {
  let d: Daemon;
  let tmp: { path: string; cleanup: () => void };
  const uri = (volume: string) => `nbd+unix:///default/${volume}?socket=${path.join(d.dataDir, 'nbd.sock')}`;

  /** Runs fio with one job section per entry (they run at the same time); the jobs by name. */
  async function fio(name: string, jobs: Record<string, string[]>, global: string[]): Promise<Map<string, FioJob>> {
    const file = path.join(tmp.path, `${name}.fio`);
    const lines = ['[global]', 'ioengine=nbd', 'size=32M', 'time_based=1', 'randrepeat=0', ...global];
    for (const [job, options] of Object.entries(jobs)) lines.push(`[${job}]`, ...options);
    writeFileSync(file, `${lines.join('\n')}\n`);
    const r = await runAsync('fio', ['--output-format=json', file], { cwd: tmp.path, timeoutMs: 120_000 });
    expect(r.code, r.stdout.slice(-2000) + r.stderr).toBe(0);
    const result = JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))) as { jobs: FioJob[] };
    for (const job of result.jobs) expect(job.error, job.jobname).toBe(0);
    return new Map(result.jobs.map((j) => [j.jobname, j]));
  }

  const within = (measured: number, limit: number, what: string) => {
    console.log(`QoS e2e: ${what}: ${measured.toFixed(1)} (limit ${limit})`);
    expect(measured, `${what}: measured ${measured.toFixed(1)}, limit ${limit}`).toBeGreaterThanOrEqual(limit * 0.9);
    expect(measured, `${what}: measured ${measured.toFixed(1)}, limit ${limit}`).toBeLessThanOrEqual(limit * 1.1);
  };

  beforeAll(async () => {
    tmp = makeTempDir(shmBase());
    d = await startDaemon(path.join(tmp.path, 'data'));
  });
  afterAll(async () => {
    await d?.stop();
    tmp?.cleanup();
  });

  it('the CLI and REST: policies, a volume created with one, precedence, a policy in use kept', async () => {
    d.cliOk(['qos', 'policy', 'create', 'gold', '--read-iops', '500', '--write-bps', '8MiB/s']);
    expect(d.json(['qos', 'policy', 'list'])).toMatchObject([{ name: 'gold', limits: { readIops: 500, writeBps: 8 * MiB }, volumeCount: 0, poolCount: 0 }]);
    d.cliOk(['volume', 'create', 'iops', '64M', '--qos-policy', 'gold']);
    expect(d.json(['volume', 'qos', 'show', 'iops'])).toEqual({
      limits: null,
      policy: 'gold',
      effective: { readIops: 500, writeBps: 8 * MiB },
      source: 'volume-policy',
      sourcePolicy: 'gold',
    });
    d.cliFails(['qos', 'policy', 'delete', 'gold'], 4, /attached to volume default\/iops; detach it first/);
    d.cliFails(['volume', 'qos', 'set', 'iops', '--read-iops', 'lots'], 2, /--read-iops 'lots' must be a whole number/);
    d.cliFails(['volume', 'qos', 'set', 'iops', '--policy', 'nope'], 3, /QoS policy 'nope' does not exist/);
    const bad = await d.api('PATCH', '/v1/pools/default/volumes/iops/qos', { body: { limits: { readIopsBurst: 9 } } });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { message: string } }).error.message).toMatch(/readIopsBurst needs readIops/);
    const openapi = (await (await d.api('GET', '/openapi.json')).json()) as { paths: Record<string, unknown> };
    expect(Object.keys(openapi.paths)).toEqual(expect.arrayContaining(['/v1/qos-policies', '/v1/qos-policies/{name}', '/v1/pools/{pool}/qos', '/v1/pools/{pool}/volumes/{vol}/qos']));
  });

  it('holds a volume to 500 read IOPS over 10 s', async () => {
    d.cliOk(['volume', 'qos', 'set', 'iops', '--read-iops', '500']);
    d.cliOk(['volume', 'export-nbd', 'iops']);
    const jobs = await fio('iops', { r: ['rw=randread', 'bs=4k', 'iodepth=16'] }, [`uri=${uri('iops')}`, 'ramp_time=1', 'runtime=10']);
    within(jobs.get('r')!.read.iops, 500, 'read IOPS');
  }, 60_000);

  it('holds a volume to 8 MiB/s of writes over 10 s', async () => {
    d.cliOk(['volume', 'create', 'bps', '64M', '--write-bps', '8M']);
    d.cliOk(['volume', 'export-nbd', 'bps']);
    const jobs = await fio('bps', { w: ['rw=randwrite', 'bs=64k', 'iodepth=8'] }, [`uri=${uri('bps')}`, 'ramp_time=1', 'runtime=10']);
    within(jobs.get('w')!.write.bw_bytes, 8 * MiB, 'write bytes/s');
  }, 60_000);

  it('lets an idle volume burst for the burst length, then holds it to the limit; limits change live', async () => {
    d.cliOk(['volume', 'create', 'burst', '64M']);
    d.cliOk(['volume', 'export-nbd', 'burst']);
    // Set on the exported volume: its throttle changes without a reattach.
    d.cliOk(['volume', 'qos', 'set', 'burst', '--read-iops', '200', '--read-iops-burst', '1000', '--burst-seconds', '3']);
    const during = await fio('burst1', { r: ['rw=randread', 'bs=4k', 'iodepth=16'] }, [`uri=${uri('burst')}`, 'runtime=3']);
    within(during.get('r')!.read.iops, 1000, 'read IOPS during the burst');
    // What the first run left of the burst, and what refilled between the runs, goes in the ramp.
    const after = await fio('burst2', { r: ['rw=randread', 'bs=4k', 'iodepth=16'] }, [`uri=${uri('burst')}`, 'ramp_time=2', 'runtime=10']);
    within(after.get('r')!.read.iops, 200, 'read IOPS after the burst');
  }, 60_000);

  it('an unthrottled volume keeps at least 80% of its IOPS next to a throttled, saturated one; /metrics shows the throttling', async () => {
    d.cliOk(['volume', 'create', 'noisy', '64M', '--read-iops', '300']);
    d.cliOk(['volume', 'create', 'quiet', '64M']);
    d.cliOk(['volume', 'export-nbd', 'noisy']);
    d.cliOk(['volume', 'export-nbd', 'quiet']);
    const quiet = [`uri=${uri('quiet')}`, 'rw=randread', 'bs=4k', 'iodepth=16'];
    const noisy = [`uri=${uri('noisy')}`, 'rw=randread', 'bs=4k', 'iodepth=32'];
    const alone: number[] = [];
    const together: number[] = [];
    for (let round = 0; round < 3; round++) {
      alone.push((await fio(`alone${round}`, { quiet }, ['runtime=4'])).get('quiet')!.read.iops);
      const both = await fio(`both${round}`, { quiet, noisy }, ['runtime=4']);
      together.push(both.get('quiet')!.read.iops);
      expect(both.get('noisy')!.read.iops).toBeLessThanOrEqual(300 * 1.1);
    }
    const ratio = Math.max(...together) / Math.max(...alone);
    console.log(`QoS e2e: quiet alone ${alone.map(Math.round).join(', ')} IOPS; next to noisy ${together.map(Math.round).join(', ')}; ratio ${ratio.toFixed(3)}`);
    expect(ratio, `quiet alone ${alone.map(Math.round).join(', ')}; next to noisy ${together.map(Math.round).join(', ')}`).toBeGreaterThanOrEqual(0.8);

    const metrics = await (await d.api('GET', '/metrics')).text();
    const sample = (name: string, volume: string) => Number(new RegExp(`^${name}\\{pool="default",volume="${volume}"\\} (\\S+)$`, 'm').exec(metrics)?.[1]);
    expect(sample('strata_volume_qos_throttled_seconds_total', 'noisy')).toBeGreaterThan(0);
    expect(sample('strata_volume_qos_throttled_requests_total', 'noisy')).toBeGreaterThan(0);
    expect(sample('strata_volume_qos_limited', 'noisy')).toBe(1);
    expect(sample('strata_volume_qos_limited', 'quiet')).toBe(0);
    expect(sample('strata_volume_qos_throttled_seconds_total', 'quiet')).toBe(0);
    expect(sample('strata_volume_qos_queued_requests', 'noisy')).toBe(0);
  }, 120_000);
});
