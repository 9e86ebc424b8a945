/**
 * vhost-user-blk through a real guest: the test rig's TCG guest (test/vhost-user/guest.ts: Debian
 * kernel, busybox initramfs, one vhost-user-blk disk) runs fio (libaio, direct=1, one job; the
 * host's fio carried into the guest by guest-fio.ts) against each back-end in turn:
 * - Strata: `strata serve`, the image imported as a volume, `strata volume attach --vhost-user`
 *   (what users run: it offers the guest a write-back cache, VIRTIO_BLK_F_FLUSH, and makes
 *   durable what the guest flushes, so every write the guest was told is durable survives a crash);
 * - qemu-storage-daemon with writethrough=on: the same promise kept the other way (it tells the
 *   guest its cache is write-through and syncs every write): equal durability, the comparison that counts;
 * - qemu-storage-daemon default (writethrough=off): faster, not durable (shared notes), for reference.
 * Every back-end gets its own copy of the same qcow2 image in /dev/shm (1 GiB, first 256 MiB
 * written by qemu-io); fio works in that 256 MiB region. Rows: 4 KiB random read and write at QD 1
 * and 32, 1 MiB sequential read and write at QD 8.
 *
 * One guest boot per back-end per run runs every row (boots take ~12 s under TCG). Every run
 * creates every back-end afresh (its own image copy, or a fresh data folder with the image
 * imported, and its server) in an order rotated per run (creationOrder), boots a guest on each in
 * a run order rotated per run (runOrder), then stops them: with the same build on two sides the one
 * created first measured slower, so no side may keep that place. A fresh server costs little
 * beside the guest boot each side pays per run anyway (the Strata import of 256 MiB takes about a
 * second). Each run's line names its creation and run order. Every run's IOPS is printed; the tables give medians, ratios, and the
 * CPU seconds the serving process spent (utime + stime from /proc, children included) per GiB
 * moved and per 100k guest requests, between the guest's "row starts" and "row ended" markers.
 *
 * A run is bounded (runWatchdog): the guest must print its first marker within BOOT_BOUND_MS and
 * each next one within the row's runtime + ROW_MARGIN_MS. A run that stalls (a busy machine once
 * wedged qsd's side for 14 minutes) is killed: the guest and that side's server get SIGKILL, the
 * run is printed as failed and left out of the tables, and the bench goes on (the next run creates
 * every server afresh).
 *
 *   npm run bench:guest -- [--runs 3] [--runtime 3] [--load N] [--only strata,qsd-wt,qsd] [--rows "QD 1"]
 *                          [--base-strata OTHER_TREE/bin/strata.js]
 *
 * --base-strata adds a side 'base': the same Strata set-up run by another build's CLI (a before/after
 * comparison in one run, the builds alternating with the peers).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { startGuest } from '../test/vhost-user/guest.js';
import { argNumber, argValue, exitOnHelp, loadArg } from './args.js';
import { processCpuSeconds, formatCost, cpuCost, type CpuSample } from './cpu.js';
import { NBD_BENCH_ROWS, waitForSocket, type NbdBenchRow } from './fio-nbd.js';
import { guestFio, parseGuestFioLine, type GuestFio } from './guest-fio.js';
import { endBench, loadAverage, loadNote, startLoad } from './load.js';
import { cpuTable, medianTable, type RowRuns, type Side } from './report.js';
import { BOOT_BOUND_MS, GuestRunStalled, ROW_MARGIN_MS, runWatchdog } from './run-watchdog.js';
import { creationOrder, removeServer, runOrder, stopServer } from './side-by-side.js';
import { STRATA_BIN, startStrata, strataCli } from './strata-daemon.js';

const REGION = '256M';
const GUEST_MEM_MIB = 512;

interface Backend extends Side {
  socket: string;
  /** The serving process (its CPU is what the CPU table reports). */
  pid: number;
  child: ChildProcess;
  /** Its image copy or data folder, and its socket: removed when the server is stopped. */
  files: string[];
}

/** One row's outcome in one guest run. */
export interface GuestRowResult {
  iops: number;
  sample: CpuSample;
}

