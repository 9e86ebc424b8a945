/**
 * Helpers over opened images that several operations share: copy plans (what to copy from one
 * chain into a layer, and the copying) and resizing an active layer.
 */
import { alignUp } from '../core/units.js';
import type { Qcow2Image } from '../../formats/qcow2/index.js';
import { chainMap, copyBuffer, copyRange, forEachWindow, yieldNowAndThen, type Range } from './extents.js';
import type { JobContext } from './jobs.js';
import { backingOf } from './layers.js';

/** One step of a copy plan: copy the source's data over the range, or write zeroes there. */
export interface PlanStep {
  offset: number;
  length: number;
  kind: 'data' | 'zero';
}

export function totalOf(plan: readonly Range[]): number {
  return plan.reduce((sum, r) => sum + r.length, 0);
}

export function totalOfKind(plan: readonly PlanStep[], kind: 'data' | 'zero'): number {
  return plan.reduce((sum, r) => sum + (r.kind === kind ? r.length : 0), 0);
}

/** The data extents of what `image`'s chain reads over [start, end) (zeroes need no copy). */
export async function dataPlan(image: Qcow2Image, start: number, end: number): Promise<PlanStep[]> {
  const plan: PlanStep[] = [];
  await forEachWindow(start, end - start, async (s, e) => {
    for (const x of await chainMap(image, s, e)) if (x.kind === 'data') plan.push(x);
  });
  return plan;
}

/**
 * Copies plan steps from `source` (as its chain reads) into `dest`; 'zero' steps write zeroes.
 * sourceError maps failures to read the source (an upload's damage is not the pool's).
 */
export async function copyPlan(
  source: Qcow2Image,
  dest: Qcow2Image,
  plan: PlanStep[],
  ctx: JobContext,
  zeroBlocks: 'skip' | 'write-zeroes',
  sourceError?: (err: unknown) => unknown,
): Promise<void> {
  const buffer = copyBuffer();
  const readSource = sourceError
    ? (offset: number, buf: Uint8Array) => source.read(offset, buf).catch((err: unknown) => Promise.reject(sourceError(err)))
    : (offset: number, buf: Uint8Array) => source.read(offset, buf);
  for (const step of plan) {
    ctx.throwIfCancelled();
    await yieldNowAndThen();
    if (step.kind === 'zero') {
      await dest.writeZeroes(step.offset, step.length);
      continue;
    }
    await copyRange(readSource, dest, step.offset, step.length, {
      signal: ctx.signal,
      onBytes: (n) => ctx.addDone(n),
      zeroBlocks,
    }, buffer);
  }
}

/**
 * Resizes an active layer from fromBytes (its size before, also when finishing an interrupted
 * resize). Growing zeroes what would otherwise appear: bytes left past the old end in its last
 * cluster, and a backing file's data past the old end (as QEMU does since 5.1).
 */
export async function resizeImage(image: Qcow2Image, sizeBytes: number, fromBytes: number = image.sizeBytes): Promise<void> {
  const old = fromBytes;
  if (image.sizeBytes !== sizeBytes) await image.resize(sizeBytes, { allowShrink: true });
  if (sizeBytes <= old) return;
  const backingSize = backingOf(image)?.sizeBytes ?? 0;
  const zeroEnd = Math.min(sizeBytes, Math.max(alignUp(old, image.clusterSizeBytes), backingSize));
  if (zeroEnd > old) await image.writeZeroes(old, zeroEnd - old);
}
