/**
 * Copy-up (a partial write to a cluster only the backing holds) reads the backing outside the
 * metadata lock, so copy-ups of different clusters overlap: a sealed base reads through a chunk
 * store, and one copy-up's backing read must not hold every other allocating write of the image.
 * The backing here is a real qcow2 image over a memory file whose preads wait, while held, until
 * the test releases them (no real file can be made to block on cue); the assertions are on the
 * order of events and on the data, never on times.
 */
import { describe, expect, it } from 'vitest';
import { Qcow2Image } from '../../formats/qcow2/index.js';
import { MemoryHostFile } from '../../src/store/memory-file.js';

const CLUSTER = 64 * 1024;
const SIZE_BYTES = 8 * 1024 * 1024;
const WRITE_BYTES = 4096;

/** A memory file whose preads, while held, wait until released; each pread's start is an event. */
class HeldReadsFile extends MemoryHostFile {
  held = false;
  private readonly waiting: (() => void)[] = [];
  private readonly startWaiters: { count: number; resolve: () => void }[] = [];

  override async pread(buf: Uint8Array, hostOffset: number): Promise<number> {
    if (this.held) {
      const released = new Promise<void>((resolve) => this.waiting.push(resolve));
      for (const w of this.startWaiters.filter((s) => this.waiting.length >= s.count)) w.resolve();
      await released;
    }
    return super.pread(buf, hostOffset);
  }

  /** Resolves once `count` preads are waiting at the same time (all of them started). */
  waitingReads(count: number): Promise<void> {
    if (this.waiting.length >= count) return Promise.resolve();
    return new Promise((resolve) => this.startWaiters.push({ count, resolve }));
  }

  releaseAll(): void {
    this.held = false;
    for (const release of this.waiting.splice(0)) release();
  }
}

async function withDeadline<T>(what: string, promise: Promise<T>, ms = 10000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} (did not happen within ${ms} ms)`)), ms);
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** A base whose first clusters hold a pattern per cluster, and an empty overlay on it. */
async function overlayOnHeldBase(): Promise<{ image: Qcow2Image; baseFile: HeldReadsFile; expected: Uint8Array }> {
  const baseFile = new HeldReadsFile(undefined, { name: 'base' });
  await Qcow2Image.create(baseFile, { sizeBytes: SIZE_BYTES });
  const base = await Qcow2Image.open(baseFile);
  const expected = new Uint8Array(SIZE_BYTES);
  for (let c = 0; c < 4; c++) expected.fill(0x10 + c, c * CLUSTER, (c + 1) * CLUSTER);
  await base.write(0, expected.subarray(0, 4 * CLUSTER));
  await base.flush();
  const overlay = new MemoryHostFile(undefined, { name: 'overlay' });
  await Qcow2Image.create(overlay, { sizeBytes: SIZE_BYTES, backingFile: 'base', backingFormat: 'qcow2' });
  const image = await Qcow2Image.open(overlay, { openBacking: async () => base });
  return { image, baseFile, expected };
}

async function expectContents(image: Qcow2Image, expected: Uint8Array): Promise<void> {
  const back = new Uint8Array(4 * CLUSTER);
  await image.read(0, back);
  expect(Buffer.from(back).equals(Buffer.from(expected.subarray(0, 4 * CLUSTER)))).toBe(true);
  await image.flush();
  const check = await image.check();
  expect(check.corruptions).toBe(0);
  expect(check.leaks).toBe(0);
}

describe('qcow2 copy-up reads the backing outside the metadata lock', () => {
  it('two copy-ups of different clusters read the backing at the same time', async () => {
    const { image, baseFile, expected } = await overlayOnHeldBase();
    baseFile.held = true;
    const writes = [
      image.write(0 * CLUSTER + WRITE_BYTES, new Uint8Array(WRITE_BYTES).fill(0xa1)),
      image.write(2 * CLUSTER + 2 * WRITE_BYTES, new Uint8Array(WRITE_BYTES).fill(0xb2)),
    ];
    // Before the fix the second backing read waited for the lock the first held: it never started.
    await withDeadline('the second copy-up read the backing while the first read was held', baseFile.waitingReads(2));
    baseFile.releaseAll();
    await Promise.all(writes);
    expected.fill(0xa1, WRITE_BYTES, 2 * WRITE_BYTES);
    expected.fill(0xb2, 2 * CLUSTER + 2 * WRITE_BYTES, 2 * CLUSTER + 3 * WRITE_BYTES);
    await expectContents(image, expected);
    await image.close();
  });

  it('two copy-ups of one cluster both land; the one that loses the race drops its cluster', async () => {
    const { image, baseFile, expected } = await overlayOnHeldBase();
    baseFile.held = true;
    const writes = [
      image.write(1 * CLUSTER, new Uint8Array(WRITE_BYTES).fill(0xc3)),
      image.write(1 * CLUSTER + 8 * WRITE_BYTES, new Uint8Array(WRITE_BYTES).fill(0xd4)),
    ];
    await withDeadline('both copy-ups read the backing', baseFile.waitingReads(2));
    baseFile.releaseAll();
    await Promise.all(writes);
    expected.fill(0xc3, CLUSTER, CLUSTER + WRITE_BYTES);
    expected.fill(0xd4, CLUSTER + 8 * WRITE_BYTES, CLUSTER + 9 * WRITE_BYTES);
    // Both writes are in the cluster, and the cluster reserved by the later one is not leaked.
    await expectContents(image, expected);
    await image.close();
  });

  it('a copy-up that finds its cluster mapped meanwhile writes over what is there', async () => {
    const { image, baseFile, expected } = await overlayOnHeldBase();
    baseFile.held = true;
    const partial = image.write(3 * CLUSTER + WRITE_BYTES, new Uint8Array(WRITE_BYTES).fill(0xe5));
    await withDeadline('the copy-up read the backing', baseFile.waitingReads(1));
    // A whole-cluster write needs no backing read: it maps the cluster while the copy-up waits.
    await image.write(3 * CLUSTER, new Uint8Array(CLUSTER).fill(0xf6));
    baseFile.releaseAll();
    await partial;
    // The copy-up finds the cluster mapped and writes over what is there, not over a stale copy.
    expected.fill(0xf6, 3 * CLUSTER, 4 * CLUSTER);
    expected.fill(0xe5, 3 * CLUSTER + WRITE_BYTES, 3 * CLUSTER + 2 * WRITE_BYTES);
    await expectContents(image, expected);
    await image.close();
  });
});
