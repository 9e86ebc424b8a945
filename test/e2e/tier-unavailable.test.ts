/**
 * A pool's S3 tier that is down is "try again later" at Strata's edges (StorageError UNAVAILABLE),
 * not the daemon's internal error. Through `strata serve`, against moto_server reached through the
 * fault proxy: an object in a tiered dedup pool and a volume imported from the same bytes share
 * their chunks, and `volume evict` moves them all to S3, so a GET of the object, and opening the
 * volume, must read S3.
 *   - moto paused (SIGSTOP: it takes connections and answers nothing, as in the operator
 *     walkthrough that saw 500 InternalError): a GET of the object through Strata's S3 endpoint
 *     answers 503 ServiceUnavailable, the code every AWS SDK retries, once the tier's bound per cold
 *     call has passed (the SDK sees the error itself, not the object's checksum header on the
 *     error's body); the daemon logs it as a warning, not as its own error. Resumed, the same GET
 *     returns the object.
 *   - every connection to S3 reset (a server that is gone; failing fast, after the S3 retries):
 *     the REST API answers an NBD export of the volume 503 UNAVAILABLE with Retry-After, and the
 *     CLI exits 6 with a hint to check the S3 server; once S3 answers the export is made.
 * The fault proxy and the SDK client run in this process: everything that may reach the tier
 * runs asynchronously.
 */
import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { CreateBucketCommand, GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UNAVAILABLE_RETRY_AFTER_SECONDS } from '../../src/api/rest/errors.js';
import type { PoolDfJson, VolumeEvictJson } from '../../src/api/rest/schemas.js';
import { EXIT } from '../../src/cli/remote/exits.js';
import { S3FaultProxy } from '../support/s3-fault-proxy.js';
import { s3Failure } from '../support/s3-failure.js';
import { createTestBucket, s3ServerAvailable, startMoto, type S3TestServer } from '../support/s3-servers.js';
import { makeTempDir } from '../support/tmp.js';
import { strataAsync } from '../support/tools.js';
import { assertBuilt, startDaemon, type Daemon } from './harness.js';

assertBuilt();

const MiB = 1 << 20;
/** Random bytes: chunks no other chunk of them dedups to, each in the packs the evict moves. */
const DATA_BYTES = 4 * MiB;

function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

