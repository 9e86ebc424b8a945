/**
 * The crash-safety suite (run by qcow2-crash-*.test.ts, which split the variants between them so
 * both test workers share the load). Power-cut safety of the qcow2 engine: for every image variant and many seeds, run a random
 * workload (writes, multi-cluster writes, write-zeroes, discards, compressed writes, flushes,
 * internal snapshot create/delete), cut the power at random host operations, and judge each crash
 * image (see harness.ts): never corruption (only leaks), every byte acknowledged before the last
 * completed flush reads back, later bytes are old or new and nothing else.
 *
 * Crash points come from two sources:
 *   - captures: the workload runs to the end, and at chosen host operations (including those in
 *     the middle of a metadata writeback) crash(rng) builds what the disk may hold at that moment,
 *     with and without torn 512-byte sectors;
 *   - cuts: the workload is re-run with failAfterOps at a random point, the interrupted operation
 *     fails with IO_ERROR, and crash(rng) images are taken from there.
 *
 * Reproduce one case: CRASH_VARIANT='lazy' CRASH_SEED=1003 npx vitest run test/crash
 * More seeds: CRASH_SEEDS=200 (default 7 per variant); other seeds: CRASH_SEED_BASE=5000.
 */
import { describe, expect, it } from 'vitest';
import { SeededRandom } from '../../src/store/seeded-random.js';
import { findTool } from '../support/tools.js';
import { shmTempDir } from '../support/tmp.js';
import {
  opListing,
  prepareScenario,
  runWorkload,
  verifyCrashImage,
  type Capture,
  type CrashPointFile,
  type Scenario,
} from './harness.js';
import { VARIANTS, type Variant } from './workload.js';

const SEEDS = Number(process.env.CRASH_SEEDS ?? 7);
const SEED_BASE = Number(process.env.CRASH_SEED_BASE ?? 1000);
const ONLY_SEED = process.env.CRASH_SEED === undefined ? undefined : Number(process.env.CRASH_SEED);
const VARIANT_FILTER = process.env.CRASH_VARIANT;
/** Crash images per capture run, and failAfterOps runs per seed. */
const CAPTURES_PER_RUN = 8;
const CUTS_PER_SEED = 2;
/** qemu-img check on one crash image in this many (it costs a process start). */
const QEMU_SAMPLE_EVERY = 9;
const hasQemuImg = findTool('qemu-img') !== undefined;

interface Totals {
  crashImages: number;
  dirty: number;
  v2CopiedOnly: number;
  withLeaks: number;
  qemuChecks: number;
  qemuLeakExits: number;
}

function takeCrashImages(
  file: CrashPointFile,
  model: { expectation(): Capture['exp'] },
  rng: SeededRandom,
  where: string,
  inSnapshotOp: boolean,
): Capture[] {
  const keep = rng.pick([0.1, 0.5, 0.9]);
  const out: Capture[] = [];
  for (const torn of [false, true]) {
    file.tornWrites = torn;
    out.push({
      image: file.crash(rng, { keepProbability: keep }),
      exp: model.expectation(),
      where: `${where}, keep ${keep}${torn ? ', torn writes' : ''}`,
      inSnapshotOp,
    });
  }
  return out;
}

function isSnapshotOp(scenario: Scenario, opIndex: number | undefined): boolean {
  const kind = opIndex === undefined ? undefined : scenario.ops[opIndex]?.kind;
  return kind === 'createSnapshot' || kind === 'deleteSnapshot';
}

