/**
 * Random bit flips in the metadata of real qemu-img made images: in the header cluster, the L1 and
 * L2 tables, the refcount table and blocks, the snapshot table and snapshot L1 tables. Each mutant
 * is opened read-only, read in full (up to 16 MiB of guest), mapped and checked; one in four is also
 * opened writable, written and flushed. Allowed: success, or a StorageError. Not allowed: any other
 * exception, a hang (10 s per case), or a dead worker (out of memory, unhandled rejection).
 *
 * More seeds: HOSTILE_SEEDS=100 (default 10 per image and metadata kind).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SeededRandom } from '../../src/store/seeded-random.js';
import { requireTool } from '../support/tools.js';
import { makeTempDir } from '../support/tmp.js';
import { buildBaseImages, type BaseImage, type RegionKind } from './images.js';
import type { CaseOutcome, CasePlan } from './protocol.js';
import { HostileRunner, buildWorker, describeOutcome, isAllowed } from './runner.js';

const SEEDS = Number(process.env.HOSTILE_SEEDS ?? 10);
const KINDS: RegionKind[] = ['header', 'l1', 'l2', 'refcount-table', 'refcount-block', 'snapshot-table', 'snapshot-l1'];
const MiB = 1024 * 1024;

function nameHash(name: string): number {
  let h = 0;
  for (let i = 0; i < name.length; i++) h = (Math.imul(h, 31) + name.charCodeAt(i)) >>> 0;
  return h;
}

/** Flips 1-4 bits, each in a random byte of a random region of the kind (half the time a nonzero byte). */
function mutate(image: BaseImage, kind: RegionKind, rng: SeededRandom): { bytes: Uint8Array; flips: string[] } | undefined {
  const regions = image.regions.filter((r) => r.kind === kind && r.lengthBytes > 0);
  if (regions.length === 0) return undefined;
  const bytes = image.bytes.slice();
  const flips: string[] = [];
  const count = rng.intBetween(1, 4);
  for (let i = 0; i < count; i++) {
    const region = rng.pick(regions);
    let offset = region.hostOffset + rng.int(region.lengthBytes);
    if (kind === 'header' && rng.bool(0.8)) offset = rng.int(Math.min(region.lengthBytes, 256));
    if (rng.bool(0.5)) {
      const nonzero: number[] = [];
      for (let o = region.hostOffset; o < region.hostOffset + region.lengthBytes; o++) if (bytes[o] !== 0) nonzero.push(o);
      if (nonzero.length > 0) offset = rng.pick(nonzero);
    }
    const bit = rng.int(8);
    bytes[offset]! ^= 1 << bit;
    flips.push(`${offset}.${bit}`);
  }
  return { bytes, flips };
}

describe.skipIf(!requireTool('qemu-img', 'qemu-io'))('qcow2 hostile input: bit flips in metadata', () => {
  let images: BaseImage[] = [];
  let runner: HostileRunner;
  let cleanup: () => void = () => {};

  beforeAll(async () => {
    const dir = makeTempDir();
    try {
      images = await buildBaseImages(dir.path);
    } finally {
      dir.cleanup();
    }
    const built = buildWorker();
    cleanup = built.cleanup;
    runner = new HostileRunner(built.workerPath, { timeoutMs: 10_000 });
  });

  afterAll(async () => {
    await runner?.close();
    cleanup();
  });

  it('pristine images open, read and check clean in the runner', async () => {
    for (const image of images) {
      const outcome = await runner.run(image.bytes, { readOnly: true, readLimitBytes: 16 * MiB, check: true, blockStatus: true });
      expect(outcome.result, `${image.name}: ${describeOutcome(outcome)}`).toBe('ok');
      expect(outcome.check, image.name).toMatchObject({ corruptions: 0, leaks: 0 });
    }
  });

  for (const kind of KINDS) {
    it(`flips in ${kind}`, async () => {
      const failures: string[] = [];
      const tally = new Map<string, number>();
      let cases = 0;
      let slowest = 0;
      for (const image of images) {
        for (let seed = 0; seed < SEEDS; seed++) {
          const rng = new SeededRandom(seed * 31 + KINDS.indexOf(kind) * 1_000_003 + nameHash(image.name));
          const mutant = mutate(image, kind, rng);
          if (!mutant) break;
          const writable = seed % 4 === 3;
          const plan: CasePlan = {
            readOnly: !writable,
            readLimitBytes: 16 * MiB,
            extraReads: [image.sizeBytes - 4096, 2 ** 40, 2 ** 52],
            blockStatus: true,
            check: true,
            writes: writable
              ? [
                  { guestOffset: 0, lengthBytes: 4096 },
                  { guestOffset: image.clusterSizeBytes * 3 + 100, lengthBytes: image.clusterSizeBytes * 2 },
                  { guestOffset: image.sizeBytes - 8192, lengthBytes: 8192 },
                ]
              : undefined,
          };
          const outcome: CaseOutcome = await runner.run(mutant.bytes, plan);
          cases++;
          slowest = Math.max(slowest, outcome.elapsedMs ?? 0);
          const key = outcome.result === 'storage-error' ? `StorageError ${outcome.code} in ${outcome.step.split(' ')[0]}` : outcome.result;
          tally.set(key, (tally.get(key) ?? 0) + 1);
          if (!isAllowed(outcome)) {
            failures.push(`${image.name} seed ${seed} flips [${mutant.flips.join(', ')}]${writable ? ' (writable)' : ''}: ${describeOutcome(outcome)}`);
          }
        }
      }
      console.log(`${kind}: ${cases} mutants, slowest ${slowest} ms: ${[...tally].map(([k, n]) => `${k} x${n}`).join(', ')}`);
      expect(failures, failures.slice(0, 5).join('\n')).toEqual([]);
    });
  }
});
