/** The HostFile conformance suite: every implementation runs it (host-file.test.ts). */
import { expectCode } from '../support/expect-error.js';
import { describe, expect, it } from 'vitest';
import type { HostFile } from '../../src/core/host-file.js';
import { MemoryHostFile } from '../../src/store/memory-file.js';

export interface HostFileSubject {
  /** A new, empty, writable file. */
  create(): Promise<HostFile>;
  /** The same file opened read-only, for implementations that have such a mode. */
  reopenReadOnly?(file: HostFile): Promise<HostFile>;
}

function pattern(lengthBytes: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(lengthBytes);
  let x = seed * 2654435761;
  for (let i = 0; i < lengthBytes; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    bytes[i] = x >>> 24;
  }
  return bytes;
}

async function readAll(file: HostFile, offset: number, lengthBytes: number): Promise<Uint8Array> {
  const buf = new Uint8Array(lengthBytes);
  await file.pread(buf, offset);
  return buf;
}

/** Byte equality without vitest's element-by-element diff (seconds for a few MiB). */
function expectSameBytes(actual: Uint8Array, expected: Uint8Array, what = 'bytes'): void {
  expect(actual.length, what).toBe(expected.length);
  expect(Buffer.from(actual.buffer, actual.byteOffset, actual.length).equals(expected), what).toBe(true);
}

const KiB = 1024;
const MiB = 1024 * KiB;

