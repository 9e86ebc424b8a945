import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { isStorageError } from '../../src/core/errors.js';
import type { HostFile } from '../../src/core/host-file.js';
import { isSeekableHostFile, RawImage, rawFormat } from '../../formats/raw/index.js';
import { LocalHostFile } from '../../src/store/local-file.js';
import { MEMORY_CHUNK_BYTES, MemoryHostFile } from '../../src/store/memory-file.js';
import { expectSuccess, qemuImg, qemuImgJson, qemuIo, requireTool } from '../support/tools.js';
import { tempDir } from '../support/tmp.js';

const MiB = 1024 * 1024;
const CHUNK = MEMORY_CHUNK_BYTES;

async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  return p.then(
    () => undefined,
    (e: unknown) => (isStorageError(e) ? e.code : `not a StorageError: ${String(e)}`),
  );
}

/** A HostFile without seekData/seekHole (structural check must say no). */
function withoutSeek(inner: MemoryHostFile): HostFile {
  return {
    name: inner.name,
    readOnly: inner.readOnly,
    pread: (b, o) => inner.pread(b, o),
    pwrite: (b, o) => inner.pwrite(b, o),
    flush: () => inner.flush(),
    truncate: (s) => inner.truncate(s),
    punchHole: (o, l) => inner.punchHole(o, l),
    sizeBytes: () => inner.sizeBytes(),
    allocatedBytes: () => inner.allocatedBytes(),
    supports: () => ({ ...inner.supports(), seekData: false }),
    copyRange: (source, from, to, length) => inner.copyRange(source, from, to, length),
    close: () => inner.close(),
  };
}

