/**
 * Detecting corruption while writing: an L2 entry that points past the end of the file. The write
 * must fail with CORRUPT and mark the image corrupt on disk (incompatible bit 1, which qemu-img info
 * reports as corrupt: true); later writes fail (READ_ONLY or CORRUPT) while the rest of the image
 * still reads; a writable open then refuses the image and a read-only one works.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { StorageError, isStorageError } from '../../src/core/errors.js';
import { FaultInjectingFile } from '../../src/store/fault-injecting-file.js';
import { LocalHostFile } from '../../src/store/local-file.js';
import { MemoryHostFile } from '../../src/store/memory-file.js';
import { HeaderOffset } from '../../formats/qcow2/constants.js';
import { Qcow2Image } from '../../formats/qcow2/index.js';
import { expectSuccess, qemuImg, qemuImgJson, qemuIo, requireTool } from '../support/tools.js';
import { tempDir } from '../support/tmp.js';

const KiB = 1024;
const CS = 64 * KiB;

async function expectStorageError(promise: Promise<unknown>, codes: string[]): Promise<string> {
  try {
    await promise;
  } catch (err) {
    expect(isStorageError(err), String(err)).toBe(true);
    expect(codes, String(err)).toContain((err as { code: string }).code);
    return (err as Error).message;
  }
  throw new Error(`expected a StorageError (${codes.join(' or ')})`);
}

/** A qemu-made image whose L2 entry for guest cluster 1 points 1 GiB past the end of the file. */
function brokenImage(dir: string): string {
  const file = path.join(dir, 'broken.qcow2');
  expectSuccess(qemuImg(['create', '-q', '-f', 'qcow2', file, '4M']), 'qemu-img create');
  expectSuccess(
    qemuIo(['-f', 'qcow2', '-c', 'write -P 0xa0 0 64k', '-c', 'write -P 0xa1 64k 64k', '-c', 'write -P 0xa2 128k 64k', '-c', 'write -P 0xa3 2M 64k', file]),
    'qemu-io',
  );
  const bytes = new Uint8Array(readFileSync(file));
  const view = new DataView(bytes.buffer);
  const l1 = Number(view.getBigUint64(HeaderOffset.l1TableOffset));
  const l2 = Number(view.getBigUint64(l1) & 0x00fffffffffffe00n);
  view.setBigUint64(l2 + 8, (1n << 63n) | BigInt(2 ** 30));
  writeFileSync(file, bytes);
  return file;
}

function corruptBitOnDisk(file: string): boolean {
  const bytes = readFileSync(file);
  return (bytes.readBigUInt64BE(HeaderOffset.incompatibleFeatures) & 2n) !== 0n;
}

async function readByte(image: Qcow2Image, guestOffset: number): Promise<number> {
  const buf = new Uint8Array(4 * KiB);
  await image.read(guestOffset, buf);
  expect(buf.every((b) => b === buf[0]), `guest ${guestOffset} reads one pattern`).toBe(true);
  return buf[0]!;
}

