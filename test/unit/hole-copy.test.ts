/**
 * Writes that grow a tmpfs file copied into its holes with UFFDIO_COPY (src/sys/hole-copy.ts,
 * src/store/hole-copy-writes.ts): the bytes land where pwrite would put them (also from
 * subarrays and across a mapping window); a page the file already has, the file's end and an
 * unaligned range stop a copy with what went in counted; LocalHostFile's growing writes take this
 * way at depth, and what a copy leaves goes by pwrite; a full tmpfs refuses with NO_SPACE and
 * keeps what was written; a process SIGKILLed amid such writes leaves every sector old or new.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { LocalHostFile } from '../../src/store/local-file.js';
import { HoleCopyWrites } from '../../src/store/hole-copy-writes.js';
import { FILE_WINDOW_BYTES } from '../../src/sys/file-windows.js';
import { HoleCopier } from '../../src/sys/hole-copy.js';
import { PAGE_BYTES } from '../../src/sys/libc.js';
import { expectSameBytes, readFileAt, seededBytes } from '../support/bytes.js';
import { killWhenPrinted } from '../support/kill-points.js';
import { fillUp, mountSmallTmpfs, unmountSmallTmpfs } from '../support/fill-filesystem.js';
import { shmAvailable, shmTempDir } from '../support/tmp.js';

const MiB = 1024 * 1024;
const SECTOR_BYTES = 512;


const opened: number[] = [];
const copiers: HoleCopier[] = [];
afterEach(() => {
  for (const c of copiers.splice(0)) c.close();
  for (const fd of opened.splice(0)) fs.closeSync(fd);
  vi.restoreAllMocks();
  vi.unstubAllEnvs();
});

/** A new file in /dev/shm of sizeBytes (all hole), open read-write, and a copier for it. */
function holeyFile(sizeBytes: number): { fd: number; p: string; copier: HoleCopier } {
  const p = path.join(shmTempDir(), 'f.img');
  const fd = fs.openSync(p, 'w+');
  opened.push(fd);
  fs.ftruncateSync(fd, sizeBytes);
  const copier = HoleCopier.open(fd);
  if (copier === null) throw new Error('userfaultfd refused here: this suite needs Linux 5.11+ without a seccomp filter on it');
  copiers.push(copier);
  return { fd, p, copier };
}

describe.skipIf(!shmAvailable())('HoleCopier', () => {
  it('copies whole pages into holes, from a subarray, and across two windows', async () => {
    const { fd, copier } = holeyFile(FILE_WINDOW_BYTES + 4 * MiB);
    const backing = seededBytes(1, 2 * MiB + 3 * PAGE_BYTES);
    const src = backing.subarray(3 * PAGE_BYTES, 3 * PAGE_BYTES + 2 * MiB); // not at its buffer's start
    expect(await copier.copy(src, MiB)).toBe(2 * MiB);
    expectSameBytes(readFileAt(fd, MiB, 2 * MiB), src);
    expect(readFileAt(fd, 0, MiB).every((b) => b === 0)).toBe(true);

    const across = seededBytes(2, 4 * PAGE_BYTES);
    const at = FILE_WINDOW_BYTES - 2 * PAGE_BYTES;
    expect(await copier.copy(across, at)).toBe(across.length);
    expectSameBytes(readFileAt(fd, at, across.length), across);
    // The pages are in the file (allocated), not only in this process's mapping.
    expect(fs.fstatSync(fd).blocks * 512).toBeGreaterThanOrEqual(2 * MiB + across.length);
  });

  it('stops at a page the file has, at its end, and refuses what is not whole pages', async () => {
    const { fd, copier } = holeyFile(4 * MiB);
    const there = seededBytes(3, PAGE_BYTES);
    fs.writeSync(fd, there, 0, PAGE_BYTES, 2 * PAGE_BYTES);
    const src = seededBytes(4, 8 * PAGE_BYTES);
    expect(await copier.copy(src, 0)).toBe(2 * PAGE_BYTES); // the two pages before it
    expectSameBytes(readFileAt(fd, 0, 2 * PAGE_BYTES), src.subarray(0, 2 * PAGE_BYTES));
    expectSameBytes(readFileAt(fd, 2 * PAGE_BYTES, PAGE_BYTES), there); // never overwritten

    expect(await copier.copy(src, 4 * MiB - 4 * PAGE_BYTES)).toBe(4 * PAGE_BYTES); // up to the end
    expect(fs.fstatSync(fd).size).toBe(4 * MiB); // and the file did not grow
    expect(await copier.copy(src, 5 * MiB)).toBe(0);
    expect(await copier.copy(src.subarray(0, 1000), MiB)).toBe(0);
    expect(await copier.copy(src, MiB + 512)).toBe(0);
    expect(readFileAt(fd, MiB, PAGE_BYTES).every((b) => b === 0)).toBe(true);
  });
});

