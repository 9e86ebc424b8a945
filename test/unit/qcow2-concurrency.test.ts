/**
 * Requests racing metadata operations: a flush that must wait for older requests, or a snapshot
 * that must drain them, may not hold the metadata lock while it waits (a request in flight may be
 * queued on that lock). These hung before the fix.
 */
import { describe, expect, it } from 'vitest';
import { Qcow2Image } from '../../formats/qcow2/index.js';
import { MemoryHostFile } from '../../src/store/memory-file.js';

const CLUSTER = 64 * 1024;

async function withDeadline<T>(what: string, promise: Promise<T>, ms = 5000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms (deadlock?)`)), ms);
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

async function imageWithPendingFree(): Promise<Qcow2Image> {
  const file = new MemoryHostFile();
  await Qcow2Image.create(file, { sizeBytes: 16 * 1024 * 1024 });
  const image = await Qcow2Image.open(file);
  await image.write(0, new Uint8Array(CLUSTER).fill(1));
  await image.flush();
  await image.discard(0, CLUSTER); // queues a deferred free
  return image;
}

describe('qcow2 engine under concurrent requests', () => {
  it('flush with deferred frees does not deadlock with an allocating write in flight', async () => {
    const image = await imageWithPendingFree();
    const data = new Uint8Array(4096).fill(7);
    const write = image.write(5 * CLUSTER, data); // slow path: allocates, needs the lock
    const flush = image.flush();
    await withDeadline('write + flush', Promise.all([write, flush]));
    const back = new Uint8Array(4096);
    await image.read(5 * CLUSTER, back);
    expect(back).toEqual(data);
    const check = await image.check();
    expect(check.corruptions).toBe(0);
    await image.close();
  });

  it('a snapshot drains a write in flight instead of deadlocking', async () => {
    const image = await imageWithPendingFree();
    const data = new Uint8Array(4096).fill(9);
    const write = image.write(3 * CLUSTER, data);
    const snapshot = image.createSnapshot('s1');
    await withDeadline('write + snapshot', Promise.all([write, snapshot]));
    // The write started before the snapshot, so the snapshot holds it.
    await image.write(3 * CLUSTER, new Uint8Array(4096).fill(2));
    await image.applySnapshot('s1');
    const back = new Uint8Array(4096);
    await image.read(3 * CLUSTER, back);
    expect(back).toEqual(data);
    await image.close();
  });

  it('many concurrent writes, flushes and discards settle and stay consistent', async () => {
    const image = await imageWithPendingFree();
    const ops: Promise<unknown>[] = [];
    for (let i = 0; i < 200; i++) {
      const offset = (i % 37) * CLUSTER + (i % 5) * 4096;
      if (i % 7 === 0) ops.push(image.flush());
      else if (i % 11 === 0) ops.push(image.discard((i % 37) * CLUSTER, CLUSTER));
      else ops.push(image.write(offset, new Uint8Array(4096).fill(i & 0xff)));
    }
    await withDeadline('200 mixed requests', Promise.all(ops), 20000);
    await image.flush();
    const check = await image.check();
    expect(check.corruptions).toBe(0);
    expect(check.leaks).toBe(0);
    await image.close();
  });
});
