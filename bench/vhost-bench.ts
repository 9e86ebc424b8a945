/**
 * vhost-user-blk: the TypeScript front-end (test/support/vhost-frontend, playing QEMU's role) drives
 * Strata's back-end (bench/vhost-serve.ts, its own node process) and qemu-storage-daemon side by
 * side in one run. Every back-end gets its own copy of the same qcow2 image in /dev/shm (1 GiB,
 * first 256 MiB written by qemu-io) and the same queue count. qemu-storage-daemon runs twice: with
 * writethrough=on (syncs every write; Strata offers a write-back cache and makes durable what the
 * guest flushes: either way every write the guest was told is durable survives, the comparison that counts)
 * and with its default writethrough=off (tells the guest its cache is write-through yet keeps qcow2
 * metadata in memory: faster, not durable; see shared notes).
 * Rows: 4 KiB random read and write at QD 1 and 32, 1 MiB sequential read and write at QD 8.
 * Each cell runs --reps times (default 3), the back-ends' order rotated per rep and row (runOrder), every run printed;
 * the tables give medians and ratios, and each back-end process's CPU seconds (from /proc) per GiB
 * moved and per 100k requests over all runs of a row. --load N runs N CPU-bound processes beside
 * the whole bench (load.ts), the same for every back-end.
 *
 * --dir PATH puts the images in a folder of PATH instead of /dev/shm (a disk-backed file system:
 * there Strata's small requests take the thread pool or the no-wait read, not tmpfs's synchronous
 * path; note that qsd writethrough=on then flushes every write to the disk).
 * --rows TEXT keeps the rows whose name contains TEXT; --base-serve PATH adds a side "Strata base"
 * served by another build's dist/bench/vhost-serve.js (a before/after comparison in one run).
 * Every rep creates every side afresh (its own image copy, server and connection, then 1 s of
 * unmeasured 4 KiB reads) in an order rotated per rep, printed with each run: with the same build
 * on two sides the first-created one measured slower, so no side may keep that place.
 *
 *   npx tsc -p tsconfig.json && node dist/bench/vhost-bench.js [--runtime 3] [--reps 3] [--queues 1] [--only strata,qsd-wt,qsd] [--load N] [--dir PATH]
 *     [--rows "1 MiB"] [--base-serve ../base/dist/bench/vhost-serve.js]
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { BlkStatus, BlkType, VhostUserFrontend } from '../test/support/vhost-frontend/index.js';
import { argNumber, argValue, exitOnHelp, loadArg } from './args.js';
import { cpuWindow, type CpuSample } from './cpu.js';
import { creationOrder, removeServer, runOrder } from './side-by-side.js';
import { endBench, loadAverage, loadNote, startLoad } from './load.js';
import { warmMemoryNoted } from './warm-memory.js';
import { cpuTable, medianTable, pairedTable, roundsInOrder, type RowRuns } from './report.js';

const here = resolve(fileURLToPath(import.meta.url), '..');
const MiB = 1024 * 1024;
const REGION_BYTES = 256 * MiB;

interface Row {
  name: string;
  write: boolean;
  random: boolean;
  bytes: number;
  depth: number;
}

const ROWS: Row[] = [
  { name: '4 KiB random read, QD 1', write: false, random: true, bytes: 4096, depth: 1 },
  { name: '4 KiB random read, QD 32', write: false, random: true, bytes: 4096, depth: 32 },
  { name: '4 KiB random write, QD 1', write: true, random: true, bytes: 4096, depth: 1 },
  { name: '4 KiB random write, QD 32', write: true, random: true, bytes: 4096, depth: 32 },
  { name: '1 MiB sequential read, QD 8', write: false, random: false, bytes: MiB, depth: 8 },
  { name: '1 MiB sequential write, QD 8', write: true, random: false, bytes: MiB, depth: 8 },
];

/** The unmeasured pass each fresh side serves before its first measured row. */
const WARM_UP_ROW = ROWS[1]!;
const WARM_UP_SECONDS = 1;

async function waitForSocket(path: string, child: ChildProcess): Promise<void> {
  for (let i = 0; i < 200 && !existsSync(path) && child.exitCode === null; i++) await sleep(50);
  if (!existsSync(path)) throw new Error(`no socket at ${path}`);
}

