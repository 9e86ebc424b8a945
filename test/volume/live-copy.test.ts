/**
 * Flatten and snapshot delete while the volume is exported and written (src/volume/live-copy.ts):
 * the copy goes a window at a time, the export runs between windows. A writer through the live
 * device (as an NBD or vhost-user export writes) puts distinct data all over the volume, in ranges
 * already copied and ranges not yet copied, while the job runs; then every byte must be what the
 * model says (guest writes win, the rest reads as before), and the job must have let writes
 * complete while it was copying (the job's progress strictly between 0 and its total both when the
 * write was sent and after it was acknowledged) — a job that paused the export for its whole copy
 * lets none through.
 */
import { describe, expect, it } from 'vitest';
import type { LiveDevice } from '../../src/volume/live.js';
import { LIVE_COPY_WINDOW_BYTES, windowsOver } from '../../src/volume/live-copy.js';
import type { JobInfo } from '../../src/volume/types.js';
import { requireTool } from '../support/tools.js';
import { expectBytes, expectConsistent, KiB, makeEnv, MiB, pattern, readVolume, writeVolume, type Env } from './helpers.js';

const SIZE = 128 * MiB;

/** Parent data in every window (so the job has several windows to copy), with a few holes. */
function parentData(): Uint8Array {
  const out = new Uint8Array(SIZE);
  for (let off = 0; off < SIZE; off += 4 * MiB) out.set(pattern(3 * MiB, off / MiB + 1), off);
  return out;
}

/** A writer through the live device: 4-64 KiB writes at pseudo-random offsets, each a new pattern. */
class Writer {
  /** Writes sent after the job had copied something and acknowledged before it had copied everything. */
  duringCopy = 0;
  written = 0;
  private seed = 12345;
  private stopped = false;
  readonly done: Promise<void>;

  constructor(
    private readonly device: LiveDevice,
    private readonly expected: Uint8Array,
    private readonly job: () => Promise<JobInfo | undefined>,
  ) {
    this.done = this.loop();
  }

  private rnd(): number {
    this.seed = (this.seed * 1103515245 + 12345) % 2 ** 31;
    return this.seed / 2 ** 31;
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      const length = (1 + Math.floor(this.rnd() * 16)) * 4 * KiB;
      const offset = Math.floor(this.rnd() * ((SIZE - length) / (4 * KiB))) * 4 * KiB;
      const data = pattern(length, 1000 + this.written);
      const before = await this.job();
      await this.device.write(offset, data);
      const after = await this.job();
      this.expected.set(data, offset);
      this.written++;
      const copying = (info: JobInfo | undefined) => info !== undefined && info.state === 'running' && info.doneBytes > 0 && info.doneBytes < info.totalBytes;
      if (copying(before) && copying(after)) this.duringCopy++;
      // A client on a socket gives the event loop a turn between requests; on tmpfs a write here
      // may settle at once, and a loop of microtasks alone would starve the job's timers.
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.done;
  }
}

async function clonedVolume(env: Env): Promise<Uint8Array> {
  const s = env.service;
  await s.createPool('p');
  await s.createVolume('p', 'v', SIZE);
  const parent = parentData();
  await writeVolume(env, 'p', 'v', 0, parent);
  await s.createSnapshot('p', 'v', 'gold');
  await s.protectSnapshot('p', 'v', 'gold');
  await s.cloneSnapshot('p', 'v', 'gold', 'p', 'c');
  return parent;
}

async function readDevice(device: LiveDevice): Promise<Uint8Array> {
  const out = new Uint8Array(device.sizeBytes);
  for (let off = 0; off < out.length; off += 8 * MiB) await device.read(off, out.subarray(off, Math.min(out.length, off + 8 * MiB)));
  return out;
}

