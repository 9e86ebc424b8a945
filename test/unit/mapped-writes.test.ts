/**
 * Overwrites of a tmpfs file copied by the kernel into a shared mapping (src/sys/mapped-writes.ts,
 * src/store/mapped-overwrites.ts): the bytes land where pwrite would put them, from several
 * buffers; past the end of the file and across two windows the copy stops with what went in
 * counted, never with SIGBUS; LocalHostFile's large overwrites take this way and what a copy
 * leaves goes by pwrite (a file shortened behind its back is extended again, a hole in a full
 * tmpfs is NO_SPACE); a process SIGKILLed amid such overwrites leaves every sector whole.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { LocalHostFile } from '../../src/store/local-file.js';
import { PAGE_BYTES } from '../../src/sys/libc.js';
import { FILE_WINDOW_BYTES } from '../../src/sys/file-windows.js';
import { MappedWriter } from '../../src/sys/mapped-writes.js';
import { expectSameBytes, readFileAt, seededBytes } from '../support/bytes.js';
import { killWhenPrinted } from '../support/kill-points.js';
import { fillUp, mountSmallTmpfs, unmountSmallTmpfs } from '../support/fill-filesystem.js';
import { shmAvailable, shmTempDir } from '../support/tmp.js';

const MiB = 1024 * 1024;
const SECTOR_BYTES = 512;


const opened: number[] = [];
const writers: MappedWriter[] = [];
afterEach(() => {
  for (const w of writers.splice(0)) w.close();
  for (const fd of opened.splice(0)) fs.closeSync(fd);
  vi.restoreAllMocks();
});

function shmFile(contents: Uint8Array): { fd: number; p: string; writer: MappedWriter } {
  const p = path.join(shmTempDir(), 'f.img');
  fs.writeFileSync(p, contents);
  const fd = fs.openSync(p, 'r+');
  opened.push(fd);
  const writer = MappedWriter.open(fd);
  if (writer === null) throw new Error('process_vm_writev cannot be bound here (this suite needs glibc Linux x86-64)');
  writers.push(writer);
  return { fd, p, writer };
}

describe.skipIf(!shmAvailable())('MappedWriter', () => {
  it('writes several buffers back to back at any offset, and fills a hole inside the file', async () => {
    const { fd, writer } = shmFile(seededBytes(1, 4 * MiB));
    const backing = seededBytes(2, MiB + 5000);
    const parts = [backing.subarray(7, 1007), backing.subarray(1007, 1007 + MiB), backing.subarray(1007 + MiB, 1010 + MiB)];
    const length = 1000 + MiB + 3;
    expect(await writer.write(parts, 12_345, length)).toBe(length);
    expectSameBytes(readFileAt(fd, 12_345, length), backing.subarray(7, 7 + length));

    fs.ftruncateSync(fd, 6 * MiB); // [4 MiB, 6 MiB): a hole
    const into = seededBytes(3, MiB);
    expect(await writer.write([into], 4 * MiB + PAGE_BYTES, MiB)).toBe(MiB);
    expectSameBytes(readFileAt(fd, 4 * MiB + PAGE_BYTES, MiB), into);
  });

  it('stops at the end of the file (EFAULT, not SIGBUS) and refuses a range across two windows', async () => {
    const { fd, writer } = shmFile(seededBytes(4, MiB));
    const data = seededBytes(5, 64 * 1024);
    expect(await writer.write([data], 2 * MiB, data.length)).toBe(0);
    expect(await writer.write([data], MiB - PAGE_BYTES, data.length)).toBe(PAGE_BYTES);
    expectSameBytes(readFileAt(fd, MiB - PAGE_BYTES, PAGE_BYTES), data.subarray(0, PAGE_BYTES));
    expect(fs.fstatSync(fd).size).toBe(MiB);

    fs.ftruncateSync(fd, FILE_WINDOW_BYTES + MiB);
    expect(await writer.write([data], FILE_WINDOW_BYTES - PAGE_BYTES, data.length)).toBe(0);
    expect(await writer.write([data], FILE_WINDOW_BYTES, data.length)).toBe(data.length);
    expectSameBytes(readFileAt(fd, FILE_WINDOW_BYTES, data.length), data);
  });
});

describe.skipIf(!shmAvailable())('LocalHostFile: large overwrites through the mapping', () => {
  it('take the kernel copy at depth; a file shortened behind its back gets the rest by pwrite', async () => {
    const write = vi.spyOn(MappedWriter.prototype, 'write');
    const p = path.join(shmTempDir(), 'f.img');
    const expected = seededBytes(6, 32 * MiB);
    fs.writeFileSync(p, expected);
    const file = await LocalHostFile.open(p);
    try {
      const pending: Array<Promise<void>> = [];
      for (let i = 0; i < 32; i++) {
        const data = seededBytes(100 + i, MiB);
        expected.set(data, i * MiB);
        pending.push(file.pwritev([data.subarray(0, 300 * 1024), data.subarray(300 * 1024)], i * MiB));
      }
      await Promise.all(pending);
      expect(write).toHaveBeenCalledTimes(32);
      expectSameBytes(fs.readFileSync(p), expected);

      fs.truncateSync(p, 8 * MiB); // the file object still believes 32 MiB
      const late = seededBytes(7, MiB);
      await file.pwrite(late, 16 * MiB);
      expect(write).toHaveLastResolvedWith(0);
      expect(fs.statSync(p).size).toBe(17 * MiB);
      expectSameBytes(readFileAt(fs.openSync(p, 'r'), 16 * MiB, MiB), late);
    } finally {
      await file.close();
    }
  });

  // Mounting needs root (skipped elsewhere, not under CI).
  it('an overwrite into a hole of a full tmpfs fails with NO_SPACE and keeps the rest', async () => {
    const mnt = path.join(shmTempDir(), 'small');
    if (!mountSmallTmpfs(mnt, 8 * MiB)) return;
    let file: LocalHostFile | undefined;
    try {
      const p = path.join(mnt, 'f.img');
      const data = seededBytes(8, 2 * MiB);
      fs.writeFileSync(p, data);
      fs.truncateSync(p, 4 * MiB); // [2 MiB, 4 MiB): a hole inside the file
      file = await LocalHostFile.open(p);
      fillUp(path.join(mnt, 'filler'));
      await expect(file.pwrite(seededBytes(9, MiB), 2 * MiB)).rejects.toMatchObject({ code: 'NO_SPACE' });
      const over = seededBytes(10, MiB);
      await file.pwrite(over, 0); // pages the file has: no allocation needed
      data.set(over, 0);
      const back = new Uint8Array(2 * MiB);
      expect(await file.pread(back, 0)).toBe(2 * MiB);
      expectSameBytes(back, data);
    } finally {
      await file?.close();
      unmountSmallTmpfs(mnt);
    }
  });
});

/**
 * A child overwrites a 64 MiB file again and again in 1 MiB writes at depth 8, each sector of
 * generation g holding words that name (g, sector); it is SIGKILLed while they run. Every sector
 * is then one generation's whole: the kernel copies pages whole.
 */
