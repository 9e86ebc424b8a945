/**
 * vhost-user-blk through a real guest: the test rig's TCG guest (test/vhost-user/guest.ts: Debian
 * kernel, busybox initramfs) runs fio (libaio, direct=1, one job; the host's fio carried into the
 * guest by guest-fio.ts) against each back-end:
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
 * Interleaved in one guest: a run creates every back-end afresh (its own image copy, or a fresh
 * data folder with the image imported, and its server) in an order rotated per run
 * (creationOrder), then boots ONE guest with every back-end's disk attached (one vhost-user-blk
 * device each, in creation order: the guest finds them by PCI slot) and runs `--reps` rounds; each
 * round runs every row on every disk, the sides' order rotated per round and row (runOrder). So
 * the sides alternate every few seconds under the same guest, the same boot and the same machine
 * state: runs of separate boots per side (this bench's first form, ~12 s of TCG boot per side per
 * run) overlapped so much between runs that three runs per cell could not tell the sides apart.
 * Each disk's warm-up also checks that disk's server is the one doing the work (the host reads
 * every server's CPU around it), so a disk mapped to the wrong side fails the bench. Every sample's
 * IOPS is printed; the tables give medians, ratios, and the CPU seconds the serving process spent
 * (utime + stime from /proc, children included) per GiB moved and per 100k guest requests, between
 * the guest's "row-go" and "row-stop" markers.
 *
 * A run is bounded (runWatchdog): the guest must print its first marker within BOOT_BOUND_MS and
 * each next one within the row's runtime + ROW_MARGIN_MS. A run that stalls (a busy machine once
 * wedged qsd's side for 14 minutes) is killed: the guest and the run's servers get SIGKILL, the
 * run is printed as failed (the samples it finished are kept) and the bench goes on with the next
 * run, which creates every server afresh.
 *
 *   npm run bench:guest -- [--runs 2] [--reps 3] [--runtime 3] [--load N] [--only strata,qsd-wt,qsd] [--rows "QD 1"]
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
import { schedShares, TCG_VCPU_THREAD, threadSchedTimes, type SchedTimes } from './thread-sched.js';
import { NBD_BENCH_ROWS, waitForSocket, type NbdBenchRow } from './fio-nbd.js';
import { guestFio, parseGuestFioLine, type GuestFio } from './guest-fio.js';
import { endBench, loadAverage, loadNote, startLoad } from './load.js';
import { warmMemoryNoted } from './warm-memory.js';
import { cpuTable, medianTable, pairedTable, type RowRuns, type Side } from './report.js';
import { BOOT_BOUND_MS, ROW_MARGIN_MS, runWatchdog } from './run-watchdog.js';
import { guestPlan, mappingError, WARM_UP_SECONDS, type GuestStep, type GuestStepResult } from './guest-plan.js';
import { creationOrder, removeServer, stopServer } from './side-by-side.js';
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

/**
 * The guest's script: find the disks (vd* sorted by their PCI device path: QEMU gives the devices
 * slots in command-line order), warm each up between "warm-go k" / "warm-stop k", then each step's
 * fio job, which writes "row-go s" and "row-stop s" on the console around its I/O; then
 * "row-end s FIELDS" (parseGuestFioLine).
 */
