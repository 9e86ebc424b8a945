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

/**
 * IOPS of one fio run over the first `size` (fio's spelling, default 256M) of the export: for
 * `runtimeSeconds`, or once over the region when it is undefined.
 */
export function fioNbd(uri: string, pattern: FioPattern, runtimeSeconds: number | undefined, size = '256M'): number {
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
  const job = JSON.parse(out.slice(out.indexOf('{'))).jobs[0] as { read: { iops: number }; write: { iops: number } };
  return job.read.iops + job.write.iops;
}

/** Resolves once a server has created its unix socket (polled: there is no event to await). */
export async function waitForSocket(path: string): Promise<void> {
  for (let i = 0; i < 100 && !existsSync(path); i++) await sleep(50);
  if (!existsSync(path)) throw new Error(`no socket at ${path}`);
}
