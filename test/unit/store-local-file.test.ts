import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { isStorageError } from '../../src/core/errors.js';
import { LocalHostFile, NOWAIT_READ_MAX_BYTES } from '../../src/store/local-file.js';
import { SeededRandom } from '../../src/store/seeded-random.js';
import { sliceBuffers, totalBytesOf } from '../../src/sys/iovec.js';
import { shmBase, shmTempDir, tempDir } from '../support/tmp.js';

async function rejectsWith(promise: Promise<unknown>, code: string, pattern?: RegExp): Promise<void> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(isStorageError(err), `expected StorageError ${code}, got ${String(err)}`).toBe(true);
  expect((err as { code: string }).code).toBe(code);
  if (pattern) expect((err as Error).message).toMatch(pattern);
}

describe.each([
  { label: 'async', syncIo: false, dir: tempDir },
  { label: 'syncIo', syncIo: true, dir: tempDir },
  { label: 'async on /dev/shm', syncIo: false, dir: shmTempDir },
  // Small requests synchronous, large reads through io_uring where the kernel has it.
  { label: "'auto' on /dev/shm", syncIo: 'auto' as const, dir: shmTempDir },
])('LocalHostFile ($label)', ({ syncIo, dir }) => {
  const openNew = async (): Promise<{ file: LocalHostFile; p: string }> => {
    const p = path.join(dir(), 'f.img');
    return { file: await LocalHostFile.open(p, { create: true, syncIo }), p };
  };

  it('writes and reads back, growing the file', async () => {
    const { file, p } = await openNew();
    expect(file.name).toBe(p);
    expect(file.readOnly).toBe(false);
    expect(await file.sizeBytes()).toBe(0);
    const data = new SeededRandom(1).fill(new Uint8Array(10_000));
    await file.pwrite(data, 12_345);
    expect(await file.sizeBytes()).toBe(22_345);
    const back = new Uint8Array(10_000);
    expect(await file.pread(back, 12_345)).toBe(10_000);
    expect(back).toEqual(data);
    // The gap before the write reads as zeroes.
    const gap = new Uint8Array(100).fill(0xee);
    expect(await file.pread(gap, 0)).toBe(100);
    expect(gap.every((b) => b === 0)).toBe(true);
    await file.close();
    expect(fs.readFileSync(p).subarray(12_345)).toEqual(Buffer.from(data));
  });

  it('zero-fills reads past the end and resolves the bytes that existed', async () => {
    const { file } = await openNew();
    await file.pwrite(new Uint8Array([1, 2, 3, 4]), 0);
    const buf = new Uint8Array(10).fill(0xff);
    expect(await file.pread(buf, 2)).toBe(2);
    expect([...buf]).toEqual([3, 4, 0, 0, 0, 0, 0, 0, 0, 0]);
    const far = new Uint8Array(8).fill(0xff);
    expect(await file.pread(far, 1_000_000)).toBe(0);
    expect(far.every((b) => b === 0)).toBe(true);
    await file.close();
  });

  it('handles subarray views (byteOffset != 0) and empty buffers', async () => {
    const { file } = await openNew();
    const backing = new Uint8Array(64).map((_, i) => i);
    await file.pwrite(backing.subarray(10, 20), 5);
    await file.pwrite(new Uint8Array(0), 1000);
    expect(await file.sizeBytes()).toBe(15);
    const out = new Uint8Array(64);
    expect(await file.pread(out.subarray(30, 40), 5)).toBe(10);
    expect([...out.subarray(30, 40)]).toEqual([10, 11, 12, 13, 14, 15, 16, 17, 18, 19]);
    expect(out[29]).toBe(0);
    expect(out[40]).toBe(0);
    expect(await file.pread(new Uint8Array(0), 0)).toBe(0);
    await file.close();
  });

  it('keeps many concurrent writes apart', async () => {
    const { file } = await openNew();
    const n = 200;
    await Promise.all(
      Array.from({ length: n }, (_, i) => file.pwrite(new Uint8Array(4096).fill(i & 0xff), i * 4096)),
    );
    const bufs = Array.from({ length: n }, () => new Uint8Array(4096));
    await Promise.all(bufs.map((b, i) => file.pread(b, i * 4096)));
    bufs.forEach((b, i) => expect(b.every((x) => x === (i & 0xff))).toBe(true));
    await file.close();
  });

  it('truncates both ways', async () => {
    const { file } = await openNew();
    await file.pwrite(new Uint8Array(8192).fill(7), 0);
    await file.truncate(100);
    expect(await file.sizeBytes()).toBe(100);
    await file.truncate(5000);
    expect(await file.sizeBytes()).toBe(5000);
    const buf = new Uint8Array(5000);
    expect(await file.pread(buf, 0)).toBe(5000);
    expect(buf.subarray(0, 100).every((b) => b === 7)).toBe(true);
    expect(buf.subarray(100).every((b) => b === 0)).toBe(true);
    await file.flush();
    await file.close();
  });

  it('punches holes: zeroes, keeps the size, frees space', async () => {
    const { file } = await openNew();
    const MiB = 1024 * 1024;
    await file.pwrite(new Uint8Array(4 * MiB).fill(0xab), 0);
    await file.flush();
    const before = await file.allocatedBytes();
    expect(before).toBeGreaterThanOrEqual(4 * MiB);
    await file.punchHole(MiB, 2 * MiB);
    expect(await file.sizeBytes()).toBe(4 * MiB);
    const buf = new Uint8Array(4 * MiB);
    await file.pread(buf, 0);
    expect(buf.subarray(0, MiB).every((b) => b === 0xab)).toBe(true);
    expect(buf.subarray(MiB, 3 * MiB).every((b) => b === 0)).toBe(true);
    expect(buf.subarray(3 * MiB).every((b) => b === 0xab)).toBe(true);
    expect(await file.allocatedBytes()).toBeLessThanOrEqual(before - 2 * MiB);
    // Punching past the end does not grow the file.
    await file.punchHole(3 * MiB, 10 * MiB);
    expect(await file.sizeBytes()).toBe(4 * MiB);
    await file.punchHole(0, 0);
    await file.flush();
    await file.close();
  });

  it('finds data and holes with seekData/seekHole', async () => {
    const { file } = await openNew();
    const MiB = 1024 * 1024;
    await file.truncate(8 * MiB);
    expect(await file.seekData(0)).toBeUndefined();
    expect(await file.seekHole(0)).toBe(0);
    await file.pwrite(new Uint8Array(MiB).fill(1), 2 * MiB);
    expect(await file.seekData(0)).toBe(2 * MiB);
    expect(await file.seekHole(2 * MiB)).toBe(3 * MiB);
    expect(await file.seekData(3 * MiB)).toBeUndefined();
    expect(await file.seekHole(7 * MiB)).toBe(7 * MiB);
    expect(await file.seekHole(8 * MiB)).toBeUndefined();
    expect(await file.seekData(100 * MiB)).toBeUndefined();
    await file.close();
  });
});