async function runSeed(scenario: Scenario, totals: Totals, qemuDir: string | undefined): Promise<string[]> {
  const problems: string[] = [];
  const rng = new SeededRandom(scenario.seed * 7919 + 1);
  let verified = 0;
  const verify = async (capture: Capture) => {
    verified++;
    const useQemu = qemuDir !== undefined && (totals.crashImages + verified) % QEMU_SAMPLE_EVERY === 0;
    const result = await verifyCrashImage(scenario, capture, {
      qemuDir: useQemu ? qemuDir : undefined,
      postCrashWrites: rng.bool(0.35) ? rng.fork() : undefined,
    });
    if (result.stats.dirty) totals.dirty++;
    if (result.stats.v2CopiedOnly) totals.v2CopiedOnly++;
    if (result.stats.leaks > 0) totals.withLeaks++;
    if (result.stats.qemuExit !== undefined) {
      totals.qemuChecks++;
      if (result.stats.qemuExit === 3) totals.qemuLeakExits++;
    }
    problems.push(...result.problems);
  };

  // Dry run: how many host operations the workload makes.
  const dry = await runWorkload(scenario);
  const hostOps = dry.hostOps;

  // Capture run: crash images at chosen host operations, verified between workload ops.
  const points = new Set<number>();
  for (let i = 0; i < CAPTURES_PER_RUN; i++) points.add(rng.int(hostOps));
  const pending: Capture[] = [];
  const captureRun = await runWorkload(scenario, {
    onHostOp: (file, model, opIndex, what) => {
      if (!points.has(file.operationCount)) return;
      points.delete(file.operationCount);
      const where = `capture before host op ${file.operationCount} (${what}) in workload op ${opIndex}`;
      pending.push(...takeCrashImages(file, model, rng, where, isSnapshotOp(scenario, opIndex)));
    },
    afterOp: async () => {
      for (const capture of pending.splice(0)) await verify(capture);
    },
  });
  for (const capture of pending.splice(0)) await verify(capture);
  // And after the whole workload, before any final flush.
  for (const capture of takeCrashImages(captureRun.file, captureRun.model, rng, 'end of workload', false)) await verify(capture);

  // Cut runs: the power fails at a random host operation; the interrupted op gets IO_ERROR.
  for (let cut = 0; cut < CUTS_PER_SEED; cut++) {
    const failAfterOps = rng.int(hostOps);
    const run = await runWorkload(scenario, { failAfterOps });
    const where = `failAfterOps ${failAfterOps} (cut in workload op ${run.cutAtOp ?? 'none'})`;
    for (const capture of takeCrashImages(run.file, run.model, rng, where, isSnapshotOp(scenario, run.cutAtOp))) await verify(capture);
  }
  totals.crashImages += verified;
  return problems;
}

/** Defines one test per variant that `select` accepts. */
export function crashSuite(title: string, select: (variant: Variant, index: number) => boolean): void {
  describe(title, () => {
    for (const variant of VARIANTS.filter(select)) {
      if (VARIANT_FILTER && !variant.name.includes(VARIANT_FILTER)) continue;
      it(variant.name, async () => {
        const qemuDir = hasQemuImg ? shmTempDir() : undefined;
        const totals: Totals = { crashImages: 0, dirty: 0, v2CopiedOnly: 0, withLeaks: 0, qemuChecks: 0, qemuLeakExits: 0 };
        const failures: string[] = [];
        const seeds = ONLY_SEED !== undefined ? [ONLY_SEED] : Array.from({ length: SEEDS }, (_, i) => SEED_BASE + i);
        const started = Date.now();
        for (const seed of seeds) {
          const scenario = await prepareScenario(variant, seed);
          const problems = await runSeed(scenario, totals, qemuDir);
          if (problems.length > 0) {
            failures.push(`seed ${seed}: ${problems.length} problems\n${problems.slice(0, 6).join('\n')}\nworkload:\n${opListing(scenario)}`);
          }
        }
        const elapsed = ((Date.now() - started) / 1000).toFixed(1);
        console.log(
          `${variant.name}: ${seeds.length} seeds, ${totals.crashImages} crash images (${totals.dirty} dirty, ` +
            (totals.v2CopiedOnly ? `${totals.v2CopiedOnly} v2 COPIED-only, ` : '') +
            `${totals.withLeaks} with leaks), ${totals.qemuChecks} qemu-img checks (${totals.qemuLeakExits} leaks-only), ${elapsed}s`,
        );
        expect(failures, failures.slice(0, 3).join('\n\n')).toEqual([]);
      });
    }
  });
}