function guestScript(fio: GuestFio, rows: readonly NbdBenchRow[], runtimeSeconds: number, diskCount: number, plan: readonly GuestStep[]): string {
  // fio runs exec_prerun/exec_postrun right around the job's I/O: their lines on the console
  // bracket the CPU window tightly (fio's start-up under TCG, loading ~60 libraries, stays out).
  // fio appends '> j.prerun.txt 2>&1' to the command, hence the inner shell's own redirect.
  const job = (disk: number, rw: string, bs: string, depth: number, seconds: number, marker: string): string =>
    `${fio.command} '--exec_prerun=sh -c "echo ${marker}-go > /dev/console"' '--exec_postrun=sh -c "echo ${marker}-stop > /dev/console"' ` +
    `--name=j --filename=$D${disk} --direct=1 --ioengine=libaio --thread --size=${REGION} ` +
    `--rw=${rw} --bs=${bs} --iodepth=${depth} --runtime=${seconds} --time_based --norandommap --randrepeat=0 ` +
    `--output-format=terse --terse-version=3 > /tmp/fio.out 2> /tmp/fio.err || { echo "fio failed"; cat /tmp/fio.err; exit 1; }`;
  const disks = Array.from({ length: diskCount }, (_, k) => k);
  return [
    fio.setup,
    `set -- $(for d in /sys/block/vd*; do echo "$(readlink -f $d) \${d##*/}"; done | sort | cut -d' ' -f2)`,
    `[ $# -eq ${diskCount} ] || { echo "found $# virtio disks ($*), expected ${diskCount}"; exit 1; }`,
    ...disks.map((k) => `D${k}=/dev/$${k + 1}`),
    ...disks.map((k) => job(k, 'randread', '4k', 8, WARM_UP_SECONDS, `warm ${k}`)),
    ...plan.flatMap((step, s) => {
      const row = rows[step.row]!;
      return [
        job(step.disk, row.rw, row.bs, row.iodepth, runtimeSeconds, `row ${s}`),
        // fio's stdout also says where it saved the prerun output: keep the terse (version 3) line only.
        `echo "row ${s}-end $(grep '^3;' /tmp/fio.out | cut -d';' -f6,8,47,49)"`,
      ];
    }),
  ].join('\n');
}

/** The guest running now, so an interrupted bench can stop it (a TCG QEMU holds 512 MiB). */
let currentGuest: { kill(): void } | undefined;

/** A guest run's samples so far, and why it stopped early (a stall), if it did. */
interface GuestRunOutcome {
  results: GuestStepResult[];
  stalled?: string;
}

/**
 * Boots one guest with every back-end's disk (in `disks` order) and runs the plan; the serving
 * process's CPU is read at each marker, every server's around each warm-up (the mapping check).
 */
