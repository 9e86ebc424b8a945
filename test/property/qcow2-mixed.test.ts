/**
 * Strata vs qemu-io on random operation sequences: random combinations of image options, the
 * reverse direction (images written by qemu-io first, then by both), and compressed writes where
 * QEMU would refuse them (checked against the model and qemu-img check only).
 */
import fc from 'fast-check';
import { describe, it } from 'vitest';
import * as zstd from '../../formats/qcow2/zstd.js';
import { requireTool } from '../support/tools.js';
import { PROPERTY_TIMEOUT_MS, VARIANTS, arbMixedVariant, arbScenario, checkProperty, runs, type Variant } from './harness.js';

const hasZstd = zstd.isZstdAvailable();
const usable = (v: Variant) => hasZstd || v.create.compressionType !== 'zstd';
const anyVariant: fc.Arbitrary<Variant> = fc.oneof(fc.constantFrom(...Object.values(VARIANTS).filter(usable)), arbMixedVariant().filter(usable));

describe.skipIf(!requireTool('qemu-img', 'qemu-io'))('qcow2: Strata and qemu-io agree on random operation sequences', () => {
  it('random combinations of image options', async () => {
    await checkProperty(arbScenario(arbMixedVariant().filter(usable)), runs(60));
  }, PROPERTY_TIMEOUT_MS);

  it('reverse direction: qemu-io writes first, then Strata and qemu-io continue', async () => {
    await checkProperty(arbScenario(anyVariant, { qemuFirst: true }), runs(60));
  }, PROPERTY_TIMEOUT_MS);

  it('compressed writes over anything (model and qemu-img check only)', async () => {
    await checkProperty(arbScenario(anyVariant, { modelOnly: true }), runs(50));
  }, PROPERTY_TIMEOUT_MS);
});
