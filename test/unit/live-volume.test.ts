/**
 * LiveVolume's pause, drain and reopen, paced by events, not sleeps: a HostFile that holds its
 * writes until released puts a request in flight at a known moment.
 */
import { describe, expect, it } from 'vitest';
import { Qcow2Image } from '../../formats/qcow2/index.js';
import { isStorageError } from '../../src/core/errors.js';
import { MemoryHostFile } from '../../src/store/memory-file.js';
import { LiveVolume } from '../../src/volume/live.js';

const MiB = 1024 * 1024;

/** pwrite and pread wait while held; `entered` resolves when a call arrives and is being held. */
class HoldingFile extends MemoryHostFile {
  private held: Promise<void> | undefined;
  private releaseHeld: (() => void) | undefined;
  private onEnter: (() => void) | undefined;
  entered: Promise<void> = Promise.resolve();

  hold(): void {
    this.held = new Promise((resolve) => (this.releaseHeld = resolve));
    this.entered = new Promise((resolve) => (this.onEnter = resolve));
  }

  release(): void {
    this.held = undefined;
    this.releaseHeld?.();
  }

  override async pwrite(buf: Uint8Array, hostOffset: number): Promise<void> {
    await this.waitWhileHeld();
    return super.pwrite(buf, hostOffset);
  }

  override async pread(buf: Uint8Array, hostOffset: number): Promise<number> {
    await this.waitWhileHeld();
    return super.pread(buf, hostOffset);
  }

  private async waitWhileHeld(): Promise<void> {
    if (this.held === undefined) return;
    this.onEnter?.();
    await this.held;
  }
}

/** Settles pending callbacks of resolved promises and I/O: enough for a waiting request to move if it could. */
const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

function tracked<T>(promise: Promise<T>): { promise: Promise<T>; settled: () => boolean } {
  let done = false;
  promise.then(
    () => (done = true),
    () => (done = true),
  );
  return { promise, settled: () => done };
}

async function openLive(): Promise<{ live: LiveVolume; file: HoldingFile; opens: { count: number }; failReopen: { error?: Error } }> {
  const file = new HoldingFile();
  await Qcow2Image.create(file, { sizeBytes: 16 * MiB });
  const opens = { count: 0 };
  const failReopen: { error?: Error } = {};
  const live = new LiveVolume(
    { volumeId: 'v', snapshotId: undefined },
    true,
    { image: await Qcow2Image.open(file), layerIds: ['a'] },
    async () => {
      opens.count++;
      if (failReopen.error !== undefined) throw failReopen.error;
      return { image: await Qcow2Image.open(file), layerIds: ['b'] };
    },
    () => {},
  );
  return { live, file, opens, failReopen };
}

describe('LiveVolume', () => {
  it('pause waits for the request in flight, holds new ones at the gate, and resume reopens the chain for them', async () => {
    const { live, file, opens } = await openLive();
    const device = live.handle(false);
    const data = new Uint8Array(64 * 1024).fill(0x5a);

    file.hold();
    const write = tracked(device.write(0, data));
    await file.entered;
    const pause = tracked(live.pause());
    const read = new Uint8Array(data.length);
    const waiting = tracked(device.read(0, read));
    await turn();
    expect(pause.settled(), 'pause must wait for the write in flight').toBe(false);
    expect(write.settled()).toBe(false);

    file.release();
    await pause.promise;
    expect(write.settled()).toBe(true);
    await write.promise;
    await turn();
    expect(waiting.settled(), 'a request that arrived while paused waits for resume').toBe(false);
    expect(opens.count).toBe(0);

    await live.resume();
    expect(opens.count).toBe(1);
    expect(live.layerIds).toEqual(['b']);
    await waiting.promise;
    expect(read).toEqual(data);
    await device.close();
  });

  it('pause waits for a read in flight too', async () => {
    const { live, file } = await openLive();
    const device = live.handle(false);
    await device.write(0, new Uint8Array(4096).fill(7));
    file.hold();
    const buf = new Uint8Array(4096);
    const read = tracked(device.read(0, buf));
    await file.entered;
    const pause = tracked(live.pause());
    await turn();
    expect(pause.settled(), 'pause must wait for the read in flight').toBe(false);
    file.release();
    await read.promise;
    expect(buf.every((b) => b === 7)).toBe(true);
    await pause.promise;
    await live.resume();
    await device.close();
  });

  it('nested pauses: the chain reopens only after the last resume', async () => {
    const { live, opens } = await openLive();
    const device = live.handle(false);
    await live.pause();
    await live.pause();
    const read = tracked(device.read(0, new Uint8Array(512)));
    await live.resume();
    await turn();
    expect(read.settled()).toBe(false);
    expect(opens.count).toBe(0);
    await live.resume();
    await read.promise;
    expect(opens.count).toBe(1);
    await device.close();
  });

  it('a pause that arrives while resume is still reopening holds requests until its own resume', async () => {
    const { live, opens } = await openLive();
    const device = live.handle(false);
    await live.pause();
    const resuming = live.resume(); // reopens asynchronously
    const pause = live.pause(); // before the reopen has finished
    await Promise.all([resuming, pause]);
    const read = tracked(device.read(0, new Uint8Array(512)));
    await turn();
    expect(read.settled(), 'paused: the request waits at the gate').toBe(false);
    await live.resume();
    await read.promise;
    expect(opens.count).toBe(1);
    await device.close();
  });

  it('a request waiting at the gate of a volume closed meanwhile fails instead of hanging', async () => {
    const { live } = await openLive();
    const device = live.handle(false);
    await live.pause();
    const read = device.read(0, new Uint8Array(512));
    await device.close(); // the last handle: the volume closes while paused
    await live.resume();
    await expect(read).rejects.toThrow(/closed/);
  });

  it('a failed reopen fails the waiting and later requests with IO_ERROR instead of hanging them', async () => {
    const { live, failReopen } = await openLive();
    const device = live.handle(false);
    await live.pause();
    const read = device.read(0, new Uint8Array(512));
    failReopen.error = new Error('layer file vanished');
    await live.resume();
    for (const request of [read, device.write(0, new Uint8Array(512))]) {
      let error: unknown;
      try {
        await request;
      } catch (err) {
        error = err;
      }
      expect(isStorageError(error, 'IO_ERROR'), String(error)).toBe(true);
      expect(String(error)).toContain('layer file vanished');
    }
    await device.close();
  });

  it('a read-only handle of a writable volume refuses writes and does not flush', async () => {
    const { live } = await openLive();
    const writer = live.handle(false);
    const reader = live.handle(true);
    let error: unknown;
    try {
      await reader.write(0, new Uint8Array(512));
    } catch (err) {
      error = err;
    }
    expect(isStorageError(error, 'READ_ONLY')).toBe(true);
    await reader.flush();
    await reader.close();
    expect(live.referenced).toBe(true);
    await writer.close();
    expect(live.referenced).toBe(false);
  });
});
