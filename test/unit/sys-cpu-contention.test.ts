/**
 * CpuContention: the calling thread's run-queue wait share from schedstat, over windows of 200 ms
 * or more (the readings and the clock put in by the test), and the real file of this thread.
 */
import { describe, expect, it } from 'vitest';
import { CpuContention } from '../../src/sys/cpu-contention.js';

/** A schedstat that reads `runNs waitNs slices`, and a clock, both moved by the test. */
function fakeThread(): { probe: CpuContention; step(ranMs: number, waitedMs: number, elapsedMs: number): void; readings: number } {
  let runNs = 5e9;
  let waitNs = 1e9;
  let nowMs = 1000;
  const state = {
    readings: 0,
    probe: new CpuContention(
      () => {
        state.readings++;
        return `${runNs} ${waitNs} 1234\n`;
      },
      () => nowMs,
    ),
    step(ranMs: number, waitedMs: number, elapsedMs: number) {
      runNs += ranMs * 1e6;
      waitNs += waitedMs * 1e6;
      nowMs += elapsedMs;
    },
  };
  return state;
}

describe('CpuContention', () => {
  it('gives the share of the last window the thread waited for a CPU, reading again only once a window has passed', () => {
    const thread = fakeThread();
    expect(thread.probe.waitShare()).toBe(0); // one reading: no window yet
    thread.step(60, 140, 200);
    expect(thread.probe.waitShare()).toBeCloseTo(0.7);
    expect(thread.readings).toBe(2);
    thread.step(100, 0, 150); // within the window: the last share, no reading
    expect(thread.probe.waitShare()).toBeCloseTo(0.7);
    expect(thread.readings).toBe(2);
    thread.step(100, 50, 100); // the window (250 ms since the last reading) ran 200 and waited 50
    expect(thread.probe.waitShare()).toBeCloseTo(0.2);
    expect(thread.readings).toBe(3);
    thread.step(0, 0, 500); // asleep the whole window: nothing to share
    expect(thread.probe.waitShare()).toBe(0);
  });

  it('takes a thread without schedstat, or with one it cannot read, as uncontended, and stops reading', () => {
    let reads = 0;
    const missing = new CpuContention(() => {
      reads++;
      throw Object.assign(new Error('ENOENT'), { code: 'ENOENT' });
    });
    expect(missing.waitShare()).toBe(0);
    expect(missing.waitShare()).toBe(0);
    expect(reads).toBe(1);
    expect(missing.available).toBe(false);
    let now = 0;
    const garbled = new CpuContention(() => 'not numbers', () => (now += 1000));
    expect(garbled.waitShare()).toBe(0);
    expect(garbled.waitShare()).toBe(0);
  });

  it("reads this thread's own schedstat on Linux: a share between 0 and 1 once a window has passed", async () => {
    const probe = new CpuContention();
    probe.waitShare();
    const until = performance.now() + 250;
    while (performance.now() < until) Math.sqrt(Math.random()); // run, so the window has time in it
    const share = probe.waitShare();
    expect(share).toBeGreaterThanOrEqual(0);
    expect(share).toBeLessThanOrEqual(1);
    // The file is there and parsed: a reading that failed would have left the probe unavailable and 0 for good.
    expect(probe.available).toBe(true);
  });
});