/** Runs one row for runtimeSeconds with `depth` requests always in flight; returns IOPS and the requests done. */
/** Call-eventfd signals the front-end has seen on its queues: the interrupts a guest would take. */
function interruptsSeen(fe: VhostUserFrontend, queues: number): number {
  let total = 0;
  for (let q = 0; q < queues; q++) total += fe.queue(q).interrupts;
  return total;
}

async function runRow(fe: VhostUserFrontend, row: Row, runtimeSeconds: number): Promise<{ iops: number; requests: number }> {
  const type = row.write ? BlkType.OUT : BlkType.IN;
  const sectors = row.bytes / 512;
  const slots = REGION_BYTES / row.bytes;
  let cursor = 0;
  let done = 0;
  let failed = 0;
  const end = performance.now() + runtimeSeconds * 1000;
  const worker = async (): Promise<void> => {
    while (performance.now() < end) {
      const slot = row.random ? Math.floor(Math.random() * slots) : cursor++ % slots;
      const r = await fe.io(type, slot * sectors, row.bytes);
      if (r.status !== BlkStatus.OK) failed++;
      done++;
    }
  };
  const start = performance.now();
  await Promise.all(Array.from({ length: row.depth }, worker));
  const seconds = (performance.now() - start) / 1000;
  if (failed > 0) throw new Error(`${failed} requests failed`);
  return { iops: done / seconds, requests: done };
}

interface SideSpec {
  name: string;
  label: string;
}

interface Side extends SideSpec {
  image: string;
  socket: string;
  child: ChildProcess;
  /** The back-end process (its CPU is what the CPU table reports). */
  pid: number;
  fe?: VhostUserFrontend;
}

/** A fresh side: its own copy of the template image, its server started and its socket up (not yet connected). */
async function createSide(spec: SideSpec, dir: string, template: string, baseServe: string, queues: number): Promise<Side> {
  const image = join(dir, `${spec.name}.qcow2`);
  copyFileSync(template, image);
  const socket = join(dir, `${spec.name}.sock`);
  const child =
    spec.name === 'strata' || spec.name === 'base'
      ? spawn(process.execPath, [spec.name === 'base' ? baseServe : join(here, 'vhost-serve.js'), image, socket, String(queues)], { stdio: ['ignore', 'ignore', 'inherit'] })
      : spawn(
          'qemu-storage-daemon',
          [
            '--blockdev',
            `driver=file,node-name=f0,filename=${image}`,
            '--blockdev',
            'driver=qcow2,node-name=d0,file=f0',
            '--export',
            `type=vhost-user-blk,id=e0,node-name=d0,addr.type=unix,addr.path=${socket},writable=on,num-queues=${queues}` +
              (spec.name === 'qsd-wt' ? ',writethrough=on' : ''),
          ],
          { stdio: ['ignore', 'ignore', 'inherit'] },
        );
  const side: Side = { ...spec, image, socket, child, pid: child.pid! };
  try {
    await waitForSocket(socket, child);
  } catch (err) {
    await destroySide(side);
    throw err;
  }
  return side;
}

/** Closes the connection, stops the server (waits for it to exit) and removes its image and socket. */
async function destroySide(side: Side): Promise<void> {
  side.fe?.close();
  await removeServer({ child: side.child, files: [side.image, side.socket] });
}

