/**
 * Read-ahead of sequential cold reads against a real S3 server that misbehaves: a TieredChunkStore
 * whose cold tier is an S3ChunkStore talking to moto_server through the fault proxy
 * (test/support/s3-fault-proxy.ts). Truncated bodies, resets and 5xx answers met by the parts of
 * a scan are retried and lose nothing; a black-holed server fails the reader's reads with their
 * own errors after the tier's bound, never with a read-ahead's, and the scan reads whole once the
 * server answers.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryCatalogStore } from '../../src/meta/memory-catalog.js';
import { MemoryChunkStore } from '../../src/store/memory-chunk-store.js';
import type { S3RetryPolicy } from '../../src/store/s3/config.js';
import { S3ChunkStore } from '../../src/store/s3/s3-chunk-store.js';
import { TieredChunkStore } from '../../src/store/tier/tiered-chunk-store.js';
import { expectCode } from '../support/expect-error.js';
import { S3FaultProxy } from '../support/s3-fault-proxy.js';
import { createTestBucket, s3ServerAvailable, startMoto, useCredentialsProfiles, type S3TestServer } from '../support/s3-servers.js';
import { digestOf, objectBytes, TEST_COOLING_MS } from '../support/tier.js';

const KiB = 1024;
const CHUNK = 64 * KiB;
const PART = 256 * KiB;
const OBJECT_BYTES = 2 * 1024 * KiB + 5 * KiB;
const COLD_TIMEOUT_MS = 1_500;
/** Short backoffs: a retried call takes milliseconds. */
const FAST_RETRY: Partial<S3RetryPolicy> = { maxAttempts: 4, baseDelayMs: 2, maxDelayMs: 20, totalTimeMs: 5_000, attemptTimeoutMs: 400, connectTimeoutMs: 400 };

describe.skipIf(!s3ServerAvailable('moto'))('TieredChunkStore read-ahead against moto behind the fault proxy', () => {
  let server: S3TestServer;
  let proxy: S3FaultProxy;
  let bucket: string;
  const s3Stores: S3ChunkStore[] = [];

  beforeAll(async () => {
    server = await startMoto();
    useCredentialsProfiles(server, { moto: server });
    proxy = await S3FaultProxy.start(server.endpoint);
    bucket = await createTestBucket(server);
  });
  afterAll(async () => {
    for (const store of s3Stores) store.close();
    await proxy?.close();
    await server?.stop();
  });

  /** Objects p0 and p1 on the cold tier only (evicted through the proxy with no fault). */
  async function coldTier(): Promise<{ store: TieredChunkStore; s3: S3ChunkStore }> {
    const s3 = new S3ChunkStore({ endpoint: proxy.endpoint, region: server.region, bucket, prefix: `t-${s3Stores.length}/`, forcePathStyle: true, profile: 'moto', retry: FAST_RETRY });
    s3Stores.push(s3);
    const store = await TieredChunkStore.open({
      hot: new MemoryChunkStore(),
      cold: s3,
      catalog: new MemoryCatalogStore(),
      coolingMs: TEST_COOLING_MS,
      flushIntervalMs: 0,
      coldPartSizeBytes: PART,
      coldTimeoutMs: COLD_TIMEOUT_MS,
      readAhead: { aheadBytes: 4 * PART },
    });
    for (const i of [0, 1]) await store.put(`p${i}`, objectBytes(i, OBJECT_BYTES));
    expect((await store.evict(['p0', 'p1'])).failed).toEqual([]);
    return { store, s3 };
  }

  /** Reads p<i> front to back, 8 chunk reads in flight at a time; the bytes of every read checked. */
  async function scan(store: TieredChunkStore, i: number): Promise<void> {
    const data = objectBytes(i, OBJECT_BYTES);
    for (let batch = 0; batch < OBJECT_BYTES; batch += 8 * CHUNK) {
      const offsets: number[] = [];
      for (let at = batch; at < Math.min(OBJECT_BYTES, batch + 8 * CHUNK); at += CHUNK) offsets.push(at);
      const got = await Promise.all(offsets.map((at) => store.getRange(`p${i}`, at, CHUNK)));
      got.forEach((bytes, n) => expect(digestOf(bytes)).toEqual(digestOf(data.subarray(offsets[n]!, offsets[n]! + CHUNK))));
    }
  }

  it('truncated bodies, resets and 5xx answers met by the parts are retried: the scan reads whole, nothing fails', async () => {
    const { store, s3 } = await coldTier();
    proxy.inject('truncate', { method: 'GET', count: 3 });
    proxy.inject('reset', { method: 'GET', count: 2 });
    proxy.inject('internal-error', { method: 'GET', count: 2 });
    await scan(store, 0);
    await scan(store, 1);
    expect(proxy.served).toMatchObject({ truncate: 3, reset: 2, 'internal-error': 2 });
    // Every fault was met and retried (how each is classified is test/unit/store-s3-faults.test.ts's).
    expect(Object.values(s3.counters.retries).reduce((sum, n) => sum + n, 0)).toBeGreaterThan(0);
    expect(s3.counters.failedCalls).toBe(0);
    expect(store.stats()).toMatchObject({ coldReadFailures: 0, promotions: 0 });
    expect(store.readAheadStats().failedParts).toBe(0);
    proxy.clear();
    await store.close();
  });

  it("parts are fetched into arrays earlier parts were served from, and every read's bytes are its own", async () => {
    const { store } = await coldTier();
    await scan(store, 0);
    await scan(store, 1);
    await scan(store, 0);
    // The S3 store wrote parts into the read-ahead's arrays, and arrays came back for later parts.
    expect(store.readAheadStats().reusedBuffers).toBeGreaterThan(0);
    // A read that does not borrow gets its own copy: changing it changes nothing another read sees.
    await store.getRange('p1', 0, CHUNK);
    const mine = await store.getRange('p1', CHUNK, CHUNK);
    mine!.fill(0xee);
    const data = objectBytes(1, OBJECT_BYTES);
    const again = await Promise.all([1, 2].map((n) => store.getRange('p1', n * CHUNK, CHUNK)));
    again.forEach((bytes, i) => expect(digestOf(bytes)).toEqual(digestOf(data.subarray((i + 1) * CHUNK, (i + 2) * CHUNK))));
    await store.close();
  });

  it("a black-holed server fails the reader's reads with their own errors after the bound; then the scan reads whole", async () => {
    const { store } = await coldTier();
    await store.getRange('p0', 0, CHUNK); // the run starts: the next reads stream
    proxy.inject('stall', { count: Infinity });
    const reads = [1, 2, 3, 4].map(async (n) => {
      const message = await expectCode(store.getRange('p0', n * CHUNK, CHUNK), 'UNAVAILABLE');
      expect(message).toMatch(new RegExp(`did not complete get p0 \\[${n * CHUNK}, \\+${CHUNK}\\) within ${COLD_TIMEOUT_MS} ms`));
      expect(message).not.toMatch(/read ahead/);
    });
    await Promise.all(reads);
    expect(store.stats().coldReadFailures).toBe(4);
    proxy.clear();
    await scan(store, 0);
    await store.close();
  });
});
