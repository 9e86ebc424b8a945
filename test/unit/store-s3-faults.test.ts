/**
 * S3ChunkStore under faults, against a real moto_server: through test/support/s3-fault-proxy.ts
 * (5xx, SlowDown, resets, stalls, truncated bodies, a refused signature), with refused credentials
 * (a moto that enforces auth), a missing bucket, missing credentials, and a server killed mid-test
 * and brought back; and the same faults on ranged GETs into a caller's array, which go over the
 * store's own HTTP/1.1 connections (src/store/s3/into-buffer-handler.ts): each sorted into the same
 * kind and retried, a broken body never answered as data. Retry timing is shrunk so the file stays
 * fast; no test asserts a time.
 */
import { CreateBucketCommand } from '@aws-sdk/client-s3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { S3RetryEvent, S3RetryPolicy } from '../../src/store/s3/config.js';
import { S3ChunkStore } from '../../src/store/s3/s3-chunk-store.js';
import { expectCode } from '../support/expect-error.js';
import { FAST_RETRY, FAULT_KIND, S3FaultProxy, TRANSIENT_FAULTS } from '../support/s3-fault-proxy.js';
import { adminClient, createTestBucket, freePort, s3ServerAvailable, startMoto, useCredentialsProfiles, type S3TestServer } from '../support/s3-servers.js';

const data = Uint8Array.from({ length: 100_000 }, (_, i) => (i * 7) & 0xff);
/**
 * For ranged GETs into a caller's array (over the store's own connections: into-buffer-handler.ts):
 * larger than one socket read, so a truncated body has arrived partly into the array.
 */
const intoData = Uint8Array.from({ length: 1_000_000 }, (_, i) => (i * 7 + (i >> 12)) & 0xff);

