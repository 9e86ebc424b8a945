/**
 * The guest bench's per-run bound (bench/run-watchdog.ts), on vitest's fake clock (the bound is
 * minutes long; nothing here waits).
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { BOOT_BOUND_MS, ROW_MARGIN_MS, runWatchdog } from '../../bench/run-watchdog.js';

describe('guest bench run watchdog', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('expires once when the guest prints nothing before the boot bound, naming what it waited for', () => {
    const expired: string[] = [];
    runWatchdog(3, (why) => expired.push(why));
    vi.advanceTimersByTime(BOOT_BOUND_MS - 1);
    expect(expired).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(expired).toEqual([`no progress within ${BOOT_BOUND_MS / 1000} s after the guest started`]);
    vi.advanceTimersByTime(BOOT_BOUND_MS * 2);
    expect(expired).toHaveLength(1);
  });

  it('each marker allows the row runtime plus the margin until the next; stop ends the bound', () => {
    const expired: string[] = [];
    const watchdog = runWatchdog(3, (why) => expired.push(why));
    vi.advanceTimersByTime(BOOT_BOUND_MS - 1);
    watchdog.marker('row-go 0');
    vi.advanceTimersByTime(3000 + ROW_MARGIN_MS - 1);
    watchdog.marker('row-stop 0');
    vi.advanceTimersByTime(3000 + ROW_MARGIN_MS - 1);
    expect(expired).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(expired).toEqual([`no progress within ${3 + ROW_MARGIN_MS / 1000} s after 'row-stop 0'`]);

    const stopped: string[] = [];
    const second = runWatchdog(3, (why) => stopped.push(why));
    second.marker('row-go 0');
    second.stop();
    vi.advanceTimersByTime(BOOT_BOUND_MS * 2);
    expect(stopped).toEqual([]);
  });
});
