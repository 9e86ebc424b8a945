/**
 * Reads through shared mappings of a file in memory (src/sys/mapped-file.ts) and LocalHostFile's
 * use of them on tmpfs: the bytes agree with the file's, also after pwrites; a range the mapping
 * cannot take safely (a hole, past the end, across a window, too large) is refused with nothing
 * copied; writes never go through it; and a large read of a hole in a full tmpfs reads zeroes
 * through LocalHostFile instead of killing the process with SIGBUS.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { LocalHostFile } from '../../src/store/local-file.js';
import { SeededRandom } from '../../src/store/seeded-random.js';
import { MAPPED_READ_MAX_BYTES, MAPPED_WINDOW_BYTES, MappedFile } from '../../src/sys/mapped-file.js';
import { PAGE_BYTES } from '../../src/sys/libc.js';
import { fillUp, mountSmallTmpfs, unmountSmallTmpfs } from '../support/fill-filesystem.js';
import { shmAvailable, shmTempDir } from '../support/tmp.js';

const MiB = 1024 * 1024;

/** Byte-equal (vitest's deep equality walks a MiB array element by element, for seconds). */
function expectSameBytes(actual: Uint8Array, expected: Uint8Array): void {
  expect(actual.length).toBe(expected.length);
  expect(Buffer.compare(actual, expected), 'bytes differ').toBe(0);
}

function random(seed: number, lengthBytes: number): Uint8Array {
  return new SeededRandom(seed).fill(new Uint8Array(lengthBytes));
}

/** A file in /dev/shm holding `contents` at offset 0, open read-write (or read-only); closed after the test. */
function shmFile(contents: Uint8Array, flags = 'r+'): { fd: number; p: string } {
  const p = path.join(shmTempDir(), 'f.img');
  fs.writeFileSync(p, contents);
  const fd = fs.openSync(p, flags);
  opened.push(fd);
  return { fd, p };
}

const opened: number[] = [];
const mappings: MappedFile[] = [];
afterEach(() => {
  for (const m of mappings.splice(0)) m.close();
  for (const fd of opened.splice(0)) fs.closeSync(fd);
  vi.restoreAllMocks();
});

function mapped(fd: number): MappedFile {
  const m = new MappedFile(fd);
  mappings.push(m);
  return m;
}

describe.skipIf(!shmAvailable())('MappedFile', () => {
  it('reads resident pages over several buffers, and sees what pwrite wrote since', () => {
    const before = random(1, 4 * MiB);
    const { fd } = shmFile(before);
    const file = mapped(fd);

    // Unaligned, over several buffers back to back.
    const parts = [new Uint8Array(1000), new Uint8Array(MiB), new Uint8Array(3)];
    expect(file.read(parts, 12_345, 1000 + MiB + 3)).toBe(true);
    expectSameBytes(Buffer.concat(parts), before.subarray(12_345, 12_345 + 1000 + MiB + 3));

    const later = random(4, 64 * 1024);
    fs.writeSync(fd, later, 0, later.length, 100);
    const back = new Uint8Array(later.length);
    expect(file.read([back], 100, back.length)).toBe(true);
    expectSameBytes(back, later);
  });

  it('refuses a range with a hole or past the end of the file, copying nothing', () => {
    const { fd } = shmFile(random(5, MiB));
    fs.ftruncateSync(fd, 3 * MiB); // [1 MiB, 3 MiB) is a hole: no pages
    const file = mapped(fd);
    const untouched = new Uint8Array(2 * MiB).fill(0xab);
    expect(file.read([untouched], MiB - PAGE_BYTES, 2 * PAGE_BYTES)).toBe(false);
    expect(untouched.every((b) => b === 0xab)).toBe(true);
    expect(fs.fstatSync(fd).blocks * 512).toBeLessThanOrEqual(MiB + 64 * 1024); // the hole was not filled
    expect(file.read([untouched.subarray(0, PAGE_BYTES)], 4 * MiB, PAGE_BYTES)).toBe(false);
    // The resident part still goes through.
    expect(file.read([untouched.subarray(0, PAGE_BYTES)], 0, PAGE_BYTES)).toBe(true);
  });

  it('refuses a range across two windows and one larger than a read may be; reads a file open read-only', () => {
    const { fd } = shmFile(new Uint8Array(0));
    // Pages either side of the first window's end, the file sparse below them.
    const edge = random(6, 2 * PAGE_BYTES);
    fs.writeSync(fd, edge, 0, edge.length, MAPPED_WINDOW_BYTES - PAGE_BYTES);
    const file = mapped(fd);
    const buf = new Uint8Array(2 * PAGE_BYTES);
    expect(file.read([buf], MAPPED_WINDOW_BYTES - PAGE_BYTES, buf.length)).toBe(false);
    expect(file.read([buf.subarray(0, PAGE_BYTES)], MAPPED_WINDOW_BYTES, PAGE_BYTES)).toBe(true);
    expectSameBytes(buf.subarray(0, PAGE_BYTES), edge.subarray(PAGE_BYTES));

    const big = shmFile(random(7, MAPPED_READ_MAX_BYTES + PAGE_BYTES));
    const bigFile = mapped(big.fd);
    expect(bigFile.read([new Uint8Array(MAPPED_READ_MAX_BYTES + PAGE_BYTES)], 0, MAPPED_READ_MAX_BYTES + PAGE_BYTES)).toBe(false);
    expect(bigFile.read([new Uint8Array(MAPPED_READ_MAX_BYTES)], 0, MAPPED_READ_MAX_BYTES)).toBe(true);

    const ro = shmFile(random(8, MiB), 'r');
    const roFile = mapped(ro.fd);
    const back = new Uint8Array(PAGE_BYTES);
    expect(roFile.read([back], 0, PAGE_BYTES)).toBe(true);
    expectSameBytes(back, random(8, MiB).subarray(0, PAGE_BYTES));
  });
});