describe.skipIf(!s3ServerAvailable('moto'))('S3ChunkStore faults (moto_server)', () => {
  let server: S3TestServer;
  let proxy: S3FaultProxy;
  let bucket: string;
  const stores: S3ChunkStore[] = [];

  beforeAll(async () => {
    server = await startMoto();
    useCredentialsProfiles(server, { moto: server, 'wrong-keys': { accessKeyId: 'AKIAWRONGKEY', secretAccessKey: 'wrong' } });
    proxy = await S3FaultProxy.start(server.endpoint);
    bucket = await createTestBucket(server);
  });
  afterEach(() => proxy.clear());
  afterAll(async () => {
    for (const store of stores) store.close();
    await proxy?.close();
    await server?.stop();
  });

  function openStore(options: { endpoint?: string; retry?: Partial<S3RetryPolicy>; bucket?: string; profile?: string } = {}): { store: S3ChunkStore; events: S3RetryEvent[] } {
    const events: S3RetryEvent[] = [];
    const store = new S3ChunkStore({
      endpoint: options.endpoint ?? proxy.endpoint,
      region: server.region,
      bucket: options.bucket ?? bucket,
      prefix: `t-${stores.length}/`,
      forcePathStyle: true,
      profile: options.profile ?? 'moto',
      retry: options.retry ?? FAST_RETRY,
      logger: (event) => events.push(event),
    });
    stores.push(store);
    return { store, events };
  }

  it.each(TRANSIENT_FAULTS)('a passing %s is retried: the call succeeds and the counters show it', async (fault) => {
    const { store, events } = openStore();
    await store.put('k', data);
    // Truncation only means something for a body the client reads: GETs.
    proxy.inject(fault, { count: 2, ...(fault === 'truncate' || fault === 'stall' ? { method: 'GET' } : {}) });
    expect(await store.get('k')).toEqual(data);
    const kind = FAULT_KIND[fault];
    expect(proxy.served[fault]).toBeGreaterThanOrEqual(2);
    expect(store.counters.retries[kind]).toBe(2);
    expect(store.counters.errors[kind]).toBe(2);
    expect(store.counters.failedCalls).toBe(0);
    expect(events.map((e) => [e.operation, e.kind, e.attempt])).toEqual([
      ['GET', kind, 1],
      ['GET', kind, 2],
    ]);
    expect(events[0]!.endpoint).toBe(proxy.endpoint);
    // Writes get through the same faults too.
    if (fault !== 'truncate' && fault !== 'stall') {
      proxy.inject(fault, { count: 1, method: 'PUT' });
      await store.put('k2', data);
      expect(await store.getRange('k2', 99_990, 100)).toEqual(data.slice(99_990));
      expect(store.counters.retries[kind]).toBe(3);
    }
  });

  it('a truncated ranged GET is retried, never returned short', async () => {
    const { store } = openStore();
    await store.put('k', data);
    proxy.inject('truncate', { count: 1, method: 'GET' });
    expect(await store.getRange('k', 1000, 50_000)).toEqual(data.slice(1000, 51_000));
    expect(store.counters.retries.truncated).toBe(1);
  });

  it.each(TRANSIENT_FAULTS)('a persistent %s fails with a clear UNAVAILABLE in bounded time; the store serves again after', async (fault) => {
    const { store } = openStore({ retry: { ...FAST_RETRY, maxAttempts: 3 } });
    await store.put('k', data);
    proxy.inject(fault, { count: Infinity, ...(fault === 'truncate' ? { method: 'GET' } : {}) });
    const message = await expectCode(store.get('k'), 'UNAVAILABLE');
    expect(message).toContain(proxy.endpoint);
    expect(message).toContain(bucket);
    expect(message).toMatch(/after 3 attempts .*check that the S3 server at .* is running and reachable/);
    expect(store.counters.errors[FAULT_KIND[fault]]).toBe(3);
    expect(store.counters.failedCalls).toBe(1);
    proxy.clear();
    expect(await store.get('k')).toEqual(data);
    await store.put('k3', data);
  });

  it('a refused signature is not retried and says to check the credentials', async () => {
    const { store } = openStore();
    proxy.inject('signature', { count: 1 });
    await expectCode(store.put('k', data), 'IO_ERROR', /was refused \(SignatureDoesNotMatch.*check the access key and secret/);
    expect(store.counters.errors.auth).toBe(1);
    expect(Object.values(store.counters.retries).every((n) => n === 0)).toBe(true);
    await store.put('k', data);
    expect(await store.get('k')).toEqual(data);
  });

  it('the time budget bounds a call whatever maxAttempts allows', async () => {
    const { store } = openStore({ retry: { ...FAST_RETRY, maxAttempts: 1000, attemptTimeoutMs: 100, totalTimeMs: 500 } });
    proxy.inject('stall', { count: Infinity });
    await expectCode(store.get('k'), 'UNAVAILABLE', /the request got no complete answer in time/);
    expect(store.counters.errors.timeout).toBeLessThan(1000);
  });

  it('a cancelled call stops at once, even while the server stalls', async () => {
    const { store } = openStore({ retry: { ...FAST_RETRY, attemptTimeoutMs: 60_000, totalTimeMs: 120_000 } });
    proxy.inject('stall', { count: 1 });
    const controller = new AbortController();
    const stalled = proxy.nextFault();
    const call = store.put('k', data, { signal: controller.signal });
    await stalled;
    controller.abort();
    await expectCode(call, 'CANCELLED');
    expect(store.counters.failedCalls).toBe(0);
  });

  it('a missing bucket is reported, not retried', async () => {
    const { store } = openStore({ endpoint: server.endpoint, bucket: 'no-such-bucket-here' });
    await expectCode(store.checkBucket(), 'IO_ERROR', /bucket no-such-bucket-here does not exist there: create it/);
    await expectCode(store.put('k', data), 'IO_ERROR', /does not exist there/);
    await expectCode(store.get('k'), 'IO_ERROR', /does not exist there/);
    expect(store.counters.errors.bucket).toBe(3);
    expect(store.counters.retries.bucket).toBe(0);
  });

  it('no credentials found: says where to put them', async () => {
    const { store } = openStore({ profile: 'no-such-profile' });
    await expectCode(store.put('k', data), 'IO_ERROR', /found no credentials.*profile "no-such-profile"/);
    expect(store.counters.errors.credentials).toBe(1);
  });

  it('a server that enforces auth refuses unknown keys: not retried, names the fix', async () => {
    const strict = await startMoto({ enforceAuth: true });
    try {
      const { store } = openStore({ endpoint: strict.endpoint, profile: 'wrong-keys' });
      await expectCode(store.checkBucket(), 'IO_ERROR', /was refused.*check the access key and secret/);
      await expectCode(store.put('k', data), 'IO_ERROR', /was refused \(InvalidAccessKeyId/);
      expect(store.counters.errors.auth).toBe(2);
      expect(store.counters.retries.auth).toBe(0);
    } finally {
      await strict.stop();
    }
  });

  it('a server killed mid-test: bounded clear errors, then it works again when the server is back', async () => {
    const own = await startMoto();
    try {
      const ownBucket = await createTestBucket(own);
      const { store } = openStore({ endpoint: own.endpoint, bucket: ownBucket });
      await store.put('k', data);
      await own.kill();
      await expectCode(store.get('k'), 'UNAVAILABLE', new RegExp(`at ${own.endpoint} failed after .*connection.*running and reachable`));
      await expectCode(store.put('k2', data), 'UNAVAILABLE', /running and reachable/);
      expect(store.counters.errors.connection).toBeGreaterThan(0);
      await own.restart();
      // moto keeps nothing across a restart: make the bucket again.
      const admin = adminClient(own);
      await admin.send(new CreateBucketCommand({ Bucket: ownBucket }));
      admin.destroy();
      await store.put('k', data);
      expect(await store.get('k')).toEqual(data);
    } finally {
      await own.stop();
    }
  });

  /** Reads [offset, +length) of 'k' into a dirty array: the answer must be the object's bytes, in the array. */
  async function readInto(store: S3ChunkStore, offset: number, length: number): Promise<void> {
    const into = new Uint8Array(length).fill(0xa5);
    const got = await store.getRange('k', offset, length, { into });
    expect(got!.buffer).toBe(into.buffer);
    expect(Buffer.from(got!).equals(Buffer.from(intoData.subarray(offset, offset + length)))).toBe(true);
  }

  it.each(TRANSIENT_FAULTS)('into an array: a passing %s is retried: the read answers the right bytes in the array, the counters show it', async (fault) => {
    const { store } = openStore();
    await store.put('k', intoData);
    const servedBefore = proxy.served[fault];
    proxy.inject(fault, { count: 2, method: 'GET' });
    await readInto(store, 1000, 900_000);
    const kind = FAULT_KIND[fault];
    expect(proxy.served[fault] - servedBefore).toBe(2);
    expect(store.counters.errors[kind]).toBe(2);
    expect(store.counters.retries[kind]).toBe(2);
    expect(store.counters.failedCalls).toBe(0);
    expect(store.intoRequests).toBe(1);
    // The connections left serve the next reads.
    await readInto(store, 0, intoData.length);
    await readInto(store, 999_000, 1000);
  });

  it.each(TRANSIENT_FAULTS)('into an array: a persistent %s fails with a clear UNAVAILABLE in bounded time; the store reads again after', async (fault) => {
    const { store } = openStore({ retry: { ...FAST_RETRY, maxAttempts: 3 } });
    await store.put('k', intoData);
    proxy.inject(fault, { count: Infinity, method: 'GET' });
    const message = await expectCode(store.getRange('k', 0, 500_000, { into: new Uint8Array(500_000) }), 'UNAVAILABLE');
    expect(message).toMatch(/after 3 attempts .*check that the S3 server at .* is running and reachable/);
    expect(store.counters.errors[FAULT_KIND[fault]]).toBe(3);
    proxy.clear();
    await readInto(store, 0, 500_000);
  });

  it('into an array: a refused signature is not retried and says to check the credentials', async () => {
    const { store } = openStore();
    await store.put('k', intoData);
    proxy.inject('signature', { count: 1, method: 'GET' });
    await expectCode(store.getRange('k', 0, 1000, { into: new Uint8Array(1000) }), 'IO_ERROR', /was refused \(SignatureDoesNotMatch.*check the access key and secret/);
    expect(store.counters.errors.auth).toBe(1);
    expect(store.counters.retries.auth).toBe(0);
    await readInto(store, 0, 1000);
  });

  it('into an array: a missing object is undefined and a range past the end is empty, as without an array', async () => {
    const { store } = openStore();
    await store.put('k', intoData);
    expect(await store.getRange('nothing', 0, 10, { into: new Uint8Array(10) })).toBeUndefined();
    expect(await store.getRange('k', intoData.length, 10, { into: new Uint8Array(10) })).toEqual(new Uint8Array(0));
    await readInto(store, intoData.length - 10, 10);
  });

  it('into an array: a cancelled read stops at once, even while the server stalls', async () => {
    const { store } = openStore({ retry: { ...FAST_RETRY, attemptTimeoutMs: 60_000, totalTimeMs: 120_000 } });
    await store.put('k', intoData);
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

  it('into an array: a server nobody listens at: a bounded UNAVAILABLE saying to check the server', async () => {
    const { store } = openStore({ endpoint: `http://127.0.0.1:${await freePort()}`, retry: { ...FAST_RETRY, maxAttempts: 3 } });
    await expectCode(store.getRange('k', 0, 1000, { into: new Uint8Array(1000) }), 'UNAVAILABLE', /failed after 3 attempts .*connection.*running and reachable/);
    expect(store.counters.errors.connection).toBe(3);
  });
});

describe('S3ChunkStore settings', () => {
  const base = { endpoint: 'http://127.0.0.1:1', region: 'us-east-1', bucket: 'strata-test', forcePathStyle: true };
  it('bad settings are INVALID_ARGUMENT naming the setting, before any request', () => {
    const invalid = (config: ConstructorParameters<typeof S3ChunkStore>[0], message: RegExp): void => {
      expect(() => new S3ChunkStore(config)).toThrow(message);
    };
    invalid({ ...base, endpoint: 'ftp://example' }, /S3 endpoint "ftp:\/\/example" is not an http:\/\/ or https:\/\/ URL/);
    invalid({ ...base, bucket: 'Bad_Bucket' }, /S3 bucket name "Bad_Bucket"/);
    invalid({ ...base, region: '' }, /needs a region/);
    invalid({ ...base, retry: { maxAttempts: 0 } }, /retry setting maxAttempts is 0/);
    invalid({ ...base, retry: { totalTimeMs: 1.5 } }, /retry setting totalTimeMs is 1.5/);
  });

  it('a key too long for S3 once prefixed is INVALID_ARGUMENT', async () => {
    const store = new S3ChunkStore({ ...base, prefix: 'p'.repeat(1000) });
    try {
      await expectCode(store.put('k'.repeat(30), Uint8Array.of(1)), 'INVALID_ARGUMENT', /longer than S3's 1024 bytes/);
    } finally {
      store.close();
    }
  });
});
