/**
 * Administering tiered dedup pools through `strata serve` against moto_server (through the fault
 * proxy), as an operator walking docs/cli.md does:
 *   - two pools whose tiers are one S3 prefix (or one inside the other) would delete each other's
 *     packs (each GC deletes the packs under its prefix that its index does not know): the second
 *     pool create is refused, naming the other pool and a prefix of its own;
 *   - a pool created against a bucket that does not exist (or a server that does not answer) is
 *     made, but pool create warns at once with the tier's error and its fix, instead of the
 *     operator finding out at the first evict; such a pool is deleted with --force;
 *   - `pool gc` with the default grace after a delete frees nothing yet, and says how much waits
 *     out the grace period and how to free it now; `--grace 0` then frees exactly that;
 *   - `volume evict -p` shows its progress in packs (its job counts packs, not bytes);
 *   - `pool delete` while the pool has volumes or trash names the list to look at, not strata
 *     img's "stop the other user of the image";
 *   - `pool delete` while S3 resets every connection keeps the pool (exit 6) and its packs in the
 *     bucket, instead of reporting success and leaving them there unnamed; once S3 answers the
 *     delete empties the pool's prefix; `--force` deletes a pool anyway and says where the packs
 *     were left.
 * The fault proxy runs in this process: every CLI call that may reach S3 runs asynchronously (a
 * synchronous one would block the proxy it goes through).
 */
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PoolGcJson, VolumeEvictJson } from '../../src/api/rest/schemas.js';
import { EXIT } from '../../src/cli/remote/exits.js';
import { S3FaultProxy } from '../support/s3-fault-proxy.js';
import { adminClient, createTestBucket, s3ServerAvailable, startMoto, type S3TestServer } from '../support/s3-servers.js';
import { makeTempDir } from '../support/tmp.js';
import { strataAsync, type RunResult } from '../support/tools.js';
import { assertBuilt, startDaemon, type Daemon } from './harness.js';

assertBuilt();

const MiB = 1 << 20;

