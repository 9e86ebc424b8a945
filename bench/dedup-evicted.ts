/**
 * The evicted cell of the dedup bench: a volume of 1 GiB of unique data in a dedup pool tiered to
 * an S3 server (moto_server or radosgw, started as the tests start them), evicted so every pack
 * is only in the bucket, read with 1 MiB sequential reads at QD 8 (fio over NBD, once over the
 * volume); the peer is `aws s3 cp` of the same 1 GiB as one object from the same server to stdout
 * (to /dev/null). Each Strata run first evicts again, so no run finds a local copy.
 */
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { GiB, MiB } from '../src/core/units.js';
import { createTestBucket, startMoto, startRadosgw, type S3TestServer } from '../test/support/s3-servers.js';
import { cpuWindow, reapedChildrenCpuSeconds } from './cpu.js';
import { writeUniqueSource } from './dedup-source.js';
import type { TableRow } from './dedup-table.js';
import { exportNbd } from './dedup-pools.js';
import { fioNbd } from './fio-nbd.js';
import { sideBySide } from './side-by-side.js';
import { startStrata, STRATA_BIN, strataCli, waitForJobs, type StrataDaemon } from './strata-daemon.js';

/** radosgw's memstore OSD keeps objects in RAM: room for the packs, the object and overhead. */
const RADOSGW_MEMSTORE_BYTES = 4 * GiB;

async function startServer(kind: string): Promise<S3TestServer> {
  if (kind === 'moto') return startMoto();
  if (kind === 'radosgw') return startRadosgw({ memstoreBytes: RADOSGW_MEMSTORE_BYTES });
  throw new Error(`unknown S3 server '${kind}': use moto or radosgw`);
}

/** Credentials for the daemon's default chain and the aws CLI, both from the environment. */
function s3Env(server: S3TestServer): NodeJS.ProcessEnv {
  return {
    ...process.env,
    AWS_ACCESS_KEY_ID: server.accessKeyId,
    AWS_SECRET_ACCESS_KEY: server.secretAccessKey,
    AWS_DEFAULT_REGION: server.region,
    AWS_EC2_METADATA_DISABLED: 'true',
  };
}

/** MiB/s of `aws s3 cp s3://bucket/key -` into /dev/null. */
function awsCopyMiBps(server: S3TestServer, url: string, sizeBytes: number): number {
  const start = process.hrtime.bigint();
  execFileSync('aws', ['--endpoint-url', server.endpoint, 's3', 'cp', url, '-'], { env: s3Env(server), stdio: ['ignore', 'ignore', 'inherit'] });
  return sizeBytes / MiB / (Number(process.hrtime.bigint() - start) / 1e9);
}

async function evictedCell(kind: string, dir: string, runs: number, sizeBytes: number, rows: TableRow[]): Promise<void> {
  const server = await startServer(kind);
  try {
    const bucket = await createTestBucket(server, 'strata-bench');
    const source = join(dir, `unique-${kind}.raw`);
    writeUniqueSource(source, sizeBytes, `evicted-${kind}`);
    const env = s3Env(server);
    execFileSync('aws', ['--endpoint-url', server.endpoint, 's3', 'cp', source, `s3://${bucket}/volume.raw`, '--only-show-errors'], { env, stdio: 'inherit' });
    // The daemon's default credential chain reads its environment. STRATA_BENCH_BASE_BIN: another
    // build's bin/strata.js, run as a third side (its own daemon and bucket prefix) for a
    // before/after comparison in one run.
    const baseBin = process.env.STRATA_BENCH_BASE_BIN;
    const daemons = new Map<string, StrataDaemon>();
    try {
      for (const [side, bin] of baseBin === undefined ? [['strata', STRATA_BIN]] : [['strata', STRATA_BIN], ['strata base', baseBin]]) {
        const d = await startStrata(join(dir, `data-${kind}-${daemons.size}`), [], env, bin);
        daemons.set(side!, d);
        strataCli(d, ['pool', 'create', 'tiered', '--dedup', '--tier', `s3://${bucket}/packs${daemons.size}`, '--s3-endpoint', server.endpoint]);
        strataCli(d, ['volume', 'import', source, 'tiered/cold', '--no-progress']);
        await waitForJobs(d);
      }
      rmSync(source);
      const uris = new Map([...daemons].map(([side, d]) => [side, exportNbd(d, 'tiered/cold')]));
      const result = await sideBySide(`evicted 1 MiB sequential read, ${kind}`, [...daemons.keys(), 'aws s3 cp'], runs, async (side) => {
        // CPU seconds per GiB read, of the daemon or of the aws CLI (reaped by execFileSync): what a
        // busy machine's share decides, where MiB/s is the machine's as much as the reader's.
        const cpuPerGiB = (cpuSeconds: number): void => void process.stderr.write(`    ${side}: ${(cpuSeconds / (sizeBytes / GiB)).toFixed(2)} CPU s per GiB\n`);
        if (side === 'aws s3 cp') {
          const before = reapedChildrenCpuSeconds();
          const mibps = awsCopyMiBps(server, `s3://${bucket}/volume.raw`, sizeBytes);
          cpuPerGiB(reapedChildrenCpuSeconds() - before);
          return mibps;
        }
        const d = daemons.get(side)!;
        strataCli(d, ['volume', 'evict', 'tiered/cold']);
        await waitForJobs(d);
        const cpu = cpuWindow(d.child.pid!);
        const mibps = await fioNbd(uris.get(side)!, { rw: 'read', bs: '1M', iodepth: 8 }, undefined, `${sizeBytes / MiB}M`); // 1 MiB per I/O: IOPS = MiB/s
        cpuPerGiB(cpu.stop());
        return mibps;
      }, 'MiB/s');
      rows.push({ cell: `evicted ${sizeBytes / MiB} MiB volume, 1 MiB sequential reads QD 8 vs aws s3 cp, ${kind}`, unit: 'MiB/s', strataSide: 'strata', peerSide: 'aws s3 cp', target: 0.8, result });
    } finally {
      for (const d of daemons.values()) {
        d.child.kill('SIGTERM');
        await new Promise((resolve) => d.child.once('exit', resolve));
      }
    }
  } finally {
    await server.stop();
  }
}

/** The evicted cell on each server named in `servers` (moto, radosgw). */
export async function runEvictedCells(dir: string, runs: number, servers: string[], sizeBytes: number, rows: TableRow[]): Promise<void> {
  for (const kind of servers) await evictedCell(kind, dir, runs, sizeBytes, rows);
}
