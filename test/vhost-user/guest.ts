/**
 * A real Linux guest (QEMU, TCG) with one vhost-user-blk disk, for testing vhost-user-blk backends.
 *
 *   const r = await bootGuest({ socketPath, script: 'dd if=/dev/vda bs=4k count=1 | md5sum' });
 *   expect(r.exitCode, r.consoleTail).toBe(0);   // r.lines: the script's output lines
 *
 * or, to act on the host while the guest runs:
 *
 *   const g = startGuest({ socketPath, reconnect: true, script: 'echo wrote; sleep 5; ...' });
 *   await g.waitForMarker('wrote');   // a script output line containing 'wrote'
 *   ... SIGKILL and restart the backend, take a snapshot ...
 *   const r = await g.result;
 *
 * The guest: Debian's kernel, a busybox initramfs (see guest-build.ts; cached). /init loads the
 * virtio drivers, runs the test's script with `sh` in /tmp (the disk is /dev/vda; util-linux's
 * blkdiscard with -z is on PATH; busybox provides dd, md5sum, sync, ...), echoes each line it
 * writes (stdout and stderr) on the serial console behind a marker, then its exit status, and
 * powers off. The script and any extra files travel in a small uncompressed cpio archive appended
 * to the cached initramfs, per run.
 *
 * Everything is asynchronous: the backend may run in the same process (its event loop must keep
 * turning while the guest does I/O).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { monitorReport } from './guest-monitor.js';
import { cpioNewc, GUEST_FILES_DIR, GUEST_SCRIPT_PATH, MARK, parentDirs, prepareGuestAssets, type CpioEntry } from './guest-build.js';

export { GUEST_FILES_DIR, prepareGuestAssets } from './guest-build.js';

export interface GuestOptions {
  /** The vhost-user socket the backend listens on. */
  socketPath: string;
  /** Shell script (busybox sh) run in the guest. */
  script: string;
  /** Extra files for the script, placed under /strata/files/<name> in the guest. */
  files?: Record<string, string | Uint8Array>;
  /** virtio-blk queues (num-queues). Default 1. */
  queues?: number;
  /** Guest vCPUs. Default 1. */
  smp?: number;
  /** Guest RAM (shared memfd). Default 256. */
  memMiB?: number;
  /** -chardev socket,...,reconnect=1: QEMU redials a backend that went away. Default false. */
  reconnect?: boolean;
  /** Kill QEMU after this long (default 120 s); the guest then fails with the console tail. */
  timeoutMs?: number;
  /** Extra kernel command-line parameters. */
  append?: string;
  /** Extra QEMU arguments. */
  qemuArgs?: readonly string[];
  /**
   * Called for every console line. Debugging: STRATA_GUEST_CONSOLE=1 prints the console to stderr,
   * STRATA_GUEST_TIMING=1 prints how long each QEMU ran.
   */
  onConsoleLine?: (line: string) => void;
}

export interface GuestResult {
  /** The script's output lines (stdout and stderr interleaved), markers removed. */
  lines: string[];
  /** The script's exit status. */
  exitCode: number;
  /** The whole console output (kernel and /init included). */
  console: string;
  /** The last 40 console lines, for assertion messages. */
  consoleTail: string;
  /** Wall time from spawning QEMU to its exit. */
  elapsedMs: number;
}

export class GuestError extends Error {
  constructor(
    message: string,
    readonly console: string,
  ) {
    super(`${message}\n--- guest console (tail) ---\n${tail(console)}`);
    this.name = 'GuestError';
  }
}

