/**
 * How many CPUs other processes keep busy: the machine's busy time (/proc/stat) less this
 * process's own (/proc/self/stat), over windows of at least WINDOW_MS.
 *
 * Why not the event loop's run-queue wait (cpu-contention.ts): that counts this process's own
 * threads as competition. Writes that grow a file keep one pool thread copying and another waiting
 * for the file's lock, and with them the event loop waited for a CPU 49% of its runnable time on a
 * quiet two-core machine (66% with two CPU-bound processes beside it): it cannot tell the two
 * apart. Time that other processes keep CPUs busy can.
 *
 * Read at most once per window (two small /proc reads), so a caller may ask per request. Where
 * /proc is not readable the answer is 0: the machine is taken to be quiet.
 */
import fs from 'node:fs';
import os from 'node:os';

const WINDOW_MS = 200;

interface Sample {
  readonly atMs: number;
  /** Clock ticks of all CPUs together, and of those not idle. */
  readonly totalTicks: number;
  readonly busyTicks: number;
  /** This process's user + system clock ticks (all its threads). */
  readonly selfTicks: number;
}

export interface ProcReaders {
  procStat(): string;
  selfStat(): string;
}

const PROC: ProcReaders = {
  procStat: () => fs.readFileSync('/proc/stat', 'utf8'),
  selfStat: () => fs.readFileSync('/proc/self/stat', 'utf8'),
};

/** The first line of /proc/stat ("cpu  user nice system idle iowait irq softirq steal ..."): total and busy ticks. */
export function parseCpuLine(text: string): { totalTicks: number; busyTicks: number } | undefined {
  const end = text.indexOf('\n');
  const line = end < 0 ? text : text.slice(0, end);
  const fields = line.trim().split(/\s+/);
  if (fields[0] !== 'cpu' || fields.length < 5) return undefined;
  // Guest time is already inside user and nice; count fields 1-8 (up to steal) only.
  const ticks = fields.slice(1, 9).map(Number);
  if (ticks.some((t) => !Number.isFinite(t))) return undefined;
  const totalTicks = ticks.reduce((a, b) => a + b, 0);
  const idleTicks = (ticks[3] ?? 0) + (ticks[4] ?? 0);
  return { totalTicks, busyTicks: totalTicks - idleTicks };
}

/** utime + stime from a /proc/<pid>/stat line (fields 14 and 15, counted after the command's ')'). */
export function parseSelfTicks(text: string): number | undefined {
  const fields = text.slice(text.lastIndexOf(')') + 1).trim().split(/\s+/);
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  return Number.isFinite(utime) && Number.isFinite(stime) ? utime + stime : undefined;
}

export class OthersCpu {
  private last: Sample | undefined;
  private cores = 0;
  private unavailable = false;

  constructor(
    private readonly readers: ProcReaders = PROC,
    private readonly cpuCount: number = os.availableParallelism(),
    private readonly nowMs: () => number = () => performance.now(),
  ) {}

  /** CPUs (0..cpuCount) that other processes kept busy over the last complete window. */
  busyCores(): number {
    if (this.unavailable) return 0;
    const atMs = this.nowMs();
    if (this.last !== undefined && atMs - this.last.atMs < WINDOW_MS) return this.cores;
    const sample = this.sample(atMs);
    if (sample === undefined) return 0;
    if (this.last !== undefined) {
      const totalTicks = sample.totalTicks - this.last.totalTicks;
      const othersTicks = sample.busyTicks - this.last.busyTicks - (sample.selfTicks - this.last.selfTicks);
      this.cores = totalTicks > 0 ? Math.max(0, Math.min(1, othersTicks / totalTicks)) * this.cpuCount : 0;
    }
    this.last = sample;
    return this.cores;
  }

  /** CPUs that neither other processes nor idle time left: cpuCount less what others keep busy. */
  coresLeft(): number {
    return this.cpuCount - this.busyCores();
  }

  private sample(atMs: number): Sample | undefined {
    try {
      const cpu = parseCpuLine(this.readers.procStat());
      const selfTicks = parseSelfTicks(this.readers.selfStat());
      if (cpu !== undefined && selfTicks !== undefined) return { atMs, ...cpu, selfTicks };
    } catch {
      // not Linux, or /proc not mounted: below
    }
    this.unavailable = true;
    return undefined;
  }
}
