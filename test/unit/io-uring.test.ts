import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { LocalHostFile } from '../../src/store/local-file.js';
import { allocAligned } from '../../src/sys/aligned-buffer.js';
import { EBADF, EINVAL } from '../../src/sys/libc.js';
import { IO_URING_ENTRIES, IOVEC_SLAB_ENTRIES, ioUring, ringTakes } from '../../src/sys/io-uring.js';
import { shmTempDir } from '../support/tmp.js';

const MiB = 1024 * 1024;
const ring = ioUring();

/** Bytes whose every 4-byte word holds its own index times `seed` (cheap, and no two words of a file alike). */
function pattern(sizeBytes: number, seed: number): Uint8Array {
  const words = new Uint32Array(Math.ceil(sizeBytes / 4));
  for (let i = 0; i < words.length; i++) words[i] = (i * seed + 1) >>> 0;
  return new Uint8Array(words.buffer, 0, sizeBytes);
}

/** Byte equality without vitest's element-by-element diffing (slow on MiB arrays). */
function same(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length));
}

function ringRead(fd: number, bufs: Uint8Array[], offsetBytes: number): Promise<number> {
  return new Promise((resolve) => ring!.read(fd, bufs, offsetBytes, resolve));
}

function fileOf(bytes: Uint8Array): { p: string; fd: number } {
  const p = path.join(shmTempDir(), 'data.bin');
  fs.writeFileSync(p, bytes);
  return { p, fd: fs.openSync(p, 'r') };
}

