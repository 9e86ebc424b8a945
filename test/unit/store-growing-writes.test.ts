import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { isStorageError } from '../../src/core/errors.js';
import { CONTENDED_LIMITS, GrowingWrites, QUIET_LIMITS, type GrowingWritesLimits, type WriteCall } from '../../src/store/growing-writes.js';
import { LocalHostFile } from '../../src/store/local-file.js';
import { SeededRandom } from '../../src/store/seeded-random.js';
import { IOV_MAX } from '../../src/sys/iovec.js';
import { OthersCpu, parseCpuLine, parseSelfTicks } from '../../src/sys/others-cpu.js';
import { shmTempDir, tempDir } from '../support/tmp.js';

/** A WriteCall whose calls wait until the test answers them: what each call carried, in order. */
function heldCalls(): {
  call: WriteCall;
  calls: { hostOffset: number; lengthBytes: number; buffers: number; answer: (err?: Error) => void }[];
  inFlight: () => number;
  maxInFlight: () => number;
} {
  const calls: { hostOffset: number; lengthBytes: number; buffers: number; answer: (err?: Error) => void }[] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const call: WriteCall = (bufs, hostOffset, lengthBytes) =>
    new Promise<void>((resolve, reject) => {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      calls.push({
        hostOffset,
        lengthBytes,
        buffers: bufs.length,
        answer: (err) => {
          inFlight--;
          if (err) reject(err);
          else resolve();
        },
      });
    });
  return { call, calls, inFlight: () => inFlight, maxInFlight: () => maxInFlight };
}

/** Answers every call, oldest first, until none is in flight (the ones in flight are the newest). */
async function answerInOrder(h: ReturnType<typeof heldCalls>): Promise<void> {
  while (h.inFlight() > 0) {
    h.calls[h.calls.length - h.inFlight()]!.answer();
    await settle();
  }
}

const settle = (): Promise<void> => new Promise((r) => setImmediate(r));
const limits = (inFlight: number, combinedMaxBytes: number): (() => GrowingWritesLimits) => () => ({ inFlight, combinedMaxBytes });
const KiB = 1024;

