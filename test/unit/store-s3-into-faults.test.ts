/**
 * S3ChunkStore's ranged GETs into a caller's array (ChunkStoreCallOptions.into), which go over the
 * store's own HTTP/1.1 connections (src/store/s3/into-buffer-handler.ts), under faults from a real
 * moto_server through test/support/s3-fault-proxy.ts: each fault is retried as on the SDK's own
 * path and sorted into the same kind, a broken body is never answered as data, a persistent fault
 * fails in bounded time, a cancelled read stops at once, and the kept-alive connections serve
 * again afterwards. Retry timing is shrunk so the file stays fast; no test asserts a time.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { S3RetryPolicy } from '../../src/store/s3/config.js';
import { S3ChunkStore } from '../../src/store/s3/s3-chunk-store.js';
import { expectCode } from '../support/expect-error.js';
import { FAST_RETRY, FAULT_KIND, S3FaultProxy, TRANSIENT_FAULTS } from '../support/s3-fault-proxy.js';
import { createTestBucket, freePort, s3ServerAvailable, startMoto, useCredentialsProfiles, type S3TestServer } from '../support/s3-servers.js';

/** Larger than one socket read, so a truncated body has arrived partly into the array. */
const data = Uint8Array.from({ length: 1_000_000 }, (_, i) => (i * 7 + (i >> 12)) & 0xff);

describe.skipIf(!s3ServerAvailable('moto'))('S3ChunkStore ranged GETs into a caller\'s array, under faults (moto_server)', () => {
  let server: S3TestServer;
  let proxy: S3FaultProxy;
  let bucket: string;
  const stores: S3ChunkStore[] = [];

  beforeAll(async () => {
    server = await startMoto();
    useCredentialsProfiles(server, { moto: server });
    proxy = await S3FaultProxy.start(server.endpoint);
    bucket = await createTestBucket(server);
  });
  afterEach(() => proxy.clear());
  afterAll(async () => {
    for (const store of stores) store.close();
    await proxy?.close();
    await server?.stop();
  });

  function openStore(options: { endpoint?: string; retry?: Partial<S3RetryPolicy> } = {}): S3ChunkStore {
    const store = new S3ChunkStore({
      endpoint: options.endpoint ?? proxy.endpoint,
      region: server.region,
      bucket,
      prefix: `into-${stores.length}/`,
      forcePathStyle: true,
      profile: 'moto',
      retry: options.retry ?? FAST_RETRY,
    });
    stores.push(store);
    return store;
  }

  /** Reads [offset, +length) of 'k' into a dirty array: the answer must be the object's bytes, in the array. */
  async function readInto(store: S3ChunkStore, offset: number, length: number): Promise<void> {
    const into = new Uint8Array(length).fill(0xa5);
    const got = await store.getRange('k', offset, length, { into });
    expect(got!.buffer).toBe(into.buffer);
    expect(Buffer.from(got!).equals(Buffer.from(data.subarray(offset, offset + length)))).toBe(true);
  }

  it.each(TRANSIENT_FAULTS)('a passing %s is retried: the read answers the right bytes in the array, the counters show it', async (fault) => {
    const store = openStore();
    await store.put('k', data);
    proxy.inject(fault, { count: 2, method: 'GET' });
    await readInto(store, 1000, 900_000);
    const kind = FAULT_KIND[fault];
    expect(proxy.served[fault]).toBe(2);
    expect(store.counters.errors[kind]).toBe(2);
    expect(store.counters.retries[kind]).toBe(2);
    expect(store.counters.failedCalls).toBe(0);
    expect(store.intoRequests).toBe(1);
    // The connections left serve the next reads.
    await readInto(store, 0, data.length);
    await readInto(store, 999_000, 1000);
  });

  it.each(TRANSIENT_FAULTS)('a persistent %s fails with a clear IO_ERROR in bounded time; the store reads again after', async (fault) => {
    const store = openStore({ retry: { ...FAST_RETRY, maxAttempts: 3 } });
    await store.put('k', data);
    proxy.inject(fault, { count: Infinity, method: 'GET' });
    const message = await expectCode(store.getRange('k', 0, 500_000, { into: new Uint8Array(500_000) }), 'IO_ERROR');
    expect(message).toMatch(/after 3 attempts .*check that the S3 server at .* is running and reachable/);
    expect(store.counters.errors[FAULT_KIND[fault]]).toBe(3);
    proxy.clear();
    await readInto(store, 0, 500_000);
  });

  it('a refused signature is not retried and says to check the credentials', async () => {
    const store = openStore();
    await store.put('k', data);
    proxy.inject('signature', { count: 1, method: 'GET' });
    await expectCode(store.getRange('k', 0, 1000, { into: new Uint8Array(1000) }), 'IO_ERROR', /was refused \(SignatureDoesNotMatch.*check the access key and secret/);
    expect(store.counters.errors.auth).toBe(1);
    expect(store.counters.retries.auth).toBe(0);
    await readInto(store, 0, 1000);
  });

  it('a missing object is undefined and a range past the end is empty, as without an array', async () => {
    const store = openStore();
    await store.put('k', data);
    expect(await store.getRange('nothing', 0, 10, { into: new Uint8Array(10) })).toBeUndefined();
    expect(await store.getRange('k', data.length, 10, { into: new Uint8Array(10) })).toEqual(new Uint8Array(0));
    await readInto(store, data.length - 10, 10);
  });

  it('a cancelled read stops at once, even while the server stalls', async () => {
    const store = openStore({ retry: { ...FAST_RETRY, attemptTimeoutMs: 60_000, totalTimeMs: 120_000 } });
    await store.put('k', data);
    proxy.inject('stall', { count: 1, method: 'GET' });
    const controller = new AbortController();
    const stalled = proxy.nextFault();
    const call = store.getRange('k', 0, 1000, { into: new Uint8Array(1000), signal: controller.signal });
    await stalled;
    controller.abort();
    await expectCode(call, 'CANCELLED');
    expect(store.counters.failedCalls).toBe(0);
    await readInto(store, 0, 1000);
  });

  it('a server nobody listens at: a bounded IO_ERROR saying to check the server', async () => {
    const store = openStore({ endpoint: `http://127.0.0.1:${await freePort()}`, retry: { ...FAST_RETRY, maxAttempts: 3 } });
    await expectCode(store.getRange('k', 0, 1000, { into: new Uint8Array(1000) }), 'IO_ERROR', /failed after 3 attempts .*connection.*running and reachable/);
    expect(store.counters.errors.connection).toBe(3);
  });
});