describe.skipIf(!s3ServerAvailable('moto'))('tiered dedup pools: sharing a prefix, gc grace, pool delete with the tier down', () => {
  let tmp: { path: string; cleanup: () => void };
  let moto: S3TestServer;
  let proxy: S3FaultProxy;
  let d: Daemon;
  let bucket: string;
  const env = () => ({ AWS_ACCESS_KEY_ID: moto.accessKeyId, AWS_SECRET_ACCESS_KEY: moto.secretAccessKey, AWS_EC2_METADATA_DISABLED: 'true', AWS_PROFILE: undefined });
  const tierArgs = (prefix: string) => ['--dedup', '--tier', `s3://${bucket}/${prefix}`, '--s3-endpoint', proxy.endpoint, '--s3-region', moto.region];

  /** `strata ARGS` run asynchronously, so the proxy in this process keeps forwarding. */
  async function cli(args: readonly string[]): Promise<RunResult> {
    return strataAsync(args, { env: d.env() });
  }
  async function cliOk(args: readonly string[]): Promise<RunResult> {
    const r = await cli(args);
    expect(r.code, `strata ${args.join(' ')}\n${r.stdout}${r.stderr}`).toBe(0);
    return r;
  }
  async function json<T>(args: readonly string[]): Promise<T> {
    return JSON.parse((await cliOk([...args, '--json'])).stdout) as T;
  }
  async function cliFails(args: readonly string[], status: number, ...mentions: RegExp[]): Promise<RunResult> {
    const r = await cli(args);
    expect(r.code, `strata ${args.join(' ')}\n${r.stdout}${r.stderr}`).toBe(status);
    for (const m of mentions) expect(r.stderr).toMatch(m);
    return r;
  }

  /** The keys and bytes under a prefix of the bucket, read from moto directly. */
  async function objectsUnder(prefix: string): Promise<{ count: number; bytes: number }> {
    const client = adminClient(moto);
    try {
      const listed = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: `${prefix}/` }));
      const contents = listed.Contents ?? [];
      return { count: contents.length, bytes: contents.reduce((sum, c) => sum + (c.Size ?? 0), 0) };
    } finally {
      client.destroy();
    }
  }

  /** A pool holding one volume of random data, evicted: its packs are in the bucket only. */
  async function poolWithEvictedVolume(pool: string): Promise<void> {
    await cliOk(['pool', 'create', pool, ...tierArgs(pool)]);
    const file = path.join(tmp.path, `${pool}.raw`);
    writeFileSync(file, randomBytes(4 * MiB));
    await cliOk(['volume', 'import', file, `${pool}/vm`]);
    const evicted = await json<VolumeEvictJson>(['volume', 'evict', `${pool}/vm`]);
    expect(evicted.movedPacks).toBeGreaterThan(0);
  }

  beforeAll(async () => {
    tmp = makeTempDir();
    moto = await startMoto();
    proxy = await S3FaultProxy.start(moto.endpoint);
    d = await startDaemon(path.join(tmp.path, 'data'), { env: env() });
    bucket = await createTestBucket(moto);
  });
  afterAll(async () => {
    await d?.stop();
    await proxy?.close();
    await moto?.stop();
    tmp?.cleanup();
  });

  it('a tier prefix another pool uses, or one inside it, is refused at pool create, naming that pool', async () => {
    await cliOk(['pool', 'create', 'ta', ...tierArgs('shared')]);
    await cliFails(['pool', 'create', 'tb', ...tierArgs('shared')], EXIT.ERROR, /would share objects with pool 'ta'/, /garbage collection deletes the packs/, new RegExp(`s3://${bucket}/strata-tb`));
    await cliFails(['pool', 'create', 'tb', ...tierArgs('shared/inner')], EXIT.ERROR, /pool 'ta'/);
    // A trailing slash is the same prefix.
    await cliFails(['pool', 'create', 'tb', '--dedup', '--tier', `s3://${bucket}/shared/`, '--s3-endpoint', proxy.endpoint], EXIT.ERROR, /pool 'ta'/);
    // A sibling whose name merely starts the same is its own prefix.
    await cliOk(['pool', 'create', 'tb', ...tierArgs('shared-b')]);
    expect((await cliOk(['pool', 'list'])).stdout).not.toMatch(/^tc /m);
    await cliOk(['pool', 'delete', 'ta']);
    await cliOk(['pool', 'delete', 'tb']);
    // Once the other pool is deleted, its prefix is free again.
    await cliOk(['pool', 'create', 'tc', ...tierArgs('shared')]);
    await cliOk(['pool', 'delete', 'tc']);
  });

  it('pool create against a missing bucket or a server that does not answer warns at once, naming the fix', async () => {
    const missing = await cliOk(['pool', 'create', 'mb', '--dedup', '--tier', 's3://no-such-bucket-here/p', '--s3-endpoint', proxy.endpoint]);
    expect(missing.stdout).toBe("Pool 'mb' created (dedup, blake3 chunks).\n");
    expect(missing.stderr).toMatch(/^strata: warning: pool 'mb' was created, but its tier does not work yet: tier s3:\/\/no-such-bucket-here\/p: .*bucket no-such-bucket-here does not exist there: create it, or fix the store's bucket name or endpoint\n/);
    expect(missing.stderr).toMatch(/'strata pool delete mb --force'/);
    // A command that needs the tier names the missing bucket, and its hint does not send the
    // operator to the host's disks.
    const scrub = await cliFails(['pool', 'scrub', 'mb'], EXIT.ERROR, /bucket no-such-bucket-here does not exist there: create it, or fix the store's bucket name or endpoint \[IO_ERROR\]/);
    expect(scrub.stderr).toMatch(/\(the host storage or a pool's tier failed: the message says how to fix it, the daemon's log says more\)$/m);
    await cliFails(['pool', 'delete', 'mb'], EXIT.ERROR, /pass --force/);
    await cliOk(['pool', 'delete', 'mb', '--force']);

    proxy.inject('reset', { count: Infinity });
    try {
      const down = await cliOk(['pool', 'create', 'sd', ...tierArgs('sd')]);
      expect(down.stderr).toMatch(/^strata: warning: pool 'sd' was created, but its tier does not work yet: .*check that the S3 server at http:\/\/127\.0\.0\.1:\d+ is running and reachable/);
    } finally {
      proxy.clear();
    }
    await cliOk(['pool', 'delete', 'sd']);
    const fine = await cliOk(['pool', 'create', 'ok', ...tierArgs('ok')]);
    expect(fine.stderr).toBe('');
    await cliOk(['pool', 'delete', 'ok']);
  });

  it('volume evict -p shows the packs moved; --json shows no bar', async () => {
    await cliOk(['pool', 'create', 'pp', ...tierArgs('pp')]);
    const file = path.join(tmp.path, 'pp.raw');
    writeFileSync(file, randomBytes(4 * MiB));
    await cliOk(['volume', 'import', file, 'pp/vm']);
    await cliOk(['snap', 'create', 'pp/vm@s1']);
    const shown = await cliOk(['volume', 'evict', 'pp/vm', '-p']);
    const packs = /moved (\d+) of \1 packs/.exec(shown.stdout)?.[1];
    expect(packs, shown.stdout).toBeDefined();
    expect(shown.stderr).toMatch(new RegExp(`\\r  evicting \\[#{30}\\] 100%  ${packs} packs / ${packs} packs`));
    const quiet = await cliOk(['volume', 'evict', 'pp/vm', '-p', '--json']);
    expect(quiet.stderr).toBe('');
    expect((JSON.parse(quiet.stdout) as VolumeEvictJson).alreadyColdPacks).toBe(Number(packs));
    await cliOk(['volume', 'delete', 'pp/vm', '--now', '--force']);
    await cliOk(['pool', 'gc', 'pp', '--grace', '0']);
    await cliOk(['pool', 'delete', 'pp']);
  });

  it('gc with the default grace says what waits out the grace period; --grace 0 frees exactly that', async () => {
    await poolWithEvictedVolume('gp');
    const before = await objectsUnder('gp');
    await cliOk(['volume', 'delete', 'gp/vm', '--now']);
    const waiting = await cliOk(['pool', 'gc', 'gp']);
    expect(waiting.stdout).toMatch(/freed 0 B/);
    expect(waiting.stdout).toMatch(/\d+ unreferenced chunks \([\d.]+ MiB\) wait out the grace period: a gc after it frees them \(the last at \d{4}-/);
    expect(waiting.stdout).toMatch(/'strata pool gc gp --grace 0' now/);
    const report = await json<PoolGcJson>(['pool', 'gc', 'gp']);
    expect(report.chunksWaiting).toBeGreaterThan(0);
    expect(report.bytesWaiting).toBeGreaterThanOrEqual(4 * MiB);
    expect(report.waitingUntilMs).toBeGreaterThan(0);
    const freed = await json<PoolGcJson>(['pool', 'gc', 'gp', '--grace', '0']);
    expect(freed.chunksForgotten).toBe(report.chunksWaiting);
    expect(freed).toMatchObject({ chunksWaiting: 0, bytesWaiting: 0, waitingUntilMs: null });
    expect(freed.bytesDeleted).toBe(before.bytes);
    expect(await objectsUnder('gp')).toEqual({ count: 0, bytes: 0 });
    await cliOk(['pool', 'delete', 'gp']);
  });

  it('pool delete refused for volumes or trash names the list to look at, not a hint about image files', async () => {
    await cliOk(['pool', 'create', 'bp', '--dedup']);
    await cliOk(['volume', 'create', 'bp/vm', '1M']);
    const busy = await cliFails(['pool', 'delete', 'bp'], EXIT.CONFLICT, /still has 1 volume: delete them first \[BUSY\] \('strata volume list bp' lists them\)$/m);
    expect(busy.stderr).not.toMatch(/other user of the image/);
    await cliOk(['volume', 'delete', 'bp/vm']);
    const trash = await cliFails(['pool', 'delete', 'bp'], EXIT.CONFLICT, /1 volume in its trash; purge them first \(or restore them\) \[BUSY\] \('strata trash list bp' lists them\)$/m);
    expect(trash.stderr).not.toMatch(/other user of the image/);
    await cliOk(['trash', 'purge', 'bp']);
    await cliOk(['pool', 'delete', 'bp']);
  });

  it('pool delete while S3 resets every connection keeps the pool and its packs (exit 6); once S3 answers it deletes them all', async () => {
    await poolWithEvictedVolume('dp');
    const packs = await objectsUnder('dp');
    expect(packs.count).toBeGreaterThan(0);
    await cliOk(['volume', 'delete', 'dp/vm', '--now']);
    proxy.inject('reset', { count: Infinity });
    try {
      const refused = await strataAsync(['pool', 'delete', 'dp'], { env: d.env() });
      expect(refused.code, refused.stdout + refused.stderr).toBe(EXIT.UNAVAILABLE);
      expect(refused.stderr).toMatch(new RegExp(`pool 'dp' was not deleted: its packs in s3://${bucket}/dp could not be deleted \\(.*running and reachable`));
      expect(refused.stderr).toMatch(/\[UNAVAILABLE\] \(fix what the message names and run it again, or pass --force to delete the pool anyway, leaving any packs there\)$/m);
    } finally {
      proxy.clear();
    }
    expect((await cliOk(['pool', 'list'])).stdout).toMatch(/^dp /m);
    expect(await objectsUnder('dp')).toEqual(packs);
    await cliOk(['pool', 'delete', 'dp']);
    expect((await cliOk(['pool', 'list'])).stdout).not.toMatch(/^dp /m);
    expect(await objectsUnder('dp')).toEqual({ count: 0, bytes: 0 });
  });

  it('pool delete --force while S3 resets every connection deletes the pool and names where its packs were left', async () => {
    await poolWithEvictedVolume('fp');
    const packs = await objectsUnder('fp');
    await cliOk(['volume', 'delete', 'fp/vm', '--now']);
    proxy.inject('reset', { count: Infinity });
    let forced;
    try {
      forced = await strataAsync(['pool', 'delete', 'fp', '--force', '--json'], { env: d.env() });
    } finally {
      proxy.clear();
    }
    expect(forced.code, forced.stdout + forced.stderr).toBe(0);
    const out = JSON.parse(forced.stdout) as { deleted: string; packsLeftIn?: string; packsLeftReason?: string };
    expect(out).toMatchObject({ deleted: 'fp', packsLeftIn: `s3://${bucket}/fp` });
    expect(out.packsLeftReason).toMatch(/running and reachable/);
    expect((await cliOk(['pool', 'list'])).stdout).not.toMatch(/^fp /m);
    expect(await objectsUnder('fp')).toEqual(packs);
  });
});
