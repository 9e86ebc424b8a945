/**
 * Strata vs qemu-io on random operation sequences, per image-option variant (part 2 of 2).
 */
import { describe, it } from 'vitest';
import * as zstd from '../../formats/qcow2/zstd.js';
import { isCi, requireTool } from '../support/tools.js';
import { PROPERTY_TIMEOUT_MS, VARIANTS, arbScenario, checkProperty, runs } from './harness.js';

const zstdMissing = !zstd.isZstdAvailable();
if (zstdMissing && isCi()) throw new Error('libzstd is not available to Strata (CI=true: tests must not skip)');

describe.skipIf(!requireTool('qemu-img', 'qemu-io'))('qcow2: Strata and qemu-io agree on random operation sequences', () => {
  const cases: [keyof typeof VARIANTS, number][] = [
    ['extendedL2', 25],
    ['extendedL2c16k', 15],
    ['lazy', 25],
    ['zstd', 25],
    ['backing', 30],
  ];
  for (const [key, numRuns] of cases) {
    it.skipIf(key === 'zstd' && zstdMissing)(VARIANTS[key].name, async () => {
      await checkProperty(arbScenario(VARIANTS[key]), runs(numRuns));
    }, PROPERTY_TIMEOUT_MS);
  }
});