describe('GrowingWrites', () => {
  it('sends the first write at once and the writes that queued behind it, back to back, as one call in file order', async () => {
    const h = heldCalls();
    const lane = new GrowingWrites(h.call, limits(1, 1 << 20));
    const first = lane.write([new Uint8Array(4 * KiB)], 0, 4 * KiB);
    // Queued while the first is in flight: 12K, 8K (in front of it), 4K, 20K (not adjacent).
    const queued = [12, 8, 4, 20].map((k) => lane.write([new Uint8Array(4 * KiB)], k * KiB, 4 * KiB));
    expect(h.calls.map((c) => [c.hostOffset, c.lengthBytes])).toEqual([[0, 4 * KiB]]);
    expect(lane.queuedWrites).toBe(4);
    h.calls[0]!.answer();
    await first;
    await settle();
    // The oldest queued (12K) with what lies on either side of it: 4K..16K in one call of three buffers.
    expect(h.calls.slice(1).map((c) => [c.hostOffset, c.lengthBytes, c.buffers])).toEqual([[4 * KiB, 12 * KiB, 3]]);
    h.calls[1]!.answer();
    await settle();
    expect(h.calls.slice(2).map((c) => [c.hostOffset, c.lengthBytes])).toEqual([[20 * KiB, 4 * KiB]]);
    h.calls[2]!.answer();
    await Promise.all(queued);
    expect(lane.combinedWrites).toBe(3);
    expect(h.maxInFlight()).toBe(1);
  });

  it('keeps to the limits: writes in flight, bytes and buffers a call', async () => {
    const h = heldCalls();
    const lane = new GrowingWrites(h.call, limits(2, 16 * KiB));
    const writes = Array.from({ length: 12 }, (_, i) => lane.write([new Uint8Array(4 * KiB)], i * 4 * KiB, 4 * KiB));
    expect(h.calls.length).toBe(2);
    await answerInOrder(h);
    await Promise.all(writes);
    expect(h.maxInFlight()).toBe(2);
    expect(Math.max(...h.calls.map((c) => c.lengthBytes))).toBe(16 * KiB);
    expect(h.calls.reduce((n, c) => n + c.lengthBytes, 0)).toBe(48 * KiB);

    // IOV_MAX buffers at most in one call, however small they are.
    const g = heldCalls();
    const many = new GrowingWrites(g.call, limits(1, 1 << 30));
    const tiny = Array.from({ length: 2 + IOV_MAX }, (_, i) => many.write([new Uint8Array(8)], i * 8, 8));
    g.calls[0]!.answer();
    await settle();
    expect(g.calls[1]!.buffers).toBe(IOV_MAX);
    g.calls[1]!.answer();
    await settle();
    g.calls[2]!.answer();
    await Promise.all(tiny);
    expect(g.calls.map((c) => c.buffers)).toEqual([1, IOV_MAX, 1]);
  });

  it('never combines two writes to the same offset', async () => {
    const h = heldCalls();
    const lane = new GrowingWrites(h.call, limits(1, 1 << 20));
    const writes = [0, 4, 4, 8].map((k) => lane.write([new Uint8Array(4 * KiB)], k * KiB, 4 * KiB));
    for (let i = 0; i < 3; i++) {
      h.calls[i]!.answer();
      await settle();
    }
    await Promise.all(writes);
    expect(h.calls.map((c) => [c.hostOffset / KiB, c.lengthBytes / KiB])).toEqual([
      [0, 4],
      [4, 8],
      [4, 4],
    ]);
  });

  it('retries a failed combined call write by write: only the write that fails alone fails', async () => {
    const written: [number, number][] = [];
    let combinedCalls = 0;
    const call: WriteCall = async (bufs, hostOffset, lengthBytes) => {
      await settle();
      if (bufs.length > 1) {
        combinedCalls++;
        throw Object.assign(new Error('ENOSPC'), { code: 'ENOSPC' });
      }
      if (hostOffset === 8 * KiB) throw Object.assign(new Error('ENOSPC'), { code: 'ENOSPC' });
      written.push([hostOffset, lengthBytes]);
    };
    const lane = new GrowingWrites(call, limits(1, 1 << 20));
    const outcomes = await Promise.allSettled([0, 4, 8, 12].map((k) => lane.write([new Uint8Array(4 * KiB)], k * KiB, 4 * KiB)));
    expect(outcomes.map((o) => o.status)).toEqual(['fulfilled', 'fulfilled', 'rejected', 'fulfilled']);
    expect(combinedCalls).toBe(1);
    expect(lane.retriedRuns).toBe(1);
    expect(written).toEqual([
      [0, 4 * KiB],
      [4 * KiB, 4 * KiB],
      [12 * KiB, 4 * KiB],
    ]);
  });

  it('asks for its limits at each turn: more in flight once the machine is contended', async () => {
    const h = heldCalls();
    let now = QUIET_LIMITS;
    const lane = new GrowingWrites(h.call, () => now);
    const spaced = (i: number) => lane.write([new Uint8Array(4 * KiB)], i * 64 * KiB, 4 * KiB);
    const writes = [spaced(0), spaced(1), spaced(2)];
    expect(h.inFlight()).toBe(QUIET_LIMITS.inFlight);
    now = CONTENDED_LIMITS;
    writes.push(spaced(3));
    expect(h.inFlight()).toBe(4);
    await answerInOrder(h);
    await Promise.all(writes);
  });
});

describe('OthersCpu', () => {
  const statLine = (user: number, idle: number) => `cpu  ${user} 0 0 ${idle} 0 0 0 0 0 0\ncpu0 1 2 3 4\n`;
  const selfLine = (ticks: number) => `1234 (node (x) y) S 1 1 1 0 -1 4194560 10 0 0 0 ${ticks} 0 0 0 20 0 8 0`;

  it('parses /proc/stat and /proc/self/stat lines', () => {
    expect(parseCpuLine('cpu  10 1 5 100 4 1 2 3 7 0\n')).toEqual({ totalTicks: 126, busyTicks: 22 });
    expect(parseCpuLine('intr 1 2 3\n')).toBeUndefined();
    expect(parseSelfTicks(selfLine(42))).toBe(42);
    expect(parseSelfTicks('garbage')).toBeUndefined();
  });

  it('counts the CPUs busy with other processes, not its own, over windows', () => {
    let user = 0;
    let idle = 0;
    let self = 0;
    let nowMs = 0;
    const others = new OthersCpu({ procStat: () => statLine(user, idle), selfStat: () => selfLine(self) }, 2, () => nowMs);
    expect(others.busyCores()).toBe(0); // the first sample: no window yet
    // 200 ticks over two CPUs: 150 busy, 100 of them this process's own.
    user += 150;
    idle += 50;
    self += 100;
    nowMs += 250;
    expect(others.busyCores()).toBeCloseTo(0.5);
    expect(others.coresLeft()).toBeCloseTo(1.5);
    // Within the window the answer stands, whatever the counters did.
    user += 1000;
    nowMs += 50;
    expect(others.busyCores()).toBeCloseTo(0.5);
  });

  it('takes an unreadable /proc as a quiet machine', () => {
    const others = new OthersCpu({ procStat: () => { throw new Error('ENOENT'); }, selfStat: () => '' }, 4);
    expect(others.busyCores()).toBe(0);
    expect(others.coresLeft()).toBe(4);
  });
});