async function guestRun(disks: readonly Backend[], fio: GuestFio, rows: readonly NbdBenchRow[], runtimeSeconds: number, plan: readonly GuestStep[]): Promise<GuestRunOutcome> {
  const started = new Map<number, number>();
  const cpuSeconds = new Map<number, number>();
  // The guest's vCPU and the serving process in each step's window: ran, and waited for a CPU.
  const schedAt = new Map<number, { wallNs: bigint; vcpu: SchedTimes | undefined; server: SchedTimes | undefined }>();
  const shares = new Map<number, GuestStepResult['shares']>();
  const schedNow = (pid: number): { wallNs: bigint; vcpu: SchedTimes | undefined; server: SchedTimes | undefined } => ({
    wallNs: process.hrtime.bigint(),
    vcpu: guest.pid === undefined ? undefined : threadSchedTimes(guest.pid, TCG_VCPU_THREAD),
    server: threadSchedTimes(pid),
  });
  let warmStart: number[] = [];
  let failure: Error | undefined;
  const results: GuestStepResult[] = [];
  let stalled: string | undefined;
  const watchdog = runWatchdog(Math.max(runtimeSeconds, WARM_UP_SECONDS), (why) => {
    // Which side's step stalled, and what QEMU's monitor says of the guest and each disk's ring
    // (avail.idx ahead of used.idx: the back-end holds requests; equal, with used_event behind
    // used.idx: the back-end returned them all and the guest missed the interrupt, as QEMU 7.2's
    // single-vCPU TCG did before the rig ran it with maxcpus=2, test/vhost-user/guest.ts;
    // equal and used_event = used.idx: the guest stopped asking).
    const last = Math.max(-1, ...started.keys());
    const side = last >= 0 ? ` on ${disks[plan[last]!.disk]!.label}'s disk` : '';
    void guest.monitorReport().then((report) => {
      stalled = `${why}${side}\n--- QEMU monitor before the kill ---\n${report}`;
      guest.kill();
    });
  });
  const everyCpu = (): number[] => disks.map((b) => processCpuSeconds(b.pid));
  const extraDisks = disks.slice(1).flatMap((b, i) => ['-chardev', `socket,id=bench${i + 1},path=${b.socket}`, '-device', `vhost-user-blk-pci,chardev=bench${i + 1},num-queues=1`]);
  const guest = startGuest({
    socketPath: disks[0]!.socket,
    // debug-threads: the vCPU thread named ("CPU 0/TCG"), for its run and wait times.
    qemuArgs: ['-name', 'bench-guest,debug-threads=on', ...extraDisks],
    script: guestScript(fio, rows, runtimeSeconds, disks.length, plan),
    files: fio.files,
    memMiB: GUEST_MEM_MIB,
    // Generous: on a busy shared machine a TCG boot alone has taken minutes.
    timeoutMs: 600_000 + (plan.length * (runtimeSeconds + 60) + disks.length * (WARM_UP_SECONDS + 60)) * 1000,
    onConsoleLine: (line) => {
      // Read the CPU in the console callback itself, as close to the marker as the host gets.
      const m = /(warm|row) (\d+)-(go|stop|end)(?: (.*))?$/.exec(line);
      if (m === null) return;
      watchdog.marker(m[0].slice(0, 16));
      const n = Number(m[2]);
      if (m[1] === 'warm') {
        if (m[3] === 'go') warmStart = everyCpu();
        else if (m[3] === 'stop') failure ??= mappingError(disks, n, everyCpu().map((c, k) => c - warmStart[k]!));
        if (failure !== undefined) guest.kill();
        return;
      }
      const step = plan[n]!;
      const pid = disks[step.disk]!.pid;
      if (m[3] === 'go') {
        started.set(n, processCpuSeconds(pid));
        schedAt.set(n, schedNow(pid));
      } else if (m[3] === 'stop') {
        cpuSeconds.set(n, processCpuSeconds(pid) - started.get(n)!);
        const before = schedAt.get(n)!;
        const after = schedNow(pid);
        const wallNs = Number(after.wallNs - before.wallNs);
        if (before.vcpu !== undefined && after.vcpu !== undefined && before.server !== undefined && after.server !== undefined) {
          const vcpu = schedShares(before.vcpu, after.vcpu, wallNs);
          shares.set(n, { vcpuRan: vcpu.ran, vcpuWaited: vcpu.waited, serverWaited: schedShares(before.server, after.server, wallNs).waited, vcpuWriteCalls: after.vcpu.writeCalls - before.vcpu.writeCalls });
        }
      } else {
        try {
          const r = parseGuestFioLine(m[4] ?? '', rows[step.row]!.bs);
          const stepShares = shares.get(n);
          results.push({ ...step, iops: r.iops, sample: { cpuSeconds: cpuSeconds.get(n)!, bytes: r.bytes, requests: r.requests }, ...(stepShares === undefined ? {} : { shares: stepShares }) });
        } catch (e) {
          failure ??= e as Error; // reported once the guest is done (a throw here would end the bench mid-boot)
        }
      }
    },
  });
  currentGuest = guest;
  try {
    const r = await guest.result;
    if (failure !== undefined) throw failure;
    if (r.exitCode !== 0) throw new Error(`guest failed (${r.exitCode}):\n${r.consoleTail}`);
    if (results.length !== plan.length) throw new Error(`guest reported ${results.length} of ${plan.length} steps:\n${r.consoleTail}`);
    return { results };
  } catch (e) {
    if (failure !== undefined) throw failure;
    if (stalled !== undefined) return { results, stalled: `${stalled} (${results.length} of ${plan.length} steps done)` };
    throw e;
  } finally {
    watchdog.stop();
    currentGuest = undefined;
  }
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
  const runs = argNumber('--runs', 2);
  const reps = argNumber('--reps', 3);
  const runtimeSeconds = argNumber('--runtime', 3);
  const loadProcesses = loadArg();
  const baseStrataBin = argValue('--base-strata', '');
  const only = [...argValue('--only', 'strata,qsd-wt,qsd').split(','), ...(baseStrataBin === '' ? [] : ['base'])];
  const rowFilter = argValue('--rows', '');
  const rows = NBD_BENCH_ROWS.filter((r) => r.name.includes(rowFilter));
  const shm = existsSync('/dev/shm') ? '/dev/shm' : '/tmp';
  const dir = mkdtempSync(join(shm, 'strata-guest-bench-'));
  let live: Backend[] = [];
  warmMemoryNoted();
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
    const rounds = rows.map(() => new Map<string, number[]>(wanted.map((b) => [b.name, []])));
    const failedRuns: string[] = [];
    const creations: string[] = [];
    for (let run = 0; run < runs; run++) {
      const creation = creationOrder(wanted, run);
      creations.push(`run ${run + 1}: ${creation.map((s) => s.name).join(', ')}`);
      for (const side of creation) live.push(await createBackend(side, dir, template, baseStrataBin));
      // The guest's disks in creation order: vda is the side created first, and so on.
      const disks = creation.map((side) => live.find((b) => b.name === side.name)!);
      const plan = guestPlan(rows.length, disks.length, reps, run * reps);
      process.stderr.write(`run ${run + 1} (created and attached ${creation.map((s) => s.name).join(', ')}; ${reps} rounds) (load ${loadAverage().toFixed(2)})\n`);
      const outcome = await guestRun(disks, fio, rows, runtimeSeconds, plan);
      for (const r of outcome.results) {
        const b = disks[r.disk]!;
        iops[r.row]!.get(b.name)!.push(r.iops);
        cpu[r.row]!.get(b.name)!.push(r.sample);
        rounds[r.row]!.get(b.name)!.push(r.round);
        const percent = (share: number): string => `${(100 * share).toFixed(0)}%`;
        const sched = r.shares === undefined ? '' : `; vCPU ran ${percent(r.shares.vcpuRan)}, waited for a CPU ${percent(r.shares.vcpuWaited)}, kicked ${(r.shares.vcpuWriteCalls / r.sample.requests).toFixed(2)} times a request; server threads waited ${percent(r.shares.serverWaited)}`;
        process.stderr.write(`  run ${run + 1}, ${b.label}, ${rows[r.row]!.name}: ${r.iops.toFixed(0)} IOPS, ${formatCost(cpuCost(r.sample))}${sched}\n`);
      }
      if (outcome.stalled !== undefined) {
        const note = `run ${run + 1}: FAILED, ${outcome.stalled}; guest and servers killed (load ${loadAverage().toFixed(2)})`;
        failedRuns.push(note);
        process.stderr.write(`  ${note}\n`);
        for (const b of live) await stopServer(b.child, 'SIGKILL');
      }
      process.stderr.write(`  run ${run + 1} done (load ${loadAverage().toFixed(2)})\n`);
      for (const b of live) await removeServer(b);
      live = [];
    }
    const table: RowRuns[] = rows.map((row, i) => ({ name: row.name, runs: iops[i]!, cpu: cpu[i]!, rounds: rounds[i]! }));
    const lines = [
      ...medianTable(`guest fio, libaio direct, ${REGION} region`, wanted, 'strata', table, 'IOPS'),
      '',
      ...pairedTable('rounds paired (each round runs the sides back to back)', wanted, 'strata', table),
      '',
      ...cpuTable('serving process CPU', wanted, 'strata', table),
      '',
      'Every sample (IOPS, in the order they ran):',
      ...table.map((row) => `- ${row.name}: ${wanted.map((b) => `${b.label} ${row.runs.get(b.name)!.map((v) => v.toFixed(0)).join('/')}`).join('; ')}`),
      ...(failedRuns.length === 0 ? [] : ['', `Failed runs (their finished samples kept; ${ROW_MARGIN_MS / 1000} s beyond the runtime per step, ${BOOT_BOUND_MS / 1000} s to the first marker):`, ...failedRuns.map((f) => `- ${f}`)]),
      '',
      `${fio.version} in a QEMU TCG guest (1 vCPU, ${GUEST_MEM_MIB} MiB) with every side's disk attached; ${execFileSync('qemu-storage-daemon', ['--version'], { encoding: 'utf8' }).split('\n')[0]}; ` +
        `node ${process.version}; median of ${runs} runs x ${reps} rounds of ${runtimeSeconds} s per cell, the sides' order rotated per round and row; ` +
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
