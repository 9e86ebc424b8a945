/**
 * Crash: the daemon is killed with SIGKILL while it freezes a dedup pool volume's active layer
 * (`volume seal`: the request in flight), while it seals the frozen layer, or while it compacts it
 * with the internal layer under it (the compact job just started, or some event-loop turns into
 * it), several rounds, and restarted each time. After every restart the volume reads back over
 * NBD exactly as it was flushed (qemu-img compare), the interrupted seals and compactions finish,
 * the chain is no deeper than the active layer plus one internal layer, and a scrub finds every
 * reference count right; at the end, with the volume deleted and a gc with no grace, no chunk and
 * no pack is left: no reference leaked.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import type { JobJson, PoolDfJson, VolumeJson } from '../../src/api/rest/schemas.js';
import type { VolumeCompactJson } from '../../src/api/rest/compact-schemas.js';
import { SeededRandom } from '../../src/store/seeded-random.js';
import { overwriteRandomRegion } from '../support/bytes.js';
import { requireTool, run } from '../support/tools.js';
import { assertBuilt, qemuCompare, startDaemon, useDaemon, type Daemon } from './harness.js';

assertBuilt();

const MiB = 1 << 20;
const SIZE = 16 * MiB;
const ROUNDS = 4;
const REGION_BYTES = 4 * MiB;
const TEST_TIMEOUT_MS = 300_000;
const KILL_POINTS = ['freeze', 'seal', 'compact-start', 'compact-later'] as const;

const turn = () => new Promise((resolve) => setImmediate(resolve));

describe.skipIf(!requireTool('qemu-img', 'nbdcopy'))('dedup: SIGKILL of the daemon while it freezes, seals and compacts', () => {
  const suite = useDaemon();
  const f = (name: string) => suite.file(name);
  let d: Daemon;
  const uri = (name: string) => `nbd+unix:///${name}?socket=${path.join(d.dataDir, 'nbd.sock')}`;
  // Seals resumed at start-up are named after the layer ('cc/<file>'), the others after the volume.
  const activeJobs = (kind: string) => d.json<JobJson[]>(['job', 'list']).filter((j) => j.kind === kind && j.target.startsWith('cc/') && (j.state === 'queued' || j.state === 'running'));

  beforeAll(() => {
    d = suite.d;
    d.cliOk(['pool', 'create', 'cc', '--dedup']);
    d.cliOk(['volume', 'create', 'cc/v', String(SIZE)]);
    d.cliOk(['volume', 'export-nbd', 'cc/v']);
  });

  it(`keeps flushed data, a short chain and exact reference counts (${ROUNDS} rounds)`, async () => {
    const seed = Number(process.env.STRATA_CRASH_SEED ?? Date.now() % 1_000_000);
    const rng = new SeededRandom(seed);
    const reference = f('reference.raw');
    writeFileSync(reference, Buffer.alloc(SIZE));
    const kills: string[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const bytes = readFileSync(reference);
      overwriteRandomRegion(bytes, rng, REGION_BYTES);
      writeFileSync(reference, bytes);
      const w = run('nbdcopy', ['--flush', reference, uri('cc/v')]);
      expect(w.code, w.stderr).toBe(0);

      const point = KILL_POINTS[round % KILL_POINTS.length]!;
      const request = d.api('POST', '/v1/pools/cc/volumes/v/seal');
      request.catch(() => undefined);
      if (point === 'freeze') {
        for (let i = Math.floor(rng.next() * 40); i > 0; i--) await turn();
      } else {
        expect((await request).status).toBe(200);
        for (;;) {
          const seals = activeJobs('seal');
          const compacts = activeJobs('compact');
          if (point === 'seal' && (seals.length === 0 || seals[0]!.doneBytes >= rng.next() * seals[0]!.totalBytes)) break;
          if (point !== 'seal' && (compacts.length > 0 || seals.length === 0)) break;
          await turn();
        }
        if (point === 'compact-later') for (let i = Math.floor(rng.next() * 20); i > 0; i--) await turn();
      }
      const logBefore = d.logs().length;
      await d.kill();
      kills.push(`r${round}: ${point}`);

      d = suite.d = await startDaemon(f('data'));
      // What recovery did (for the log line): the counts it reported, those above zero.
      const recovered = [...d.logs().slice(logBefore).matchAll(/(intentsRolledBack|intentsFinished|orphansDeleted|referencesRepaired)\W+(\d+)/g)]
        .filter((m) => m[2] !== '0')
        .map((m) => `${m[1]} ${m[2]}`);
      kills[kills.length - 1] += recovered.length === 0 ? '' : ` (${recovered.join(', ')})`;
      const vol = qemuCompare(uri('cc/v'), reference);
      expect(vol.code, `${vol.stdout}${vol.stderr} (seed ${seed}, kills ${kills.join('; ')})`).toBe(0);
      for (const kind of ['seal', 'compact', 'seal', 'compact']) for (const job of activeJobs(kind)) d.cliOk(['job', 'watch', job.id]);
      const compacted = d.json<VolumeCompactJson>(['volume', 'compact', 'cc/v']);
      expect(compacted.chainDepthAfter, `(seed ${seed}, kills ${kills.join('; ')})`).toBeLessThanOrEqual(2);
      expect(d.json<VolumeJson>(['volume', 'info', 'cc/v']).chainDepth).toBe(compacted.chainDepthAfter);
      const scrub = d.cli(['pool', 'scrub', 'cc', '--json']);
      expect(scrub.code, `scrub after round ${round}: ${scrub.stdout} (seed ${seed}, kills ${kills.join('; ')})`).toBe(0);
      const again = qemuCompare(uri('cc/v'), reference);
      expect(again.code, `${again.stdout}${again.stderr} (seed ${seed})`).toBe(0);
    }
    console.log(`compaction crash (seed ${seed}): ${kills.join('; ')}`);
    d.cliOk(['volume', 'unexport-nbd', 'cc/v']);
    d.cliOk(['volume', 'delete', 'cc/v', '--now', '--force']);
    d.cliOk(['pool', 'gc', 'cc', '--grace', '0']);
    expect(d.json<PoolDfJson>(['pool', 'df', 'cc'])).toMatchObject({ uniqueChunkCount: 0, referencedChunkBytes: 0, packBytes: 0 });
  }, TEST_TIMEOUT_MS);
});
