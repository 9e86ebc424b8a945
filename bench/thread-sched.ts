/**
 * How long a process's threads ran and waited in a run queue (Linux /proc/<pid>/task/<tid>/schedstat:
 * nanoseconds on a CPU, nanoseconds runnable but waiting for one). The guest bench reads it for the
 * guest's vCPU thread around each row: whether a row's guest was busy, idle (halted, waiting for its
 * disk) or runnable but denied a core tells a slow back-end from a starved guest, and its write calls
 * count the guest's kicks (each one a costly exit from translated code under TCG).
 */
import { readdirSync, readFileSync } from 'node:fs';

export interface SchedTimes {
  runNs: number;
  waitNs: number;
  /** write(2) calls (/proc/<pid>/task/<tid>/io syscw): a TCG vCPU signals a queue's ioeventfd, a kick, with one. */
  writeCalls: number;
}

/** The run and wait times and write calls summed over `pid`'s threads whose name matches `threadName` (all threads when absent); undefined once the process is gone. */
export function threadSchedTimes(pid: number, threadName?: RegExp): SchedTimes | undefined {
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return undefined;
  }
  const sum: SchedTimes = { runNs: 0, waitNs: 0, writeCalls: 0 };
  for (const tid of tids) {
    try {
      if (threadName !== undefined && !threadName.test(readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim())) continue;
      const [run, wait] = readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').trim().split(' ').map(Number);
      sum.runNs += run ?? 0;
      sum.waitNs += wait ?? 0;
      sum.writeCalls += Number(/^syscw: (\d+)$/m.exec(readFileSync(`/proc/${pid}/task/${tid}/io`, 'utf8'))?.[1] ?? 0);
    } catch {
      // A thread that exited between the listing and the read.
    }
  }
  return sum;
}

/** A window's shares of wall time: ran and waited, each as a fraction of `wallNs` (for every matching thread together). */
export function schedShares(before: SchedTimes, after: SchedTimes, wallNs: number): { ran: number; waited: number } {
  return { ran: (after.runNs - before.runNs) / wallNs, waited: (after.waitNs - before.waitNs) / wallNs };
}

/** QEMU's TCG vCPU threads ("CPU 0/TCG"). */
export const TCG_VCPU_THREAD = /^CPU \d+\/TCG$/;
