/**
 * Crash: the daemon is killed with SIGKILL while `strata volume import` writes a raw source
 * straight into a dedup pool's chunks (the import's base is sealed as it arrives, no local layer
 * and no seal job), at a random point of the import job (read from its progress: before any data,
 * part-way, around the manifest and the catalog commit, after it ended), several rounds, and
 * restarted each time. After every restart: the imported volume is there and reads back exactly
 * as the source (qemu-img compare over NBD), or it is not there at all; the pool's reference
 * audit dropped what a killed import had added, so `pool scrub` finds nothing wrong; and at the
 * end, with every volume deleted and a gc with no grace, no chunk and no pack is left.
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { JobJson, PoolDfJson, VolumeJson } from '../../src/api/rest/schemas.js';
import { SeededRandom } from '../../src/store/seeded-random.js';
import { makeTempDir } from '../support/tmp.js';
import { requireTool, runAsync, STRATA_BIN, type RunResult } from '../support/tools.js';
import { assertBuilt, qemuCompare, startDaemon, type Daemon } from './harness.js';

assertBuilt();

const MiB = 1 << 20;
const CLUSTER = 64 * 1024;
const SIZE = 32 * MiB;
const ROUNDS = 4;
const POOL = 'di';

/** A seeded source: unique clusters, holes, and clusters repeated from a small set (shared chunks). */
function sourceBytes(rng: SeededRandom, round: number): Buffer {
  const bytes = Buffer.alloc(SIZE);
  const shared = Array.from({ length: 8 }, (_, i) => Buffer.alloc(CLUSTER, 0x40 + i));
  for (let offset = 0; offset < SIZE; offset += CLUSTER) {
    const pick = rng.next();
    if (pick < 0.2) continue;
    if (pick < 0.4) shared[Math.floor(rng.next() * shared.length)]!.copy(bytes, offset);
    else {
      for (let i = 0; i < CLUSTER; i += 4) bytes.writeUInt32LE(Math.floor(rng.next() * 0x1_0000_0000), offset + i);
      bytes.writeUInt32LE(round, offset); // distinct per round: every round writes new packs
    }
  }
  // A cluster half data, half zeroes, and a last partial sector run: layout edge cases.
  bytes.fill(0, 3 * CLUSTER + 100, 4 * CLUSTER);
  bytes.fill(0x7f, SIZE - 1000);
  return bytes;
}

describe.skipIf(!requireTool('qemu-img'))('dedup: SIGKILL of the daemon while it imports into a dedup pool', () => {
  let d: Daemon;
  let tmp: { path: string; cleanup: () => void };
  const f = (name: string) => path.join(tmp.path, name);
  const uri = (name: string) => `nbd+unix:///${name}?socket=${path.join(d.dataDir, 'nbd.sock')}`;

  beforeAll(async () => {
    tmp = makeTempDir();
    d = await startDaemon(f('data'));
    d.cliOk(['pool', 'create', POOL, '--dedup']);
  });
  afterAll(async () => {
    await d?.stop();
    tmp?.cleanup();
  });

  it(`leaves the whole volume or none, scrubs clean and leaks nothing (${ROUNDS} rounds)`, async () => {
    const seed = Number(process.env.STRATA_CRASH_SEED ?? Date.now() % 1_000_000);
    const rng = new SeededRandom(seed);
    const kills: string[] = [];
    const landed: string[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const source = f(`source-r${round}.raw`);
      writeFileSync(source, sourceBytes(rng, round));
      const vol = `${POOL}/i${round}`;
      let ended: RunResult | undefined;
      const importing = runAsync(process.execPath, [STRATA_BIN, 'volume', 'import', source, vol, '--no-progress'], { env: d.env() }).then((r) => (ended = r));
      // Kill when the import has received this share of its bytes (>= 1: once it has ended).
      const share = rng.next() * 1.2;
      let at = 'before its job';
      for (;;) {
        if (ended !== undefined) {
          at = `ended (exit ${ended.code})`;
          break;
        }
        const job = (await d.apiJson<JobJson[]>('GET', '/v1/jobs')).find((j) => j.kind === 'import' && j.target === vol);
        if (job !== undefined) at = `${job.state} ${job.doneBytes}/${job.totalBytes}`;
        if (job !== undefined && (job.state !== 'running' || (job.totalBytes > 0 && job.doneBytes >= share * job.totalBytes))) break;
        await new Promise((resolve) => setImmediate(resolve));
      }
      await d.kill();
      await importing;
      kills.push(`r${round}: ${at}`);

      d = await startDaemon(f('data'));
      const where = `(seed ${seed}, kills ${kills.join('; ')})`;
      // No seal job: the import's base is sealed by the import itself.
      expect(d.json<JobJson[]>(['job', 'list']).filter((j) => j.kind === 'seal'), where).toEqual([]);
      const volumes = d.json<VolumeJson[]>(['volume', 'list', POOL]).map((v) => v.name);
      if (volumes.includes(`i${round}`)) {
        landed.push(vol);
        d.cliOk(['volume', 'export-nbd', vol]);
        const r = qemuCompare(uri(vol), source);
        expect(r.code, `${vol} after a kill: ${r.stdout}${r.stderr} ${where}`).toBe(0);
        d.cliOk(['volume', 'unexport-nbd', vol]);
      } else {
        expect(ended?.code ?? 1, `the import of ${vol} reported success, yet the volume is gone ${where}`).not.toBe(0);
      }
      const scrub = d.cli(['pool', 'scrub', POOL, '--no-progress']);
      expect(scrub.code, `pool scrub after round ${round}: ${scrub.stdout}${scrub.stderr} ${where}`).toBe(0);
    }
    console.log(`dedup import crash (seed ${seed}): ${kills.join('; ')}; landed: ${landed.join(', ') || 'none'}`);
    // Every volume that landed still reads back (later rounds' recoveries left it whole).
    for (const vol of landed) {
      d.cliOk(['volume', 'export-nbd', vol]);
      const r = qemuCompare(uri(vol), f(`source-r${vol.slice(POOL.length + 2)}.raw`));
      expect(r.code, `${vol} at the end: ${r.stdout}${r.stderr} (seed ${seed})`).toBe(0);
      d.cliOk(['volume', 'unexport-nbd', vol]);
      d.cliOk(['volume', 'delete', vol, '--now']);
    }
    d.cliOk(['pool', 'gc', POOL, '--grace', '0']);
    expect(d.json<PoolDfJson>(['pool', 'df', POOL])).toMatchObject({ uniqueChunkCount: 0, referencedChunkBytes: 0, packBytes: 0, physicalBytes: 0 });
  }, 900_000);
});
