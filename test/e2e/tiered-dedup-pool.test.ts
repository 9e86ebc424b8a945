/**
 * Tiered dedup pools end to end through `strata serve`: qemu-io writes a volume over NBD, a
 * snapshot is sealed, `volume evict` moves its packs to the tier (the local packs go, `pool df`
 * shows the bytes in the tier), and qemu-img compare reads everything back over NBD against a
 * reference file. A file:// tier survives a daemon restart; an S3 tier (moto_server, reached
 * through the fault proxy, with moto's keys in the daemon's environment only) is made
 * unreachable: a read of cold data fails with an I/O error while a local volume keeps serving,
 * and once the server answers again the data reads back whole.
 */
import { copyFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PoolDfJson, PoolJson, VolumeEvictJson } from '../../src/api/rest/schemas.js';
import { S3FaultProxy } from '../support/s3-fault-proxy.js';
import { createTestBucket, s3ServerAvailable, startMoto, type S3TestServer } from '../support/s3-servers.js';
import { makeTempDir } from '../support/tmp.js';
import { qemuImg, qemuImgAsync, qemuIo, qemuIoAsync, requireTool } from '../support/tools.js';
import { assertBuilt, folderBytes, qemuCompare, startDaemon, waitForSeals, type Daemon } from './harness.js';

assertBuilt();

const MiB = 1 << 20;
const SIZE = 16 * MiB;


/** Writes the same patterns to the volume over NBD and to the reference raw file. */
function writeBoth(nbdUrl: string, reference: string, seed: number): void {
  const cmds: string[] = [];
  for (let i = 0; i < 12; i++) cmds.push('-c', `write -P 0x${((seed + i) % 250 + 1).toString(16)} ${i * MiB + (i % 3) * 4096} ${MiB / 2 + i * 4096}`);
  cmds.push('-c', 'flush');
  expect(qemuIo(['-f', 'raw', ...cmds, nbdUrl]).code).toBe(0);
  expect(qemuIo(['-f', 'raw', ...cmds, reference]).code).toBe(0);
}

/**
 * Volume + snapshot, sealed, then evicted by `evict`; returns its report. Nothing here calls the
 * tier while the test process is blocked in a synchronous child (the fault proxy runs in it).
 */
async function writeSnapEvict(d: Daemon, vol: string, reference: string, evict: () => Promise<VolumeEvictJson>): Promise<VolumeEvictJson> {
  const [pool] = vol.split('/') as [string];
  d.cliOk(['volume', 'create', vol, String(SIZE)]);
  d.cliOk(['volume', 'export-nbd', vol]);
  expect(qemuImg(['create', '-f', 'raw', reference, String(SIZE)]).code).toBe(0);
  writeBoth(`nbd://${d.nbdAddress}/${vol}`, reference, 1);
  d.cliOk(['snap', 'create', `${vol}@s1`]);
  expect(waitForSeals(d, pool).map((j) => j.state)).toEqual(['succeeded']);
  const localPacks = path.join(d.dataDir, 'chunks', pool, 'packs');
  expect(folderBytes(localPacks)).toBeGreaterThan(0);
  const report = await evict();
  expect(report).toMatchObject({ pool, volume: vol.split('/')[1], layerCount: 1, failed: [] });
  expect(report.movedPacks).toBe(report.packCount);
  expect(report.movedBytes).toBeGreaterThan(0);
  expect(folderBytes(localPacks)).toBe(0);
  const df = d.json<PoolDfJson>(['pool', 'df', pool]);
  expect(df.packRemoteBytes).toBe(report.movedBytes);
  expect(df.packLocalBytes).toBe(0);
  expect(df.tierError).toBeUndefined();
  return report;
}