describe.skipIf(!requireTool('qemu-img', 'qemu-io'))('qcow2: corruption found while writing marks the image corrupt', () => {
  for (const syncIo of [false, true]) {
    it(`write through an L2 entry past EOF (${syncIo ? 'sync' : 'async'} file I/O)`, async () => {
      const file = brokenImage(tempDir());
      const image = await Qcow2Image.open(await LocalHostFile.open(file, { syncIo }));
      expect(image.corrupt).toBe(false);
      // The partial write needs the old cluster's contents: the bad entry is found, the write fails.
      await expectStorageError(image.write(CS + 100, new Uint8Array(4 * KiB).fill(0x55)), ['CORRUPT']);
      expect(image.corrupt).toBe(true);
      expect(image.readOnly).toBe(true);
      // Further writes anywhere fail; reads elsewhere still work; the bad cluster reads as CORRUPT.
      await expectStorageError(image.write(0, new Uint8Array(512)), ['READ_ONLY', 'CORRUPT']);
      await expectStorageError(image.write(3 * 1024 * KiB, new Uint8Array(512)), ['READ_ONLY', 'CORRUPT']);
      await expectStorageError(image.writeZeroes(0, CS), ['READ_ONLY', 'CORRUPT']);
      await expectStorageError(image.discard(0, CS), ['READ_ONLY', 'CORRUPT']);
      expect(await readByte(image, 0)).toBe(0xa0);
      expect(await readByte(image, 2 * CS)).toBe(0xa2);
      expect(await readByte(image, 2 * 1024 * KiB)).toBe(0xa3);
      await expectStorageError(image.read(CS, new Uint8Array(512)), ['CORRUPT']);
      // Closing straight away must not lose the corrupt bit (it is written when the bad entry is
      // found, and close must not race ahead of that write).
      await image.close();
      expect(corruptBitOnDisk(file), 'corrupt bit on disk').toBe(true);

      const info = qemuImgJson<{ 'format-specific'?: { data?: { corrupt?: boolean } } }>('info', [file]);
      expect(info['format-specific']?.data?.corrupt).toBe(true);
      // A writable open refuses it; a read-only one works and reads the good clusters.
      await expectStorageError(
        Qcow2Image.open(await LocalHostFile.open(file)).then((i) => i.close()),
        ['CORRUPT'],
      );
      const ro = await Qcow2Image.open(await LocalHostFile.open(file, { readOnly: true }), { readOnly: true });
      expect(ro.info().corrupt).toBe(true);
      expect(await readByte(ro, 0)).toBe(0xa0);
      const check = await ro.check();
      expect(check.corruptions).toBeGreaterThan(0);
      await ro.close();
      // qemu-img agrees that the image is corrupt.
      expect(qemuImg(['check', file]).code).toBe(2);
    });
  }

  it('close right after the failing write, with nothing in between, keeps the corrupt bit', async () => {
    const file = brokenImage(tempDir());
    const image = await Qcow2Image.open(await LocalHostFile.open(file));
    await expectStorageError(image.write(CS + 100, new Uint8Array(4 * KiB)), ['CORRUPT']);
    await image.close();
    expect(corruptBitOnDisk(file), 'corrupt bit on disk').toBe(true);
  });
});

/** A file whose writes complete a little later, and which refuses every call once closed. */
class SlowFile extends FaultInjectingFile {
  private isClosed = false;

  override pwrite(buf: Uint8Array, hostOffset: number): Promise<void> {
    if (this.isClosed) return Promise.reject(new StorageError('IO_ERROR', 'pwrite after close'));
    return new Promise((resolve) => setTimeout(resolve, 5)).then(() => super.pwrite(buf, hostOffset));
  }

  override flush(): Promise<void> {
    if (this.isClosed) return Promise.reject(new StorageError('IO_ERROR', 'flush after close'));
    return super.flush();
  }

  override close(): Promise<void> {
    this.isClosed = true;
    return super.close();
  }
}

describe('qcow2: the corrupt bit is durable once close() returns', () => {
  // Regression: corruptionDetected() wrote the corrupt bit fire-and-forget, and close() did not
  // wait for it: the file could be closed between that write and its flush, so the bit never
  // became durable (a power cut then forgot that the image was corrupt).
  it('close() waits for the corrupt-bit write and its flush', async () => {
    const base = new MemoryHostFile();
    await Qcow2Image.create(base, { sizeBytes: 1024 * KiB, clusterSizeBytes: 4 * KiB });
    const setup = await Qcow2Image.open(base);
    await setup.write(0, new Uint8Array(8 * KiB).fill(1));
    const l2 = setup.l1Offsets[0]!;
    await setup.close();
    const entry = new Uint8Array(8);
    new DataView(entry.buffer).setBigUint64(0, (1n << 63n) | (1n << 30n)); // guest cluster 1 -> 1 GiB
    await base.pwrite(entry, l2 + 8);

    const file = new SlowFile(base);
    const image = await Qcow2Image.open(file);
    await expectStorageError(image.write(4 * KiB + 10, new Uint8Array(100)), ['CORRUPT']);
    await image.close();
    const durable = await Qcow2Image.open(file.crashLosingAll(), { readOnly: true });
    expect(durable.info().corrupt, 'corrupt bit in the durable state').toBe(true);
    await durable.close();
  });
});
