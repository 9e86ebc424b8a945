/**
 * A pool tier's error state (src/store/pool-tier.ts), against moto_server behind the fault proxy:
 * a cold call cut by the tier's own time bound (an S3 server that takes requests and never
 * answers) is the tier failing, shown by error() like a refusal, for whole and ranged reads (it
 * was not: the S3 store, and a ranged read's parts, saw the bound's abort as a cancellation, so
 * pool info/df said nothing while reads failed with EIO);
 * the daemon hears of the change once when the tier starts failing and once when it answers again.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { MemoryCatalogStore } from '../../src/meta/memory-catalog.js';
import { LocalChunkStore } from '../../src/store/local-chunk-store.js';
import { openPoolTier } from '../../src/store/pool-tier.js';
import { S3FaultProxy } from '../support/s3-fault-proxy.js';
import { createTestBucket, s3ServerAvailable, startMoto, useCredentialsProfiles, type S3TestServer } from '../support/s3-servers.js';
import { tempDir } from '../support/tmp.js';

/** The tier's bound per cold call here (the messages below name it): short, yet above moto's answer time on a loaded machine. */
const BOUND_MS = 2000;

describe.skipIf(!s3ServerAvailable('moto'))('pool tier error state', () => {
  let moto: S3TestServer;
  let proxy: S3FaultProxy;
  beforeAll(async () => {
    moto = await startMoto();
    proxy = await S3FaultProxy.start(moto.endpoint);
    useCredentialsProfiles(moto, { default: { accessKeyId: moto.accessKeyId, secretAccessKey: moto.secretAccessKey } });
  });
  afterAll(async () => {
    await proxy?.close();
    await moto?.stop();
  });

  it('a cold call the time bound cuts sets the error; the change is reported once each way', async () => {
    const bucket = await createTestBucket(moto);
    const changes: (string | undefined)[] = [];
    const tier = await openPoolTier({
      pool: 'p',
      tier: { url: `s3://${bucket}/prefix`, s3Endpoint: proxy.endpoint, s3Region: moto.region, coolingMs: 0 },
      local: new LocalChunkStore(path.join(tempDir(), 'pool')),
      catalog: new MemoryCatalogStore(),
      coldTimeoutMs: BOUND_MS,
      onTierStateChange: (error) => changes.push(error),
    });
    onTestFinished(() => tier.close());
    expect(await tier.store.get('packs/missing')).toBeUndefined(); // the cold tier answers
    expect(tier.error()).toBeUndefined();

    proxy.inject('stall', { count: Infinity });
    await expect(tier.store.get('packs/missing')).rejects.toThrow(/did not complete .* within 2000 ms; check that it is reachable/);
    expect(tier.error()).toMatch(new RegExp(`tier s3://${bucket}/prefix: .*within ${BOUND_MS} ms`));
    await expect(tier.store.get('packs/other')).rejects.toThrow(/within 2000 ms/);
    expect(changes).toEqual([expect.stringMatching(/within 2000 ms/)]);

    proxy.clear();
    expect(await tier.store.get('packs/missing')).toBeUndefined();
    expect(tier.error()).toBeUndefined();
    expect(changes).toEqual([expect.stringMatching(/within 2000 ms/), undefined]);

    // A ranged read of a cold pack: its parts are bounded calls inside the read's own bound, whose
    // timeout reaches them as an abort (it used to turn into a cancellation, so the error stayed unset).
    const pack = Uint8Array.from({ length: 8192 }, (_, i) => i & 0xff);
    await tier.store.put('packs/a', pack);
    expect(await tier.store.evict(['packs/a'])).toMatchObject({ movedObjects: 1 });
    proxy.inject('stall', { count: Infinity });
    await expect(tier.store.getRange('packs/a', 100, 4096)).rejects.toThrow(/within 2000 ms; check that it is reachable/);
    expect(tier.error()).toMatch(/within 2000 ms/);
    expect(changes).toHaveLength(3);
    proxy.clear();
    expect(await tier.store.getRange('packs/a', 100, 4096)).toEqual(pack.subarray(100, 4196));
    expect(tier.error()).toBeUndefined();
  });
});
