/**
 * Where a PUT's CPU goes in the daemon (issue 14): `strata serve` with its data folder in /dev/shm
 * (as bench/s3-bench.ts's --strata-dir /dev/shm), COUNT PUTs of SIZE MiB one at a time with the
 * AWS SDK as s3-bench sends them (a body over 1 MiB streamed in 1 MiB pieces, every 64 KiB block
 * unique), the daemon's CPU per GiB from /proc; with --perf, `perf record -g` on the daemon's
 * threads over the PUTs only (the daemon run with --perf-basic-prof so that JavaScript frames
 * have names), then `perf report` by thread and by library.
 *
 *   node dist/bench/s3-put-profile.js [--size-mib 256] [--count 8] [--perf] [--strata-bin PATH]
 *
 * Reading the report: the MD5 of the ETag runs on the hashing worker ("WorkerThread" with
 * ossl_md5_*), pack writes into tmpfs on libuv's pool ("libuv-worker", kernel copy and page
 * allocation), the HTTP parser, chunking and pack building on "MainThread" (listed apart too, by symbol).
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CreateBucketCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { freePort } from '../test/support/s3-servers.js';
import { argNumber, argValue, exitOnHelp } from './args.js';
import { processCpuSeconds } from './cpu.js';
import { objectBody, PIECE_BYTES, s3ClientFor, strataUserKey } from './s3-client.js';
import { startStrata, STRATA_BIN } from './strata-daemon.js';

const MiB = 1024 * 1024;
/** Time for perf to attach to the daemon's threads before the timed PUTs begin. */
const PERF_ATTACH_MS = 500;

/** Bytes the process has handed to write(2)-like calls so far (files and sockets: /proc/PID/io wchar). */
function bytesWritten(pid: number): number {
  const line = readFileSync(`/proc/${pid}/io`, 'utf8').split('\n').find((l) => l.startsWith('wchar:'));
  return Number(line?.split(/\s+/)[1] ?? Number.NaN);
}

async function main(): Promise<void> {
  exitOnHelp(import.meta.url);
  const sizeBytes = argNumber('--size-mib', 256) * MiB;
  const count = argNumber('--count', 8);
  const withPerf = process.argv.includes('--perf');
  const bin = argValue('--strata-bin', STRATA_BIN);
  if (withPerf) {
    try {
      execFileSync('perf', ['--version'], { stdio: 'ignore' });
    } catch {
      throw new Error('--perf needs Linux perf on the PATH (Debian: apt-get install linux-perf)');
    }
  }
  const dir = mkdtempSync('/dev/shm/strata-put-profile-');
  const port = await freePort();
  // --perf-basic-prof: V8 writes /tmp/perf-PID.map, which perf report reads to name JIT frames.
  const env = withPerf ? { ...process.env, NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --perf-basic-prof`.trim() } : process.env;
  const daemon = await startStrata(join(dir, 'strata'), ['--s3-listen', `127.0.0.1:${port}`], env, bin, join(dir, 'strata.log'));
  try {
    const key = strataUserKey(daemon, bin, 'profile');
    const client = s3ClientFor(`http://127.0.0.1:${port}`, key.id, key.secret);
    await client.send(new CreateBucketCommand({ Bucket: 'profile' }));
    const base = randomBytes(PIECE_BYTES);
    let objectId = 1;
    const put = (key: string): Promise<unknown> =>
      client.send(new PutObjectCommand({ Bucket: 'profile', Key: key, Body: objectBody(base, objectId++, sizeBytes), ContentLength: sizeBytes }));
    // Two untimed PUTs first: the daemon's JIT and its hashing workers warm.
    for (let i = 0; i < 2; i++) await put(`warm-${i}`);
    const pid = daemon.child.pid!;
    const perfData = join(dir, 'perf.data');
    const perf = withPerf ? spawn('perf', ['record', '-F', '999', '-g', '-p', String(pid), '-o', perfData], { stdio: 'inherit' }) : undefined;
    if (perf !== undefined) await sleep(PERF_ATTACH_MS);
    const cpuBefore = processCpuSeconds(pid);
    const writtenBefore = bytesWritten(pid);
    const started = process.hrtime.bigint();
    for (let i = 0; i < count; i++) await put(`object-${i}`);
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    const cpuSeconds = processCpuSeconds(pid) - cpuBefore;
    const writtenBytes = bytesWritten(pid) - writtenBefore;
    if (perf !== undefined) {
      const exited = new Promise((resolve) => perf.once('exit', resolve));
      perf.kill('SIGINT');
      await exited;
    }
    const gib = (count * sizeBytes) / (1024 * MiB);
    process.stdout.write(
      `${count} PUTs of ${sizeBytes / MiB} MiB, one at a time: ${((count * sizeBytes) / MiB / seconds).toFixed(1)} MiB/s, daemon ${(cpuSeconds / gib).toFixed(2)} CPU s/GiB, ` +
        `wrote ${(writtenBytes / (count * sizeBytes)).toFixed(2)} bytes a byte PUT\n`,
    );
    if (perf !== undefined) {
      for (const sort of ['comm', 'comm,dso', 'comm,dso,sym']) {
        const report = execFileSync('perf', ['report', '-i', perfData, '--no-children', '--sort', sort, '--stdio', '-g', 'none'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
        const lines = report.split('\n').filter((line) => line.includes('%') && !line.startsWith('#'));
        process.stdout.write(`\nperf, by ${sort} (share of the daemon's samples):\n${lines.slice(0, 25).join('\n')}\n`);
      }
      // The event loop alone: the thread every request's parsing, chunking and bookkeeping run on.
      const loop = execFileSync('perf', ['report', '-i', perfData, '--no-children', '--comm', 'MainThread', '--percentage', 'relative', '--sort', 'dso,sym', '--stdio', '-g', 'none'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
      const loopLines = loop.split('\n').filter((line) => line.includes('%') && !line.startsWith('#'));
      process.stdout.write(`\nperf, the event loop (MainThread) by dso,sym (share of its samples):\n${loopLines.slice(0, 40).join('\n')}\n`);
      rmSync(`/tmp/perf-${pid}.map`, { force: true });
    }
    client.destroy(); // its keep-alive sockets would hold this process open
  } finally {
    if (daemon.child.exitCode === null && daemon.child.signalCode === null) {
      const exited = new Promise((resolve) => daemon.child.once('exit', resolve));
      daemon.child.kill('SIGTERM');
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
