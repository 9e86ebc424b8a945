/** ReadPatternTracker: which reads of cold objects count as sequential, and when one promotes. */
import { describe, expect, it } from 'vitest';
import { ReadPatternTracker } from '../../src/store/tier/read-pattern.js';

const CHUNK = 64 * 1024;

describe('ReadPatternTracker', () => {
  it('a scan is sequential after its first read, even with chunks arriving out of order', () => {
    const tracker = new ReadPatternTracker({ sequentialGapBytes: 4 * CHUNK });
    const order = [1, 0, 2, 4, 3, 5, 8, 6, 7, 9];
    const kinds = order.map((n) => tracker.note('pack', n * CHUNK, CHUNK));
    expect(kinds[0]).toBe('random');
    expect(kinds.slice(1)).toEqual(Array(order.length - 1).fill('sequential'));
  });

  it('promotes on the second random read in a row: a far read, or the same bytes again', () => {
    const tracker = new ReadPatternTracker({ sequentialGapBytes: CHUNK });
    expect(tracker.note('a', 40 * CHUNK, CHUNK)).toBe('random');
    expect(tracker.note('a', 3 * CHUNK, CHUNK)).toBe('promote');
    expect(tracker.note('b', 7 * CHUNK, CHUNK)).toBe('random');
    expect(tracker.note('b', 7 * CHUNK, CHUNK)).toBe('promote');
    // A run that jumps: the jump is random, but the read before it was not, so no promotion.
    expect(tracker.note('c', 0, CHUNK)).toBe('random');
    expect(tracker.note('c', CHUNK, CHUNK)).toBe('sequential');
    expect(tracker.note('c', 50 * CHUNK, CHUNK)).toBe('random');
  });

  it('remembers a bounded number of objects, least recently read forgotten first', () => {
    const tracker = new ReadPatternTracker({ trackedObjectsMax: 2 });
    tracker.note('a', 0, CHUNK);
    tracker.note('b', 0, CHUNK);
    tracker.note('c', 0, CHUNK);
    expect(tracker.note('a', 0, CHUNK)).toBe('random'); // forgotten: a first read again
    expect(tracker.note('c', 0, CHUNK)).toBe('promote');
  });
});