export function hostFileConformance(name: string, subject: HostFileSubject): void {
  describe(`HostFile conformance: ${name}`, () => {
    it('writes read back; reads past the end are zero-filled and count only existing bytes', async () => {
      const file = await subject.create();
      const data = pattern(100 * KiB, 1);
      await file.pwrite(data, 4 * KiB);
      await file.flush();
      expect(await file.sizeBytes()).toBe(104 * KiB);
      expectSameBytes(await readAll(file, 4 * KiB, data.length), data);
      const tail = new Uint8Array(8 * KiB).fill(0xee);
      expect(await file.pread(tail, 100 * KiB)).toBe(4 * KiB);
      expectSameBytes(tail.subarray(0, 4 * KiB), data.subarray(96 * KiB));
      expect(tail.subarray(4 * KiB).every((b) => b === 0)).toBe(true);
      expectSameBytes(await readAll(file, 0, 4 * KiB), new Uint8Array(4 * KiB));
      await file.close();
    });

    it('preadv/pwritev, where a file has them, move the same bytes as pread/pwrite, past the end too', async () => {
      const file = await subject.create();
      if (file.preadv === undefined && file.pwritev === undefined) return file.close();
      // Small and large totals (a file may take them synchronously or through a thread pool), odd lengths.
      for (const lengths of [[512, 4 * KiB, 3], [300 * KiB, 1, 700 * KiB + 5, 64 * KiB]]) {
        const total = lengths.reduce((a, b) => a + b, 0);
        const data = pattern(total, lengths.length);
        const pieces = (bytes: Uint8Array, sizes: readonly number[]): Uint8Array[] => {
          let at = 0;
          return sizes.map((n) => bytes.subarray(at, (at += n)));
        };
        if (file.pwritev !== undefined) await file.pwritev(pieces(data, lengths), 8 * KiB + 7);
        else await file.pwrite(data, 8 * KiB + 7);
        expectSameBytes(await readAll(file, 8 * KiB + 7, total), data, `pwritev of ${lengths.join('+')} bytes`);
        if (file.preadv !== undefined) {
          const back = new Uint8Array(total);
          expect(await file.preadv(pieces(back, [...lengths].reverse()), 8 * KiB + 7)).toBe(total);
          expectSameBytes(back, data, `preadv of ${lengths.join('+')} bytes`);
        }
      }
      if (file.preadv !== undefined) {
        // Past the end: the bytes that exist, then zeroes in every later buffer.
        const size = await file.sizeBytes();
        const bufs = [new Uint8Array(3 * KiB).fill(0xee), new Uint8Array(5 * KiB).fill(0xee), new Uint8Array(2 * KiB).fill(0xee)];
        expect(await file.preadv(bufs, size - 4 * KiB)).toBe(4 * KiB);
        expectSameBytes(bufs[0]!, await readAll(file, size - 4 * KiB, 3 * KiB));
        expectSameBytes(bufs[1]!.subarray(0, KiB), await readAll(file, size - KiB, KiB));
        expect(bufs[1]!.subarray(KiB).every((b) => b === 0) && bufs[2]!.every((b) => b === 0)).toBe(true);
      }
      await file.close();
    });

    it('truncate grows with zeroes and shrinks; punchHole zeroes a range and keeps the size', async () => {
      const file = await subject.create();
      await file.pwrite(pattern(2 * MiB, 2), 0);
      await file.truncate(3 * MiB);
      expect(await file.sizeBytes()).toBe(3 * MiB);
      expect((await readAll(file, 2 * MiB, MiB)).every((b) => b === 0)).toBe(true);
      await file.truncate(MiB);
      expect(await file.sizeBytes()).toBe(MiB);
      await file.pwrite(pattern(2 * MiB, 3), 0);
      const before = await file.allocatedBytes();
      await file.punchHole(256 * KiB, MiB);
      expect(await file.sizeBytes()).toBe(2 * MiB);
      expect((await readAll(file, 256 * KiB, MiB)).every((b) => b === 0)).toBe(true);
      expectSameBytes(await readAll(file, 0, 256 * KiB), pattern(2 * MiB, 3).subarray(0, 256 * KiB));
      const features = file.supports();
      if (features.punchHole) expect(await file.allocatedBytes()).toBeLessThan(before);
      await file.close();
    });

    it('copyRange copies from another file, from itself, and zero-fills past the source end', async () => {
      const file = await subject.create();
      const other = await subject.create();
      const source = pattern(3 * MiB + 4321, 4);
      await other.pwrite(source, 0);
      await file.copyRange(other, 0, 512, source.length);
      expectSameBytes(await readAll(file, 512, source.length), source);
      // Within one file, ranges that do not overlap.
      await file.copyRange(file, 512, 4 * MiB, MiB);
      expectSameBytes(await readAll(file, 4 * MiB, MiB), source.subarray(0, MiB));
      // From a file of another kind, and past the source's end: zeroes.
      const memory = MemoryHostFile.fromBytes(pattern(10 * KiB, 5));
      await file.pwrite(new Uint8Array(20 * KiB).fill(0xff), 6 * MiB);
      await file.copyRange(memory, 0, 6 * MiB, 20 * KiB);
      const copied = await readAll(file, 6 * MiB, 20 * KiB);
      expectSameBytes(copied.subarray(0, 10 * KiB), pattern(10 * KiB, 5));
      expect(copied.subarray(10 * KiB).every((b) => b === 0)).toBe(true);
      await file.copyRange(other, 0, 0, 0);
      await expectCode(file.copyRange(file, 0, 4096, 8192), 'INVALID_ARGUMENT');
      await expectCode(file.copyRange(other, -1, 0, 1), 'INVALID_ARGUMENT');
      await file.close();
      await other.close();
    });

    it('supports() says what the file can do', async () => {
      const file = await subject.create();
      const features = file.supports();
      for (const key of ['punchHole', 'seekData', 'copyByReference'] as const) expect(typeof features[key]).toBe('boolean');
      await file.close();
    });

    it('a read-only file reads and refuses every change with READ_ONLY', async () => {
      if (subject.reopenReadOnly === undefined) return;
      const file = await subject.create();
      await file.pwrite(pattern(64 * KiB, 6), 0);
      await file.flush();
      const ro = await subject.reopenReadOnly(file);
      expect(ro.readOnly).toBe(true);
      expectSameBytes(await readAll(ro, 0, 64 * KiB), pattern(64 * KiB, 6));
      await expectCode(ro.pwrite(new Uint8Array(1), 0), 'READ_ONLY');
      if (ro.pwritev !== undefined) await expectCode(ro.pwritev([new Uint8Array(1), new Uint8Array(1)], 0), 'READ_ONLY');
      await expectCode(ro.truncate(0), 'READ_ONLY');
      await expectCode(ro.punchHole(0, 4096), 'READ_ONLY');
      await expectCode(ro.copyRange(file, 0, 0, 4096), 'READ_ONLY');
      await ro.close();
      await file.close();
    });
  });
}