describe.skipIf(!requireTool('qemu-img'))('flatten and snapshot delete of an exported volume being written', () => {
  it('the parent data is copied in several windows; windowsOver visits only the windows that have something', () => {
    expect(SIZE / LIVE_COPY_WINDOW_BYTES).toBeGreaterThanOrEqual(3);
    const W = LIVE_COPY_WINDOW_BYTES;
    const ranges = [
      { offset: W - 4096, length: 8192, kind: 'data' as const }, // across the first boundary
      { offset: 3 * W + 5, length: 10, kind: 'zero' as const },
      { offset: 3 * W + 100, length: 10, kind: 'data' as const }, // same window again
    ];
    expect(windowsOver(ranges, 0, 8 * W)).toEqual([[0, W], [W, 2 * W], [3 * W, 4 * W]]);
    // Clipped to the map window it is asked for, which need not be window-aligned at its end.
    expect(windowsOver(ranges, W, 3 * W + 50)).toEqual([[W, 2 * W], [3 * W, 3 * W + 50]]);
    expect(windowsOver([], 0, 8 * W)).toEqual([]);
  });

  it('flatten: guest writes complete while it copies, guest data wins, the clone becomes standalone', async () => {
    const env = await makeEnv();
    const s = env.service;
    const expected = await clonedVolume(env);
    const device = await s.openDevice('p', 'c');
    const job = await s.flattenVolume('p', 'c');
    const writer = new Writer(device, expected, () => s.jobInfo(job.id));
    const ended = await s.waitForJob(job.id);
    await writer.stop();
    expect(ended.state).toBe('succeeded');
    expect(ended.doneBytes).toBe(ended.totalBytes);
    expect(writer.duringCopy, `${writer.written} writes in all`).toBeGreaterThan(0);
    expectBytes(await readDevice(device), expected, 'clone through the export after flatten');
    // The export's chain was reopened on the flattened layer: it no longer reads the parent.
    await device.write(0, pattern(64 * KiB, 7));
    expected.set(pattern(64 * KiB, 7), 0);
    await device.close();
    expect((await s.volumeInfo('p', 'c')).parent).toBeUndefined();
    expect((await s.volumeInfo('p', 'c')).chainDepth).toBe(1);
    expectBytes(await readVolume(env, 'p', 'c'), expected, 'clone after flatten');
    expectBytes(await readVolume(env, 'p', 'v', 'gold'), parentData(), 'parent snapshot');
    await expectConsistent(env);
  });

  it('flatten cancelled between windows: still a clone, reads right, writes went on; flatten again finishes', async () => {
    const env = await makeEnv();
    const s = env.service;
    const expected = await clonedVolume(env);
    const device = await s.openDevice('p', 'c');
    const job = await s.flattenVolume('p', 'c');
    const writer = new Writer(device, expected, () => s.jobInfo(job.id));
    while (writer.duringCopy < 3) {
      const info = await s.jobInfo(job.id);
      if (info.state !== 'running') await writer.stop();
      if (info.state !== 'running') throw new Error(`the flatten ended (${info.state}) before it could be cancelled mid-copy`);
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    const cancelled = await s.cancelJob(job.id);
    await writer.stop();
    expect(cancelled.state).toBe('cancelled');
    expect(cancelled.doneBytes).toBeGreaterThan(0);
    expect(cancelled.doneBytes).toBeLessThan(cancelled.totalBytes);
    expect((await s.volumeInfo('p', 'c')).parent?.snapshot).toBe('gold');
    expectBytes(await readDevice(device), expected, 'clone through the export after the cancel');
    expect(await s.catalog.intents.all()).toEqual([]);
    const again = await s.flattenVolume('p', 'c');
    expect((await s.waitForJob(again.id)).state).toBe('succeeded');
    expectBytes(await readDevice(device), expected, 'clone through the export after the second flatten');
    await device.close();
    expect((await s.volumeInfo('p', 'c')).parent).toBeUndefined();
    expectBytes(await readVolume(env, 'p', 'c'), expected, 'clone after the second flatten');
    await expectConsistent(env);
  });

  it.each([
    { name: 'the newest snapshot (merged into the active layer the guest writes)', deleted: 's2' },
    { name: 'an older snapshot (merged into a frozen layer under the head)', deleted: 's1' },
  ])('snapshot delete of $name: writes complete while it copies, every snapshot and the head read right', async ({ deleted }) => {
    const env = await makeEnv();
    const s = env.service;
    await s.createPool('p');
    await s.createVolume('p', 'v', SIZE);
    const s1 = parentData();
    await writeVolume(env, 'p', 'v', 0, s1);
    await s.createSnapshot('p', 'v', 's1');
    const s2 = s1.slice();
    for (let off = 2 * MiB; off < SIZE; off += 16 * MiB) s2.set(pattern(MiB, off / MiB + 500), off);
    for (let off = 2 * MiB; off < SIZE; off += 16 * MiB) await writeVolume(env, 'p', 'v', off, s2.subarray(off, off + MiB));
    await s.createSnapshot('p', 'v', 's2');
    const expected = s2.slice();
    const device = await s.openDevice('p', 'v');
    const running = async () => (await s.listJobs()).find((j) => j.kind === 'snapshot-delete' && j.state === 'running');
    const writer = new Writer(device, expected, running);
    await s.deleteSnapshot('p', 'v', deleted);
    await writer.stop();
    expect(writer.duringCopy, `${writer.written} writes in all`).toBeGreaterThan(0);
    expectBytes(await readDevice(device), expected, 'head through the export after the delete');
    await device.close();
    expect((await s.listSnapshots('p', 'v')).map((x) => x.name)).toEqual(deleted === 's1' ? ['s2'] : ['s1']);
    expectBytes(await readVolume(env, 'p', 'v'), expected, 'head after the delete');
    const kept = deleted === 's1' ? 's2' : 's1';
    expectBytes(await readVolume(env, 'p', 'v', kept), kept === 's1' ? s1 : s2, `snapshot ${kept}`);
    await expectConsistent(env);
  });
});