/**
 * The guest's script: a warm-up pass, then each row's fio job, which writes "row-go i" and
 * "row-stop i" on the console around its I/O; then "row-end i FIELDS" (parseGuestFioLine).
 */
function guestScript(fio: GuestFio, rows: readonly NbdBenchRow[], runtimeSeconds: number): string {
  // fio runs exec_prerun/exec_postrun right around the job's I/O: their lines on the console
  // bracket the CPU window tightly (fio's start-up under TCG, loading ~60 libraries, stays out).
  // fio appends '> j.prerun.txt 2>&1' to the command, hence the inner shell's own redirect.
  const job = (rw: string, bs: string, depth: number, seconds: number, row?: number): string =>
    `${fio.command} ${row === undefined ? '' : `'--exec_prerun=sh -c "echo row-go ${row} > /dev/console"' '--exec_postrun=sh -c "echo row-stop ${row} > /dev/console"' `}--name=j --filename=/dev/vda --direct=1 --ioengine=libaio --thread --size=${REGION} ` +
    `--rw=${rw} --bs=${bs} --iodepth=${depth} --runtime=${seconds} --time_based --norandommap --randrepeat=0 ` +
    `--output-format=terse --terse-version=3 > /tmp/fio.out 2> /tmp/fio.err || { echo "fio failed"; cat /tmp/fio.err; exit 1; }`;
  return [
    fio.setup,
    // The warm-up fills the back-end's metadata caches and compiles Strata's paths.
    job('randread', '4k', 8, 2),
    ...rows.flatMap((row, i) => [
      job(row.rw, row.bs, row.iodepth, runtimeSeconds, i),
      // fio's stdout also says where it saved the prerun output: keep the terse (version 3) line only.
      `echo "row-end ${i} $(grep '^3;' /tmp/fio.out | cut -d';' -f6,8,47,49)"`,
    ]),
  ].join('\n');
}

/** Boots the guest on one back-end and runs every row; the serving process's CPU is read at each marker. */
/** The guest running now, so an interrupted bench can stop it (a TCG QEMU holds 512 MiB). */
let currentGuest: { kill(): void } | undefined;

async function guestRun(b: Backend, fio: GuestFio, rows: readonly NbdBenchRow[], runtimeSeconds: number): Promise<GuestRowResult[]> {
  const started = new Map<number, number>();
  const cpuSeconds = new Map<number, number>();
  let badLine: Error | undefined;
  const results: GuestRowResult[] = [];
  let stalled: string | undefined;
  const watchdog = runWatchdog(runtimeSeconds, (why) => {
    stalled = why;
    guest.kill();
  });
  const guest = startGuest({
    socketPath: b.socket,
    script: guestScript(fio, rows, runtimeSeconds),
    files: fio.files,
    memMiB: GUEST_MEM_MIB,
    // Generous: on a busy shared machine a TCG boot alone has taken minutes.
    timeoutMs: 600_000 + rows.length * (runtimeSeconds + 60) * 1000,
    onConsoleLine: (line) => {
      // Read the CPU in the console callback itself, as close to the marker as the host gets.
      const m = /row-(go|stop|end) (\d+)(?: (.*))?$/.exec(line);
      if (m === null) return;
      watchdog.marker(m[0].slice(0, 12));
      const i = Number(m[2]);
      if (m[1] === 'go') started.set(i, processCpuSeconds(b.pid));
      else if (m[1] === 'stop') cpuSeconds.set(i, processCpuSeconds(b.pid) - started.get(i)!);
      else {
        try {
          const r = parseGuestFioLine(m[3] ?? '', rows[i]!.bs);
          results[i] = { iops: r.iops, sample: { cpuSeconds: cpuSeconds.get(i)!, bytes: r.bytes, requests: r.requests } };
        } catch (e) {
          badLine ??= e as Error; // reported once the guest is done (a throw here would end the bench mid-boot)
        }
      }
    },
  });
  currentGuest = guest;
  const r = await guest.result
    .catch((e: unknown) => {
      if (stalled !== undefined) throw new GuestRunStalled(`${stalled} (${results.filter(Boolean).length} of ${rows.length} rows done)`);
      throw e;
    })
    .finally(() => {
      watchdog.stop();
      currentGuest = undefined;
    });
  if (badLine !== undefined) throw badLine;
  if (r.exitCode !== 0) throw new Error(`guest on ${b.label} failed (${r.exitCode}):\n${r.consoleTail}`);
  if (results.length !== rows.length || results.includes(undefined as never)) throw new Error(`guest on ${b.label} reported ${results.length} of ${rows.length} rows:\n${r.consoleTail}`);
  return results;
}

