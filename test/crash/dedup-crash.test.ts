/**
 * The dedup repository under SIGKILL: a child process (from the build in dist/, which `npm test`
 * makes first) adds and drops references in a loop over a folder of packs and a LevelDB catalog
 * and is killed mid-call, six times over the same storage. After each kill, reopened:
 *   - every content whose addReferences had resolved reads back, byte for byte;
 *   - no count is lower than acknowledged (nor higher than the call in flight could make it);
 *   - GC removes what the killed call left behind (packs never indexed) and nothing else.
 */
import { spawn } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { LevelCatalogStore } from '../../src/meta/level-catalog.js';
import { BLAKE3_HASHER, XXH128_HASHER } from '../../src/store/dedup/chunk-hasher.js';
import { DedupChunkRepository } from '../../src/store/dedup/dedup-repository.js';
import { SeededRandom } from '../../src/store/seeded-random.js';
import { isBlake3Available } from '../../src/sys/blake3.js';
import { expectSameBytes } from '../support/bytes.js';
import { LocalChunkStore } from '../../src/store/local-chunk-store.js';
import { CONTENT_IDS, PACK_TARGET_BYTES, contentOf } from '../support/dedup-crash/workload.js';
import { tempDir } from '../support/tmp.js';
import { REPO_ROOT } from '../support/tools.js';

const CHILD = path.join(REPO_ROOT, 'dist', 'test', 'support', 'dedup-crash', 'child.js');
const ROUNDS = 6;
const hasher = isBlake3Available() ? BLAKE3_HASHER : XXH128_HASHER;

interface Round {
  /** Steps that resolved: per content id, references added minus dropped. */
  readonly acknowledged: Map<number, number>;
  /** The step in flight when the child died, if any. */
  readonly inFlight?: { kind: 'add' | 'drop'; ids: number[] };
  readonly acks: number;
}

/** Steps a 'put' kill waits at most for a step that stores new content. */
const PUT_WAIT_STEPS = 100;

/**
 * Runs the child and kills it with SIGKILL once step `killAt.step` has begun ('begin'), or at the
 * first pack put after that ('put': a call with its pack durable and its commit not yet made).
 */
function runChild(args: string[], killAt: { step: number; on: 'begin' | 'put' }): Promise<Round> {
  const child = spawn(process.execPath, [CHILD, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
    const begun = out.indexOf(`begin ${killAt.step} `);
    if (begun < 0) return;
    if (killAt.on === 'begin' || out.indexOf('\nput ', begun) >= 0 || out.includes(`begin ${killAt.step + PUT_WAIT_STEPS} `)) {
      child.kill('SIGKILL');
    }
  });
  return new Promise((resolve, reject) => {
    child.on('exit', (code, signal) => {
      if (signal !== 'SIGKILL') return reject(new Error(`the child exited (${code}) before it was killed: ${err}`));
      const acknowledged = new Map<number, number>();
      const begun = new Map<number, { kind: 'add' | 'drop'; ids: number[] }>();
      let acks = 0;
      for (const line of out.split('\n')) {
        const [word, step, kind, ids] = line.split(' ');
        if (word === 'begin') begun.set(Number(step), { kind: kind as 'add' | 'drop', ids: ids!.split(',').map(Number) });
        if (word === 'ack') {
          const done = begun.get(Number(step))!;
          begun.delete(Number(step));
          acks++;
          for (const id of done.ids) acknowledged.set(id, (acknowledged.get(id) ?? 0) + (done.kind === 'add' ? 1 : -1));
        }
      }
      expect(begun.size).toBeLessThanOrEqual(1);
      const inFlight = [...begun.values()][0];
      resolve(inFlight === undefined ? { acknowledged, acks } : { acknowledged, inFlight, acks });
    });
  });
}

describe.skipIf(!existsSync(CHILD))('dedup repository crash (child killed with SIGKILL)', () => {
  it('acknowledged chunks read back and no count falls below what was acknowledged', async () => {
    const dir = tempDir();
    const folder = path.join(dir, 'packs');
    const catalogPath = path.join(dir, 'catalog');
    const random = new SeededRandom(1212);
    /** References per content id, as the repository holds them at the start of a round. */
    let counts = new Map<number, number>();
    let totalAcks = 0;
    for (let round = 0; round < ROUNDS; round++) {
      const countsPath = path.join(dir, `counts-${round}.json`);
      writeFileSync(countsPath, JSON.stringify(Object.fromEntries(counts)));
      const result = await runChild([folder, catalogPath, String(1000 + round), hasher.algorithm, countsPath], {
        step: random.intBetween(5, 60),
        on: round % 2 === 0 ? 'begin' : 'put',
      });
      totalAcks += result.acks;

      const catalog = await LevelCatalogStore.open(catalogPath);
      try {
        const chunkStore = new LocalChunkStore(folder);
        await chunkStore.removeInterruptedPuts();
        const repo = await DedupChunkRepository.open({ chunkStore, catalog, hasher, packTargetBytes: PACK_TARGET_BYTES, readCacheBytes: 0 });
        const check = async (when: string) => {
          const next = new Map<number, number>();
          for (let id = 0; id < CONTENT_IDS; id++) {
            const hash = repo.hash(contentOf(id));
            const held = await repo.referenceCount(hash);
            const acknowledged = (counts.get(id) ?? 0) + (result.acknowledged.get(id) ?? 0);
            const inFlight = result.inFlight?.ids.filter((other) => other === id).length ?? 0;
            const low = result.inFlight?.kind === 'drop' ? acknowledged - inFlight : acknowledged;
            const high = result.inFlight?.kind === 'add' ? acknowledged + inFlight : acknowledged;
            expect(held, `round ${round} ${when}: references to content ${id}`).toBeGreaterThanOrEqual(low);
            expect(held, `round ${round} ${when}: references to content ${id}`).toBeLessThanOrEqual(high);
            if (held > 0) expectSameBytes(await repo.read(hash), contentOf(id), `round ${round} ${when}: content ${id}`);
            next.set(id, held);
          }
          return next;
        };
        await check('after the kill');
        // Whatever the killed call put but never indexed is older than a zero grace period "now".
        const report = await repo.gc({ graceMs: 0, nowMs: Date.now() + 1 });
        expect(report.damaged).toEqual([]);
        counts = await check('after GC');
        expect((await repo.gc({ graceMs: 0, nowMs: Date.now() + 1 })).orphanPacksDeleted).toBe(0);
      } finally {
        await catalog.close();
      }
    }
    expect(totalAcks).toBeGreaterThanOrEqual(ROUNDS * 5);
  });
});
