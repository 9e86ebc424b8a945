import { describe, expect, it } from 'vitest';
import { isStorageError } from '../../src/core/errors.js';
import { FaultInjectingFile } from '../../src/store/fault-injecting-file.js';
import { MemoryHostFile } from '../../src/store/memory-file.js';
import { SeededRandom } from '../../src/store/seeded-random.js';

function bytes(n: number, value: number): Uint8Array {
  return new Uint8Array(n).fill(value);
}

async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  return p.then(
    () => undefined,
    (e: unknown) => (isStorageError(e) ? e.code : `not a StorageError: ${String(e)}`),
  );
}

describe('FaultInjectingFile', () => {
  it('reads what was written; flush makes it durable', async () => {
    const f = new FaultInjectingFile();
    await f.pwrite(bytes(1000, 1), 0);
    const buf = new Uint8Array(1000);
    expect(await f.pread(buf, 0)).toBe(1000);
    expect(buf.every((b) => b === 1)).toBe(true);
    expect(f.durableBytes().length).toBe(0);
    expect(f.pendingOperations).toHaveLength(1);
    await f.flush();
    expect(f.pendingOperations).toHaveLength(0);
    expect(f.durableBytes()).toEqual(bytes(1000, 1));
    // After a flush, every crash keeps the data.
    for (let seed = 0; seed < 10; seed++) {
      expect(f.crash(new SeededRandom(seed)).snapshotBytes()).toEqual(bytes(1000, 1));
    }
  });

  it('copies written buffers (callers may reuse them)', async () => {
    const f = new FaultInjectingFile();
    const buf = bytes(10, 4);
    await f.pwrite(buf, 0);
    buf.fill(9);
    expect(f.crashKeepingAll().snapshotBytes()).toEqual(bytes(10, 4));
    expect(f.liveBytes()).toEqual(bytes(10, 4));
  });

  it('starts from bytes or a MemoryHostFile, copying them', async () => {
    const mem = new MemoryHostFile(bytes(600, 3));
    const f = new FaultInjectingFile(mem, { name: 'disk' });
    expect(f.name).toBe('disk');
    await mem.pwrite(bytes(1, 0), 0);
    expect(f.durableBytes()).toEqual(bytes(600, 3));
    expect(new FaultInjectingFile(bytes(5, 2)).liveBytes()).toEqual(bytes(5, 2));
  });

  it('crash applies the durable state plus a subset of pending operations in order', async () => {
    const f = new FaultInjectingFile(bytes(4096, 0xff));
    // Three writes to distinct 512-byte sectors, each with its own value; then one overwriting #0.
    await f.pwrite(bytes(512, 1), 0);
    await f.pwrite(bytes(512, 2), 512);
    await f.pwrite(bytes(512, 3), 1024);
    await f.pwrite(bytes(512, 4), 0);
    const seen = new Set<string>();
    for (let seed = 0; seed < 200; seed++) {
      const after = f.crash(new SeededRandom(seed)).snapshotBytes();
      const s0 = after[0]!;
      const s1 = after[512]!;
      const s2 = after[1024]!;
      expect([0xff, 1, 4]).toContain(s0);
      expect([0xff, 2]).toContain(s1);
      expect([0xff, 3]).toContain(s2);
      expect(after.subarray(1536).every((b) => b === 0xff)).toBe(true);
      // Sectors are whole (no tearing without tornWrites).
      for (const at of [0, 512, 1024]) expect(after.subarray(at, at + 512).every((b) => b === after[at])).toBe(true);
      seen.add(`${s0},${s1},${s2}`);
    }
    expect(seen.size).toBe(12); // 3 x 2 x 2 combinations all reachable
    expect(f.crashLosingAll().snapshotBytes()).toEqual(bytes(4096, 0xff));
    const all = f.crashKeepingAll().snapshotBytes();
    expect([all[0], all[512], all[1024]]).toEqual([4, 2, 3]);
    // The same seed gives the same crash.
    expect(f.crash(new SeededRandom(9)).snapshotBytes()).toEqual(f.crash(new SeededRandom(9)).snapshotBytes());
  });

  it('keepProbability 1 and 0 give the extremes', async () => {
    const f = new FaultInjectingFile();
    await f.pwrite(bytes(100, 1), 0);
    await f.truncate(50);
    await f.punchHole(0, 10);
    const kept = f.crash(new SeededRandom(1), { keepProbability: 1 }).snapshotBytes();
    expect(kept).toEqual(f.liveBytes());
    expect(kept.length).toBe(50);
    expect(f.crash(new SeededRandom(1), { keepProbability: 0 }).snapshotBytes().length).toBe(0);
  });

  it('tears writes at absolute 512-byte sector boundaries when tornWrites is set', async () => {
    const f = new FaultInjectingFile(bytes(4096, 0), { tornWrites: true });
    // Unaligned write covering pieces [100,512) [512,1024) [1024,1536) [1536,1600).
    await f.pwrite(bytes(1500, 7), 100);
    const patterns = new Set<string>();
    for (let seed = 0; seed < 300; seed++) {
      const after = f.crash(new SeededRandom(seed), { keepProbability: 1 }).snapshotBytes();
      const pieces: Array<[number, number]> = [
        [100, 512],
        [512, 1024],
        [1024, 1536],
        [1536, 1600],
      ];
      const state = pieces.map(([a, b]) => {
        const piece = after.subarray(a, b);
        const v = piece[0]!;
        expect(piece.every((x) => x === v)).toBe(true); // each piece all-or-nothing
        return v === 7 ? '1' : '0';
      });
      expect(after.subarray(0, 100).every((b) => b === 0)).toBe(true);
      expect(after.subarray(1600).every((b) => b === 0)).toBe(true);
      patterns.add(state.join(''));
    }
    expect(patterns.size).toBe(16);
  });

  it('failAfterOps cuts the power: later calls fail, the cut operation may persist', async () => {
    const f = new FaultInjectingFile(undefined, { failAfterOps: 3 });
    await f.pwrite(bytes(512, 1), 0); // 1
    await f.flush(); // 2
    await f.pwrite(bytes(512, 2), 512); // 3
    expect(f.operationCount).toBe(3);
    expect(f.poweredOff).toBe(false);
    expect(await codeOf(f.pwrite(bytes(512, 3), 1024))).toBe('IO_ERROR'); // the cut
    expect(f.poweredOff).toBe(true);
    expect(await codeOf(f.pread(new Uint8Array(1), 0))).toBe('IO_ERROR');
    expect(await codeOf(f.flush())).toBe('IO_ERROR');
    expect(await codeOf(f.sizeBytes())).toBe('IO_ERROR');
    // The live state never saw the failed write, but the disk may hold it.
    expect(f.liveBytes().length).toBe(1024);
    expect(f.pendingOperations.map((op) => op.kind)).toEqual(['write', 'write']);
    const outcomes = new Set<string>();
    for (let seed = 0; seed < 100; seed++) {
      const after = f.crash(new SeededRandom(seed)).snapshotBytes();
      expect(after[0]).toBe(1);
      outcomes.add(`${after.length}:${after[512] ?? '-'}:${after[1024] ?? '-'}`);
    }
    expect(outcomes).toEqual(new Set(['512:-:-', '1024:2:-', '1536:0:3', '1536:2:3']));
  });

  it('setFailAfterOps counts from now; powerCut cuts at once', async () => {
    const f = new FaultInjectingFile();
    await f.pwrite(bytes(1, 1), 0);
    await f.pwrite(bytes(1, 1), 1);
    f.setFailAfterOps(1);
    await f.truncate(10);
    expect(await codeOf(f.punchHole(0, 1))).toBe('IO_ERROR');
    const g = new FaultInjectingFile();
    g.powerCut();
    expect(await codeOf(g.pwrite(bytes(1, 1), 0))).toBe('IO_ERROR');
    expect(g.pendingOperations).toHaveLength(0);
  });

  it('validates ranges before counting operations', async () => {
    const f = new FaultInjectingFile(undefined, { failAfterOps: 0 });
    expect(await codeOf(f.pwrite(bytes(1, 1), -1))).toBe('INVALID_ARGUMENT');
    expect(f.poweredOff).toBe(false);
    expect(f.pendingOperations).toHaveLength(0);
  });

  it('seekData/seekHole and allocatedBytes follow the live state', async () => {
    const f = new FaultInjectingFile();
    await f.truncate(1 << 20);
    expect(await f.seekData(0)).toBeUndefined();
    await f.pwrite(bytes(10, 1), 200_000);
    expect(await f.seekData(0)).toBeLessThanOrEqual(200_000);
    expect(await f.allocatedBytes()).toBeGreaterThan(0);
    await f.close();
    expect(f.crashKeepingAll().snapshotBytes()[200_000]).toBe(1);
  });
});
