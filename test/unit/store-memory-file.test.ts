import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isStorageError } from '../../src/core/errors.js';
import { MEMORY_CHUNK_BYTES, MemoryHostFile } from '../../src/store/memory-file.js';
import { SeededRandom } from '../../src/store/seeded-random.js';

const CHUNK = MEMORY_CHUNK_BYTES;

/** Fast byte comparison: toEqual walks typed arrays element by element (slow at 100s of KiB). */
function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length));
}
const MiB = 1024 * 1024;

async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  return p.then(
    () => undefined,
    (e: unknown) => (isStorageError(e) ? e.code : `not a StorageError: ${String(e)}`),
  );
}

describe('MemoryHostFile', () => {
  it('starts empty and grows on write', async () => {
    const f = new MemoryHostFile();
    expect(f.name).toBe('memory');
    expect(await f.sizeBytes()).toBe(0);
    expect(await f.allocatedBytes()).toBe(0);
    await f.pwrite(new Uint8Array([1, 2, 3]), CHUNK - 1);
    expect(await f.sizeBytes()).toBe(CHUNK + 2);
    expect(await f.allocatedBytes()).toBe(2 * CHUNK);
    const buf = new Uint8Array(5).fill(9);
    expect(await f.pread(buf, CHUNK - 2)).toBe(4);
    expect([...buf]).toEqual([0, 1, 2, 3, 0]);
  });

  it('copies existing bytes in and out, leaving zero chunks unallocated', async () => {
    const bytes = new Uint8Array(3 * CHUNK + 100);
    bytes[5] = 1;
    bytes[3 * CHUNK + 99] = 2;
    const f = new MemoryHostFile(bytes, { name: 'seed' });
    expect(f.name).toBe('seed');
    expect(await f.sizeBytes()).toBe(bytes.length);
    expect(await f.allocatedBytes()).toBe(2 * CHUNK);
    bytes[5] = 7; // the file holds a copy
    const snap = f.snapshotBytes();
    expect(snap.length).toBe(bytes.length);
    expect(snap[5]).toBe(1);
    expect(snap[3 * CHUNK + 99]).toBe(2);
    snap[5] = 8; // and hands out a copy
    const one = new Uint8Array(1);
    await f.pread(one, 5);
    expect(one[0]).toBe(1);
  });

  it('is sparse: a write far out costs one chunk', async () => {
    const f = new MemoryHostFile();
    await f.pwrite(new Uint8Array([42]), 500 * 1024 * MiB);
    expect(await f.sizeBytes()).toBe(500 * 1024 * MiB + 1);
    expect(await f.allocatedBytes()).toBe(CHUNK);
    expect(await f.seekData(0)).toBe(Math.floor((500 * 1024 * MiB) / CHUNK) * CHUNK);
    await f.truncate(0);
    expect(await f.allocatedBytes()).toBe(0);
  });

  it('holds a few hundred MiB of data', async () => {
    const f = new MemoryHostFile();
    const block = new Uint8Array(MiB);
    for (let i = 0; i < 300; i++) {
      block.fill(i & 0xff);
      await f.pwrite(block, i * MiB);
    }
    expect(await f.allocatedBytes()).toBe(300 * MiB);
    const back = new Uint8Array(16);
    await f.pread(back, 299 * MiB + 8);
    expect(back.every((b) => b === 299 % 256)).toBe(true);
  });

  it('punchHole zeroes, frees whole chunks and keeps the size', async () => {
    const f = new MemoryHostFile();
    await f.pwrite(new Uint8Array(4 * CHUNK).fill(0xcc), 0);
    await f.punchHole(100, 2 * CHUNK);
    expect(await f.sizeBytes()).toBe(4 * CHUNK);
    expect(await f.allocatedBytes()).toBe(3 * CHUNK); // chunk 1 freed; 0 and 2 partly zeroed
    const all = f.snapshotBytes();
    expect(all.subarray(0, 100).every((b) => b === 0xcc)).toBe(true);
    expect(all.subarray(100, 100 + 2 * CHUNK).every((b) => b === 0)).toBe(true);
    expect(all.subarray(100 + 2 * CHUNK).every((b) => b === 0xcc)).toBe(true);
    await f.punchHole(3 * CHUNK, 10 * CHUNK);
    expect(await f.sizeBytes()).toBe(4 * CHUNK);
    expect(await f.allocatedBytes()).toBe(2 * CHUNK);
  });

  it('truncate down then up reads zeroes in the regrown part', async () => {
    const f = new MemoryHostFile(new Uint8Array(CHUNK).fill(3));
    await f.truncate(10);
    await f.truncate(CHUNK);
    const all = f.snapshotBytes();
    expect(all.subarray(0, 10).every((b) => b === 3)).toBe(true);
    expect(all.subarray(10).every((b) => b === 0)).toBe(true);
  });

  it('seekData/seekHole work at chunk granularity', async () => {
    const f = new MemoryHostFile();
    await f.truncate(10 * CHUNK + 5);
    expect(await f.seekData(0)).toBeUndefined();
    expect(await f.seekHole(0)).toBe(0);
    await f.pwrite(new Uint8Array([1]), 3 * CHUNK + 7);
    await f.pwrite(new Uint8Array([1]), 4 * CHUNK);
    expect(await f.seekData(0)).toBe(3 * CHUNK);
    expect(await f.seekData(3 * CHUNK + 9)).toBe(3 * CHUNK + 9);
    expect(await f.seekHole(3 * CHUNK)).toBe(5 * CHUNK);
    expect(await f.seekData(5 * CHUNK)).toBeUndefined();
    await f.pwrite(new Uint8Array([1]), 10 * CHUNK + 1);
    expect(await f.seekData(5 * CHUNK)).toBe(10 * CHUNK);
    expect(await f.seekHole(10 * CHUNK)).toBe(10 * CHUNK + 5); // end of file
    expect(await f.seekHole(10 * CHUNK + 5)).toBeUndefined();
  });

  it('clone is independent; readOnlyView shares and refuses writes', async () => {
    const f = new MemoryHostFile(new Uint8Array([1, 2, 3]));
    const c = f.clone();
    const v = f.readOnlyView();
    await f.pwrite(new Uint8Array([9]), 0);
    expect(c.snapshotBytes()[0]).toBe(1);
    expect(v.snapshotBytes()[0]).toBe(9);
    expect(v.readOnly).toBe(true);
    expect(await codeOf(v.pwrite(new Uint8Array(1), 0))).toBe('READ_ONLY');
    expect(await codeOf(v.truncate(0))).toBe('READ_ONLY');
    expect(await codeOf(v.punchHole(0, 1))).toBe('READ_ONLY');
  });

  it('survives close (the bytes stay) and validates ranges', async () => {
    const f = new MemoryHostFile();
    await f.pwrite(new Uint8Array([5]), 0);
    await f.close();
    expect(f.snapshotBytes()).toEqual(new Uint8Array([5]));
    expect(await codeOf(f.pwrite(new Uint8Array(1), -1))).toBe('INVALID_ARGUMENT');
    expect(await codeOf(f.pread(new Uint8Array(1), Number.NaN))).toBe('INVALID_ARGUMENT');
    expect(await codeOf(f.punchHole(0, -1))).toBe('INVALID_ARGUMENT');
  });

  it('matches a flat-array model under random operations', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.oneof(
            fc.record({ op: fc.constant('write' as const), off: fc.nat(4 * CHUNK), len: fc.nat(2 * CHUNK), seed: fc.nat() }),
            fc.record({ op: fc.constant('punch' as const), off: fc.nat(4 * CHUNK), len: fc.nat(3 * CHUNK) }),
            fc.record({ op: fc.constant('truncate' as const), size: fc.nat(5 * CHUNK) }),
          ),
          { maxLength: 25 },
        ),
        async (ops) => {
          const f = new MemoryHostFile();
          let model = new Uint8Array(0);
          for (const o of ops) {
            if (o.op === 'write') {
              const data = new SeededRandom(o.seed).fill(new Uint8Array(o.len));
              await f.pwrite(data, o.off);
              if (o.len > 0 && o.off + o.len > model.length) {
                const grown = new Uint8Array(o.off + o.len);
                grown.set(model);
                model = grown;
              }
              if (o.len > 0) model.set(data, o.off);
            } else if (o.op === 'punch') {
              await f.punchHole(o.off, o.len);
              model.fill(0, Math.min(o.off, model.length), Math.min(o.off + o.len, model.length));
            } else {
              await f.truncate(o.size);
              const next = new Uint8Array(o.size);
              next.set(model.subarray(0, Math.min(o.size, model.length)));
              model = next;
            }
          }
          expect(await f.sizeBytes()).toBe(model.length);
          expect(sameBytes(f.snapshotBytes(), model)).toBe(true);
          // Every non-zero byte lies in data; holes hold only zeroes.
          for (let pos = 0; pos < model.length; pos += 997) {
            if (model[pos] !== 0) {
              expect(await f.seekData(pos)).toBe(pos);
              expect(await f.seekHole(pos)).toBeGreaterThan(pos);
            }
          }
          for (let pos = (await f.seekHole(0)) ?? model.length; pos < model.length; ) {
            const next = (await f.seekData(pos)) ?? model.length;
            expect(model.subarray(pos, next).every((b) => b === 0)).toBe(true);
            pos = next < model.length ? ((await f.seekHole(next)) ?? model.length) : model.length;
          }
          const probe = new Uint8Array(CHUNK + 17);
          const at = Math.max(0, model.length - 100);
          const got = await f.pread(probe, at);
          expect(got).toBe(Math.min(probe.length, model.length - at));
          const expected = new Uint8Array(probe.length);
          expected.set(model.subarray(at, at + probe.length));
          expect(sameBytes(probe, expected)).toBe(true);
        },
      ),
      { numRuns: 150 },
    );
  });
});
