/**
 * CPU cost of a serving process, from /proc: the seconds it spent on a CPU (utime + stime, its
 * threads included, plus cutime + cstime of children it reaped, for peers that fork) over a
 * window, per GiB moved and per 100k requests. A storage daemon shares its host with the guests it
 * serves, so the CPU a request costs matters as much as how fast it completes.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

const GiB = 1024 ** 3;

/** The CPU fields of a /proc/<pid>/stat line, in clock ticks. */
export interface ProcCpuTicks {
  utime: number;
  stime: number;
  /** Of reaped children (waited for): a forking peer's workers, a bench's tool runs. */
  cutime: number;
  cstime: number;
}

/**
 * The CPU fields of one /proc/<pid>/stat line (proc(5): fields 14-17). The command name (field 2)
 * is in parentheses and may itself hold spaces and parentheses, so fields are counted from the
 * last ')'.
 */
export function parseProcStat(line: string): ProcCpuTicks {
  const close = line.lastIndexOf(')');
  if (close < 0) throw new Error(`not a /proc/<pid>/stat line (no ')' after the command name): ${line.slice(0, 80)}`);
  // After ')': field 3 (state) is the first, so field n is at n - 3.
  const fields = line.slice(close + 1).trim().split(/\s+/);
  const field = (n: number): number => {
    const value = Number(fields[n - 3]);
    if (!Number.isInteger(value) || value < 0) throw new Error(`/proc stat field ${n} is not a tick count: ${line.slice(0, 80)}`);
    return value;
  };
  return { utime: field(14), stime: field(15), cutime: field(16), cstime: field(17) };
}

let ticksPerSecondMemo: number | undefined;

/** sysconf(_SC_CLK_TCK) (100 on Linux nearly always; asked once of getconf). */
export function ticksPerSecond(): number {
  if (ticksPerSecondMemo === undefined) {
    let ticks = 100;
    try {
      ticks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      // no getconf: Linux's USER_HZ is 100 on every common architecture
    }
    ticksPerSecondMemo = ticks;
  }
  return ticksPerSecondMemo;
}

/** CPU seconds of a process and its reaped children so far ('self' for this process). */
export function processCpuSeconds(pid: number | 'self', ticks = ticksPerSecond()): number {
  const t = parseProcStat(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  return (t.utime + t.stime + t.cutime + t.cstime) / ticks;
}

/** CPU seconds of this process's reaped children only (a tool the bench ran and waited for). */
export function reapedChildrenCpuSeconds(ticks = ticksPerSecond()): number {
  const t = parseProcStat(readFileSync('/proc/self/stat', 'utf8'));
  return (t.cutime + t.cstime) / ticks;
}

/** What one measured run cost and moved. */
export interface CpuSample {
  cpuSeconds: number;
  bytes: number;
  requests: number;
}

export interface CpuCost {
  /** CPU seconds per GiB moved. */
  perGiB: number;
  /** CPU seconds per 100,000 requests. */
  per100kRequests: number;
}

/** CPU per GiB and per 100k requests of one sample (NaN where nothing moved). */
export function cpuCost(s: CpuSample): CpuCost {
  return {
    perGiB: s.bytes > 0 ? s.cpuSeconds / (s.bytes / GiB) : NaN,
    per100kRequests: s.requests > 0 ? s.cpuSeconds / (s.requests / 100_000) : NaN,
  };
}

/** Sums samples (several runs of one cell): the cost of a cell is total CPU over total work. */
export function sumSamples(samples: readonly CpuSample[]): CpuSample {
  return samples.reduce((a, s) => ({ cpuSeconds: a.cpuSeconds + s.cpuSeconds, bytes: a.bytes + s.bytes, requests: a.requests + s.requests }), {
    cpuSeconds: 0,
    bytes: 0,
    requests: 0,
  });
}

/** Starts a CPU window on a process; `stop()` answers the CPU seconds it used since. */
export function cpuWindow(pid: number | 'self'): { stop(): number } {
  const start = processCpuSeconds(pid);
  return { stop: () => processCpuSeconds(pid) - start };
}

/** "0.123 s/GiB, 1.23 s/100k req" for progress lines. */
export function formatCost(c: CpuCost): string {
  return `${c.perGiB.toFixed(3)} CPU s/GiB, ${c.per100kRequests.toFixed(2)} CPU s/100k req`;
}
