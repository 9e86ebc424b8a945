import { it } from 'vitest';
import { VARIANTS, runResolved, type Op } from './harness.js';

const P = (byte: number) => ({ kind: 'pattern' as const, byte });
it('scratch', async () => {
  const ops: Op[] = [
    { op: 'compress', off: 983040, len: 65536, data: P(0) },
    { op: 'write', off: 0, len: 1048576, data: P(0) },
    { op: 'snapshot', action: 'create', name: 's0' },
    { op: 'write', off: 0, len: 1, data: P(0) },
    { op: 'compress', off: 0, len: 65536, data: P(0) },
    { op: 'write', off: 65536, len: 1, data: { kind: 'random', seed: 0 } },
    { op: 'zero', off: 983040, len: 1, unmap: false },
    { op: 'write', off: 65536, len: 1, data: P(0) },
  ];
  await runResolved({ variant: VARIANTS.default, sizeBytes: 1 << 20, ops, modelOnly: true });
});
it('refcount1 packing', async () => {
  const ops: Op[] = [
    { op: 'compress', off: 0, len: 65536, data: P(1) },
    { op: 'compress', off: 65536, len: 65536, data: P(2) },
    { op: 'compress', off: 131072, len: 65536, data: P(3) },
  ];
  await runResolved({ variant: VARIANTS.refcount1, sizeBytes: 1 << 20, ops });
});
