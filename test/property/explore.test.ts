import { describe, it } from 'vitest';
import { requireTool } from '../support/tools.js';
import { VARIANTS, arbMixedVariant, arbScenario, checkProperty, runs } from './harness.js';

describe.skipIf(!requireTool('qemu-img', 'qemu-io'))('explore', () => {
  for (const [key, v] of Object.entries(VARIANTS)) {
    it(key, async () => {
      await checkProperty(arbScenario(v), runs(25));
    }, 600_000);
  }
  it('mixed', async () => { await checkProperty(arbScenario(arbMixedVariant()), runs(25)); }, 600_000);
  it('reverse', async () => { await checkProperty(arbScenario(VARIANTS.default, { qemuFirst: true }), runs(25)); }, 600_000);
  it('modelOnly', async () => { await checkProperty(arbScenario(VARIANTS.default, { modelOnly: true }), runs(25)); }, 600_000);
});