describe('LocalHostFile: writes that grow the file', () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it.each([
    { label: 'on disk', dir: tempDir },
    { label: 'on /dev/shm', dir: shmTempDir },
  ])('goes down in fewer calls than writes, each write where it belongs ($label)', async ({ dir }) => {
    const p = path.join(dir(), 'grow.img');
    const f = await LocalHostFile.open(p, { create: true, syncIo: false });
    const count = vi.spyOn(fs, 'write');
    const countv = vi.spyOn(fs, 'writev');
    const rand = new SeededRandom(5);
    const blocks = Array.from({ length: 32 }, () => rand.fill(new Uint8Array(64 * KiB)));
    await Promise.all(blocks.map((b, i) => f.pwrite(b, i * 64 * KiB)));
    const calls = count.mock.calls.length + countv.mock.calls.length;
    expect(calls).toBeGreaterThan(0);
    expect(calls).toBeLessThan(32);
    vi.restoreAllMocks();
    await f.close();
    expect(Buffer.compare(fs.readFileSync(p), Buffer.concat(blocks))).toBe(0);
  });

  it('finishes writes still queued when close() begins, then closes', async () => {
    const p = path.join(tempDir(), 'close.img');
    const f = await LocalHostFile.open(p, { create: true, syncIo: false });
    const writes = Array.from({ length: 40 }, (_, i) => f.pwrite(new Uint8Array(32 * KiB).fill(i + 1), i * 32 * KiB));
    const closed = f.close();
    await Promise.all(writes);
    await closed;
    const bytes = fs.readFileSync(p);
    expect(bytes.length).toBe(40 * 32 * KiB);
    for (let i = 0; i < 40; i++) expect(bytes[i * 32 * KiB + 100]).toBe(i + 1);
  });

  it('a combined call that fails is retried write by write, and each write answers for itself', async () => {
    const p = path.join(tempDir(), 'retry.img');
    const f = await LocalHostFile.open(p, { create: true, syncIo: false });
    const realWritev = fs.writev.bind(fs) as unknown as (...a: unknown[]) => void;
    let refused = 0;
    vi.spyOn(fs, 'writev').mockImplementation(((...args: unknown[]) => {
      const cb = args[args.length - 1] as (err: Error) => void;
      if (refused++ === 0) {
        setImmediate(() => cb(Object.assign(new Error('EIO: i/o error, writev'), { code: 'EIO' })));
        return;
      }
      realWritev(...args);
    }) as never);
    // More writes than go at once even on a contended machine (CONTENDED_LIMITS): some queue and combine.
    const blocks = Array.from({ length: CONTENDED_LIMITS.inFlight + 24 }, (_, i) => new Uint8Array(16 * KiB).fill(0x10 + i));
    await Promise.all(blocks.map((b, i) => f.pwrite(b, i * 16 * KiB)));
    expect(refused).toBeGreaterThan(0);
    vi.restoreAllMocks();
    await f.close();
    expect(Buffer.compare(fs.readFileSync(p), Buffer.concat(blocks))).toBe(0);
  });

  it('a write that fails alone is answered with its own error', async () => {
    const f = await LocalHostFile.open(path.join(tempDir(), 'nospace.img'), { create: true, syncIo: false });
    vi.spyOn(fs, 'write').mockImplementation(((...args: unknown[]) => {
      const cb = args[args.length - 1] as (err: Error) => void;
      setImmediate(() => cb(Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' })));
    }) as never);
    vi.spyOn(fs, 'writev').mockImplementation(((...args: unknown[]) => {
      const cb = args[args.length - 1] as (err: Error) => void;
      setImmediate(() => cb(Object.assign(new Error('ENOSPC: no space left on device, writev'), { code: 'ENOSPC' })));
    }) as never);
    const outcomes = await Promise.allSettled([0, 1, 2].map((i) => f.pwrite(new Uint8Array(10), i * 10)));
    for (const [i, o] of outcomes.entries()) {
      expect(o.status).toBe('rejected');
      const err = (o as PromiseRejectedResult).reason as Error;
      expect(isStorageError(err) && (err as { code: string }).code).toBe('NO_SPACE');
      expect(err.message).toContain(`pwrite of 10 bytes at ${i * 10} to`);
    }
    vi.restoreAllMocks();
    await f.close();
  });
});
