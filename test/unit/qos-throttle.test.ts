/**
 * QosThrottle and its token buckets on a virtual clock: which requests are admitted at which
 * virtual instant (no sleeps, no real time). Issue 15.
 */
import { describe, expect, it } from 'vitest';
import { changeQosLimits, checkQosLimits, type QosLimits } from '../../src/volume/qos/limits.js';
import { QosThrottle, type QosClock, type QosOp } from '../../src/volume/qos/throttle.js';
import { StorageError } from '../../src/core/errors.js';

/** A clock that moves only when told; timers run in time order, each followed by its microtasks. */
class VirtualClock implements QosClock {
  now = 0;
  private timers: { atMs: number; seq: number; fn: () => void }[] = [];
  private seq = 0;

  nowMs(): number {
    return this.now;
  }

  schedule(delayMs: number, fn: () => void): () => void {
    const timer = { atMs: this.now + delayMs, seq: this.seq++, fn };
    this.timers.push(timer);
    return () => {
      this.timers = this.timers.filter((t) => t !== timer);
    };
  }

  get pendingTimers(): number {
    return this.timers.length;
  }

  async advanceTo(targetMs: number): Promise<void> {
    for (;;) {
      this.timers.sort((a, b) => a.atMs - b.atMs || a.seq - b.seq);
      const next = this.timers[0];
      if (next === undefined || next.atMs > targetMs) break;
      this.timers.shift();
      this.now = next.atMs;
      next.fn();
      await new Promise((resolve) => setImmediate(resolve));
    }
    this.now = targetMs;
    await new Promise((resolve) => setImmediate(resolve));
  }
}

function rig(limits: QosLimits | undefined) {
  const clock = new VirtualClock();
  const throttle = new QosThrottle(limits, clock);
  const admitted: { id: string; atMs: number }[] = [];
  const send = (id: string, op: QosOp, bytes = 4096): void => {
    const wait = throttle.admit(op, bytes);
    if (wait === undefined) admitted.push({ id, atMs: clock.now });
    else void wait.then(() => admitted.push({ id, atMs: clock.now }));
  };
  const at = (id: string) => admitted.find((a) => a.id === id)?.atMs;
  const countBy = (ms: number) => admitted.filter((a) => a.atMs <= ms).length;
  return { clock, throttle, admitted, send, at, countBy };
}

