/**
 * TieredChunkStore read-ahead of sequential cold reads (src/store/tier/read-ahead.ts), over memory
 * tiers (the FaultyChunkStore stands in for S3 failing: the real server's faults are in
 * store-tier-read-ahead-s3.test.ts): a scan costs a GET per part, not per read, and promotes
 * nothing, while random reads still promote; reads in flight together (one pread's chunks) share
 * the parts; no part is asked past an object's end; the next object in key order starts with no
 * small GET; memory stays within its bound; a failing tier fails the reader with the reader's own
 * error, and a failed part nobody reads fails nobody.
 */
import { describe, expect, it } from 'vitest';
import type { ChunkListPage, ChunkStore, ChunkStoreCallOptions } from '../../src/core/chunk-store.js';
import { StorageError } from '../../src/core/errors.js';
import { MemoryCatalogStore } from '../../src/meta/memory-catalog.js';
import { MemoryChunkStore } from '../../src/store/memory-chunk-store.js';
import { TieredChunkStore, type TieredChunkStoreOptions } from '../../src/store/tier/tiered-chunk-store.js';
import { expectCode } from '../support/expect-error.js';
import { FaultyChunkStore } from '../support/faulty-chunk-store.js';
import { digestOf, objectBytes, TEST_COOLING_MS } from '../support/tier.js';

const KiB = 1024;
const CHUNK = 16 * KiB;
const PART = 64 * KiB;
/** Not a whole number of parts: the last part is short. */
const OBJECT_BYTES = 300 * KiB;