describe('RawImage over MemoryHostFile', () => {
  it('create sizes the file; reads and writes map 1:1', async () => {
    const file = new MemoryHostFile(new Uint8Array(100).fill(1));
    const image = await RawImage.create(file, 4 * MiB);
    expect(image.formatName).toBe('raw');
    expect(image.file).toBe(file);
    expect(image.backing).toBeUndefined();
    expect(image.sizeBytes).toBe(4 * MiB);
    expect(await file.sizeBytes()).toBe(4 * MiB);
    expect(file.snapshotBytes()[0]).toBe(0); // create discards old contents
    expect(image.capabilities).toEqual({ readOnly: false, discard: true, efficientZeroes: true, flush: true });
    await image.write(1000, new Uint8Array([1, 2, 3]));
    const buf = new Uint8Array(5);
    await image.read(999, buf);
    expect([...buf]).toEqual([0, 1, 2, 3, 0]);
    expect(file.snapshotBytes().subarray(1000, 1003)).toEqual(new Uint8Array([1, 2, 3]));
    await image.write(0, new Uint8Array([9]), { fua: true });
    await image.flush();
  });

  it('open takes the size from the file; rawFormat probes anything', async () => {
    const file = new MemoryHostFile(new Uint8Array(12345));
    const image = await rawFormat.open(file, {});
    expect(image.sizeBytes).toBe(12345);
    expect(rawFormat.name).toBe('raw');
    expect(rawFormat.probe(new Uint8Array([0x51, 0x46, 0x49, 0xfb]))).toBe(true);
    expect(rawFormat.probe(new Uint8Array(0))).toBe(true);
  });

  it('rejects ranges outside the image', async () => {
    const image = await RawImage.create(new MemoryHostFile(), 4096);
    expect(await codeOf(image.read(4095, new Uint8Array(2)))).toBe('INVALID_ARGUMENT');
    expect(await codeOf(image.write(-1, new Uint8Array(1)))).toBe('INVALID_ARGUMENT');
    expect(await codeOf(image.writeZeroes(0, 4097))).toBe('INVALID_ARGUMENT');
    expect(await codeOf(image.discard(4096, 1))).toBe('INVALID_ARGUMENT');
    expect(await codeOf(image.blockStatus(0, 5000))).toBe('INVALID_ARGUMENT');
    await image.read(4096, new Uint8Array(0));
  });

  it('read-only: opened read-only or over a read-only file', async () => {
    const file = new MemoryHostFile(new Uint8Array(4096).fill(5));
    for (const image of [await rawFormat.open(file, { readOnly: true }), await rawFormat.open(file.readOnlyView(), {})]) {
      expect(image.capabilities.readOnly).toBe(true);
      expect(await codeOf(image.write(0, new Uint8Array(1)))).toBe('READ_ONLY');
      expect(await codeOf(image.writeZeroes(0, 1))).toBe('READ_ONLY');
      expect(await codeOf(image.discard(0, 1))).toBe('READ_ONLY');
      await image.flush();
      const buf = new Uint8Array(1);
      await image.read(0, buf);
      expect(buf[0]).toBe(5);
    }
  });

  it('writeZeroes writes zeroes, or punches holes with mayUnmap; discard punches', async () => {
    const file = new MemoryHostFile();
    const image = await RawImage.create(file, 8 * CHUNK);
    await image.write(0, new Uint8Array(8 * CHUNK).fill(0xaa));
    expect(await file.allocatedBytes()).toBe(8 * CHUNK);
    await image.writeZeroes(0, 2 * CHUNK);
    expect(await file.allocatedBytes()).toBe(8 * CHUNK); // still allocated (no unmap)
    await image.writeZeroes(2 * CHUNK, 2 * CHUNK, { mayUnmap: true });
    expect(await file.allocatedBytes()).toBe(6 * CHUNK);
    await image.discard(4 * CHUNK, CHUNK);
    expect(await file.allocatedBytes()).toBe(5 * CHUNK);
    await image.writeZeroes(5 * CHUNK + 1, 3, { fua: true });
    const all = file.snapshotBytes();
    expect(all.subarray(0, 5 * CHUNK).every((b) => b === 0)).toBe(true);
    expect(all[5 * CHUNK]).toBe(0xaa);
    expect(all.subarray(5 * CHUNK + 1, 5 * CHUNK + 4).every((b) => b === 0)).toBe(true);
    expect(all[5 * CHUNK + 4]).toBe(0xaa);
  });

  it('blockStatus reports holes as zero and merges extents', async () => {
    const file = new MemoryHostFile();
    expect(isSeekableHostFile(file)).toBe(true);
    const image = await RawImage.create(file, 10 * CHUNK);
    expect(await image.blockStatus(0, 10 * CHUNK)).toEqual([{ guestOffset: 0, lengthBytes: 10 * CHUNK, kind: 'zero' }]);
    await image.write(2 * CHUNK, new Uint8Array(2 * CHUNK).fill(1));
    await image.write(4 * CHUNK, new Uint8Array(1).fill(1));
    await image.write(9 * CHUNK + 5, new Uint8Array(1).fill(1));
    expect(await image.blockStatus(0, 10 * CHUNK)).toEqual([
      { guestOffset: 0, lengthBytes: 2 * CHUNK, kind: 'zero' },
      { guestOffset: 2 * CHUNK, lengthBytes: 3 * CHUNK, kind: 'data' },
      { guestOffset: 5 * CHUNK, lengthBytes: 4 * CHUNK, kind: 'zero' },
      { guestOffset: 9 * CHUNK, lengthBytes: CHUNK, kind: 'data' },
    ]);
    // A window that starts and ends inside extents is clipped to it.
    expect(await image.blockStatus(3 * CHUNK + 7, 3 * CHUNK)).toEqual([
      { guestOffset: 3 * CHUNK + 7, lengthBytes: 2 * CHUNK - 7, kind: 'data' },
      { guestOffset: 5 * CHUNK, lengthBytes: CHUNK + 7, kind: 'zero' },
    ]);
    expect(await image.blockStatus(0, 0)).toEqual([]);
  });

  it('blockStatus without seekData/seekHole reports everything as data', async () => {
    const plain = withoutSeek(new MemoryHostFile(new Uint8Array(5000)));
    expect(isSeekableHostFile(plain)).toBe(false);
    const image = await rawFormat.open(plain, {});
    expect(await image.blockStatus(100, 4000)).toEqual([{ guestOffset: 100, lengthBytes: 4000, kind: 'data' }]);
  });

  it('resize grows and (with allowShrink) shrinks the file', async () => {
    const file = new MemoryHostFile();
    const image = await RawImage.create(file, 1000);
    await image.resize(5000);
    expect(image.sizeBytes).toBe(5000);
    expect(await file.sizeBytes()).toBe(5000);
    expect(await codeOf(image.resize(10))).toBe('INVALID_ARGUMENT');
    await image.resize(10, { allowShrink: true });
    expect(image.sizeBytes).toBe(10);
  });

  it('close is idempotent and later calls fail', async () => {
    const image = await RawImage.create(new MemoryHostFile(), 100);
    await image.close();
    await image.close();
    expect(await codeOf(image.read(0, new Uint8Array(1)))).toBe('IO_ERROR');
    expect(await codeOf(image.flush())).toBe('IO_ERROR');
  });
});