describe.skipIf(!requireTool('qemu-img', 'qemu-io'))('tiered dedup pools through the daemon', () => {
  let tmp: { path: string; cleanup: () => void };
  beforeAll(() => {
    tmp = makeTempDir();
  });
  afterAll(() => tmp.cleanup());

  it('a file:// tier: evict moves the packs, reads come back whole after a restart; a local pool cannot evict', async () => {
    const dataDir = path.join(tmp.path, 'file-data');
    const cold = path.join(tmp.path, 'cold');
    const reference = path.join(tmp.path, 'file.raw');
    let d = await startDaemon(dataDir);
    try {
      const pool = d.json<PoolJson>(['pool', 'create', 'ft', '--dedup', '--tier', `file://${cold}`, '--cooling', '1h']);
      expect(pool.dedup).toMatchObject({ tierActive: true });
      const report = await writeSnapEvict(d, 'ft/vm', reference, async () => d.json<VolumeEvictJson>(['volume', 'evict', 'ft/vm']));
      expect(folderBytes(cold)).toBeGreaterThanOrEqual(report.movedBytes);
      expect(d.cliOk(['volume', 'evict', 'ft/vm']).stdout).toMatch(/moved 0 of \d+ packs .* were there already/);
      const snapshotContents = path.join(tmp.path, 'file-s1.raw');
      copyFileSync(reference, snapshotContents);
      // Writes after the snapshot stay in the local active layer, over the cold sealed one.
      writeBoth(`nbd://${d.nbdAddress}/ft/vm`, reference, 7);
      // A twin imported from the snapshot's contents shares its data chunks, so the packs that
      // hold them (cold already) count as shared; its new chunks' packs (its metadata) move now.
      d.cliOk(['volume', 'import', snapshotContents, 'ft/twin']);
      waitForSeals(d, 'ft');
      const twin = d.json<VolumeEvictJson>(['volume', 'evict', 'ft/twin']);
      expect(twin.sharedPackCount).toBeGreaterThan(0);
      expect(twin.alreadyColdPacks).toBeGreaterThan(0);
      expect(twin.movedPacks + twin.alreadyColdPacks).toBe(twin.packCount);
      expect(d.cliOk(['volume', 'evict', 'ft/twin']).stdout).toMatch(/packs also hold chunks of other volumes/);
      d.cliOk(['volume', 'create', 'default/plain', '1M']);
      d.cliFails(['volume', 'evict', 'default/plain'], 1, /no tier to evict to/, /--tier/);
      const metrics = await (await d.api('GET', '/metrics')).text();
      expect(metrics).toMatch(new RegExp(`strata_pool_tier_cold_bytes\\{pool="ft"\\} ${report.movedBytes + twin.movedBytes}`));
      expect(metrics).toMatch(/strata_pool_tier_migrations_total\{pool="ft"\} [1-9]/);

      await d.stop();
      d = await startDaemon(dataDir);
      expect(d.json<PoolDfJson>(['pool', 'df', 'ft'])).toMatchObject({ packRemoteBytes: report.movedBytes + twin.movedBytes, packLocalBytes: 0 });
      const back = qemuCompare(`nbd://${d.nbdAddress}/ft/vm`, reference);
      expect(back.code, back.stdout + back.stderr).toBe(0);
      d.cliOk(['volume', 'export-nbd', 'ft/vm@s1']);
      const snap = qemuIo(['-r', '-f', 'raw', '-c', 'read -P 0x2 0 512k', `nbd://${d.nbdAddress}/ft/vm@s1`]);
      expect(snap.code, snap.stdout + snap.stderr).toBe(0);
    } finally {
      await d.stop();
    }
  });

  describe.skipIf(!s3ServerAvailable('moto'))('an S3 tier', () => {
    let moto: S3TestServer;
    let proxy: S3FaultProxy;
    let d: Daemon;
    // moto's keys reach the daemon through its environment (the AWS default chain), never argv.
    const daemonEnv = () => ({ AWS_ACCESS_KEY_ID: moto.accessKeyId, AWS_SECRET_ACCESS_KEY: moto.secretAccessKey, AWS_EC2_METADATA_DISABLED: 'true', AWS_PROFILE: undefined });
    beforeAll(async () => {
      moto = await startMoto();
      proxy = await S3FaultProxy.start(moto.endpoint);
      d = await startDaemon(path.join(tmp.path, 's3-data'), { env: daemonEnv() });
    });
    afterAll(async () => {
      await d?.stop();
      await proxy?.close();
      await moto?.stop();
    });

    it('evicts to moto; an unreachable server fails cold reads with EIO while local volumes serve; then reads come back', async () => {
      const bucket = await createTestBucket(moto);
      const pool = d.json<PoolJson>(['pool', 'create', 'st', '--dedup', '--tier', `s3://${bucket}/strata/st`, '--s3-endpoint', proxy.endpoint, '--s3-region', moto.region]);
      expect(pool.dedup).toMatchObject({ tierActive: true });
      const reference = path.join(tmp.path, 's3.raw');
      // Over REST (async): the fault proxy answers in this process, so no synchronous child may
      // wait on a call that goes to the tier.
      const evict = () => d.apiJson<VolumeEvictJson>('POST', '/v1/pools/st/volumes/vm/evict', undefined, 200);
      const report = await writeSnapEvict(d, 'st/vm', reference, evict);
      expect(await evict()).toMatchObject({ movedPacks: 0, alreadyColdPacks: report.packCount });

      // A local volume to keep serving while the tier is down.
      d.cliOk(['volume', 'create', 'default/local', String(4 * MiB)]);
      d.cliOk(['volume', 'export-nbd', 'default/local']);
      const local = `nbd://${d.nbdAddress}/default/local`;

      proxy.inject('reset', { count: Infinity });
      const coldRead = qemuIoAsync(['-f', 'raw', '-c', 'read 0 4M', `nbd://${d.nbdAddress}/st/vm`]);
      await proxy.nextFault(); // the cold read is under way, retrying against a dead server
      const io = await qemuIoAsync(['-f', 'raw', '-c', 'write -P 0x5a 0 1M', '-c', 'read -P 0x5a 0 1M', '-c', 'flush', local]);
      expect(io.code, io.stdout + io.stderr).toBe(0);
      expect(io.stdout).not.toMatch(/failed/);
      const failed = await coldRead;
      expect(failed.stdout + failed.stderr).toMatch(/Input\/output error/);
      const df = d.json<PoolDfJson>(['pool', 'df', 'st']);
      expect(df.tierError).toMatch(/tier s3:\/\/.*127\.0\.0\.1/);
      expect(d.json<PoolJson>(['pool', 'info', 'st']).dedup?.tierError).toMatch(/reachable/);
      const metrics = await (await d.api('GET', '/metrics')).text();
      expect(metrics).toMatch(/strata_pool_tier_cold_read_failures_total\{pool="st"\} [1-9]/);
      expect(metrics).toMatch(/strata_s3_tier_retries_total\{pool="st",kind="connection"\} [1-9]/);

      proxy.clear();
      const back = await qemuImgAsync(['compare', '-f', 'raw', '-F', 'raw', `nbd://${d.nbdAddress}/st/vm`, reference]);
      expect(back.code, back.stdout + back.stderr).toBe(0);
      expect(d.json<PoolDfJson>(['pool', 'df', 'st'])).toMatchObject({ packRemoteBytes: report.movedBytes });
      expect(d.json<PoolDfJson>(['pool', 'df', 'st']).tierError).toBeUndefined();
    });

    it('starts while the S3 server is unreachable: local volumes serve, the pool reports the error, cold data comes back with the server', async () => {
      expect(d.running).toBe(true); // the previous test left the volumes and exports
      const dataDir = d.dataDir;
      await d.stop();
      proxy.inject('reset', { count: Infinity });
      d = await startDaemon(dataDir, { env: daemonEnv() });
      const local = await qemuIoAsync(['-f', 'raw', '-c', 'read -P 0x5a 0 1M', '-c', 'write -P 0x6b 1M 1M', `nbd://${d.nbdAddress}/default/local`]);
      expect(local.code, local.stdout + local.stderr).toBe(0);
      expect(local.stdout).not.toMatch(/failed/);
      // The bucket check runs in the background: wait for its verdict (no time asserted).
      let pool = await d.apiJson<PoolJson>('GET', '/v1/pools/st');
      while (pool.dedup?.tierError === undefined) {
        await Promise.race([proxy.nextFault(), sleep(200)]); // the check's next attempt, or a re-look
        pool = await d.apiJson<PoolJson>('GET', '/v1/pools/st');
      }
      expect(pool.dedup).toMatchObject({ tierActive: true, tierError: expect.stringMatching(/reachable/) });
      // Opening the cold volume reads its image's metadata from the tier: its export cannot come
      // back now, and the log says why (the record stays for when the tier answers).
      expect(d.logs()).toMatch(/could not restore an export .*target=st\/vm .*S3 GET range .*check that the S3 server at http:\/\/127\.0\.0\.1/);
      proxy.clear();
      await d.stop();
      d = await startDaemon(dataDir, { env: daemonEnv() });
      const back = await qemuImgAsync(['compare', '-f', 'raw', '-F', 'raw', `nbd://${d.nbdAddress}/st/vm`, path.join(tmp.path, 's3.raw')]);
      expect(back.code, back.stdout + back.stderr).toBe(0);
    });
  });
});
