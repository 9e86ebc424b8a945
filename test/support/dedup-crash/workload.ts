/**
 * The dedup crash test's workload, shared by the child that runs it and the test that judges what
 * survived: chunk contents by id (deterministic, so the judge regenerates what the child stored),
 * and the child's protocol on stdout, one line per step, written synchronously (a pipe), so every
 * line the parent reads was written before the SIGKILL:
 *
 *   begin <step> add|drop <id>,<id>,...   before the call
 *   put <key>                             after a pack is durable (before the call commits)
 *   ack <step>                            after it resolved (durable from then on)
 */
import { SeededRandom } from '../../../src/store/seeded-random.js';

/** Enough contents that late steps still store new ones (so kills land between put and commit). */
export const CONTENT_IDS = 512;
export const CHUNK_BYTES = 16 * 1024;
export const PACK_TARGET_BYTES = 128 * 1024;

/** The bytes of content `id`: the same on every call, different for every id. */
export function contentOf(id: number): Uint8Array {
  return new SeededRandom(0x5eed0000 + id).fill(new Uint8Array(CHUNK_BYTES));
}

export interface Step {
  readonly step: number;
  readonly kind: 'add' | 'drop';
  readonly ids: readonly number[];
}

/** The child's steps, from a seed: mostly adds of a few contents (with repeats), some drops. */
export function* steps(seed: number, held: Map<number, number>): Generator<Step> {
  const random = new SeededRandom(seed);
  for (let step = 0; ; step++) {
    const heldIds = [...held].filter(([, count]) => count > 0).map(([id]) => id);
    if (heldIds.length > 0 && random.bool(0.25)) {
      yield { step, kind: 'drop', ids: [random.pick(heldIds)] };
    } else {
      yield { step, kind: 'add', ids: Array.from({ length: random.intBetween(1, 12) }, () => random.int(CONTENT_IDS)) };
    }
  }
}

export function formatBegin(step: Step): string {
  return `begin ${step.step} ${step.kind} ${step.ids.join(',')}\n`;
}