// io_uring may be switched off (kernel.io_uring_disabled): then callers keep the thread pool.
describe.skipIf(ring === null)('io_uring reads', () => {
  it('reads into one buffer and into several, at their offsets', async () => {
    const data = pattern(4 * MiB, 7);
    const { fd } = fileOf(data);
    try {
      const one = allocAligned(MiB);
      expect(await ringRead(fd, [one], MiB)).toBe(MiB);
      expect(same(one, data.subarray(MiB, 2 * MiB))).toBe(true);
      const parts = [allocAligned(8192), allocAligned(65536), allocAligned(4096)];
      expect(await ringRead(fd, parts, 12288)).toBe(8192 + 65536 + 4096);
      let at = 12288;
      for (const part of parts) {
        expect(same(part, data.subarray(at, at + part.length))).toBe(true);
        at += part.length;
      }
    } finally {
      fs.closeSync(fd);
    }
  });

  it('runs more reads than the ring has entries, each landing in its own buffer', async () => {
    const count = IO_URING_ENTRIES * 2 + 17;
    const data = pattern(count * 4096, 8);
    const { fd } = fileOf(data);
    try {
      const bufs = Array.from({ length: count }, () => allocAligned(4096));
      // Reverse order, so no read can pass by landing where the next one would.
      const results = await Promise.all(bufs.map((b, i) => ringRead(fd, [b], (count - 1 - i) * 4096)));
      expect(results.every((n) => n === 4096)).toBe(true);
      expect(bufs.every((b, i) => same(b, data.subarray((count - 1 - i) * 4096, (count - i) * 4096)))).toBe(true);
    } finally {
      fs.closeSync(fd);
    }
  });

  it('reports a read at the end of the file as short and a bad descriptor as -EBADF', async () => {
    const { p, fd } = fileOf(new Uint8Array(6000).fill(3));
    try {
      const buf = allocAligned(8192).fill(0xee);
      expect(await ringRead(fd, [buf], 4096)).toBe(6000 - 4096);
      expect(buf.subarray(0, 6000 - 4096).every((b) => b === 3)).toBe(true);
      expect(await ringRead(fd, [buf], 6000)).toBe(0);
    } finally {
      fs.closeSync(fd);
    }
    const closed = fs.openSync(p, 'r');
    fs.closeSync(closed);
    expect(await ringRead(closed, [allocAligned(4096)], 0)).toBe(-EBADF);
  });

  it('refuses a call over more buffers than a batch carries, and keeps serving the others', async () => {
    const { fd } = fileOf(pattern(64 * 1024, 5));
    try {
      const page = allocAligned(4096);
      const tooMany = Array.from({ length: IOVEC_SLAB_ENTRIES + 1 }, () => page);
      const [refused, served] = await Promise.all([ringRead(fd, tooMany, 0), ringRead(fd, [allocAligned(8192)], 0)]);
      expect(refused).toBe(-EINVAL);
      expect(served).toBe(8192);
    } finally {
      fs.closeSync(fd);
    }
  });

  it('writes from one buffer and from several, at their offsets', async () => {
    const p = path.join(shmTempDir(), 'out.bin');
    fs.writeFileSync(p, new Uint8Array(MiB));
    const fd = fs.openSync(p, 'r+');
    try {
      const data = pattern(MiB, 11);
      const write = (bufs: Uint8Array[], at: number) => new Promise<number>((resolve) => ring!.write(fd, bufs, at, resolve));
      expect(await write([data.subarray(0, 256 * 1024)], 0)).toBe(256 * 1024);
      expect(await write([data.subarray(256 * 1024, 260 * 1024), data.subarray(260 * 1024)], 256 * 1024)).toBe(768 * 1024);
      expect(same(fs.readFileSync(p), data)).toBe(true);
    } finally {
      fs.closeSync(fd);
    }
  });

  it('takes only page-sized buffers (small typed arrays may move with the garbage collector)', () => {
    expect(ringTakes([allocAligned(4096), allocAligned(MiB)])).toBe(true);
    expect(ringTakes([allocAligned(MiB), new Uint8Array(512)])).toBe(false);
  });

  it('carries a LocalHostFile on tmpfs: large reads through the ring, zero-filled past the end', async () => {
    const data = pattern(3 * MiB + 5000, 9);
    const p = path.join(shmTempDir(), 'image.raw');
    fs.writeFileSync(p, data);
    const file = await LocalHostFile.open(p, { syncIo: 'auto' });
    const readSpy = vi.spyOn(fs, 'read');
    const readvSpy = vi.spyOn(fs, 'readv');
    try {
      const whole = allocAligned(MiB);
      expect(await file.pread(whole, 4096)).toBe(MiB);
      expect(same(whole, data.subarray(4096, 4096 + MiB))).toBe(true);
      const parts = [allocAligned(256 * 1024), allocAligned(512 * 1024)];
      expect(await file.preadv(parts, 2 * MiB)).toBe(768 * 1024);
      expect(same(parts[0]!, data.subarray(2 * MiB, 2 * MiB + 256 * 1024))).toBe(true);
      expect(same(parts[1]!, data.subarray(2 * MiB + 256 * 1024, 2 * MiB + 768 * 1024))).toBe(true);
      // 5000 bytes exist past 3 MiB: the rest of the buffer reads as zeroes.
      const tail = allocAligned(MiB).fill(0xee);
      expect(await file.pread(tail, 3 * MiB)).toBe(5000);
      expect(same(tail.subarray(0, 5000), data.subarray(3 * MiB))).toBe(true);
      expect(tail.subarray(5000).every((b) => b === 0)).toBe(true);
      expect(readSpy).not.toHaveBeenCalled();
      expect(readvSpy).not.toHaveBeenCalled();
    } finally {
      readSpy.mockRestore();
      readvSpy.mockRestore();
      await file.close();
    }
  });

  it('carries overwrites of a LocalHostFile on tmpfs; writes that grow the file keep the thread pool', async () => {
    const p = path.join(shmTempDir(), 'image.raw');
    fs.writeFileSync(p, new Uint8Array(2 * MiB));
    const file = await LocalHostFile.open(p, { syncIo: 'auto' });
    const writeSpy = vi.spyOn(fs, 'write');
    try {
      const inside = pattern(MiB, 13);
      await file.pwrite(inside, MiB / 2);
      expect(writeSpy).not.toHaveBeenCalled();
      const growing = pattern(MiB, 17);
      await file.pwrite(growing, 2 * MiB - 4096);
      expect(writeSpy).toHaveBeenCalledTimes(1);
      // What the grown file now holds is an overwrite.
      await file.pwrite(inside.subarray(0, MiB - 4096), 2 * MiB);
      expect(writeSpy).toHaveBeenCalledTimes(1);
      const back = fs.readFileSync(p);
      expect(back.length).toBe(3 * MiB - 4096);
      expect(same(back.subarray(MiB / 2, MiB / 2 + MiB), inside)).toBe(true);
      expect(same(back.subarray(2 * MiB - 4096, 2 * MiB), growing.subarray(0, 4096))).toBe(true);
      expect(same(back.subarray(2 * MiB), inside.subarray(0, MiB - 4096))).toBe(true);
    } finally {
      writeSpy.mockRestore();
      await file.close();
    }
  });
});