/** Records every cold getRange (key, offset, length), then passes it on; fails those of `failingKey`. */
class RangeLog implements ChunkStore {
  readonly ranges: { key: string; offsetBytes: number; lengthBytes: number }[] = [];
  failingKey: string | undefined;
  constructor(readonly inner: ChunkStore) {}
  get(key: string, options?: ChunkStoreCallOptions): Promise<Uint8Array | undefined> {
    return this.inner.get(key, options);
  }
  getRange(key: string, offsetBytes: number, lengthBytes: number, options?: ChunkStoreCallOptions): Promise<Uint8Array | undefined> {
    this.ranges.push({ key, offsetBytes, lengthBytes });
    if (key === this.failingKey) return Promise.reject(new StorageError('IO_ERROR', `injected: getRange ${key} failed`));
    return this.inner.getRange(key, offsetBytes, lengthBytes, options);
  }
  put(key: string, data: Uint8Array, options?: ChunkStoreCallOptions): Promise<void> {
    return this.inner.put(key, data, options);
  }
  putIfAbsent(key: string, data: Uint8Array, options?: ChunkStoreCallOptions): Promise<boolean> {
    return this.inner.putIfAbsent(key, data, options);
  }
  delete(key: string, options?: ChunkStoreCallOptions): Promise<void> {
    return this.inner.delete(key, options);
  }
  list(prefix: string, options?: ChunkStoreCallOptions & { after?: string; limit?: number }): Promise<ChunkListPage> {
    return this.inner.list(prefix, options);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

interface Fixture {
  store: TieredChunkStore;
  cold: FaultyChunkStore;
  log: RangeLog;
  /** Object i's bytes. */
  data: (i: number) => Uint8Array;
}

/** `count` objects p0, p1, ... (key order = their order) on the cold tier only. */
async function coldObjects(count: number, options: Partial<TieredChunkStoreOptions> = {}): Promise<Fixture> {
  const cold = new FaultyChunkStore(new MemoryChunkStore());
  const log = new RangeLog(cold);
  const store = await TieredChunkStore.open({
    hot: new MemoryChunkStore(),
    cold: log,
    catalog: new MemoryCatalogStore(),
    coolingMs: TEST_COOLING_MS,
    flushIntervalMs: 0,
    now: () => TEST_COOLING_MS,
    readPattern: { sequentialGapBytes: 4 * CHUNK },
    readAhead: { aheadBytes: 2 * PART },
    coldPartSizeBytes: PART,
    coldTimeoutMs: 2_000,
    ...options,
  });
  for (let i = 0; i < count; i++) await store.put(`p${i}`, objectBytes(i, OBJECT_BYTES));
  await store.evict(Array.from({ length: count }, (_, i) => `p${i}`));
  log.ranges.length = 0;
  return { store, cold, log, data: (i) => objectBytes(i, OBJECT_BYTES) };
}

/** Reads object i front to back in CHUNK reads, `inFlight` at a time (a pread's chunks), checking each. */
async function scan(f: Fixture, i: number, inFlight = 1): Promise<void> {
  const data = f.data(i);
  for (let batch = 0; batch < OBJECT_BYTES; batch += inFlight * CHUNK) {
    const offsets: number[] = [];
    for (let at = batch; at < Math.min(OBJECT_BYTES, batch + inFlight * CHUNK); at += CHUNK) offsets.push(at);
    const got = await Promise.all(offsets.map((at) => f.store.getRange(`p${i}`, at, CHUNK)));
    got.forEach((bytes, n) => expect(digestOf(bytes)).toEqual(digestOf(data.subarray(offsets[n]!, offsets[n]! + CHUNK))));
  }
}

/** Cold GETs smaller than a part that do not end at the object's end: one per chunk read on its own. */
function smallGets(f: Fixture, key?: string): number {
  return f.log.ranges.filter((r) => (key === undefined || r.key === key) && r.lengthBytes < PART && r.offsetBytes + r.lengthBytes < OBJECT_BYTES).length;
}

describe('TieredChunkStore read-ahead', () => {
  it('a sequential scan costs one small GET and then a GET per part, never past the end, and promotes nothing', async () => {
    const f = await coldObjects(1);
    await scan(f, 0);
    expect(smallGets(f)).toBe(1); // the first read: nothing says it is sequential yet
    const parts = f.log.ranges.filter((r) => r.lengthBytes >= PART || r.offsetBytes + r.lengthBytes === OBJECT_BYTES);
    expect(parts.length).toBe(Math.ceil(OBJECT_BYTES / PART));
    for (const r of f.log.ranges) expect(r.offsetBytes + r.lengthBytes).toBeLessThanOrEqual(OBJECT_BYTES);
    await f.store.settled();
    expect(f.store.stats()).toMatchObject({ promotions: 0, cacheObjects: 0 });
  });

  it("reads in flight together (a pread's chunks, several preads) share the parts and promote nothing", async () => {
    const f = await coldObjects(1);
    await scan(f, 0, 8);
    expect(f.log.ranges.length).toBeLessThanOrEqual(Math.ceil(OBJECT_BYTES / PART) + 2);
    await f.store.settled();
    expect(f.store.stats()).toMatchObject({ promotions: 0, cacheObjects: 0 });
  });

  it('random reads still promote (the second in a row), and read ahead nothing', async () => {
    const f = await coldObjects(1);
    const data = f.data(0);
    expect(digestOf(await f.store.getRange('p0', 200 * KiB, CHUNK))).toEqual(digestOf(data.subarray(200 * KiB, 200 * KiB + CHUNK)));
    expect(digestOf(await f.store.getRange('p0', 0, CHUNK))).toEqual(digestOf(data.subarray(0, CHUNK)));
    expect(f.log.ranges.map((r) => r.lengthBytes)).toEqual([CHUNK, CHUNK]);
    await f.store.settled();
    expect(f.store.stats()).toMatchObject({ promotions: 1, cacheObjects: 1 });
  });

  it('a stream through objects in key order starts each next object with no small GET', async () => {
    const f = await coldObjects(4);
    for (let i = 0; i < 4; i++) await scan(f, i, 4);
    expect(smallGets(f, 'p0')).toBe(1);
    for (let i = 1; i < 4; i++) expect(smallGets(f, `p${i}`)).toBe(0);
    expect(f.store.readAheadStats().prefetchedObjects).toBeGreaterThan(0); // p2 and on: fetched before their reader came
    await f.store.settled();
    expect(f.store.stats().promotions).toBe(0);
  });

  it('memory stays within its bound: past it, reads go to the tier on their own', async () => {
    const bytesMax = 2 * PART;
    const f = await coldObjects(3, { readAhead: { aheadBytes: 4 * PART, bytesMax } });
    let most = 0;
    const watch = setInterval(() => (most = Math.max(most, f.store.readAheadStats().bytes)), 0);
    try {
      await Promise.all([scan(f, 0, 4), scan(f, 1, 4), scan(f, 2, 4)]);
    } finally {
      clearInterval(watch);
    }
    expect(most).toBeLessThanOrEqual(bytesMax);
    expect(f.store.readAheadStats().bytes).toBeLessThanOrEqual(bytesMax);
  });

  it("a failing tier fails the reader with the reader's own error; once it answers, the scan reads whole", async () => {
    const f = await coldObjects(1);
    await f.store.getRange('p0', 0, CHUNK); // the run starts
    f.cold.inject({ kind: 'fail' }, ['getRange']);
    const message = await expectCode(f.store.getRange('p0', CHUNK, CHUNK), 'IO_ERROR');
    // The tier's error for the reader's own read of its range, not the read-ahead's.
    expect(message).toMatch(/getRange p0 failed/);
    expect(message).not.toMatch(/read ahead/);
    f.cold.heal();
    await scan(f, 0, 4);
  });

  it('a stalled tier fails the reader after its bound, with its own error', async () => {
    const f = await coldObjects(1, { coldTimeoutMs: 200 });
    await f.store.getRange('p0', 0, CHUNK);
    f.cold.inject({ kind: 'stall' }, ['getRange']);
    const reads = [1, 2, 3].map((n) => expectCode(f.store.getRange('p0', n * CHUNK, CHUNK), 'UNAVAILABLE', new RegExp(`get p0 \\[${n * CHUNK}, \\+${CHUNK}\\)[^]*within 200 ms`)));
    await Promise.all(reads);
    f.cold.heal();
    await scan(f, 0, 4);
  });

  it("a part nobody reads that fails (the next object's, fetched ahead) fails nobody", async () => {
    const f = await coldObjects(3);
    f.log.failingKey = 'p2';
    await scan(f, 0, 4);
    await scan(f, 1, 4); // p1 was awaited: the stream crossed, so p2 is fetched ahead, and fails
    await expect.poll(() => f.store.readAheadStats().failedParts).toBeGreaterThan(0);
    expect(f.store.stats().coldReadFailures).toBe(0);
    f.log.failingKey = undefined;
    await scan(f, 2, 4); // the failed parts were not kept
    expect(f.store.stats().coldReadFailures).toBe(0);
  });

  it("a streamed read is the caller's to change unless it borrows it: then it may be a view of the part", async () => {
    const f = await coldObjects(1);
    const data = f.data(0);
    await f.store.getRange('p0', 0, CHUNK);
    await f.store.getRange('p0', CHUNK, CHUNK); // starts a stream: the part holding the next chunks is fetched
    const first = await f.store.getRange('p0', 2 * CHUNK, CHUNK);
    first!.fill(0xee); // the caller's own bytes: the next read of the same range does not see this
    expect(digestOf(await f.store.getRange('p0', 2 * CHUNK, CHUNK))).toEqual(digestOf(data.subarray(2 * CHUNK, 3 * CHUNK)));
    const borrowed = await f.store.getRange('p0', 3 * CHUNK - KiB, CHUNK, { borrowResult: true });
    expect(digestOf(borrowed)).toEqual(digestOf(data.subarray(3 * CHUNK - KiB, 4 * CHUNK - KiB)));
    // A view of a part, not a copy: its buffer is larger than the range (a read across two parts
    // would be assembled, which is why this one lies inside the first part).
    expect(borrowed!.buffer.byteLength).toBeGreaterThan(CHUNK);
    expect(f.log.ranges.length).toBeLessThanOrEqual(1 + Math.ceil(OBJECT_BYTES / PART));
  });

  it("a deleted object's parts go with it: a new object of the same key reads as itself", async () => {
    const f = await coldObjects(1);
    await f.store.getRange('p0', 0, CHUNK);
    await f.store.getRange('p0', CHUNK, CHUNK); // starts a stream
    await f.store.delete('p0');
    const replacement = objectBytes(7, OBJECT_BYTES);
    await f.store.put('p0', replacement);
    await f.store.evict(['p0']);
    expect(digestOf(await f.store.getRange('p0', 2 * CHUNK, CHUNK))).toEqual(digestOf(replacement.subarray(2 * CHUNK, 3 * CHUNK)));
  });
});
