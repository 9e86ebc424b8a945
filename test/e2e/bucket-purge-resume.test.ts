/**
 * A bucket purge the daemon was killed in the middle of (SIGKILL, a real `strata serve`) is
 * resumed at the next start as a bucket-purge job of its own: the log says so for the bucket, the
 * job is in `strata job list` and succeeds, the bucket is gone, no chunk reference is left, and
 * `pool gc --grace 0` then `pool scrub` find the pool clean.
 */
import { CreateBucketCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BucketJson } from '../../src/api/rest/bucket-schemas.js';
import type { JobJson, PoolDfJson } from '../../src/api/rest/schemas.js';
import { makeTempDir } from '../support/tmp.js';
import { REPO_ROOT, STRATA_BIN } from '../support/tools.js';
import { assertBuilt, patternBytes, startDaemon, type Daemon } from './harness.js';

assertBuilt();

const OBJECTS = 1500;
/** Past the inline limit (16 KiB): every object is chunks in the pool. */
const OBJECT_BYTES = 20 * 1024;
const PUTS_AT_ONCE = 16;

describe('an interrupted bucket purge', () => {
  let d: Daemon;
  let tmp: { path: string; cleanup: () => void };
  const f = (...parts: string[]) => path.join(tmp.path, ...parts);

  beforeAll(async () => {
    tmp = makeTempDir();
    d = await startDaemon(f('data'));
  });
  afterAll(async () => {
    await d?.stop();
    tmp?.cleanup();
  });

  it('killed with SIGKILL mid-purge, is resumed at start as a job and completes; GC and scrub are clean after it', async () => {
    d.cliOk(['pool', 'create', 'pp', '--dedup']);
    d.cliOk(['user', 'create', 'ivan']);
    const key = d.json<{ id: string; secret: string }>(['user', 'key', 'create', 'ivan']);
    const s3 = new S3Client({ endpoint: d.s3Url as string, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: key.id, secretAccessKey: key.secret } });
    const bucket = 'ivan-logs';
    await s3.send(new CreateBucketCommand({ Bucket: bucket, CreateBucketConfiguration: { LocationConstraint: 'pp' as never } }));
    let next = 0;
    const putter = async () => {
      for (let i = next++; i < OBJECTS; i = next++) await s3.send(new PutObjectCommand({ Bucket: bucket, Key: `log/${String(i).padStart(5, '0')}`, Body: patternBytes(OBJECT_BYTES, i + 1) }));
    };
    await Promise.all(Array.from({ length: PUTS_AT_ONCE }, putter));
    s3.destroy();
    expect(d.json<PoolDfJson>(['pool', 'df', 'pp']).referencedChunkBytes).toBeGreaterThan(0);

    // The purge runs in a CLI process of its own; the daemon is killed once it has given back some of the bucket.
    const cli = spawn(process.execPath, [STRATA_BIN, 'bucket', 'delete', bucket, '--purge'], { cwd: REPO_ROOT, env: { ...process.env, ...d.env() } as NodeJS.ProcessEnv, stdio: 'ignore' });
    const cliExited = new Promise<void>((resolve) => cli.on('exit', () => resolve()));
    let killedAt: JobJson | undefined;
    const deadline = Date.now() + 60_000;
    while (killedAt === undefined) {
      if (Date.now() > deadline) throw new Error('the purge job never started');
      const jobs = await d.apiJson<JobJson[]>('GET', '/v1/jobs');
      const purge = jobs.find((j) => j.kind === 'bucket-purge' && j.target === bucket);
      if (purge !== undefined && purge.state !== 'running') throw new Error(`the purge ended (${purge.state}) before the daemon was killed: give it more objects`);
      if (purge !== undefined && purge.doneBytes > 0) {
        await d.kill();
        killedAt = purge;
      } else await sleep(5);
    }
    await cliExited;
    expect(killedAt.doneBytes).toBeLessThan(killedAt.totalBytes);

    d = await startDaemon(f('data'));
    await d.logsMatching(new RegExp(`resuming the purge of a bucket.*${bucket}|"bucket":"${bucket}".*resuming the purge`));
    let resumed: JobJson | undefined;
    const until = Date.now() + 120_000;
    for (;;) {
      resumed = d.json<JobJson[]>(['job', 'list']).find((j) => j.kind === 'bucket-purge' && j.target === bucket && j.id !== killedAt.id);
      if (resumed !== undefined && resumed.state !== 'running' && resumed.state !== 'queued') break;
      if (Date.now() > until) throw new Error(`the resumed purge did not end: ${JSON.stringify(resumed)}`);
      await sleep(100);
    }
    expect(resumed.state).toBe('succeeded');
    await d.logsMatching(/resumed bucket purge finished/);
    expect(d.json<BucketJson[]>(['bucket', 'list']).map((b) => b.name)).not.toContain(bucket);
    d.cliFails(['bucket', 'delete', bucket, '--purge'], 3);

    expect(d.json<PoolDfJson>(['pool', 'df', 'pp']).referencedChunkBytes).toBe(0);
    d.cliOk(['pool', 'gc', 'pp', '--grace', '0']);
    expect(d.json<PoolDfJson>(['pool', 'df', 'pp'])).toMatchObject({ packBytes: 0, uniqueChunkCount: 0, referencedChunkBytes: 0 });
    d.cliOk(['pool', 'scrub', 'pp', '--no-progress']);
    // A second start finds nothing left to settle.
    await d.stop();
    d = await startDaemon(f('data'), { logFile: f('third-start.log') });
    expect(d.logs()).not.toMatch(/resuming the purge|interrupted delete/);
  }, 240_000);
});