describe.skipIf(!shmAvailable())('LocalHostFile on tmpfs through the mapping', () => {
  it('large reads go through the mapping; writes, holes and a shrunk file do not', async () => {
    const copy = vi.spyOn(MappedFile.prototype, 'read');
    const p = path.join(shmTempDir(), 'f.img');
    const file = await LocalHostFile.open(p, { create: true });
    try {
      const first = random(9, 4 * MiB);
      await file.pwrite(first, 0); // grows the file: the pool's path, not the mapping
      expect(copy).not.toHaveBeenCalled();
      const over = random(10, MiB);
      await file.pwrite(over, MiB); // an overwrite: pwrite too
      expect(copy).not.toHaveBeenCalled();
      first.set(over, MiB);
      const back = new Uint8Array(4 * MiB);
      expect(await file.pread(back, 0)).toBe(4 * MiB);
      expect(copy).toHaveLastReturnedWith(true);
      expectSameBytes(back, first);
      expectSameBytes(fs.readFileSync(p), first);

      await file.punchHole(2 * MiB, MiB);
      const holey = new Uint8Array(MiB).fill(0xcd);
      expect(await file.pread(holey, 2 * MiB - 4096)).toBe(MiB);
      expect(copy).toHaveLastReturnedWith(false);
      expectSameBytes(holey.subarray(0, 4096), first.subarray(2 * MiB - 4096, 2 * MiB));
      expect(holey.subarray(4096).every((b) => b === 0)).toBe(true);

      await file.truncate(MiB);
      const past = new Uint8Array(MiB).fill(0xcd);
      expect(await file.pread(past, MiB)).toBe(0);
      expect(past.every((b) => b === 0)).toBe(true);
    } finally {
      await file.close();
    }
  });

  it('STRATA_MAPPED_IO=0 keeps every request off the mapping', async () => {
    vi.stubEnv('STRATA_MAPPED_IO', '0');
    const copy = vi.spyOn(MappedFile.prototype, 'read');
    const p = path.join(shmTempDir(), 'f.img');
    fs.writeFileSync(p, random(11, 2 * MiB));
    const file = await LocalHostFile.open(p);
    try {
      await file.pwrite(random(12, MiB), 0);
      expect(await file.pread(new Uint8Array(MiB), MiB)).toBe(MiB);
      expect(copy).not.toHaveBeenCalled();
    } finally {
      await file.close();
      vi.unstubAllEnvs();
    }
  });

  // A page fault into a hole tmpfs cannot fill raises SIGBUS; the residency check must send such
  // a read to pread, which reads zeroes. Mounting needs root (skipped elsewhere, not under CI).
  it('a large read of a hole in a full tmpfs reads zeroes; resident pages still read through the mapping', async () => {
    const mnt = path.join(shmTempDir(), 'small');
    if (!mountSmallTmpfs(mnt, 8 * MiB)) return;
    let file: LocalHostFile | undefined;
    try {
      const p = path.join(mnt, 'f.img');
      const data = random(13, 2 * MiB);
      fs.writeFileSync(p, data);
      fs.truncateSync(p, 6 * MiB); // [2 MiB, 6 MiB): a hole
      file = await LocalHostFile.open(p);
      fillUp(path.join(mnt, 'filler'));
      const hole = new Uint8Array(MiB).fill(0xcd);
      expect(await file.pread(hole, 3 * MiB)).toBe(MiB);
      expect(hole.every((b) => b === 0)).toBe(true);
      const back = new Uint8Array(MiB);
      expect(await file.pread(back, MiB)).toBe(MiB);
      expectSameBytes(back, data.subarray(MiB));
    } finally {
      await file?.close();
      unmountSmallTmpfs(mnt);
    }
  });
});
