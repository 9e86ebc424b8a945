/**
 * Crash: a tiered dedup pool (cold tier: moto_server, reached through the fault proxy) whose daemon
 * is killed with SIGKILL at random points of each phase of a volume's life, several rounds per
 * phase, and restarted each time:
 *   - chunking: at a random share of the seal job's progress (read from the job; on a loaded
 *     machine the polls often find the seal at its last batch, writing its manifest, so the
 *     pack-write kills below are what lands inside the chunking most often);
 *   - pack write: at the k-th file event in the pool's chunk folder during the seal (a pack's
 *     temporary file created, written, renamed into packs/);
 *   - upload: while `volume evict` has its k-th S3 request in flight (the proxy holds it);
 *   - gc: while `pool gc --grace 0` has its k-th S3 request in flight, after a snapshot delete.
 * Each round: new data is written over NBD by nbdcopy (and flushed), a snapshot is taken and
 * sealed, the volume is evicted to S3; the restart drops every cache (the daemon's memory; reads
 * are sequential so nothing is promoted to a local copy). After every restart: the volume and
 * every snapshot read back over NBD byte for byte (qemu-img compare against reference files), the
 * interrupted work is finished (the daemon resumes seals; evict and gc are run again), and
 * `strata pool scrub` exits 0. At the end everything is deleted and `pool gc --grace 0` leaves no
 * pack, no chunk in the index and no object under the pool's prefix in the bucket.
 *
 * The seed is printed; STRATA_CRASH_SEED=<seed> replays a run. Everything that may reach the tier
 * runs asynchronously: the proxy answers in this process, so a synchronous child waiting on the
 * daemon could wait on a request the proxy never gets to forward.
 */