async function main(): Promise<void> {
  exitOnHelp(import.meta.url);
  const runtimeSeconds = argNumber('--runtime', 3);
  const reps = argNumber('--reps', 3);
  const loadProcesses = loadArg();
  const queues = argNumber('--queues', 1);
  const only = argValue('--only', 'strata,qsd-wt,qsd').split(',');
  const rowFilter = argValue('--rows', '');
  const baseServe = argValue('--base-serve', '');
  const dir = mkdtempSync(join(argValue('--dir', existsSync('/dev/shm') ? '/dev/shm' : '/tmp'), 'strata-vhost-bench-'));
  let live: Side[] = [];
  warmMemoryNoted();
  const load = startLoad(loadProcesses);
  const loadStart = loadAverage();
  try {
    const template = join(dir, 'template.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', template, '1G']);
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 1 0 256M', template], { stdio: 'ignore' });
    const all: SideSpec[] = [
      { name: 'strata', label: 'Strata' },
      { name: 'qsd-wt', label: 'qsd writethrough=on' },
      { name: 'qsd', label: 'qsd default (writethrough=off)' },
    ].filter((b) => only.includes(b.name));
    if (baseServe !== '') all.splice(1, 0, { name: 'base', label: 'Strata base' });
    const rows = ROWS.filter((r) => r.name.includes(rowFilter));
    const runs = new Map<string, Map<string, number[]>>(rows.map((r) => [r.name, new Map(all.map((b) => [b.name, []]))]));
    const cpu = new Map<string, Map<string, CpuSample[]>>(rows.map((r) => [r.name, new Map(all.map((b) => [b.name, []]))]));
    const creations: string[] = [];
    // Every rep creates every side afresh (image copy, server, connection) in an order rotated
    // per rep: the side created first has measured slower with the same build on both sides, so
    // no side may keep that place.
    for (let rep = 0; rep < reps; rep++) {
      const creation = creationOrder(all, rep);
      creations.push(`rep ${rep + 1}: ${creation.map((b) => b.name).join(', ')}`);
      for (const spec of creation) live.push(await createSide(spec, dir, template, baseServe, queues));
      for (const side of live) {
        side.fe = await VhostUserFrontend.connect(side.socket, { queueCount: queues, queueSize: 256, queueDepth: 32, maxRequestBytes: MiB });
      }
      // A fresh server's first requests pay for its start-up (the JIT for Strata): an unmeasured pass first.
      for (const side of live) await runRow(side.fe!, WARM_UP_ROW, WARM_UP_SECONDS);
      const columns = all.map((spec) => live.find((side) => side.name === spec.name)!);
      for (const [rowIndex, row] of rows.entries()) {
        const order = runOrder(columns, rep, rowIndex);
        const interrupts = new Map<string, number>();
        for (const side of order) {
          const window = cpuWindow(side.pid);
          const interruptsBefore = interruptsSeen(side.fe!, queues);
          const r = await runRow(side.fe!, row, runtimeSeconds);
          cpu.get(row.name)!.get(side.name)!.push({ cpuSeconds: window.stop(), bytes: r.requests * row.bytes, requests: r.requests });
          runs.get(row.name)!.get(side.name)!.push(r.iops);
          interrupts.set(side.name, (interruptsSeen(side.fe!, queues) - interruptsBefore) / r.requests);
        }
        const iops = columns
          .map((side) => `${side.name} ${runs.get(row.name)!.get(side.name)!.at(-1)!.toFixed(0)} (${interrupts.get(side.name)!.toFixed(2)} interrupts a request)`)
          .join(', ');
        process.stderr.write(`rep ${rep + 1} (created ${creation.map((b) => b.name).join(', ')}; ran ${order.map((b) => b.name).join(', ')}) ${row.name}: ${iops} IOPS (load ${loadAverage().toFixed(2)})\n`);
      }
      for (const side of live) await destroySide(side);
      live = [];
    }
    const results: RowRuns[] = rows.map((row) => ({ name: row.name, runs: runs.get(row.name)!, cpu: cpu.get(row.name)!, rounds: roundsInOrder(runs.get(row.name)!) }));
    const title = `vhost-user-blk, ${queues} queue(s), 256 MiB region`;
    const lines = [
      ...medianTable(title, all, 'strata', results, 'IOPS'),
      '',
      ...pairedTable('reps paired (each rep runs the sides back to back)', all, 'strata', results),
      '',
      ...cpuTable('back-end process CPU', all, 'strata', results),
    ];
    lines.push(
      '',
      `${execFileSync('qemu-storage-daemon', ['--version'], { encoding: 'utf8' }).split('\n')[0]}; node ${process.version}; median of ${reps} runs of ${runtimeSeconds} s per cell, run order rotated per rep and row; ` +
        `every side created afresh each rep (image copy, server, connection, ${WARM_UP_SECONDS} s unmeasured warm-up), creation order rotating (${creations.join('; ')}); ` +
        `${loadNote(loadProcesses, loadStart)}; ` +
        `front-end: test/support/vhost-frontend (EVENT_IDX, direct chains, one data descriptor per request); ${new Date().toISOString().slice(0, 10)}.`,
    );
    process.stdout.write(lines.join('\n') + '\n');
  } finally {
    for (const side of live) await destroySide(side).catch(() => undefined);
    await endBench(load, [], dir);
  }
}

await main();
process.exit(0);