export interface ReadOnlyHostFileSubject {
  /** A read-only file whose bytes are exactly `contents` (a sealed layer, a file opened read-only). */
  open(contents: Uint8Array): Promise<HostFile>;
}

/** Contents with data, an all-zero stretch of whole 64 KiB pieces, and a short odd tail. */
function sparseContents(): Uint8Array {
  const contents = pattern(5 * 64 * KiB + 777, 7);
  contents.fill(0, 64 * KiB, 3 * 64 * KiB);
  return contents;
}

/**
 * The part every read-only HostFile runs, writable or not in other modes (a ChunkedFile has no
 * writable mode at all): it reads what it holds anywhere, and refuses every change.
 */
export function readOnlyHostFileConformance(name: string, subject: ReadOnlyHostFileSubject): void {
  describe(`HostFile conformance (read-only): ${name}`, () => {
    it('reads any range; past the end reads zeroes and counts only existing bytes', async () => {
      const contents = sparseContents();
      const file = await subject.open(contents);
      expect(file.readOnly).toBe(true);
      expect(await file.sizeBytes()).toBe(contents.length);
      expectSameBytes(await readAll(file, 0, contents.length), contents);
      for (const [offset, lengthBytes] of [
        [1, 1],
        [64 * KiB - 3, 7],
        [100, 3 * 64 * KiB],
        [2 * 64 * KiB, 64 * KiB],
        [contents.length - 1, 1],
      ] as const) {
        expectSameBytes(await readAll(file, offset, lengthBytes), contents.subarray(offset, offset + lengthBytes), `${lengthBytes} at ${offset}`);
      }
      const tail = new Uint8Array(4 * KiB).fill(0xee);
      expect(await file.pread(tail, contents.length - 1000)).toBe(1000);
      expectSameBytes(tail.subarray(0, 1000), contents.subarray(contents.length - 1000));
      expect(tail.subarray(1000).every((b) => b === 0)).toBe(true);
      const beyond = new Uint8Array(100).fill(0xee);
      expect(await file.pread(beyond, contents.length + 5000)).toBe(0);
      expect(beyond.every((b) => b === 0)).toBe(true);
      expect(await file.pread(new Uint8Array(0), 10)).toBe(0);
      await expectCode(file.pread(new Uint8Array(1), -1), 'INVALID_ARGUMENT');
      await file.close();
    });

    it('refuses every change with READ_ONLY and keeps its bytes', async () => {
      const contents = sparseContents();
      const file = await subject.open(contents);
      const other = MemoryHostFile.fromBytes(pattern(4 * KiB, 8));
      await expectCode(file.pwrite(new Uint8Array(1), 0), 'READ_ONLY');
      await expectCode(file.truncate(0), 'READ_ONLY');
      await expectCode(file.punchHole(0, 4096), 'READ_ONLY');
      await expectCode(file.copyRange(other, 0, 0, 4096), 'READ_ONLY');
      await file.flush();
      expect(await file.sizeBytes()).toBe(contents.length);
      expectSameBytes(await readAll(file, 0, contents.length), contents);
      await file.close();
    });

    it('is a copyRange source; reports allocation and features', async () => {
      const contents = sparseContents();
      const file = await subject.open(contents);
      const target = new MemoryHostFile();
      await target.copyRange(file, 100, 0, contents.length);
      expectSameBytes(target.snapshotBytes(), concatZeroes(contents.subarray(100), 100));
      const allocated = await file.allocatedBytes();
      expect(Number.isSafeInteger(allocated) && allocated >= 0).toBe(true);
      const features = file.supports();
      for (const key of ['punchHole', 'seekData', 'copyByReference'] as const) expect(typeof features[key]).toBe('boolean');
      await file.close();
    });
  });
}

function concatZeroes(bytes: Uint8Array, zeroBytes: number): Uint8Array {
  const out = new Uint8Array(bytes.length + zeroBytes);
  out.set(bytes);
  return out;
}
