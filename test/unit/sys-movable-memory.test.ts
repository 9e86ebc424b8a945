/** movableMemories: the transfer list of views on plain memory of their own, or undefined when one cannot move. */
import { describe, expect, it } from 'vitest';
import { movableMemories } from '../../src/sys/movable-memory.js';

describe('movableMemories', () => {
  it('lists each view\'s memory in order, skipping counts', () => {
    const a = new Uint8Array(16);
    const b = new Uint8Array(32).subarray(4, 8);
    expect(movableMemories([a, 7, b])).toEqual([a.buffer, b.buffer]);
    expect(movableMemories([3])).toEqual([]);
  });

  it('refuses shared memory, detached memory and two views of one memory', () => {
    const shared = new Uint8Array(new SharedArrayBuffer(16));
    expect(movableMemories([new Uint8Array(8), shared])).toBeUndefined();
    const detached = new Uint8Array(16);
    structuredClone(detached.buffer, { transfer: [detached.buffer] });
    expect(movableMemories([detached])).toBeUndefined();
    const whole = new Uint8Array(16);
    expect(movableMemories([whole.subarray(0, 8), whole.subarray(8)])).toBeUndefined();
  });
});