function qsdArgs(image: string, socket: string, writethrough: boolean): string[] {
  return [
    '--blockdev',
    `driver=file,node-name=f0,filename=${image}`,
    '--blockdev',
    'driver=qcow2,node-name=d0,file=f0',
    '--export',
    `type=vhost-user-blk,id=e0,node-name=d0,addr.type=unix,addr.path=${socket},writable=on,num-queues=1` + (writethrough ? ',writethrough=on' : ''),
  ];
}

/** A fresh back-end: its own copy of the template (a volume imported from it for Strata), its server started and its socket up. */
async function createBackend(side: Side, dir: string, template: string, baseStrataBin: string): Promise<Backend> {
  const socket = join(dir, `${side.name}.sock`);
  if (side.name === 'strata' || side.name === 'base') {
    const dataDir = join(dir, `${side.name}-data`);
    const daemon = await startStrata(dataDir, [], process.env, side.name === 'base' ? baseStrataBin : STRATA_BIN);
    const b: Backend = { ...side, socket, child: daemon.child, pid: daemon.child.pid!, files: [dataDir, socket] };
    try {
      strataCli(daemon, ['volume', 'import', template, 'bench', '--no-progress']);
      strataCli(daemon, ['volume', 'attach', 'bench', '--vhost-user', socket, '--queues', '1']);
      await waitForSocket(socket);
    } catch (err) {
      await removeServer(b);
      throw err;
    }
    return b;
  }
  const image = join(dir, `${side.name}.qcow2`);
  copyFileSync(template, image);
  const child = spawn('qemu-storage-daemon', qsdArgs(image, socket, side.name === 'qsd-wt'), { stdio: ['ignore', 'ignore', 'inherit'] });
  const b: Backend = { ...side, socket, child, pid: child.pid!, files: [image, socket] };
  await waitForSocket(socket).catch(async (err: unknown) => {
    await removeServer(b);
    throw err;
  });
  return b;
}