export interface GuestHandle {
  /** The QEMU process id (once spawned; undefined while the guest assets are prepared). */
  readonly pid: number | undefined;
  /** Script output lines so far. */
  readonly lines: readonly string[];
  /** Console output so far. */
  readonly console: string;
  /**
   * Resolves with the first script output line containing `text` (including lines already seen);
   * rejects if the guest ends first or after timeoutMs (default: the guest's own timeout).
   */
  waitForMarker(text: string, timeoutMs?: number): Promise<string>;
  /** SIGKILLs QEMU; `result` then rejects (unless it had already finished). */
  kill(): void;
  /**
   * What QEMU's monitor says of the running guest (guest-monitor.ts: run state, vCPU registers,
   * virtio queues and their rings' indexes); what a timed-out guest's GuestError carries.
   */
  monitorReport(): Promise<string>;
  /**
   * The outcome: resolves when the script ran to its end and the guest powered off; rejects with a
   * GuestError (console tail included) on timeout, kill, crash or a guest that ended without
   * reporting an exit status.
   */
  readonly result: Promise<GuestResult>;
}

const CONSOLE_TAIL_LINES = 40;

function tail(text: string, n = CONSOLE_TAIL_LINES): string {
  return text.split('\n').slice(-n).join('\n');
}

/** Kernel parameters that keep the console quiet and the TCG boot short. */
const KERNEL_APPEND = [
  'console=ttyS0',
  'panic=-1',
  'loglevel=3',
  'quiet',
  'mitigations=off',
  'nokaslr',
  'tsc=reliable',
  'no_timer_check',
  'i8042.noaux',
  'i8042.nokbd',
  'i8042.nopnp',
  'random.trust_cpu=on',
  '8250.nr_uarts=1',
].join(' ');


function qemuArgs(opts: GuestOptions, kernelPath: string, initrdPath: string, monitorPath: string): string[] {
  const memMiB = opts.memMiB ?? 256;
  const queues = opts.queues ?? 1;
  const smp = opts.smp ?? 1;
  const chardev = `socket,id=vhost0,path=${opts.socketPath}${opts.reconnect === true ? ',reconnect=1' : ''}`;
  return [
    // MTTCG with room for a second vCPU (maxcpus below): QEMU 7.2's TCG drops the guest's memory
    // barriers (mfence, lock-prefixed ops) when it translates for a machine that can only ever have
    // one vCPU (tcg_gen_mb without CF_PARALLEL; fixed upstream in 8.1 by commit c914d46d0a64,
    // "tcg: Do not elide memory barriers for !CF_PARALLEL in system mode": "the virtio devices
    // require proper memory ordering between the vcpus and the iothreads"). A vhost-user back-end
    // is a second thread on another host core: without the barrier the guest's virtio driver can
    // store used_event and then read a stale used.idx while the back-end, having published
    // used.idx, reads the old used_event and skips the interrupt. Both then wait for good (measured: guest-bench stalls
    // with 32 requests in flight, used.idx = avail.idx, used_event 32 behind; one write to the
    // call eventfd resumes the guest).
    '-accel', 'tcg,thread=multi',
    '-machine', 'pc',
    '-nodefaults',
    '-no-user-config',
    '-display', 'none',
    '-serial', 'stdio',
    // Asked what the guest was doing when it times out (guest-monitor.ts).
    '-monitor', `unix:${monitorPath},server=on,wait=off`,
    '-no-reboot',
    '-m', String(memMiB),
    '-smp', `${smp},maxcpus=${Math.max(2, smp)}`,
    '-kernel', kernelPath,
    '-initrd', initrdPath,
    '-append', opts.append !== undefined ? `${KERNEL_APPEND} ${opts.append}` : KERNEL_APPEND,
    '-object', `memory-backend-memfd,id=mem,size=${memMiB}M,share=on`,
    '-numa', 'node,memdev=mem',
    '-chardev', chardev,
    '-device', `vhost-user-blk-pci,chardev=vhost0,num-queues=${queues}`,
    ...(opts.qemuArgs ?? []),
  ];
}