describe('LocalHostFile.open', () => {
  it('fails with NOT_FOUND for a missing file, naming it', async () => {
    const p = path.join(tempDir(), 'missing.img');
    await rejectsWith(LocalHostFile.open(p), 'NOT_FOUND', /cannot open .*missing\.img: no such file or directory/);
    await rejectsWith(LocalHostFile.open(p, { readOnly: true }), 'NOT_FOUND');
    await rejectsWith(LocalHostFile.open(path.join(p, 'x', 'y'), { create: true }), 'NOT_FOUND');
  });

  it('creates, and with exclusive fails with ALREADY_EXISTS', async () => {
    const p = path.join(tempDir(), 'new.img');
    const f = await LocalHostFile.open(p, { create: true, exclusive: true });
    await f.close();
    expect(fs.existsSync(p)).toBe(true);
    await rejectsWith(LocalHostFile.open(p, { create: true, exclusive: true }), 'ALREADY_EXISTS', /already exists/);
    await rejectsWith(LocalHostFile.open(p, { exclusive: true }), 'ALREADY_EXISTS');
    // create without exclusive opens the existing file and keeps its contents.
    fs.writeFileSync(p, 'hello');
    const g = await LocalHostFile.open(p, { create: true });
    expect(await g.sizeBytes()).toBe(5);
    await g.close();
  });

  it("syncIo 'auto' picks sync on tmpfs only", async () => {
    const onDisk = await LocalHostFile.open(path.join(tempDir(), 'a'), { create: true, syncIo: 'auto' });
    const tmpfs = fs.statfsSync(os.tmpdir()).type === 0x01021994;
    expect(onDisk.syncIo).toBe(tmpfs);
    await onDisk.close();
    if (shmBase() === '/dev/shm') {
      const onShm = await LocalHostFile.open(path.join(shmTempDir(), 'a'), { create: true, syncIo: 'auto' });
      expect(onShm.syncIo).toBe(true);
      await onShm.close();
    }
    const plain = await LocalHostFile.open(path.join(tempDir(), 'b'), { create: true });
    expect(plain.syncIo).toBe(false);
    await plain.close();
  });

  it('rejects directories and read-only create', async () => {
    const dir = tempDir();
    await rejectsWith(LocalHostFile.open(dir, { readOnly: true }), 'INVALID_ARGUMENT', /directory/);
    await rejectsWith(LocalHostFile.open(dir), 'INVALID_ARGUMENT', /directory/);
    await rejectsWith(LocalHostFile.open(path.join(dir, 'x'), { readOnly: true, create: true }), 'INVALID_ARGUMENT');
  });

  // Root ignores file modes.
  it.skipIf(process.getuid?.() === 0)('maps permission errors to IO_ERROR', async () => {
    const p = path.join(tempDir(), 'locked.img');
    fs.writeFileSync(p, 'x', { mode: 0o000 });
    await rejectsWith(LocalHostFile.open(p), 'IO_ERROR', /permission denied/);
  });

  it('read-only files refuse every mutation with READ_ONLY', async () => {
    const p = path.join(tempDir(), 'ro.img');
    fs.writeFileSync(p, Buffer.alloc(4096, 9));
    const f = await LocalHostFile.open(p, { readOnly: true });
    expect(f.readOnly).toBe(true);
    const buf = new Uint8Array(4096);
    expect(await f.pread(buf, 0)).toBe(4096);
    expect(buf[0]).toBe(9);
    await rejectsWith(f.pwrite(buf, 0), 'READ_ONLY');
    await rejectsWith(f.truncate(0), 'READ_ONLY');
    await rejectsWith(f.punchHole(0, 4096), 'READ_ONLY');
    await f.flush();
    await f.close();
  });

  it('rejects invalid offsets with INVALID_ARGUMENT', async () => {
    const f = await LocalHostFile.open(path.join(tempDir(), 'f'), { create: true });
    await rejectsWith(f.pwrite(new Uint8Array(1), -1), 'INVALID_ARGUMENT');
    await rejectsWith(f.pread(new Uint8Array(1), 1.5), 'INVALID_ARGUMENT');
    await rejectsWith(f.punchHole(0, -5), 'INVALID_ARGUMENT');
    await rejectsWith(f.truncate(Number.NaN), 'INVALID_ARGUMENT');
    await f.close();
  });

  it('close waits for calls in flight, is idempotent, and later calls fail', async () => {
    const p = path.join(tempDir(), 'c.img');
    const f = await LocalHostFile.open(p, { create: true });
    const writes = Array.from({ length: 64 }, (_, i) => f.pwrite(new Uint8Array(65536).fill(i), i * 65536));
    const closed = f.close();
    expect(f.close()).toBe(closed);
    await Promise.all(writes);
    await closed;
    expect(fs.statSync(p).size).toBe(64 * 65536);
    await rejectsWith(f.pread(new Uint8Array(1), 0), 'IO_ERROR', /closed/);
    await rejectsWith(f.pwrite(new Uint8Array(1), 0), 'IO_ERROR', /closed/);
    await rejectsWith(f.flush(), 'IO_ERROR', /closed/);
  });
});