describe('QosThrottle', () => {
  it('admits everything at once, with no timer, without limits', () => {
    const { clock, throttle, send, admitted } = rig(undefined);
    for (let i = 0; i < 1000; i++) send(`r${i}`, i % 2 === 0 ? 'read' : 'write');
    expect(admitted).toHaveLength(1000);
    expect(clock.pendingTimers).toBe(0);
    expect(throttle.limited).toBe(false);
  });

  it('admits under the limit synchronously (no promise, no timer)', () => {
    const { clock, throttle } = rig({ readIops: 100 });
    // The bucket holds a tenth of a second: 10 requests.
    for (let i = 0; i < 10; i++) expect(throttle.admit('read', 4096)).toBeUndefined();
    expect(clock.pendingTimers).toBe(0);
    expect(throttle.stats()).toEqual({ queued: 0, throttledRequests: 0, throttledMs: 0 });
  });

  it('paces reads at the IOPS limit, in arrival order', async () => {
    const { clock, send, at, countBy, throttle } = rig({ readIops: 10 });
    for (let i = 0; i < 30; i++) send(`r${i}`, 'read');
    // One token of slack (a tenth of a second at 10/s): r0 now, then one every 100 ms.
    expect(at('r0')).toBe(0);
    expect(throttle.stats().queued).toBe(29);
    await clock.advanceTo(1000);
    for (let i = 0; i <= 10; i++) expect(at(`r${i}`)).toBe(i * 100);
    await clock.advanceTo(2900);
    expect(countBy(2900)).toBe(30);
    expect(throttle.stats().queued).toBe(0);
    expect(throttle.stats().throttledRequests).toBe(29);
    // r_i waited i*100 ms.
    expect(throttle.stats().throttledMs).toBe((29 * 30 * 100) / 2);
  });

  it('keeps a flush behind the writes queued before it, and a write limit does not hold reads', async () => {
    const { clock, send, at } = rig({ writeIops: 10 });
    send('w0', 'write');
    send('w1', 'write');
    send('w2', 'write');
    send('f', 'flush');
    send('r', 'read');
    send('w3', 'write');
    expect(at('w0')).toBe(0);
    expect(at('r')).toBe(0);
    expect(at('f')).toBeUndefined();
    await clock.advanceTo(150);
    expect(at('w1')).toBe(100);
    expect(at('f')).toBeUndefined();
    await clock.advanceTo(1000);
    expect(at('w2')).toBe(200);
    // The flush goes the instant the last write before it goes, w3 after it.
    expect(at('f')).toBe(200);
    expect(at('w3')).toBe(300);
  });

  it('a flush alone, or behind nothing, goes at once', () => {
    const { throttle } = rig({ writeIops: 1, writeBps: 1 });
    expect(throttle.admit('flush', 0)).toBeUndefined();
  });

  it('paces bytes, letting a request larger than the bucket through into debt', async () => {
    // 1000 B/s: the bucket holds 100 bytes; a 4096-byte write goes when it is full and owes the rest.
    const { clock, send, at } = rig({ writeBps: 1000 });
    send('a', 'write', 4096);
    send('b', 'write', 4096);
    send('z', 'write', 0);
    expect(at('a')).toBe(0);
    await clock.advanceTo(5000);
    // Back to 100 tokens after (4096 - 100 + 100) / 1000 s.
    expect(at('b')).toBe(4096);
    // A write that moves no bytes (zeroes, discard) costs no bytes but keeps its place.
    expect(at('z')).toBe(4096);
  });

  it('lets an idle volume burst at the burst rate for the burst length, then holds it to the rate', async () => {
    const { clock, send, countBy } = rig({ readIops: 100, readIopsBurst: 1000, burstSeconds: 2 });
    for (let i = 0; i < 4000; i++) send(`r${i}`, 'read');
    await clock.advanceTo(10_000);
    // Burst bucket: 10 + (1000 - 100) * 2 = 1810 tokens; the pace bucket lets 1000/s through.
    // Over the first 2 s: 2000 at the burst pace (the sustained bucket, draining at 900/s, lasts
    // 1810 / 900 = 2.01 s), within a few requests.
    expect(countBy(2000)).toBeGreaterThanOrEqual(1990);
    expect(countBy(2000)).toBeLessThanOrEqual(2010);
    // After the burst: the sustained rate exactly, 100 per second.
    expect(countBy(9000) - countBy(4000)).toBe(500);
  });

  it('shares a total limit between reads and writes, oldest first', async () => {
    const { clock, send, at } = rig({ totalIops: 10 });
    send('r0', 'read');
    send('w0', 'write');
    send('r1', 'read');
    send('w1', 'write');
    await clock.advanceTo(1000);
    expect([at('r0'), at('w0'), at('r1'), at('w1')]).toEqual([0, 100, 200, 300]);
  });

  it('with a total limit too, a read waiting on the read limit does not hold a write back', async () => {
    const { clock, send, at } = rig({ readIops: 10, totalIops: 1000 });
    send('r0', 'read');
    send('r1', 'read');
    send('w0', 'write');
    send('f', 'flush');
    await clock.advanceTo(0);
    expect([at('r0'), at('w0'), at('f')]).toEqual([0, 0, 0]);
    await clock.advanceTo(1000);
    expect(at('r1')).toBe(100);
  });

  it('applies changed limits to the requests waiting, and releases them all when cleared', async () => {
    const { clock, send, at, throttle, countBy } = rig({ readIops: 1 });
    for (let i = 0; i < 5; i++) send(`r${i}`, 'read');
    expect(countBy(0)).toBe(1);
    await clock.advanceTo(500);
    throttle.setLimits({ readIops: 10 });
    // The new bucket starts full (1 token at 10/s): r1 at once, then every 100 ms.
    await clock.advanceTo(500);
    expect(at('r1')).toBe(500);
    await clock.advanceTo(600);
    expect(at('r2')).toBe(600);
    throttle.setLimits(undefined);
    await clock.advanceTo(600);
    expect(countBy(600)).toBe(5);
    expect(clock.pendingTimers).toBe(0);
    expect(throttle.admit('read', 4096)).toBeUndefined();
  });
});

describe('QoS limits', () => {
  it('checks limits and names the fix', () => {
    expect(checkQosLimits({ readIops: 500, writeBps: 8 << 20 })).toEqual({ readIops: 500, writeBps: 8 << 20 });
    const refused = (input: Record<string, unknown>): string => {
      try {
        checkQosLimits(input);
      } catch (err) {
        expect(err).toBeInstanceOf(StorageError);
        expect((err as StorageError).code).toBe('INVALID_ARGUMENT');
        return (err as Error).message;
      }
      throw new Error('not refused');
    };
    expect(refused({ readIops: 0 })).toMatch(/at least 1/);
    expect(refused({ readIops: 1.5 })).toMatch(/whole number/);
    expect(refused({ readIopz: 5 })).toMatch(/unknown QoS limit 'readIopz'/);
    expect(refused({ readIopsBurst: 5 })).toMatch(/needs readIops/);
    expect(refused({ readIops: 5, readIopsBurst: 5 })).toMatch(/must be above readIops/);
    expect(refused({ readIops: 5, burstSeconds: 5 })).toMatch(/needs a burst rate/);
    expect(refused({ readIops: 5, readIopsBurst: 9, burstSeconds: 7200 })).toMatch(/longer than 3600/);
  });

  it('changes limits field by field; removing a rate removes its burst', () => {
    const base = checkQosLimits({ readIops: 100, readIopsBurst: 500, burstSeconds: 3, writeIops: 50 });
    expect(changeQosLimits(base, { writeIops: 60 })).toEqual({ readIops: 100, readIopsBurst: 500, burstSeconds: 3, writeIops: 60 });
    expect(changeQosLimits(base, { readIops: null })).toEqual({ writeIops: 50 });
    expect(changeQosLimits(undefined, { totalBps: 1 << 20 })).toEqual({ totalBps: 1 << 20 });
  });
});