describe.skipIf(!s3ServerAvailable('moto'))('a tiered pool whose S3 server is down: try again later', () => {
  let tmp: { path: string; cleanup: () => void };
  let moto: S3TestServer;
  let proxy: S3FaultProxy;
  let d: Daemon;
  let s3: S3Client;
  let key: { id: string; secret: string };
  const data = randomBytes(DATA_BYTES);
  // moto's keys reach the daemon through its environment (the AWS default chain), never argv.
  const env = () => ({ AWS_ACCESS_KEY_ID: moto.accessKeyId, AWS_SECRET_ACCESS_KEY: moto.secretAccessKey, AWS_EC2_METADATA_DISABLED: 'true', AWS_PROFILE: undefined });
  /**
   * A client of Strata's S3 endpoint that makes one attempt: the SDK retries ServiceUnavailable on
   * its own (that is the point of answering it), and the test looks at the first answer.
   */
  const clientOf = (daemon: Daemon) =>
    new S3Client({ endpoint: daemon.s3Url as string, region: 'us-east-1', forcePathStyle: true, maxAttempts: 1, credentials: { accessKeyId: key.id, secretAccessKey: key.secret } });
  const restart = async () => {
    s3.destroy();
    await d.stop(); // drops every cache: the data is only in S3 again
    d = await startDaemon(d.dataDir, { env: env() });
    s3 = clientOf(d);
  };

  beforeAll(async () => {
    tmp = makeTempDir();
    moto = await startMoto();
    proxy = await S3FaultProxy.start(moto.endpoint);
    d = await startDaemon(path.join(tmp.path, 'data'), { env: env() });
    const bucket = await createTestBucket(moto);
    d.cliOk(['pool', 'create', 'tp', '--dedup', '--tier', `s3://${bucket}/strata/tp`, '--s3-endpoint', proxy.endpoint, '--s3-region', moto.region]);
    d.cliOk(['user', 'create', 'alice']);
    key = d.json<{ id: string; secret: string }>(['user', 'key', 'create', 'alice']);
    s3 = clientOf(d);
    await s3.send(new CreateBucketCommand({ Bucket: 'cold', CreateBucketConfiguration: { LocationConstraint: 'tp' as never } }));
    await s3.send(new PutObjectCommand({ Bucket: 'cold', Key: 'data.raw', Body: data }));
    const file = path.join(tmp.path, 'data.raw');
    writeFileSync(file, data);
    // A raw import writes its base sealed, sharing the object's chunks: evicting it moves their packs.
    d.cliOk(['volume', 'import', file, 'tp/vm']);
    const report = await d.apiJson<VolumeEvictJson>('POST', '/v1/pools/tp/volumes/vm/evict', undefined, 200);
    expect(report).toMatchObject({ failed: [] });
    expect(report.movedPacks).toBe(report.packCount);
    const df = await d.apiJson<PoolDfJson>('GET', '/v1/pools/tp/df');
    // The object and the volume hold the same chunks once, and no pack is left on this host: the
    // object's bytes are in S3 only.
    expect(df.dedupRatio).toBeGreaterThan(1.8);
    expect(df).toMatchObject({ packLocalBytes: 0 });
  });
  afterAll(async () => {
    s3?.destroy();
    await d?.stop();
    await proxy?.close();
    await moto?.stop();
    tmp?.cleanup();
  });

  it('a GET of tiered object data while S3 is paused answers 503 ServiceUnavailable (a warning in the log); resumed, the same GET returns the object', async () => {
    await restart();
    moto.pause();
    try {
      const failed = await s3Failure(s3.send(new GetObjectCommand({ Bucket: 'cold', Key: 'data.raw' })));
      expect(failed).toEqual({ name: 'ServiceUnavailable', status: 503 });
    } finally {
      moto.resume();
    }
    const logs = await d.logsMatching(/WARN +s3 request [^\n]*method=GET url="\/cold\/data\.raw[^\n]* status=503/);
    expect(logs).toMatch(/WARN +s3 request failed for now [^\n]*code=ServiceUnavailable message="the cold tier did not complete get [^"]* within \d+ ms; check that it is reachable/);
    expect(logs).not.toMatch(/ERROR +s3 request/);

    const got = await s3.send(new GetObjectCommand({ Bucket: 'cold', Key: 'data.raw' }));
    expect(sha256(await got.Body!.transformToByteArray())).toBe(sha256(data));
  });

  it('an export of a volume whose image is in an unreachable S3: REST 503 with Retry-After, CLI exit 6 with the hint; then it is made', async () => {
    await restart();
    proxy.inject('reset', { count: Infinity });
    const exportNbd = { type: 'nbd', pool: 'tp', volume: 'vm' };
    const refused = await d.api('POST', '/v1/exports', { body: exportNbd });
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).toBe(String(UNAVAILABLE_RETRY_AFTER_SECONDS));
    const body = (await refused.json()) as { error: { code: string; message: string } };
    expect(body.error.code).toBe('UNAVAILABLE');
    expect(body.error.message).toMatch(new RegExp(`check that the S3 server at ${proxy.endpoint} is running and reachable`));
    expect(d.logs()).toMatch(/WARN +request failed for now [^\n]*code=UNAVAILABLE/);
    expect(d.logs()).not.toMatch(/ERROR +request/);

    const cli = await strataAsync(['volume', 'export-nbd', 'tp/vm'], { env: d.env() });
    expect(cli.code, cli.stdout + cli.stderr).toBe(EXIT.UNAVAILABLE);
    expect(cli.stderr).toMatch(/running and reachable[^\n]*\[UNAVAILABLE\] \(a service the data depends on did not answer: check the S3 server the message names, then run the command again\)/);

    proxy.clear();
    expect(await d.apiJson<{ pool: string; volume: string }>('POST', '/v1/exports', exportNbd, 201)).toMatchObject({ pool: 'tp', volume: 'vm' });
  });
});