describe('LocalHostFile edge paths', () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it.each([false, true])('loops on short reads and writes (syncIo %s)', async (syncIo) => {
    const p = path.join(tempDir(), 'short.img');
    const f = await LocalHostFile.open(p, { create: true, syncIo });
    const CAP = 1000;
    type Cb = (err: NodeJS.ErrnoException | null, n: number) => void;
    const realWrite = fs.write as unknown as (...a: unknown[]) => void;
    const realRead = fs.read as unknown as (...a: unknown[]) => void;
    const realWriteSync = fs.writeSync as unknown as (...a: unknown[]) => number;
    const realReadSync = fs.readSync as unknown as (...a: unknown[]) => number;
    const writeSpy = vi.spyOn(fs, 'write').mockImplementation(((fd: number, b: Uint8Array, o: number, l: number, pos: number, cb: Cb) =>
      realWrite(fd, b, o, Math.min(l, CAP), pos, cb)) as never);
    const readSpy = vi.spyOn(fs, 'read').mockImplementation(((fd: number, b: Uint8Array, o: number, l: number, pos: number, cb: Cb) =>
      realRead(fd, b, o, Math.min(l, CAP), pos, cb)) as never);
    const writeSyncSpy = vi.spyOn(fs, 'writeSync').mockImplementation(((fd: number, b: Uint8Array, o: number, l: number, pos: number) =>
      realWriteSync(fd, b, o, Math.min(l, CAP), pos)) as never);
    const readSyncSpy = vi.spyOn(fs, 'readSync').mockImplementation(((fd: number, b: Uint8Array, o: number, l: number, pos: number) =>
      realReadSync(fd, b, o, Math.min(l, CAP), pos)) as never);
    const data = new SeededRandom(7).fill(new Uint8Array(4500));
    await f.pwrite(data, 100);
    const back = new Uint8Array(6000).fill(0xff);
    expect(await f.pread(back, 100)).toBe(4500);
    expect(back.subarray(0, 4500)).toEqual(data);
    expect(back.subarray(4500).every((b) => b === 0)).toBe(true);
    const calls = syncIo ? writeSyncSpy.mock.calls.length : writeSpy.mock.calls.length;
    expect(calls).toBe(5);
    expect(syncIo ? readSyncSpy.mock.calls.length : readSpy.mock.calls.length).toBe(6); // 5 short + EOF
    vi.restoreAllMocks();
    await f.close();
    expect(fs.readFileSync(p).subarray(100)).toEqual(Buffer.from(data));
  });

  it('reads small cached ranges of an async file without the thread pool, larger ones and the end of the file through it', async () => {
    const dir = tempDir();
    const onTmpfs = fs.statfsSync(dir).type === 0x01021994; // tmpfs cannot read with RWF_NOWAIT: every read takes the pool
    const f = await LocalHostFile.open(path.join(dir, 'cached.img'), { create: true, syncIo: false });
    const data = new SeededRandom(11).fill(new Uint8Array(NOWAIT_READ_MAX_BYTES * 2));
    await f.pwrite(data, 0); // now in the page cache
    const readSpy = vi.spyOn(fs, 'read');
    const small = new Uint8Array(4096).fill(0xee);
    expect(await f.pread(small, 8192 + 512)).toBe(4096);
    expect(small).toEqual(data.subarray(8192 + 512, 8192 + 512 + 4096));
    expect(readSpy.mock.calls.length).toBe(onTmpfs ? 1 : 0);
    const large = new Uint8Array(NOWAIT_READ_MAX_BYTES + 512);
    expect(await f.pread(large, 0)).toBe(large.length);
    expect(large).toEqual(data.subarray(0, large.length));
    expect(readSpy.mock.calls.length).toBe(onTmpfs ? 2 : 1);
    // Crossing the end of the file: the no-wait read comes short, the pool's path zero-fills.
    const tail = new Uint8Array(4096).fill(0xee);
    expect(await f.pread(tail, data.length - 1000)).toBe(1000);
    expect(tail.subarray(0, 1000)).toEqual(data.subarray(data.length - 1000));
    expect(tail.subarray(1000).every((b) => b === 0)).toBe(true);
    expect(readSpy.mock.calls.length).toBe(onTmpfs ? 4 : 3); // 1000 bytes, then 0: the end
    vi.restoreAllMocks();
    await f.close();
    await rejectsWith(f.pread(small, 0), 'IO_ERROR', /closed/);
  });

  it.each([false, true])('loops on short vectored reads and writes, one loop with pread/pwrite (syncIo %s)', async (syncIo) => {
    const p = path.join(tempDir(), 'shortv.img');
    const f = await LocalHostFile.open(p, { create: true, syncIo });
    const CAP = 1000;
    type Cb = (err: NodeJS.ErrnoException | null, n: number) => void;
    const capped = (bufs: Uint8Array[]) => sliceBuffers(bufs, 0, Math.min(CAP, totalBytesOf(bufs)));
    const realWritev = fs.writev as unknown as (...a: unknown[]) => void;
    const realReadv = fs.readv as unknown as (...a: unknown[]) => void;
    const realWritevSync = fs.writevSync as unknown as (...a: unknown[]) => number;
    const realReadvSync = fs.readvSync as unknown as (...a: unknown[]) => number;
    const realWrite = fs.write as unknown as (...a: unknown[]) => void;
    const realRead = fs.read as unknown as (...a: unknown[]) => void;
    const realWriteSync = fs.writeSync as unknown as (...a: unknown[]) => number;
    const realReadSync = fs.readSync as unknown as (...a: unknown[]) => number;
    // What is left after a short call may be one buffer: then pread/pwrite go on (capped too).
    vi.spyOn(fs, 'write').mockImplementation(((fd: number, b: Uint8Array, o: number, l: number, pos: number, cb: Cb) =>
      realWrite(fd, b, o, Math.min(l, CAP), pos, cb)) as never);
    vi.spyOn(fs, 'read').mockImplementation(((fd: number, b: Uint8Array, o: number, l: number, pos: number, cb: Cb) =>
      realRead(fd, b, o, Math.min(l, CAP), pos, cb)) as never);
    vi.spyOn(fs, 'writeSync').mockImplementation(((fd: number, b: Uint8Array, o: number, l: number, pos: number) =>
      realWriteSync(fd, b, o, Math.min(l, CAP), pos)) as never);
    vi.spyOn(fs, 'readSync').mockImplementation(((fd: number, b: Uint8Array, o: number, l: number, pos: number) =>
      realReadSync(fd, b, o, Math.min(l, CAP), pos)) as never);
    [
      vi.spyOn(fs, 'writev').mockImplementation(((fd: number, b: Uint8Array[], pos: number, cb: Cb) => realWritev(fd, capped(b), pos, cb)) as never),
      vi.spyOn(fs, 'readv').mockImplementation(((fd: number, b: Uint8Array[], pos: number, cb: Cb) => realReadv(fd, capped(b), pos, cb)) as never),
      vi.spyOn(fs, 'writevSync').mockImplementation(((fd: number, b: Uint8Array[], pos: number) => realWritevSync(fd, capped(b), pos)) as never),
      vi.spyOn(fs, 'readvSync').mockImplementation(((fd: number, b: Uint8Array[], pos: number) => realReadvSync(fd, capped(b), pos)) as never),
    ];
    const data = new SeededRandom(8).fill(new Uint8Array(4500));
    // Pieces of 700, 1800, 2000 bytes: each capped call ends inside a different piece.
    await f.pwritev([data.subarray(0, 700), data.subarray(700, 2500), data.subarray(2500)], 100);
    const back = new Uint8Array(6000).fill(0xff);
    expect(await f.preadv([back.subarray(0, 2500), back.subarray(2500)], 100)).toBe(4500);
    expect(back.subarray(0, 4500)).toEqual(data);
    expect(back.subarray(4500).every((b) => b === 0)).toBe(true); // past the end: zeroes
    const count = (fn: unknown) => vi.mocked(fn as (...a: unknown[]) => unknown).mock.calls.length;
    const calls = (name: 'write' | 'read' | 'writev' | 'readv') => count(fs[syncIo ? (`${name}Sync` as const) : name]);
    expect(calls('writev')).toBeGreaterThan(1);
    expect(calls('writev') + calls('write')).toBe(5);
    expect(calls('readv') + calls('read')).toBe(6); // 5 short + EOF
    vi.restoreAllMocks();
    await f.close();
    expect(fs.readFileSync(p).subarray(100)).toEqual(Buffer.from(data));
  });

  it.each([false, true])('fails a write that makes no progress with IO_ERROR (syncIo %s)', async (syncIo) => {
    const f = await LocalHostFile.open(path.join(tempDir(), 'stuck.img'), { create: true, syncIo });
    type Cb = (err: NodeJS.ErrnoException | null, n: number) => void;
    vi.spyOn(fs, 'write').mockImplementation(((...args: unknown[]) => setImmediate(() => (args[args.length - 1] as Cb)(null, 0))) as never);
    vi.spyOn(fs, 'writev').mockImplementation(((...args: unknown[]) => setImmediate(() => (args[args.length - 1] as Cb)(null, 0))) as never);
    vi.spyOn(fs, 'writeSync').mockImplementation((() => 0) as never);
    vi.spyOn(fs, 'writevSync').mockImplementation((() => 0) as never);
    await rejectsWith(f.pwrite(new Uint8Array(10), 0), 'IO_ERROR', /pwrite of 10 bytes at 0 to .*stuck\.img: write made no progress/);
    await rejectsWith(f.pwritev([new Uint8Array(10), new Uint8Array(6)], 4), 'IO_ERROR', /pwritev of 16 bytes in 2 buffers at 4 to .*: write made no progress/);
    vi.restoreAllMocks();
    await f.close();
  });

  it('turns write errors into StorageErrors (ENOSPC -> NO_SPACE)', async () => {
    const f = await LocalHostFile.open(path.join(tempDir(), 'e.img'), { create: true });
    vi.spyOn(fs, 'write').mockImplementation(((...args: unknown[]) => {
      const cb = args[args.length - 1] as (err: Error) => void;
      setImmediate(() => cb(Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' })));
    }) as never);
    await rejectsWith(f.pwrite(new Uint8Array(10), 0), 'NO_SPACE', /pwrite of 10 bytes at 0 to .*e\.img: no space left/);
    vi.restoreAllMocks();
    await f.close();
  });

  it('falls back to writing zeroes when the filesystem cannot punch holes', async () => {
    const p = path.join(tempDir(), 'z.img');
    const f = await LocalHostFile.open(p, { create: true });
    (f as unknown as { punchUnsupported: boolean }).punchUnsupported = true;
    await f.pwrite(new Uint8Array(3 * 1024 * 1024 + 10).fill(5), 0);
    await f.punchHole(10, 3 * 1024 * 1024 - 20);
    await f.punchHole(3 * 1024 * 1024, 1024 * 1024); // past the end: only the 10 bytes inside
    expect(await f.sizeBytes()).toBe(3 * 1024 * 1024 + 10);
    await f.close();
    const bytes = fs.readFileSync(p);
    expect(bytes.subarray(0, 10).every((b) => b === 5)).toBe(true);
    expect(bytes.subarray(10, 3 * 1024 * 1024 - 10).every((b) => b === 0)).toBe(true);
    expect(bytes.subarray(3 * 1024 * 1024 - 10, 3 * 1024 * 1024).every((b) => b === 5)).toBe(true);
    expect(bytes.subarray(3 * 1024 * 1024).every((b) => b === 0)).toBe(true);
  });
});