async function main(): Promise<void> {
  exitOnHelp(import.meta.url);
  const runs = argNumber('--runs', 3);
  const runtimeSeconds = argNumber('--runtime', 3);
  const loadProcesses = loadArg();
  const baseStrataBin = argValue('--base-strata', '');
  const only = [...argValue('--only', 'strata,qsd-wt,qsd').split(','), ...(baseStrataBin === '' ? [] : ['base'])];
  const rowFilter = argValue('--rows', '');
  const rows = NBD_BENCH_ROWS.filter((r) => r.name.includes(rowFilter));
  const shm = existsSync('/dev/shm') ? '/dev/shm' : '/tmp';
  const dir = mkdtempSync(join(shm, 'strata-guest-bench-'));
  let live: Backend[] = [];
  const load = startLoad(loadProcesses);
  // Ctrl-C or a kill: stop the guest, the servers and the load, and free /dev/shm, as on success.
  const interrupted = (): void => {
    currentGuest?.kill();
    for (const b of live) b.child.kill('SIGKILL');
    void load.stop();
    rmSync(dir, { recursive: true, force: true });
    process.exit(130);
  };
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  try {
    const template = join(dir, 'template.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', template, '1G']);
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', `write -P 1 0 ${REGION}`, template], { stdio: 'ignore' });
    const wanted: Side[] = [
      { name: 'strata', label: 'Strata' },
      { name: 'qsd-wt', label: 'qsd writethrough=on' },
      { name: 'qsd', label: 'qsd default' },
      { name: 'base', label: 'Strata (base build)' },
    ].filter((s) => only.includes(s.name));
    const fio = guestFio();
    const loadStart = loadAverage();
    const iops = rows.map(() => new Map<string, number[]>(wanted.map((b) => [b.name, []])));
    const cpu = rows.map(() => new Map<string, CpuSample[]>(wanted.map((b) => [b.name, []])));
    const failedRuns: string[] = [];
    const creations: string[] = [];
    for (let run = 0; run < runs; run++) {
      const creation = creationOrder(wanted, run);
      creations.push(`run ${run + 1}: ${creation.map((s) => s.name).join(', ')}`);
      for (const side of creation) live.push(await createBackend(side, dir, template, baseStrataBin));
      const columns = wanted.map((side) => live.find((b) => b.name === side.name)!);
      const order = runOrder(columns, run, 0);
      const orders = `created ${creation.map((s) => s.name).join(', ')}; ran ${order.map((s) => s.name).join(', ')}`;
      process.stderr.write(`run ${run + 1} (${orders}) (load ${loadAverage().toFixed(2)})\n`);
      for (const b of order) {
        let results: GuestRowResult[];
        try {
          results = await guestRun(b, fio, rows, runtimeSeconds);
        } catch (e) {
          if (!(e instanceof GuestRunStalled)) throw e;
          // The side may be what stalled: its server goes too (this run's other sides go on).
          await stopServer(b.child, 'SIGKILL');
          const note = `run ${run + 1} (${orders}), ${b.label}: FAILED, ${e.message}; guest and server killed (load ${loadAverage().toFixed(2)})`;
          failedRuns.push(note);
          process.stderr.write(`  ${note}\n`);
          continue;
        }
        for (const [i, r] of results.entries()) {
          iops[i]!.get(b.name)!.push(r.iops);
          cpu[i]!.get(b.name)!.push(r.sample);
          process.stderr.write(`  run ${run + 1}, ${b.label}, ${rows[i]!.name}: ${r.iops.toFixed(0)} IOPS, ${formatCost(cpuCost(r.sample))} (load ${loadAverage().toFixed(2)})\n`);
        }
      }
      for (const b of live) await removeServer(b);
      live = [];
    }
    const table: RowRuns[] = rows.map((row, i) => ({ name: row.name, runs: iops[i]!, cpu: cpu[i]! }));
    const lines = [
      ...medianTable(`guest fio, libaio direct, ${REGION} region`, wanted, 'strata', table, 'IOPS'),
      '',
      ...cpuTable('serving process CPU', wanted, 'strata', table),
      '',
      'Every run (IOPS, in run order):',
      ...table.map((row) => `- ${row.name}: ${wanted.map((b) => `${b.label} ${row.runs.get(b.name)!.map((v) => v.toFixed(0)).join('/')}`).join('; ')}`),
      ...(failedRuns.length === 0 ? [] : ['', `Failed runs (left out of the tables; ${ROW_MARGIN_MS / 1000} s beyond the runtime per row, ${BOOT_BOUND_MS / 1000} s to the first row):`, ...failedRuns.map((f) => `- ${f}`)]),
      '',
      `${fio.version} in a QEMU TCG guest (1 vCPU, ${GUEST_MEM_MIB} MiB); ${execFileSync('qemu-storage-daemon', ['--version'], { encoding: 'utf8' }).split('\n')[0]}; ` +
        `node ${process.version}; median of ${runs} runs of ${runtimeSeconds} s per cell, run order rotated per run; ` +
        `every back-end created afresh each run (image copy or volume import, server), creation order rotating (${creations.join('; ')}); ` +
        `${loadNote(loadProcesses, loadStart)}; ${new Date().toISOString().slice(0, 16)}Z.`,
    ];
    process.stdout.write(lines.join('\n') + '\n');
  } finally {
    for (const b of live) await removeServer(b).catch(() => undefined);
    await endBench(load, [], dir);
  }
}

await main();
process.exit(0);
