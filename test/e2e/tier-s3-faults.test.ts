/**
 * The S3 fault path of a tiered dedup pool through `strata serve`, against moto_server (what
 * test/e2e/tiered-dedup-pool.test.ts does not cover: there, a refused connection fails cold reads
 * while another pool's volume serves, and the daemon starts with the tier down):
 *   - wrong credentials (moto enforcing auth): `pool df` and the log say the keys were refused and
 *     name the fix; an evict fails naming it too; nothing is lost (the packs stay local, the
 *     volume reads back whole);
 *   - truncated bodies, resets and 5xx answers (the fault proxy) are retried: evict and cold reads
 *     succeed, the retries show in /metrics and in the log;
 *   - a black-holed S3 (the proxy takes requests and never answers): a cold read fails with EIO
 *     after a bounded time (the tier's bound per cold call) while the same export keeps serving
 *     reads of its local data and writes from another connection; the data reads back whole once
 *     S3 answers.
 * Everything that may reach the tier runs asynchronously: the proxy answers in this process.
 */
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PoolDfJson, PoolJson, VolumeEvictJson } from '../../src/api/rest/schemas.js';
import { S3FaultProxy } from '../support/s3-fault-proxy.js';
import { createTestBucket, s3ServerAvailable, startMoto, type S3TestServer } from '../support/s3-servers.js';
import { makeTempDir } from '../support/tmp.js';
import { expectSuccess, qemuImg, qemuImgAsync, qemuIo, qemuIoAsync, requireTool, strataAsync } from '../support/tools.js';
import { assertBuilt, startDaemon, waitForSeals, type Daemon } from './harness.js';

assertBuilt();

const MiB = 1 << 20;
const SIZE = 16 * MiB;

/**
 * Writes the same 12 MiB of random bytes to the volume over NBD and to the reference file. Random,
 * not a pattern per MiB: patterns dedup to a dozen chunks in one or two small packs, so the pack a
 * restart's own reads fetch whole could hold any MiB a test then expects to find only in S3; random
 * data is 192 chunks in packs of up to 4 MiB, in the order written.
 */
function writeBoth(nbdUrl: string, reference: string): void {
  const data = path.join(path.dirname(reference), `${path.basename(reference)}.data`);
  writeFileSync(data, randomBytes(DATA_BYTES));
  const toVolume = qemuImg(['convert', '-n', '-f', 'raw', '-O', 'raw', data, nbdUrl]);
  expect(toVolume.code, toVolume.stdout + toVolume.stderr).toBe(0);
  const toReference = qemuImg(['convert', '-n', '-f', 'raw', '-O', 'raw', data, reference]);
  expect(toReference.code, toReference.stdout + toReference.stderr).toBe(0);
}

/** The bytes writeBoth writes at the start of the volume. */
const DATA_BYTES = 12 * MiB;

async function metrics(d: Daemon): Promise<string> {
  return (await d.api('GET', '/metrics')).text();
}