describe.skipIf(!shmAvailable())('large overwrites through the mapping, killed', () => {
  it('leave every sector one generation whole', async () => {
    const p = path.join(shmTempDir(), 'f.img');
    const fileBytes = 64 * MiB;
    fs.writeFileSync(p, new Uint8Array(fileBytes));
    const script = `
      import { LocalHostFile } from ${JSON.stringify(path.resolve('dist/src/store/local-file.js'))};
      const file = await LocalHostFile.open(${JSON.stringify(p)});
      const pending = [];
      for (let n = 0; ; n++) {
        const g = n + 1, at = (n % 64) * ${MiB};
        const data = new Uint8Array(${MiB});
        const view = new DataView(data.buffer);
        for (let s = 0; s < ${MiB / SECTOR_BYTES}; s++) for (let w = 0; w < ${SECTOR_BYTES / 4}; w++) view.setUint32(s * ${SECTOR_BYTES} + w * 4, g * 65536 + w, true);
        pending.push(file.pwrite(data, at));
        if (n === 100) process.stdout.write('go\\n');
        if (pending.length === 8) await pending.shift();
      }
    `;
    await killWhenPrinted(script, 'go');

    const file = fs.readFileSync(p);
    const view = new DataView(file.buffer, file.byteOffset, file.length);
    for (let at = 0; at < file.length; at += SECTOR_BYTES) {
      const g = Math.floor(view.getUint32(at, true) / 65536);
      expect(g, `sector ${at / SECTOR_BYTES} was never written`).toBeGreaterThan(0);
      for (let w = 0; w < SECTOR_BYTES / 4; w++) {
        if (view.getUint32(at + w * 4, true) !== g * 65536 + w) expect.fail(`sector ${at / SECTOR_BYTES} torn at word ${w}`);
      }
    }
  }, 60_000);
});
