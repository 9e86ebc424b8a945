/**
 * RequestGate: counting, closing, draining and reopening, paced by the gate's own events (a
 * promise that must not have settled is checked after the microtasks and I/O of one event-loop
 * turn, never after a sleep).
 */
import { describe, expect, it } from 'vitest';
import { RequestGate } from '../../src/core/request-gate.js';

/** One event-loop turn: every microtask a settled promise queued has run. */
const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

function tracked(promise: Promise<void>): { promise: Promise<void>; settled: () => boolean } {
  let done = false;
  void promise.then(() => (done = true));
  return { promise, settled: () => done };
}

describe('RequestGate', () => {
  it('counts requests in and out of an open gate', () => {
    const gate = new RequestGate();
    expect(gate.isOpen).toBe(true);
    expect(gate.tryEnter()).toBe(true);
    gate.enter();
    expect(gate.inFlight).toBe(2);
    gate.leave();
    gate.leave();
    expect(gate.inFlight).toBe(0);
  });

  it('returns one settled promise, allocating nothing, when idle and open', () => {
    const gate = new RequestGate();
    expect(gate.whenIdle()).toBe(gate.whenIdle());
    expect(gate.whenOpen()).toBe(gate.whenIdle());
  });

  it('refuses tryEnter while closed, but counts enter (a request already accepted)', () => {
    const gate = new RequestGate();
    gate.close();
    expect(gate.isOpen).toBe(false);
    expect(gate.tryEnter()).toBe(false);
    expect(gate.inFlight).toBe(0);
    gate.enter();
    expect(gate.inFlight).toBe(1);
    gate.leave();
  });

  it('drains: closeAndDrain resolves when the last request in flight leaves, not before', async () => {
    const gate = new RequestGate();
    gate.enter();
    gate.enter();
    const drained = tracked(gate.closeAndDrain());
    await turn();
    expect(drained.settled()).toBe(false);
    gate.leave();
    await turn();
    expect(drained.settled()).toBe(false);
    gate.leave();
    await drained.promise;
    expect(gate.inFlight).toBe(0);
    expect(gate.isOpen).toBe(false);
  });

  it('wakes every waiter of one drain with the same promise', async () => {
    const gate = new RequestGate();
    gate.enter();
    const a = gate.whenIdle();
    const b = gate.whenIdle();
    expect(a).toBe(b);
    gate.leave();
    await Promise.all([a, b]);
    // The next drain gets a new promise.
    gate.enter();
    const c = tracked(gate.whenIdle());
    await turn();
    expect(c.settled()).toBe(false);
    gate.leave();
    await c.promise;
  });

  it('lets waiting callers in when it opens again (wait-and-retry)', async () => {
    const gate = new RequestGate();
    gate.close();
    const entered: number[] = [];
    const waitAndEnter = async (id: number): Promise<void> => {
      while (!gate.tryEnter()) await gate.whenOpen();
      entered.push(id);
    };
    const first = tracked(waitAndEnter(1));
    const second = tracked(waitAndEnter(2));
    await turn();
    expect(first.settled() || second.settled()).toBe(false);
    gate.open();
    await Promise.all([first.promise, second.promise]);
    expect(entered.sort()).toEqual([1, 2]);
    expect(gate.inFlight).toBe(2);
  });

  it('nests closes: opens only when every close has been undone', async () => {
    const gate = new RequestGate();
    gate.close();
    gate.close();
    const opened = tracked(gate.whenOpen());
    gate.open();
    await turn();
    expect(gate.isOpen).toBe(false);
    expect(opened.settled()).toBe(false);
    gate.open();
    await opened.promise;
    expect(gate.isOpen).toBe(true);
  });

  it('asserts on a leave without a request and an open without a close (programmer errors)', () => {
    const gate = new RequestGate();
    expect(() => gate.leave()).toThrow(/assertion failed/);
    expect(() => gate.open()).toThrow(/assertion failed/);
  });
});
