/**
 * Copies through shared mappings of a file in memory (src/sys/mapped-file.ts) and LocalHostFile's
 * use of them on tmpfs: the bytes agree with pread/pwrite both ways; a range the mapping cannot
 * take safely (a hole, past the end, across a window, too large, a write to a read-only file) is
 * refused with nothing copied; and a write into a hole of a full tmpfs fails NO_SPACE through
 * LocalHostFile instead of killing the process with SIGBUS.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { isStorageError } from '../../src/core/errors.js';
import { LocalHostFile } from '../../src/store/local-file.js';
import { SeededRandom } from '../../src/store/seeded-random.js';
import { MAPPED_COPY_MAX_BYTES, MAPPED_WINDOW_BYTES, MappedFile } from '../../src/sys/mapped-file.js';
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

function mapped(fd: number, readOnly = false): MappedFile {
  const m = new MappedFile(fd, readOnly);
  mappings.push(m);
  return m;
}

describe.skipIf(!shmAvailable())('MappedFile', () => {
  it('reads and writes resident pages, coherent with pread and pwrite both ways', () => {
    const before = random(1, 4 * MiB);
    const { fd, p } = shmFile(before);
    const file = mapped(fd);

    // Unaligned, over several buffers back to back.
    const parts = [new Uint8Array(1000), new Uint8Array(MiB), new Uint8Array(3)];
    expect(file.copy(false, parts, 12_345, 1000 + MiB + 3)).toBe(true);
    expectSameBytes(Buffer.concat(parts), before.subarray(12_345, 12_345 + 1000 + MiB + 3));

    const written = [random(2, 5000), random(3, MiB)];
    expect(file.copy(true, written, 2 * MiB - 77, 5000 + MiB)).toBe(true);
    const expected = Buffer.from(before);
    Buffer.from(written[0]!).copy(expected, 2 * MiB - 77);
    Buffer.from(written[1]!).copy(expected, 2 * MiB - 77 + 5000);
    expectSameBytes(fs.readFileSync(p), expected);

    // A pwrite is seen by the next copy out.
    const later = random(4, 64 * 1024);
    fs.writeSync(fd, later, 0, later.length, 100);
    const back = new Uint8Array(later.length);
    expect(file.copy(false, [back], 100, back.length)).toBe(true);
    expectSameBytes(back, later);
  });

  it('refuses a range with a hole or past the end of the file, copying nothing', () => {
    const { fd } = shmFile(random(5, MiB));
    fs.ftruncateSync(fd, 3 * MiB); // [1 MiB, 3 MiB) is a hole: no pages
    const file = mapped(fd);
    const untouched = new Uint8Array(2 * MiB).fill(0xab);
    expect(file.copy(false, [untouched], MiB - PAGE_BYTES, 2 * PAGE_BYTES)).toBe(false);
    expect(untouched.every((b) => b === 0xab)).toBe(true);
    expect(file.copy(true, [untouched.subarray(0, PAGE_BYTES)], 2 * MiB, PAGE_BYTES)).toBe(false);
    expect(fs.fstatSync(fd).blocks * 512).toBeLessThanOrEqual(MiB + 64 * 1024); // the hole was not filled
    expect(file.copy(false, [untouched.subarray(0, PAGE_BYTES)], 4 * MiB, PAGE_BYTES)).toBe(false);
    // The resident part still goes through.
    expect(file.copy(false, [untouched.subarray(0, PAGE_BYTES)], 0, PAGE_BYTES)).toBe(true);
  });

  it('refuses a range across two windows, one larger than a copy may be, and writes to a read-only file', () => {
    const { fd } = shmFile(new Uint8Array(0));
    // Pages either side of the first window's end, the file sparse below them.
    const edge = random(6, 2 * PAGE_BYTES);
    fs.writeSync(fd, edge, 0, edge.length, MAPPED_WINDOW_BYTES - PAGE_BYTES);
    const file = mapped(fd);
    const buf = new Uint8Array(2 * PAGE_BYTES);
    expect(file.copy(false, [buf], MAPPED_WINDOW_BYTES - PAGE_BYTES, buf.length)).toBe(false);
    expect(file.copy(false, [buf.subarray(0, PAGE_BYTES)], MAPPED_WINDOW_BYTES, PAGE_BYTES)).toBe(true);
    expectSameBytes(buf.subarray(0, PAGE_BYTES), edge.subarray(PAGE_BYTES));

    const big = shmFile(random(7, MAPPED_COPY_MAX_BYTES + PAGE_BYTES));
    const bigFile = mapped(big.fd);
    expect(bigFile.copy(false, [new Uint8Array(MAPPED_COPY_MAX_BYTES + PAGE_BYTES)], 0, MAPPED_COPY_MAX_BYTES + PAGE_BYTES)).toBe(false);
    expect(bigFile.copy(false, [new Uint8Array(MAPPED_COPY_MAX_BYTES)], 0, MAPPED_COPY_MAX_BYTES)).toBe(true);

    const ro = shmFile(random(8, MiB), 'r');
    const roFile = mapped(ro.fd, true);
    expect(roFile.copy(true, [new Uint8Array(PAGE_BYTES)], 0, PAGE_BYTES)).toBe(false);
    const back = new Uint8Array(PAGE_BYTES);
    expect(roFile.copy(false, [back], 0, PAGE_BYTES)).toBe(true);
    expectSameBytes(back, random(8, MiB).subarray(0, PAGE_BYTES));
  });
});

describe.skipIf(!shmAvailable())('LocalHostFile on tmpfs through the mapping', () => {
  it('large reads and overwrites go through the mapping; growing writes, holes and a shrunk file do not', async () => {
    const copy = vi.spyOn(MappedFile.prototype, 'copy');
    const p = path.join(shmTempDir(), 'f.img');
    const file = await LocalHostFile.open(p, { create: true });
    try {
      const first = random(9, 4 * MiB);
      await file.pwrite(first, 0); // grows the file: the pool's path, not the mapping
      expect(copy).not.toHaveBeenCalled();
      const over = random(10, MiB);
      await file.pwrite(over, MiB);
      expect(copy).toHaveLastReturnedWith(true);
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
    const copy = vi.spyOn(MappedFile.prototype, 'copy');
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
  // a write to pwrite, which answers ENOSPC. Mounting needs root (skipped elsewhere, not under CI).
  it('a large write into a hole of a full tmpfs fails NO_SPACE; overwrites of pages it has still succeed', async () => {
    const mnt = path.join(shmTempDir(), 'small');
    if (!mountSmallTmpfs(mnt, 8 * MiB)) return;
    let file: LocalHostFile | undefined;
    try {
      const p = path.join(mnt, 'f.img');
      fs.writeFileSync(p, random(13, 2 * MiB));
      fs.truncateSync(p, 6 * MiB); // [2 MiB, 6 MiB): a hole
      file = await LocalHostFile.open(p);
      fillUp(path.join(mnt, 'filler'));
      const err = await file.pwrite(random(14, MiB), 3 * MiB).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isStorageError(err) && err.code).toBe('NO_SPACE');
      const over = random(15, MiB);
      await file.pwrite(over, MiB);
      const back = new Uint8Array(MiB);
      expect(await file.pread(back, MiB)).toBe(MiB);
      expectSameBytes(back, over);
    } finally {
      await file?.close();
      unmountSmallTmpfs(mnt);
    }
  });
});