/** The per-run initramfs: the cached base followed by an archive with the script and files. */
async function runInitrd(base: Buffer, opts: GuestOptions): Promise<Buffer> {
  const entries: CpioEntry[] = [{ name: GUEST_SCRIPT_PATH, data: Buffer.from(opts.script, 'utf8'), perm: 0o755 }];
  for (const [name, content] of Object.entries(opts.files ?? {})) {
    if (name.includes('..') || name.startsWith('/')) throw new Error(`guest file name must be relative: ${name}`);
    entries.push({ name: `${GUEST_FILES_DIR}/${name}`, data: typeof content === 'string' ? Buffer.from(content, 'utf8') : content });
  }
  const archive = cpioNewc([...parentDirs(entries.map((e) => e.name)), ...entries]);
  return Buffer.concat([base, archive]);
}

let baseInitrd: Promise<Buffer> | undefined;

/** Starts a guest; see GuestHandle. */
/**
 * The folders (initrd, monitor socket) of guests still running. A process that exits without
 * waiting for them (a bench's Ctrl-C handler calls process.exit) removes them here, as a guest
 * that ends does; otherwise each interrupted run left its initrd in the temp folder.
 */
const liveGuestDirs = new Set<string>();
process.once('exit', () => {
  for (const dir of liveGuestDirs) rmSync(dir, { recursive: true, force: true });
});