describe.skipIf(!shmAvailable())('LocalHostFile: growing writes by hole copy', () => {
  it('at depth 32, over several buffers each, lands every byte; overwrites and small writes keep pwrite', async () => {
    const copy = vi.spyOn(HoleCopier.prototype, 'copy');
    const p = path.join(shmTempDir(), 'f.img');
    const file = await LocalHostFile.open(p, { create: true });
    try {
      const writes = 64;
      const expected = new Uint8Array(writes * MiB);
      const pending: Array<Promise<void>> = [];
      for (let i = 0; i < writes; i++) {
        const data = seededBytes(100 + i, MiB);
        expected.set(data, i * MiB);
        // Three buffers back to back, as a guest request over segments of its memory.
        const parts = [data.subarray(0, 256 * 1024), data.subarray(256 * 1024, 768 * 1024), data.subarray(768 * 1024)];
        pending.push(file.pwritev(parts, i * MiB));
        if (pending.length === 32) await pending.shift();
      }
      await Promise.all(pending);
      expect(copy).toHaveBeenCalled();
      expect(fs.statSync(p).size).toBe(writes * MiB);
      expectSameBytes(fs.readFileSync(p), expected);

      copy.mockClear();
      const over = seededBytes(5, MiB);
      await file.pwrite(over, 10 * MiB);
      await file.pwrite(seededBytes(6, 4096), (writes + 1) * MiB); // small: the synchronous path
      expect(copy).not.toHaveBeenCalled();
      expectSameBytes(readFileAt(fs.openSync(p, 'r'), 10 * MiB, MiB), over);
    } finally {
      await file.close();
    }
  });

  it('what a copy leaves (pages the file has) goes by pwrite; STRATA_HOLE_COPY=0 keeps the pool', async () => {
    const p = path.join(shmTempDir(), 'f.img');
    // Pages scattered past the size LocalHostFile knows: it takes the write for a growing one.
    const file = await LocalHostFile.open(p, { create: true });
    const fd = fs.openSync(p, 'r+');
    opened.push(fd);
    try {
      for (const at of [8 * PAGE_BYTES, 100 * PAGE_BYTES]) fs.writeSync(fd, new Uint8Array(PAGE_BYTES).fill(9), 0, PAGE_BYTES, MiB + at);
      const rest = vi.spyOn(HoleCopyWrites.prototype as unknown as { leftover: () => Promise<void> }, 'leftover');
      const data = seededBytes(7, MiB);
      await file.pwrite(data, MiB);
      expect(rest).toHaveBeenCalled();
      expectSameBytes(readFileAt(fd, MiB, MiB), data);
    } finally {
      await file.close();
    }

    vi.stubEnv('STRATA_HOLE_COPY', '0');
    const copy = vi.spyOn(HoleCopier.prototype, 'copy');
    const q = path.join(shmTempDir(), 'g.img');
    const other = await LocalHostFile.open(q, { create: true });
    try {
      const data = seededBytes(8, 2 * MiB);
      await other.pwrite(data, 0);
      expect(copy).not.toHaveBeenCalled();
      expectSameBytes(fs.readFileSync(q), data);
    } finally {
      await other.close();
    }
  });

  // Mounting needs root (skipped elsewhere, not under CI).
  it('on a full tmpfs a growing write fails with NO_SPACE and what was written stays', async () => {
    const mnt = path.join(shmTempDir(), 'small');
    if (!mountSmallTmpfs(mnt, 8 * MiB)) return;
    let file: LocalHostFile | undefined;
    try {
      const p = path.join(mnt, 'f.img');
      file = await LocalHostFile.open(p, { create: true });
      const first = seededBytes(9, 2 * MiB);
      await file.pwrite(first, 0);
      fillUp(path.join(mnt, 'filler'));
      await expect(file.pwrite(seededBytes(10, 2 * MiB), 2 * MiB)).rejects.toMatchObject({ code: 'NO_SPACE' });
      const back = new Uint8Array(2 * MiB);
      expect(await file.pread(back, 0)).toBe(2 * MiB);
      expectSameBytes(back, first);
    } finally {
      await file?.close();
      unmountSmallTmpfs(mnt);
    }
  });
});

/**
 * A child writes growing 1 MiB writes at depth 16 through LocalHostFile, each sector of write i
 * filled with a pattern naming (i, sector); it is SIGKILLed while they run. Every sector of the
 * file is then zeroes (never written) or exactly its pattern: pages go in whole.
 */
describe.skipIf(!shmAvailable())('growing writes by hole copy, killed', () => {
  it('leave every sector old or new', async () => {
    const dir = shmTempDir();
    const p = path.join(dir, 'f.img');
    const writes = 400;
    const script = `
      import { LocalHostFile } from ${JSON.stringify(path.resolve('dist/src/store/local-file.js'))};
      const file = await LocalHostFile.open(${JSON.stringify(p)}, { create: true });
      const pending = [];
      for (let i = 0; i < ${writes}; i++) {
        const data = new Uint8Array(${MiB});
        const view = new DataView(data.buffer);
        for (let s = 0; s < ${MiB / SECTOR_BYTES}; s++) for (let w = 0; w < ${SECTOR_BYTES / 4}; w++) view.setUint32(s * ${SECTOR_BYTES} + w * 4, (i * 4096 + s) * 131 + w + 1, true);
        pending.push(file.pwrite(data, i * ${MiB}));
        if (i === 40) process.stdout.write('go\\n');
        if (pending.length === 16) await pending.shift();
      }
      await Promise.all(pending);
      process.stdout.write('done\\n');
    `;
    await killWhenPrinted(script, 'go');

    const file = fs.readFileSync(p);
    const view = new DataView(file.buffer, file.byteOffset, file.length);
    let written = 0;
    for (let at = 0; at + SECTOR_BYTES <= file.length; at += SECTOR_BYTES) {
      const i = Math.floor(at / MiB);
      const s = (at % MiB) / SECTOR_BYTES;
      const first = view.getUint32(at, true);
      if (first === 0) {
        expect(file.subarray(at, at + SECTOR_BYTES).every((b) => b === 0), `sector ${at / SECTOR_BYTES} torn`).toBe(true);
        continue;
      }
      written++;
      for (let w = 0; w < SECTOR_BYTES / 4; w++) {
        const value = view.getUint32(at + w * 4, true);
        if (value !== ((i * 4096 + s) * 131 + w + 1) >>> 0) expect.fail(`sector ${at / SECTOR_BYTES} torn at word ${w}`);
      }
    }
    expect(written).toBeGreaterThan(0);
  }, 60_000);
});
