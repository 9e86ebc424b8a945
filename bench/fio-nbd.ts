/** fio against an NBD server (ioengine=nbd, one job), and waiting for a server's unix socket. */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

/** One fio pattern: `rw` as fio spells it (randread, write, ...), block size (4k, 1M), queue depth. */
export interface FioPattern {
  rw: string;
  bs: string;
  iodepth: number;
}

/** A row of the NBD benches: a name and its fio pattern. */
export interface NbdBenchRow extends FioPattern {
  name: string;
}

/** The NBD benches' rows: 4 KiB random read and write at QD 1 and 32, 1 MiB sequential at QD 8. */
export const NBD_BENCH_ROWS: readonly NbdBenchRow[] = [
  { name: '4 KiB random read, QD 1', rw: 'randread', bs: '4k', iodepth: 1 },
  { name: '4 KiB random read, QD 32', rw: 'randread', bs: '4k', iodepth: 32 },
  { name: '4 KiB random write, QD 1', rw: 'randwrite', bs: '4k', iodepth: 1 },
  { name: '4 KiB random write, QD 32', rw: 'randwrite', bs: '4k', iodepth: 32 },
  { name: '1 MiB sequential read, QD 8', rw: 'read', bs: '1M', iodepth: 8 },
  { name: '1 MiB sequential write, QD 8', rw: 'write', bs: '1M', iodepth: 8 },
];

/** What one fio run did: IOPS, and the bytes and requests it moved (for CPU per GiB / per request). */
export interface FioRun {
  iops: number;
  bytes: number;
  requests: number;
}

/**
 * One fio run over the first `size` (fio's spelling, default 256M) of the export: for
 * `runtimeSeconds`, or once over the region when it is undefined.
 */
export function fioNbdRun(uri: string, pattern: FioPattern, runtimeSeconds: number | undefined, size = '256M'): FioRun {
  const out = execFileSync(
    'fio',
    [
      '--name=j',
      '--ioengine=nbd',
      `--uri=${uri}`,
      `--size=${size}`,
      `--rw=${pattern.rw}`,
      `--bs=${pattern.bs}`,
      `--iodepth=${pattern.iodepth}`,
      ...(runtimeSeconds === undefined ? [] : [`--runtime=${runtimeSeconds}`, '--time_based']),
      '--output-format=json',
    ],
    { encoding: 'utf8' },
  );
  type Direction = { iops: number; io_bytes: number; total_ios: number };
  const job = JSON.parse(out.slice(out.indexOf('{'))).jobs[0] as { read: Direction; write: Direction };
  return { iops: job.read.iops + job.write.iops, bytes: job.read.io_bytes + job.write.io_bytes, requests: job.read.total_ios + job.write.total_ios };
}

/** IOPS of one fio run (fioNbdRun). */
export function fioNbd(uri: string, pattern: FioPattern, runtimeSeconds: number | undefined, size = '256M'): number {
  return fioNbdRun(uri, pattern, runtimeSeconds, size).iops;
}

/** Resolves once a server has created its unix socket (polled: there is no event to await). */
export async function waitForSocket(path: string): Promise<void> {
  for (let i = 0; i < 100 && !existsSync(path); i++) await sleep(50);
  if (!existsSync(path)) throw new Error(`no socket at ${path}`);
}