describe('RawImage over LocalHostFile', () => {
  it('reports real holes via SEEK_DATA/SEEK_HOLE', async () => {
    const p = path.join(tempDir(), 'disk.raw');
    const file = await LocalHostFile.open(p, { create: true, exclusive: true });
    expect(isSeekableHostFile(file)).toBe(true);
    const image = await RawImage.create(file, 16 * MiB);
    await image.write(4 * MiB, new Uint8Array(MiB).fill(3));
    await image.flush();
    const extents = await image.blockStatus(0, 16 * MiB);
    expect(extents).toEqual([
      { guestOffset: 0, lengthBytes: 4 * MiB, kind: 'zero' },
      { guestOffset: 4 * MiB, lengthBytes: MiB, kind: 'data' },
      { guestOffset: 5 * MiB, lengthBytes: 11 * MiB, kind: 'zero' },
    ]);
    await image.discard(4 * MiB, MiB);
    expect(await image.blockStatus(0, 16 * MiB)).toEqual([{ guestOffset: 0, lengthBytes: 16 * MiB, kind: 'zero' }]);
    await image.close();
    expect(fs.statSync(p).size).toBe(16 * MiB);
  });
});

describe.skipIf(!requireTool('qemu-img', 'qemu-io'))('RawImage against qemu-img / qemu-io', () => {
  it('reads what qemu-io wrote, and qemu-img sees what we wrote', async () => {
    const p = path.join(tempDir(), 'interop.raw');
    expectSuccess(qemuImg(['create', '-f', 'raw', p, '8M']), 'qemu-img create');
    expectSuccess(qemuIo(['-f', 'raw', '-c', 'write -P 0x5a 1M 64k', p]), 'qemu-io write');
    const image = await rawFormat.open(await LocalHostFile.open(p), {});
    expect(image.sizeBytes).toBe(8 * MiB);
    const buf = new Uint8Array(64 * 1024);
    await image.read(MiB, buf);
    expect(buf.every((b) => b === 0x5a)).toBe(true);
    await image.write(3 * MiB, new Uint8Array(4096).fill(0x33));
    await image.flush();
    await image.close();
    expectSuccess(qemuIo(['-f', 'raw', '-c', 'read -P 0x33 3M 4k', '-c', 'read -P 0x5a 1M 64k', p]), 'qemu-io read');
    const map = qemuImgJson<Array<{ start: number; length: number; data: boolean; zero: boolean }>>('map', ['-f', 'raw', p]);
    const dataRanges = map.filter((e) => e.data).map((e) => [e.start, e.length]);
    expect(dataRanges).toContainEqual([MiB, 64 * 1024]);
    expect(dataRanges.some(([s, l]) => s! <= 3 * MiB && s! + l! >= 3 * MiB + 4096)).toBe(true);
  });
});
