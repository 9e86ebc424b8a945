/**
 * The ChunkStore conformance suite run by S3ChunkStore against real servers: moto_server and a
 * single-node Ceph radosgw (started once for the file; test/support/s3-servers.ts), on the memstore
 * OSD the other tests use and on BlueStore, the store Ceph deploys (a sparse block file in the
 * cluster's folder). Each test gets a fresh bucket. Also shows which putIfAbsent path each server takes.
 */
import { statSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { S3ChunkStore } from '../../src/store/s3/s3-chunk-store.js';
import { createTestBucket, s3ServerAvailable, startMoto, startRadosgw, useCredentialsProfiles, type S3ServerKind, type S3TestServer } from '../support/s3-servers.js';
import { expectCode } from '../support/expect-error.js';
import { chunkStoreConformance } from './chunk-store.js';

/** BlueStore's block file: sparse, so only what the suite writes takes room. */
const BLUESTORE_BLOCK_BYTES = 4 * 1024 * 1024 * 1024;

const servers: readonly { readonly name: string; readonly kind: S3ServerKind; readonly start: () => Promise<S3TestServer> }[] = [
  { name: 'moto', kind: 'moto', start: () => startMoto() },
  { name: 'radosgw', kind: 'radosgw', start: () => startRadosgw() },
  { name: 'radosgw on BlueStore', kind: 'radosgw', start: () => startRadosgw({ bluestore: { blockBytes: BLUESTORE_BLOCK_BYTES } }) },
];

for (const { name, kind, start } of servers) {
  describe.skipIf(!s3ServerAvailable(kind))(`S3ChunkStore on ${name}`, () => {
    let server: S3TestServer;
    const stores: S3ChunkStore[] = [];
    beforeAll(async () => {
      server = await start();
      useCredentialsProfiles(server, { [kind]: server, 'wrong-secret': { accessKeyId: server.accessKeyId, secretAccessKey: 'not-the-secret' } });
    });
    afterAll(async () => {
      for (const store of stores) store.close();
      await server?.stop();
    });

    const open = async (): Promise<S3ChunkStore> => {
      const bucket = await createTestBucket(server);
      const store = await S3ChunkStore.open({ endpoint: server.endpoint, region: server.region, bucket, prefix: 'tier/', forcePathStyle: true, profile: kind });
      stores.push(store);
      return store;
    };

    chunkStoreConformance(`S3 (${name})`, open);

    it.skipIf(!name.includes('BlueStore'))('the OSD keeps the objects in its BlueStore block file', async () => {
      const store = await open();
      const block = path.join(server.dir, 'osd', 'block');
      const before = statSync(block).blocks;
      await store.put('big', new Uint8Array(8 * 1024 * 1024).fill(7));
      expect(statSync(block).size).toBe(BLUESTORE_BLOCK_BYTES);
      expect(statSync(block).blocks).toBeGreaterThan(before); // allocated as the OSD wrote into it
    });

    it(`putIfAbsent uses the server's conditional PUT (If-None-Match: *)`, async () => {
      const store = await open();
      expect(await store.conditionalPutMode()).toBe('native');
      expect((await store.list('')).keys).toEqual([]); // the probe cleaned up after itself
    });

    it('the head-then-put fallback (for servers without conditional PUT) keeps an existing object', async () => {
      const bucket = await createTestBucket(server);
      const store = new S3ChunkStore({ endpoint: server.endpoint, region: server.region, bucket, forcePathStyle: true, profile: kind, conditionalPut: 'head-then-put' });
      stores.push(store);
      expect(await store.conditionalPutMode()).toBe('head-then-put');
      expect(await store.putIfAbsent('chunk', Uint8Array.of(1, 2))).toBe(true);
      expect(await store.putIfAbsent('chunk', Uint8Array.of(1, 2))).toBe(false);
      expect(await store.get('chunk')).toEqual(Uint8Array.of(1, 2));
    });

    // moto checks signatures only when told to (test/unit/store-s3-faults.test.ts does that).
    it.skipIf(kind !== 'radosgw')('a wrong secret is refused at once, with the fix named', async () => {
      const bucket = await createTestBucket(server);
      const config = { endpoint: server.endpoint, region: server.region, bucket, forcePathStyle: true, profile: 'wrong-secret' };
      await expectCode(S3ChunkStore.open(config), 'IO_ERROR', /was refused.*check the access key and secret/);
      const store = new S3ChunkStore(config);
      stores.push(store);
      await expectCode(store.put('k', Uint8Array.of(1)), 'IO_ERROR', /was refused \(SignatureDoesNotMatch/);
      expect(store.counters.retries.auth).toBe(0);
      expect(store.counters.errors.auth).toBe(1);
    });

    // moto forgets everything when killed: test/unit/store-s3-faults.test.ts kills one. radosgw keeps
    // its objects in the OSD, so a killed gateway comes back with them. Last in the file: until the
    // dead gateway's watches time out (30 s), the new one's metadata writes (new buckets) wait.
    it.skipIf(kind !== 'radosgw')('a killed gateway: bounded clear errors, then the same objects when it is back', async () => {
      const bucket = await createTestBucket(server);
      const retry = { maxAttempts: 3, baseDelayMs: 2, maxDelayMs: 20, totalTimeMs: 5_000, attemptTimeoutMs: 1_000, connectTimeoutMs: 500 };
      const store = new S3ChunkStore({ endpoint: server.endpoint, region: server.region, bucket, forcePathStyle: true, profile: kind, retry });
      stores.push(store);
      await store.put('kept', Uint8Array.of(4, 5, 6));
      await server.kill();
      await expectCode(store.get('kept'), 'UNAVAILABLE', /failed after 3 attempts.*running and reachable/);
      expect(store.counters.errors.connection).toBe(3);
      await server.restart();
      expect(await store.get('kept')).toEqual(Uint8Array.of(4, 5, 6));
    });
  });
}
