/** PollWindow: when an idle NBD connection is worth busy-polling (src/export/poll-window.ts). */
import { describe, expect, it } from 'vitest';
import { PollWindow } from '../../src/export/poll-window.js';

describe('PollWindow', () => {
  it('polls the whole window while polls keep catching requests', () => {
    const w = new PollWindow(100);
    for (let i = 0; i < 100; i++) {
      expect(w.next()).toBe(100);
      w.hit();
    }
  });

  it('stops polling a client whose requests come later than the window, probing once in 16 idle periods', () => {
    const w = new PollWindow(100);
    let polled = 0;
    for (let i = 0; i < 20; i++) {
      if (w.next() > 0) {
        polled++;
        w.miss();
      }
    }
    expect(polled).toBeLessThan(10); // it gave up after a few misses
    const windows: number[] = [];
    for (let i = 0; i < 64; i++) {
      const us = w.next();
      windows.push(us);
      if (us > 0) w.miss();
    }
    expect(windows.filter((us) => us > 0)).toEqual([100, 100, 100, 100]);
  });

  it('starts polling again once probes catch requests', () => {
    const w = new PollWindow(100);
    for (let i = 0; i < 30; i++) if (w.next() > 0) w.miss();
    let idles = 0;
    let pollingIdles = 0;
    while (idles < 200) {
      idles++;
      const us = w.next();
      if (us > 0) {
        pollingIdles++;
        w.hit();
      }
      if (pollingIdles >= 3 && us > 0 && idles > 48) break;
    }
    // Probes (1 in 16) hit; within a few of them polling is back on every idle period.
    for (let i = 0; i < 10; i++) {
      expect(w.next()).toBe(100);
      w.hit();
    }
    expect(idles).toBeLessThan(100);
  });
});
