/**
 * Deterministic regressions for bugs the differential property tests found in formats/qcow2. Each
 * runs the full differential check (Strata on A, qemu-io on B, qemu-img check/compare, the model)
 * on a fixed, minimal sequence.
 */
import { describe, it } from 'vitest';
import { requireTool } from '../support/tools.js';
import { VARIANTS, runResolved, type DataSpec, type Variant } from './harness.js';

const P = (byte: number): DataSpec => ({ kind: 'pattern', byte });
const KiB = 1024;
const MiB = 1024 * 1024;

describe.skipIf(!requireTool('qemu-img', 'qemu-io'))('qcow2 regressions found by the property tests', () => {
  // Bug: after the host cluster holding the last compressed data was freed (its only compressed
  // cluster overwritten, then a flush applied the free), writeCompressed kept packing into it (it
  // only checked refcount > 0). By then the cluster had been reused, here for a new L2 table: the
  // compressed bytes overwrote L2 entries and the cluster got a second reference.
  it('does not pack compressed data into a freed cluster that was reused for metadata', async () => {
    await runResolved({
      variant: VARIANTS.cluster512,
      sizeBytes: 1 * MiB,
      ops: [
        { op: 'compress', off: 0, len: 512, data: P(0x11) },
        { op: 'write', off: 0, len: 512, data: P(0x22) },
        { op: 'flush' },
        // L2 tables cover 32 KiB with 512-byte clusters: this needs a new one.
        { op: 'write', off: 64 * KiB, len: 512, data: P(0x33) },
        { op: 'compress', off: 512, len: 512, data: P(0x44) },
      ],
    });
  });

  // The same, as the property test first found it: through a snapshot (whose flush applies the
  // free) and an L2 copy-on-write that reuses the cluster; compressed writes over data.
  it('does not pack compressed data into a freed cluster reused by an L2 copy-on-write', async () => {
    await runResolved({
      variant: VARIANTS.default,
      sizeBytes: 1 * MiB,
      modelOnly: true,
      ops: [
        { op: 'compress', off: 15 * 64 * KiB, len: 64 * KiB, data: P(0) },
        { op: 'write', off: 0, len: 1 * MiB, data: P(0) },
        { op: 'snapshot', action: 'create', name: 's0' },
        { op: 'write', off: 0, len: 1, data: P(0) },
        { op: 'compress', off: 0, len: 64 * KiB, data: P(0) },
        { op: 'write', off: 64 * KiB, len: 1, data: { kind: 'random', seed: 0 } },
      ],
    });
  });

  // Bug: with refcount_bits=1 a second compressed cluster packed into the same host cluster needs
  // refcount 2: writeCompressed failed with LIMIT_EXCEEDED instead of starting a new cluster.
  it('starts a new host cluster for compressed data when the refcount is full (refcount_bits=1)', async () => {
    await runResolved({
      variant: VARIANTS.refcount1,
      sizeBytes: 1 * MiB,
      ops: [
        { op: 'compress', off: 0, len: 64 * KiB, data: P(1) },
        { op: 'compress', off: 64 * KiB, len: 64 * KiB, data: P(2) },
        { op: 'compress', off: 128 * KiB, len: 64 * KiB, data: { kind: 'mixed', seed: 3, byte: 3 } },
      ],
    });
  });

  it('starts a new host cluster for compressed data when the refcount is full (refcount_bits=2)', async () => {
    const variant: Variant = { name: 'refcount_bits=2', create: { refcountBits: 2 }, snapshots: false };
    await runResolved({
      variant,
      sizeBytes: 1 * MiB,
      ops: Array.from({ length: 6 }, (_, i) => ({ op: 'compress' as const, off: i * 64 * KiB, len: 64 * KiB, data: P(i + 1) })),
    });
  });

  // Bug: the header always carried the 392-byte feature-name table, so with 512-byte clusters a
  // backing file name no longer fit: Qcow2Image.create failed, and so did every header rewrite
  // (snapshots, ...) of such an image made by qemu-img. QEMU omits the table for clusters <= 4 KiB.
  it('creates a 512-byte-cluster image with a backing file', async () => {
    const variant: Variant = { name: 'cluster_size=512 + backing', create: { clusterSizeBytes: 512 }, backing: true, snapshots: true };
    await runResolved({
      variant,
      sizeBytes: 1 * MiB,
      createA: 'strata',
      ops: [
        { op: 'write', off: 1000, len: 3000, data: P(0x5a) },
        { op: 'snapshot', action: 'create', name: 's0' },
        { op: 'discard', off: 0, len: 4096 },
      ],
    });
  });

  it('rewrites the header of a qemu-img-made 512-byte-cluster image with a backing file', async () => {
    const variant: Variant = { name: 'cluster_size=512 + backing', create: { clusterSizeBytes: 512 }, backing: true, snapshots: true };
    await runResolved({
      variant,
      sizeBytes: 1 * MiB,
      createA: 'qemu',
      ops: [
        { op: 'snapshot', action: 'create', name: 's0' },
        { op: 'write', off: 0, len: 1, data: P(1) },
        { op: 'snapshot', action: 'apply', name: 's0' },
      ],
    });
  });

  // Divergence: on a v2 image with a backing file, discard made clusters unallocated, so reads
  // showed the backing file's stale data there. QEMU ignores such discards (no zero flag in v2).
  it('ignores discard on a compat=0.10 image with a backing file, as QEMU does', async () => {
    const variant: Variant = { name: 'compat=0.10 cluster_size=512 + backing', create: { clusterSizeBytes: 512, compat: '0.10' }, backing: true, snapshots: true };
    await runResolved({
      variant,
      sizeBytes: 1 * MiB,
      ops: [
        { op: 'write', off: 0, len: 1 * MiB, data: P(0) },
        { op: 'discard', off: 1 * MiB - 512, len: 512 },
        { op: 'zero', off: 1 * MiB - 512, len: 1, unmap: false },
      ],
    });
  });
});