import { copyFileSync, readFileSync, watch, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { JobJson, PoolDfJson, PoolJson } from '../../src/api/rest/schemas.js';
import { SeededRandom } from '../../src/store/seeded-random.js';
import { S3FaultProxy } from '../support/s3-fault-proxy.js';
import { adminClient, createTestBucket, s3ServerAvailable, startMoto, type S3TestServer } from '../support/s3-servers.js';
import { makeTempDir } from '../support/tmp.js';
import { expectSuccess, requireTool, runAsync, strataAsync, type RunResult } from '../support/tools.js';
import { assertBuilt, startDaemon, type Daemon } from './harness.js';

assertBuilt();

const MiB = 1 << 20;
const SIZE = 16 * MiB;
const PHASES = ['chunking', 'pack-write', 'upload', 'gc'] as const;
type Phase = (typeof PHASES)[number];
/** STRATA_CRASH_ROUNDS=<n> runs more (or fewer) rounds per phase. */
const ROUNDS_PER_PHASE = Number(process.env.STRATA_CRASH_ROUNDS ?? 4);
/** Fresh random data per round (distinct, so the seal writes new packs and evict uploads them). */
const REGION_BYTES = 3 * MiB;
/** Snapshots kept; older ones are deleted (the garbage a gc round collects). */
const SNAPSHOTS_KEPT = 1;
const POOL = 'tc';
const PREFIX = `strata/${POOL}`;

async function cli(d: Daemon, args: readonly string[]): Promise<RunResult> {
  return strataAsync(args, { env: d.env(), timeoutMs: 300_000 });
}
async function cliOk(d: Daemon, args: readonly string[]): Promise<RunResult> {
  return expectSuccess(await cli(d, args), `strata ${args.join(' ')}`);
}
async function cliJson<T>(d: Daemon, args: readonly string[]): Promise<T> {
  return JSON.parse((await cliOk(d, [...args, '--json'])).stdout) as T;
}

/** Resolves when the job ends (the REST watch stream ends with it); rejects if the daemon goes. */
async function jobEnd(d: Daemon, id: string): Promise<JobJson> {
  const text = await (await d.api('GET', `/v1/jobs/${id}?watch=true`)).text();
  return JSON.parse(text.trim().split('\n').at(-1)!) as JobJson;
}

/** Waits for every queued or running job of the pool to end; returns the jobs. */
async function settleJobs(d: Daemon): Promise<JobJson[]> {
  const jobs = (await d.apiJson<JobJson[]>('GET', '/v1/jobs')).filter((j) => j.target.startsWith(`${POOL}/`) || j.target === POOL);
  return Promise.all(jobs.map((job) => (job.state === 'queued' || job.state === 'running' ? jobEnd(d, job.id) : job)));
}

/** Resolves at the k-th file event under `dir` (recursive), or never; close() stops watching. */
function fileEvent(dir: string, k: number): { happened: Promise<string>; close: () => void } {
  let seen = 0;
  let resolve: (name: string) => void = () => undefined;
  const happened = new Promise<string>((r) => (resolve = r));
  const watcher = watch(dir, { recursive: true }, (event, name) => {
    if (++seen === k) resolve(`${event} ${name ?? '?'}`);
  });
  return { happened, close: () => watcher.close() };
}

describe.skipIf(!requireTool('qemu-img', 'nbdcopy') || !s3ServerAvailable('moto'))('tiered dedup: SIGKILL while chunking, writing packs, uploading and collecting', () => {
  let tmp: { path: string; cleanup: () => void };
  let moto: S3TestServer;
  let proxy: S3FaultProxy;
  let d: Daemon;
  let bucket: string;
  const f = (name: string) => path.join(tmp.path, name);
  const uri = (name: string) => `nbd+unix:///${name}?socket=${path.join(d.dataDir, 'nbd.sock')}`;
  // moto's keys reach the daemon through its environment (the AWS default chain), never argv.
  const env = () => ({ AWS_ACCESS_KEY_ID: moto.accessKeyId, AWS_SECRET_ACCESS_KEY: moto.secretAccessKey, AWS_EC2_METADATA_DISABLED: 'true', AWS_PROFILE: undefined });
  const restart = async () => {
    d = await startDaemon(f('data'), { env: env() });
  };

  beforeAll(async () => {
    tmp = makeTempDir();
    moto = await startMoto();
    proxy = await S3FaultProxy.start(moto.endpoint);
    bucket = await createTestBucket(moto);
    await restart();
    await cliOk(d, ['pool', 'create', POOL, '--dedup', '--tier', `s3://${bucket}/${PREFIX}`, '--s3-endpoint', proxy.endpoint, '--s3-region', moto.region, '--cooling', '1h']);
    await cliOk(d, ['volume', 'create', `${POOL}/v`, String(SIZE)]);
    await cliOk(d, ['volume', 'export-nbd', `${POOL}/v`]);
  });
  afterAll(async () => {
    await d?.stop();
    await proxy?.close();
    await moto?.stop();
    tmp?.cleanup();
  });

  async function compare(name: string, reference: string, why: string): Promise<void> {
    const r = await runAsync('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', uri(name), reference]);
    expect(r.code, `${name} ${why}: ${r.stdout}${r.stderr}`).toBe(0);
  }

  /** Kills the daemon once `point` resolves, or once `work` ends (the point came after it). */
  async function killAt(point: Promise<string>, work: Promise<unknown>): Promise<string> {
    const at = await Promise.race([point, work.then(() => 'after the work ended', (err: unknown) => `after the work failed: ${String(err)}`)]);
    await d.kill();
    proxy.clear();
    return at;
  }

  it(`keeps flushed data, scrubs clean after every restart and leaks nothing (${ROUNDS_PER_PHASE} rounds per phase)`, async () => {
    const seed = Number(process.env.STRATA_CRASH_SEED ?? Date.now() % 1_000_000);
    const rng = new SeededRandom(seed);
    const kills: string[] = [];
    const why = (round: number, phase: Phase) => `(round ${round}, ${phase}, seed ${seed}; STRATA_CRASH_SEED=${seed} replays; kills: ${kills.join('; ')})`;
    const reference = f('reference.raw');
    // Data over most of the volume from the start: every layer nbdcopy writes holds it all again
    // (dedup finds it), so each seal runs through several batches a kill can fall between.
    const base = Buffer.alloc(SIZE);
    for (let i = 0; i < SIZE - 4 * MiB; i += 4) base.writeUInt32LE(Math.floor(rng.next() * 0xffffffff), i);
    writeFileSync(reference, base);
    const snapshots: string[] = [];
    const phases = Array.from({ length: ROUNDS_PER_PHASE }, () => PHASES).flat();
    for (const [round, phase] of phases.entries()) {
      // New data over part of the volume, and a repeated 1 MiB block (equal chunks within a layer).
      const bytes = readFileSync(reference);
      const start = rng.intBetween(0, (SIZE - REGION_BYTES) / MiB - 1) * MiB;
      for (let i = start; i < start + REGION_BYTES; i += 4) bytes.writeUInt32LE(Math.floor(rng.next() * 0xffffffff), i);
      bytes.copy(bytes, rng.intBetween(0, SIZE / MiB - 1) * MiB, start, start + MiB);
      writeFileSync(reference, bytes);
      const w = await runAsync('nbdcopy', [reference, uri(`${POOL}/v`)]);
      expect(w.code, w.stderr).toBe(0);
      const snap = `r${round}`;
      copyFileSync(reference, f(`${snap}.raw`));

      let at = '';
      const watcher = phase === 'pack-write' ? fileEvent(path.join(d.dataDir, 'chunks', POOL), rng.intBetween(1, 8)) : undefined;
      // Over REST: the seal starts at once, and a CLI process would take longer to start than it runs.
      await d.apiJson('POST', `/v1/pools/${POOL}/volumes/v/snapshots`, { name: snap }, 201);
      snapshots.push(snap);
      const seal = (await d.apiJson<JobJson[]>('GET', '/v1/jobs')).find((j) => j.kind === 'seal' && j.target === `${POOL}/v@${snap}`);
      expect(seal, 'a seal job for the new snapshot').toBeDefined();
      const sealDone = jobEnd(d, seal!.id);
      if (phase === 'chunking') {
        // Progress moves a batch (4 MiB) at a time and often outruns the polls, which then find
        // the seal at its end (writing its manifest): aim at the first three quarters.
        const share = rng.next() * 0.75;
        const progress = (async () => {
          for (;;) {
            // Once the daemon is killed (the seal ended first) the loop ends on the refused call.
            const job = await d.apiJson<JobJson>('GET', `/v1/jobs/${seal!.id}`).catch(() => undefined);
            if (job === undefined) return 'the daemon stopped answering';
            if (job.state !== 'running' && job.state !== 'queued') return `seal ended (${job.state})`;
            if (job.totalBytes > 0 && job.doneBytes >= share * job.totalBytes) return `seal at ${job.doneBytes}/${job.totalBytes}`;
            await new Promise((resolve) => setImmediate(resolve));
          }
        })();
        at = await killAt(progress, sealDone);
      } else if (phase === 'pack-write') {
        at = await killAt(watcher!.happened, sealDone);
        watcher!.close();
      } else {
        await sealDone;
      }

      if (phase === 'upload') {
        proxy.inject('stall', { skip: rng.intBetween(0, 5) });
        at = await killAt(proxy.nextFault().then(() => 'an S3 request of the evict in flight'), cliOk(d, ['volume', 'evict', `${POOL}/v`]));
      } else if (at === '') {
        await cliOk(d, ['volume', 'evict', `${POOL}/v`]);
      }

      if (phase === 'gc') {
        if (snapshots.length > SNAPSHOTS_KEPT) await cliOk(d, ['snap', 'delete', `${POOL}/v@${snapshots.shift()!}`]);
        proxy.inject('stall', { skip: rng.intBetween(0, 5) });
        at = await killAt(proxy.nextFault().then(() => 'an S3 request of the gc in flight'), cliOk(d, ['pool', 'gc', POOL, '--grace', '0']));
      }
      kills.push(`${round} ${phase}: ${at}`);
      process.stderr.write(`dedup tier crash: round ${round} ${phase}: killed ${at}\n`);

      await restart();
      // The daemon resumes an interrupted seal; an interrupted evict or gc is the operator's to run again.
      const jobs = await settleJobs(d);
      // The seal the kill cut short is marked interrupted and sealed again by a new job.
      const unsealed = jobs.filter((j) => j.kind === 'seal' && j.state !== 'succeeded' && !/^interrupted/.test(j.error?.message ?? ''));
      expect(unsealed, why(round, phase)).toEqual([]);
      await compare(`${POOL}/v`, reference, `after the restart ${why(round, phase)}`);
      for (const s of snapshots) {
        const exported = await d.apiJson<{ id: string }>('POST', '/v1/exports', { type: 'nbd', pool: POOL, volume: 'v', snapshot: s }, 201);
        await compare(`${POOL}/v@${s}`, f(`${s}.raw`), `after the restart ${why(round, phase)}`);
        await d.apiJson('DELETE', `/v1/exports/${exported.id}`, undefined, 204);
      }
      const scrub = await cli(d, ['pool', 'scrub', POOL, '--no-progress']);
      expect(scrub.code, `pool scrub after the restart ${why(round, phase)}:\n${scrub.stdout}${scrub.stderr}`).toBe(0);
      // Finish what the kill cut short: the snapshot's packs go to S3 (a gc round had evicted them).
      if (phase !== 'gc') await cliOk(d, ['volume', 'evict', `${POOL}/v`]);
      if (phase !== 'gc' && snapshots.length > SNAPSHOTS_KEPT) await cliOk(d, ['snap', 'delete', `${POOL}/v@${snapshots.shift()!}`]);
      const df = await d.apiJson<PoolDfJson>('GET', `/v1/pools/${POOL}/df`);
      expect(df.tierError, why(round, phase)).toBeUndefined();
    }
    console.log(`dedup tier crash (seed ${seed}):\n  ${kills.join('\n  ')}`);

    // Everything deleted, a gc with no grace: nothing left here or in the bucket.
    await cliOk(d, ['volume', 'unexport-nbd', `${POOL}/v`]);
    await cliOk(d, ['volume', 'delete', `${POOL}/v`, '--now', '--force']);
    await cliOk(d, ['pool', 'gc', POOL, '--grace', '0']);
    expect(await cliJson<PoolDfJson>(d, ['pool', 'df', POOL])).toMatchObject({ uniqueChunkCount: 0, referencedChunkBytes: 0, packBytes: 0, physicalBytes: 0, packRemoteBytes: 0 });
    const scrub = await cliJson<{ report: { chunks: number; packs: number; clean: boolean } }>(d, ['pool', 'scrub', POOL]);
    expect(scrub.report).toMatchObject({ clean: true });
    const client = adminClient(moto);
    try {
      const listed = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: `${PREFIX}/` }));
      expect((listed.Contents ?? []).map((o) => o.Key)).toEqual([]);
    } finally {
      client.destroy();
    }
    expect((await cliJson<PoolJson>(d, ['pool', 'info', POOL])).dedup?.tierError).toBeUndefined();
  }, 900_000);
});
