/** CPU contention probes for tests: a thread reported as waiting a fixed share of its runnable time. */
import { CpuContention } from '../../src/sys/cpu-contention.js';

/** A probe that reports the thread waiting `share` of each window for a CPU. */
export function contentionOf(share: number): CpuContention {
  let runNs = 0;
  let nowMs = 0;
  const probe = new CpuContention(() => {
    runNs += 1e9;
    return `${runNs * (1 - share)} ${runNs * share} 1`;
  }, () => (nowMs += 1000));
  probe.waitShare(); // the first reading: every later one completes a window
  return probe;
}