describe.skipIf(!requireTool('qemu-img', 'qemu-io') || !s3ServerAvailable('moto'))('tiered dedup pools: S3 faults through the daemon', () => {
  let tmp: { path: string; cleanup: () => void };
  beforeAll(() => {
    tmp = makeTempDir();
  });
  afterAll(() => tmp.cleanup());
  const f = (name: string) => path.join(tmp.path, name);

  it('wrong credentials: pool df and the log name the refused keys and the fix; evict fails clearly and loses nothing', async () => {
    const strict = await startMoto({ enforceAuth: true });
    // Keys moto does not know (it has no IAM user): every request is refused.
    const d = await startDaemon(f('auth-data'), {
      env: { AWS_ACCESS_KEY_ID: 'AKIAWRONGKEY0000', AWS_SECRET_ACCESS_KEY: 'wrong-secret', AWS_EC2_METADATA_DISABLED: 'true', AWS_PROFILE: undefined },
    });
    try {
      d.cliOk(['pool', 'create', 'wa', '--dedup', '--tier', 's3://strata-auth/p', '--s3-endpoint', strict.endpoint, '--s3-region', strict.region]);
      d.cliOk(['volume', 'create', 'wa/vm', String(SIZE)]);
      d.cliOk(['volume', 'export-nbd', 'wa/vm']);
      const reference = f('auth.raw');
      expect(qemuImg(['create', '-f', 'raw', reference, String(SIZE)]).code).toBe(0);
      writeBoth(`nbd://${d.nbdAddress}/wa/vm`, reference);
      d.cliOk(['snap', 'create', 'wa/vm@s1']);
      expect(waitForSeals(d, 'wa').map((j) => j.state)).toEqual(['succeeded']);

      const evict = d.cli(['volume', 'evict', 'wa/vm']);
      expect(evict.code, evict.stdout + evict.stderr).not.toBe(0);
      expect(evict.stdout + evict.stderr).toMatch(/refused \(InvalidAccessKeyId/);
      expect(evict.stdout + evict.stderr).toMatch(/check the access key and secret/);
      const df = d.json<PoolDfJson>(['pool', 'df', 'wa']);
      expect(df.tierError).toMatch(/refused \(InvalidAccessKeyId.*check the access key and secret/);
      expect(df).toMatchObject({ packRemoteBytes: 0 });
      expect(df.packLocalBytes).toBeGreaterThan(0);
      expect(d.cliOk(['pool', 'df', 'wa']).stdout).toMatch(/check the access key and secret/);
      expect(d.logs()).toMatch(/the pool tier is failing[^\n]*was refused[^\n]*check the access key and secret/);
      const back = qemuImg(['compare', '-f', 'raw', '-F', 'raw', `nbd://${d.nbdAddress}/wa/vm`, reference]);
      expect(back.code, back.stdout + back.stderr).toBe(0);
      const m = await metrics(d);
      expect(m).toMatch(/strata_s3_tier_errors_total\{pool="wa",kind="auth"\} [1-9]/);
      expect(m).toMatch(/strata_s3_tier_retries_total\{pool="wa",kind="auth"\} 0/);
    } finally {
      await d.stop();
      await strict.stop();
    }
  });

  describe('through the fault proxy', () => {
    let moto: S3TestServer;
    let proxy: S3FaultProxy;
    let d: Daemon;
    let dataDir: string;
    const env = () => ({ AWS_ACCESS_KEY_ID: moto.accessKeyId, AWS_SECRET_ACCESS_KEY: moto.secretAccessKey, AWS_EC2_METADATA_DISABLED: 'true', AWS_PROFILE: undefined });
    const reference = () => f('proxy.raw');
    beforeAll(async () => {
      moto = await startMoto();
      proxy = await S3FaultProxy.start(moto.endpoint);
      dataDir = f('proxy-data');
      d = await startDaemon(dataDir, { env: env() });
      const bucket = await createTestBucket(moto);
      d.cliOk(['pool', 'create', 'fp', '--dedup', '--tier', `s3://${bucket}/strata/fp`, '--s3-endpoint', proxy.endpoint, '--s3-region', moto.region]);
      d.cliOk(['volume', 'create', 'fp/vm', String(SIZE)]);
      d.cliOk(['volume', 'export-nbd', 'fp/vm']);
      expect(qemuImg(['create', '-f', 'raw', reference(), String(SIZE)]).code).toBe(0);
      writeBoth(`nbd://${d.nbdAddress}/fp/vm`, reference());
      d.cliOk(['snap', 'create', 'fp/vm@s1']);
      expect(waitForSeals(d, 'fp').map((j) => j.state)).toEqual(['succeeded']);
    });
    afterAll(async () => {
      await d?.stop();
      await proxy?.close();
      await moto?.stop();
    });

    it('retries truncated bodies, resets and 5xx answers: evict and cold reads succeed, the retries show', async () => {
      // Uploads: a reset and a 500 on PUTs, a body cut short on the read-back GET.
      proxy.inject('reset', { method: 'PUT', pathPattern: /\/packs\// });
      proxy.inject('internal-error', { method: 'PUT', pathPattern: /\/packs\// });
      proxy.inject('truncate', { method: 'GET', pathPattern: /\/packs\// });
      const evict = expectSuccess(await strataAsync(['volume', 'evict', 'fp/vm', '--json'], { env: d.env() }), 'strata volume evict');
      const report = JSON.parse(evict.stdout) as VolumeEvictJson;
      expect(report).toMatchObject({ failed: [] });
      expect(report.movedPacks).toBe(report.packCount);
      expect(proxy.served).toMatchObject({ reset: 1, 'internal-error': 1, truncate: 1 });

      // A restart drops every cache: reads of the snapshot's data go to S3, where bodies are cut short.
      await d.stop();
      d = await startDaemon(dataDir, { env: env() });
      proxy.inject('truncate', { method: 'GET', count: 3 });
      proxy.inject('reset', { method: 'GET', count: 2 });
      const back = await qemuImgAsync(['compare', '-f', 'raw', '-F', 'raw', `nbd://${d.nbdAddress}/fp/vm`, reference()]);
      expect(back.code, back.stdout + back.stderr).toBe(0);
      expect(proxy.served).toMatchObject({ truncate: 4, reset: 3 });
      const m = await metrics(d);
      expect(m).toMatch(/strata_s3_tier_retries_total\{pool="fp",kind="truncated"\} 3/);
      expect(m).toMatch(/strata_s3_tier_retries_total\{pool="fp",kind="connection"\} 2/);
      expect(m).toMatch(/strata_s3_tier_failed_calls_total\{pool="fp"\} 0/);
      expect(d.logs()).toMatch(/S3 tier request retried[^\n]*truncated|truncated[^\n]*S3 tier request retried/);
      expect((await d.apiJson<PoolDfJson>('GET', '/v1/pools/fp/df')).tierError).toBeUndefined();
    });

    it('a black-holed S3 fails a cold read after a bounded time while the same export serves its local data', async () => {
      // Local data in the volume's active layer (over the cold snapshot), on the same export.
      const hot = ['-c', 'write -P 0x7e 13M 2M', '-c', 'flush'];
      const w = await qemuIoAsync(['-f', 'raw', ...hot, `nbd://${d.nbdAddress}/fp/vm`]);
      expect(w.code, w.stdout + w.stderr).toBe(0);
      expect(qemuIo(['-f', 'raw', ...hot, reference()]).code).toBe(0);
      await d.stop(); // drop the caches: the first 12 MiB are only in S3 again
      d = await startDaemon(dataDir, { env: env() });

      proxy.inject('stall', { count: Infinity });
      const started = Date.now();
      // The last MiB of the data: the restart's own reads (the export opens the image and reads
      // its metadata at the front) are a sequential stream the tier reads ahead, and it fetches
      // that first pack whole; 11 MiB in is two packs further on, which nothing has read.
      const coldRead = qemuIoAsync(['-f', 'raw', '-c', 'read 11M 1M', `nbd://${d.nbdAddress}/fp/vm`]).then((r) => ({ ...r, ms: Date.now() - started }));
      // The cold read is waiting on S3; one that ends first was served from memory, not S3: say so
      // at once instead of waiting out the test's timeout.
      await Promise.race([
        proxy.nextFault(),
        coldRead.then((r) => {
          throw new Error(`the cold read ended (code ${r.code}) before any request reached the black hole: its data was fetched before the stall`);
        }),
      ]);
      const other = await qemuIoAsync(['-f', 'raw', '-c', 'read -P 0x7e 13M 2M', '-c', 'write -P 0x5c 15M 64k', '-c', 'read -P 0x5c 15M 64k', '-c', 'flush', `nbd://${d.nbdAddress}/fp/vm`]);
      expect(other.code, other.stdout + other.stderr).toBe(0);
      expect(other.stdout).not.toMatch(/failed/);
      expect(qemuIo(['-f', 'raw', '-c', 'write -P 0x5c 15M 64k', reference()]).code).toBe(0);
      const failed = await coldRead;
      expect(failed.stdout + failed.stderr).toMatch(/Input\/output error/);
      console.log(`a cold read against a black-holed S3 failed after ${failed.ms} ms (the tier bounds a cold call at 30 s)`);
      const pool = await d.apiJson<PoolJson>('GET', '/v1/pools/fp');
      expect(pool.dedup?.tierError).toMatch(/did not complete .* within \d+ ms; check that it is reachable/);
      expect(d.logs()).toMatch(/the pool tier is failing[^\n]*pool=fp[^\n]*within \d+ ms/);

      proxy.clear();
      const back = await qemuImgAsync(['compare', '-f', 'raw', '-F', 'raw', `nbd://${d.nbdAddress}/fp/vm`, reference()]);
      expect(back.code, back.stdout + back.stderr).toBe(0);
      expect(d.logs()).toMatch(/the pool tier answers again[^\n]*pool=fp/);
      expect((await d.apiJson<PoolJson>('GET', '/v1/pools/fp')).dedup?.tierError).toBeUndefined();
    }, 120_000);
  });
});
