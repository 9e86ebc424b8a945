/**
 * The bound on one guest run of bench/guest-bench.ts: a run whose guest prints no progress marker
 * in time is given up (a busy machine once left a back-end's guest stalled for 14 minutes with the
 * bench waiting on it).
 */

/** Boot, fio's start-up under TCG and the warm-up until the first row's marker (minutes on a busy machine). */
export const BOOT_BOUND_MS = 300_000;
/** Beyond a row's runtime, until the guest's next marker (fio's start-up and exit under TCG). */
export const ROW_MARGIN_MS = 120_000;

export interface RunWatchdog {
  /** The guest printed a marker: the next one is due within the row's runtime + ROW_MARGIN_MS. */
  marker(text: string): void;
  stop(): void;
}

/**
 * Calls `expire` (once) when no marker arrived within the current allowance: BOOT_BOUND_MS before
 * the first, runtime + ROW_MARGIN_MS after each; `why` names the last marker seen.
 */
export function runWatchdog(runtimeSeconds: number, expire: (why: string) => void): RunWatchdog {
  let last = 'the guest started';
  let timer: NodeJS.Timeout | undefined;
  const arm = (ms: number): void => {
    clearTimeout(timer);
    timer = setTimeout(() => expire(`no progress within ${Math.round(ms / 1000)} s after ${last}`), ms);
  };
  arm(BOOT_BOUND_MS);
  return {
    marker(text: string): void {
      last = `'${text}'`;
      arm(runtimeSeconds * 1000 + ROW_MARGIN_MS);
    },
    stop: () => clearTimeout(timer),
  };
}