export function startGuest(opts: GuestOptions): GuestHandle {
  const timeoutMs = opts.timeoutMs ?? 120_000;
  const lines: string[] = [];
  let consoleText = '';
  let partial = '';
  let child: ChildProcess | undefined;
  let killed = false;
  let finished = false;
  let exitCode: number | undefined;
  let monitorPath: string | undefined;
  const waiters: { text: string; resolve: (line: string) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }[] = [];
  const echo = process.env.STRATA_GUEST_CONSOLE === '1';

  const onLine = (raw: string): void => {
    const line = raw.replace(/\r/g, '');
    opts.onConsoleLine?.(line);
    if (echo) process.stderr.write(`[guest] ${line}\n`);
    const out = line.indexOf(MARK.out);
    if (out >= 0) {
      const text = line.slice(out + MARK.out.length);
      lines.push(text);
      for (let i = waiters.length - 1; i >= 0; i--) {
        const w = waiters[i]!;
        if (text.includes(w.text)) {
          clearTimeout(w.timer);
          waiters.splice(i, 1);
          w.resolve(text);
        }
      }
      return;
    }
    const exit = line.indexOf(MARK.exit);
    if (exit >= 0) {
      const n = Number.parseInt(line.slice(exit + MARK.exit.length).trim(), 10);
      if (Number.isInteger(n)) exitCode = n;
    }
  };

  const failWaiters = (why: string): void => {
    for (const w of waiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(new GuestError(`waitForMarker('${w.text}'): ${why}`, consoleText));
    }
  };

  const result = (async (): Promise<GuestResult> => {
    const assets = await prepareGuestAssets();
    baseInitrd ??= readFile(assets.baseInitrdPath);
    const initrd = await runInitrd(await baseInitrd, opts);
    const dir = await mkdtemp(path.join(os.tmpdir(), 'strata-guest-'));
    liveGuestDirs.add(dir);
    try {
      const initrdPath = path.join(dir, 'initrd.img');
      await writeFile(initrdPath, initrd);
      if (killed) throw new GuestError('guest killed before it started', '');
      const started = Date.now();
      const monitor = path.join(dir, 'monitor.sock');
      monitorPath = monitor;
      const args = qemuArgs(opts, assets.kernelPath, initrdPath, monitor);
      const proc = spawn('qemu-system-x86_64', args, { stdio: ['pipe', 'pipe', 'pipe'] });
      child = proc;
      let stderr = '';
      proc.stdout!.setEncoding('utf8');
      proc.stdout!.on('data', (chunk: string) => {
        consoleText += chunk;
        partial += chunk;
        let nl: number;
        while ((nl = partial.indexOf('\n')) >= 0) {
          onLine(partial.slice(0, nl));
          partial = partial.slice(nl + 1);
        }
      });
      proc.stderr!.setEncoding('utf8');
      proc.stderr!.on('data', (chunk: string) => {
        stderr += chunk;
      });
      proc.stdin!.on('error', () => {});
      let timedOut = false;
      let monitorText = '';
      const timer = setTimeout(() => {
        timedOut = true;
        void monitorReport(monitor, opts.queues ?? 1).then((text) => {
          monitorText = text;
          proc.kill('SIGKILL');
        });
      }, timeoutMs);
      const { code, signal, spawnError } = await new Promise<{ code: number | null; signal: NodeJS.Signals | null; spawnError?: Error }>((resolve) => {
        proc.on('error', (e) => resolve({ code: null, signal: null, spawnError: e }));
        proc.on('close', (c, s) => resolve({ code: c, signal: s }));
      });
      clearTimeout(timer);
      if (partial !== '') onLine(partial);
      partial = '';
      const elapsedMs = Date.now() - started;
      if (process.env.STRATA_GUEST_TIMING === '1') process.stderr.write(`[guest] QEMU ran ${elapsedMs} ms (exit ${code ?? signal})\n`);
      const withStderr = stderr.trim() !== '' ? `${consoleText}\n--- qemu stderr ---\n${stderr}` : consoleText;
      if (spawnError) throw new GuestError(`could not start qemu-system-x86_64: ${spawnError.message}`, withStderr);
      if (timedOut) throw new GuestError(`guest timed out after ${timeoutMs} ms (QEMU killed)\n--- QEMU monitor before the kill ---\n${monitorText}`, withStderr);
      if (killed) throw new GuestError('guest killed', withStderr);
      if (exitCode === undefined) {
        throw new GuestError(`QEMU exited (${code ?? signal}) before the guest reported the script's exit status`, withStderr);
      }
      if (code !== 0) throw new GuestError(`qemu exited with ${code ?? signal} after the script finished`, withStderr);
      return { lines: [...lines], exitCode, console: consoleText, consoleTail: tail(withStderr), elapsedMs };
    } finally {
      finished = true;
      failWaiters('the guest ended before printing it');
      await rm(dir, { recursive: true, force: true });
      liveGuestDirs.delete(dir);
    }
  })();
  result.catch(() => {}); // callers observe it through `result`; avoid unhandled rejections meanwhile

  return {
    get pid() {
      return child?.pid;
    },
    get lines() {
      return lines;
    },
    get console() {
      return consoleText;
    },
    waitForMarker(text: string, waitMs = timeoutMs): Promise<string> {
      const seen = lines.find((l) => l.includes(text));
      if (seen !== undefined) return Promise.resolve(seen);
      if (finished) return Promise.reject(new GuestError(`waitForMarker('${text}'): the guest already ended`, consoleText));
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          const i = waiters.findIndex((w) => w.timer === timer);
          if (i >= 0) waiters.splice(i, 1);
          reject(new GuestError(`waitForMarker('${text}'): not seen within ${waitMs} ms`, consoleText));
        }, waitMs);
        waiters.push({ text, resolve, reject, timer });
      });
    },
    monitorReport(): Promise<string> {
      if (monitorPath === undefined || finished) return Promise.resolve('(no QEMU running to ask)');
      return monitorReport(monitorPath, opts.queues ?? 1);
    },
    kill(): void {
      killed = true;
      child?.kill('SIGKILL');
    },
    result,
  };
}

/** Boots a guest, runs the script, powers off; see GuestResult and GuestHandle.result. */
export function bootGuest(opts: GuestOptions): Promise<GuestResult> {
  return startGuest(opts).result;
}

/**
 * `KEY=value` pairs from the script's output lines (lines of that shape only; a later line wins),
 * e.g. `echo "md5_a=$(dd if=/dev/vda ... | md5sum | cut -d' ' -f1)"`.
 */
export function guestValues(lines: readonly string[]): Map<string, string> {
  const values = new Map<string, string>();
  for (const line of lines) {
    const m = /^([A-Za-z_][\w.-]*)=(.*)$/.exec(line);
    if (m) values.set(m[1]!, m[2]!);
  }
  return values;
}
