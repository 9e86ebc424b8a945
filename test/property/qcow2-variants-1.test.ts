/**
 * Strata vs qemu-io on random operation sequences, per image-option variant (part 1 of 2; the
 * variants are split over two files so that vitest's two workers share them).
 */
import { describe, it } from 'vitest';
import { requireTool } from '../support/tools.js';
import { PROPERTY_TIMEOUT_MS, VARIANTS, arbScenario, checkProperty, runs } from './harness.js';

describe.skipIf(!requireTool('qemu-img', 'qemu-io'))('qcow2: Strata and qemu-io agree on random operation sequences', () => {
  const cases: [keyof typeof VARIANTS, number][] = [
    ['default', 40],
    ['cluster512', 15],
    ['cluster4k', 30],
    ['refcount1', 30],
    ['refcount64', 20],
    ['compat010', 25],
  ];
  for (const [key, numRuns] of cases) {
    it(VARIANTS[key].name, async () => {
      await checkProperty(arbScenario(VARIANTS[key]), runs(numRuns));
    }, PROPERTY_TIMEOUT_MS);
  }
});
