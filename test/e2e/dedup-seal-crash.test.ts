/**
 * Crash: the daemon is killed with SIGKILL while it seals a snapshot of a dedup pool, at a random
 * point of the seal job (read from its progress: before it starts, part-way, around the manifest
 * and the local file's removal, after it ends), several rounds, and restarted each time. After
 * every restart: the volume and every snapshot read back over NBD exactly as they were flushed
 * (qemu-img compare against reference raw files), the seals interrupted are started again and
 * finish, and at the end, with everything deleted and a gc with no grace, no chunk and no pack is
 * left: no reference leaked.
 */
import { copyFileSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { JobJson, PoolDfJson } from '../../src/api/rest/schemas.js';
import { SeededRandom } from '../../src/store/seeded-random.js';
import { overwriteRandomRegion } from '../support/bytes.js';
import { makeTempDir } from '../support/tmp.js';
import { requireTool, run } from '../support/tools.js';
import { assertBuilt, qemuCompare, startDaemon, waitForSeals, type Daemon } from './harness.js';

assertBuilt();

const MiB = 1 << 20;
const SIZE = 64 * MiB;
const ROUNDS = 4;
/** Fresh data written per round (distinct content, so the seal writes packs). */
const REGION_BYTES = 24 * MiB;

describe.skipIf(!requireTool('qemu-img', 'nbdcopy'))('dedup: SIGKILL of the daemon while it seals', () => {
  let d: Daemon;
  let tmp: { path: string; cleanup: () => void };
  const f = (name: string) => path.join(tmp.path, name);
  const uri = (name: string) => `nbd+unix:///${name}?socket=${path.join(d.dataDir, 'nbd.sock')}`;

  beforeAll(async () => {
    tmp = makeTempDir();
    d = await startDaemon(f('data'));
    d.cliOk(['pool', 'create', 'dc', '--dedup']);
    d.cliOk(['volume', 'create', 'dc/v', String(SIZE)]);
    d.cliOk(['volume', 'export-nbd', 'dc/v']);
  });
  afterAll(async () => {
    await d?.stop();
    tmp?.cleanup();
  });

  it(`keeps flushed data and ends every seal whole (${ROUNDS} rounds)`, async () => {
    const seed = Number(process.env.STRATA_CRASH_SEED ?? Date.now() % 1_000_000);
    const rng = new SeededRandom(seed);
    const reference = f('reference.raw');
    writeFileSync(reference, Buffer.alloc(SIZE));
    const kills: string[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      // New data over part of the volume (nbdcopy writes the whole reference and flushes).
      const bytes = readFileSync(reference);
      overwriteRandomRegion(bytes, rng, REGION_BYTES);
      writeFileSync(reference, bytes);
      const w = run('nbdcopy', [reference, uri('dc/v')]);
      expect(w.code, w.stderr).toBe(0);
      copyFileSync(reference, f(`snap-r${round}.raw`));

      d.cliOk(['snap', 'create', `dc/v@r${round}`]);
      const seal = d.json<JobJson[]>(['job', 'list']).find((j) => j.kind === 'seal' && j.target === `dc/v@r${round}`);
      expect(seal, 'a seal job for the new snapshot').toBeDefined();
      // Kill when the seal has done this share of its bytes (>= 1: once it has ended).
      const share = rng.next() * 1.2;
      for (;;) {
        const job = await d.apiJson<JobJson>('GET', `/v1/jobs/${seal!.id}`);
        if (job.state !== 'running' && job.state !== 'queued') break;
        if (job.totalBytes > 0 && job.doneBytes >= share * job.totalBytes) break;
        await new Promise((resolve) => setImmediate(resolve));
      }
      const at = await d.apiJson<JobJson>('GET', `/v1/jobs/${seal!.id}`);
      const before = new Set(d.json<JobJson[]>(['job', 'list']).map((j) => j.id));
      await d.kill();
      kills.push(`r${round}: ${at.state} ${at.doneBytes}/${at.totalBytes}`);

      d = await startDaemon(f('data'));
      // Everything flushed reads back: the volume, and every snapshot taken so far.
      const vol = qemuCompare(uri('dc/v'), reference);
      expect(vol.code, `${vol.stdout}${vol.stderr} (seed ${seed}, kills ${kills.join('; ')})`).toBe(0);
      // The seal the kill cut short is marked interrupted and started again by the new daemon.
      const killed = d.json<JobJson>(['job', 'info', seal!.id]);
      expect(killed.state === 'succeeded' || /interrupted/.test(killed.error?.message ?? ''), JSON.stringify(killed)).toBe(true);
      const resumed = waitForSeals(d, 'dc', before);
      // (None when it had sealed the layer but not yet recorded its end.)
      expect(resumed.length, `seals after restart (seed ${seed})`).toBeLessThanOrEqual(killed.state === 'succeeded' ? 0 : 1);
      expect(resumed.every((j) => j.state === 'succeeded'), `seals after restart (seed ${seed}): ${JSON.stringify(resumed)}`).toBe(true);
      for (let s = 0; s <= round; s++) {
        d.cliOk(['volume', 'export-nbd', `dc/v@r${s}`]);
        const r = qemuCompare(uri(`dc/v@r${s}`), f(`snap-r${s}.raw`));
        expect(r.code, `snapshot r${s} after round ${round}: ${r.stdout}${r.stderr} (seed ${seed})`).toBe(0);
        d.cliOk(['volume', 'unexport-nbd', `dc/v@r${s}`]);
      }
      // Every snapshot layer ended sealed: one manifest each, no local file but the active layer.
      expect(readdirSync(path.join(d.dataDir, 'chunks', 'dc', 'layer-manifests', 'dc'))).toHaveLength(round + 1);
      expect(readdirSync(path.join(d.dataDir, 'pools', 'dc')).filter((n) => n.endsWith('.qcow2'))).toHaveLength(1);
    }
    console.log(`dedup seal crash (seed ${seed}): ${kills.join('; ')}`);
    d.cliOk(['volume', 'unexport-nbd', 'dc/v']);
    d.cliOk(['volume', 'delete', 'dc/v', '--now', '--force']);
    d.cliOk(['pool', 'gc', 'dc', '--grace', '0']);
    expect(d.json<PoolDfJson>(['pool', 'df', 'dc'])).toMatchObject({ uniqueChunkCount: 0, referencedChunkBytes: 0, packBytes: 0, physicalBytes: 0 });
  });
});
