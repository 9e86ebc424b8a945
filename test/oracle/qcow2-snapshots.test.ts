/**
 * Oracle: internal snapshots made by `qemu-img snapshot -c` between rounds of qemu-io writes.
 * Strata must read the active layer as qemu does, list the snapshots as qemu-img info does, and
 * read each snapshot as qemu does after `qemu-img snapshot -a`. Applying and deleting snapshots
 * with Strata must give the same guest content as qemu doing it, and leave an image qemu-img
 * check finds clean.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Qcow2Image } from '../../formats/qcow2/index.js';
import { LocalHostFile } from '../../src/store/local-file.js';
import { shmTempDir } from '../support/tmp.js';
import { requireTool } from '../support/tools.js';
import {
  KiB,
  MiB,
  checkSummary,
  createOpts,
  expectSameBytes,
  makePatternFiles,
  oddSize,
  qemuCheck,
  qemuImgOk,
  qemuIoOk,
  qemuRaw,
  verifyImage,
  workload,
} from './support.js';

interface SnapshotCase {
  name: string;
  clusterSize: number;
  baseSize: number;
  refcountBits?: number;
  compat?: '0.10' | '1.1';
  extendedL2?: boolean;
  lazyRefcounts?: boolean;
  compressionType?: 'zlib' | 'zstd';
  /** Compressed writes in the first round (before any snapshot). */
  compressed?: boolean;
  /**
   * Take only s1. With 2-bit refcounts a cluster shared by s1, s2 and the active layer already has
   * refcount 3 (the maximum), and qemu's snapshot -a, which raises the snapshot's refcounts before
   * lowering the active layer's, fails with EINVAL.
   */
  oneSnapshot?: boolean;
  seed: number;
}

const cases: SnapshotCase[] = [
  { name: 'cluster 64k', clusterSize: 64 * KiB, baseSize: 16 * MiB, seed: 1001 },
  { name: 'cluster 4k, compressed zstd first round', clusterSize: 4 * KiB, baseSize: 8 * MiB, compressionType: 'zstd', compressed: true, seed: 1002 },
  { name: 'cluster 512', clusterSize: 512, baseSize: 4 * MiB, seed: 1003 },
  { name: 'extended_l2, cluster 64k', clusterSize: 64 * KiB, baseSize: 16 * MiB, extendedL2: true, seed: 1004 },
  { name: 'compat 0.10, cluster 64k', clusterSize: 64 * KiB, baseSize: 16 * MiB, compat: '0.10', seed: 1005 },
  { name: 'refcount 2 bits (max refcount 3)', clusterSize: 64 * KiB, baseSize: 16 * MiB, refcountBits: 2, oneSnapshot: true, seed: 1006 },
  { name: 'refcount 64 bits, lazy refcounts', clusterSize: 16 * KiB, baseSize: 8 * MiB, refcountBits: 64, lazyRefcounts: true, seed: 1007 },
];

async function openWritable(image: string): Promise<Qcow2Image> {
  const file = await LocalHostFile.open(image);
  return Qcow2Image.open(file, {});
}

/** Applies a snapshot with qemu to one copy and with Strata to another; both must agree. */
async function applyBoth(dir: string, image: string, snapshot: string, seed: number): Promise<Buffer> {
  const byQemu = path.join(dir, `apply-${snapshot}-qemu.qcow2`);
  const byStrata = path.join(dir, `apply-${snapshot}-strata.qcow2`);
  fs.copyFileSync(image, byQemu);
  fs.copyFileSync(image, byStrata);
  qemuImgOk(['snapshot', '-a', snapshot, byQemu]);
  const expected = (await verifyImage(byQemu, { dir, irregularSeed: seed })).content;

  const q = await openWritable(byStrata);
  try {
    await q.applySnapshot(snapshot);
  } finally {
    await q.close();
  }
  expect(checkSummary(qemuCheck(byStrata)), `${snapshot} applied by Strata: qemu-img check`).toMatchObject({
    corruptions: 0,
    leaks: 0,
  });
  expectSameBytes(qemuRaw(byStrata, `${byStrata}.raw`), expected, `${snapshot} applied by Strata, read by qemu`);
  await verifyImage(byStrata, { dir });
  return expected;
}

/** Deletes a snapshot with qemu and with Strata; both must keep the active content and be clean. */
async function deleteBoth(dir: string, image: string, snapshot: string, active: Buffer): Promise<void> {
  const byQemu = path.join(dir, `delete-${snapshot}-qemu.qcow2`);
  const byStrata = path.join(dir, `delete-${snapshot}-strata.qcow2`);
  fs.copyFileSync(image, byQemu);
  fs.copyFileSync(image, byStrata);
  qemuImgOk(['snapshot', '-d', snapshot, byQemu]);
  expectSameBytes((await verifyImage(byQemu, { dir })).content, active, `${snapshot} deleted by qemu`);
  const q = await openWritable(byStrata);
  try {
    await q.deleteSnapshot(snapshot);
  } finally {
    await q.close();
  }
  expect(checkSummary(qemuCheck(byStrata)), `${snapshot} deleted by Strata: qemu-img check`).toMatchObject({
    corruptions: 0,
    leaks: 0,
  });
  expectSameBytes((await verifyImage(byStrata, { dir })).content, active, `${snapshot} deleted by Strata`);
}

describe.skipIf(!requireTool('qemu-img', 'qemu-io'))('oracle: internal snapshots made by qemu-img', () => {
  it.each(cases)('$name', async (c) => {
    const dir = shmTempDir();
    const size = oddSize(c.baseSize, c.clusterSize);
    const image = path.join(dir, 'snap.qcow2');
    const options = createOpts({
      cluster_size: c.clusterSize,
      refcount_bits: c.refcountBits,
      compat: c.compat,
      extended_l2: c.extendedL2,
      lazy_refcounts: c.lazyRefcounts,
      compression_type: c.compressionType,
    });
    qemuImgOk(['create', '-q', '-f', 'qcow2', ...(options ? ['-o', options] : []), image, String(size)]);
    const patterns = makePatternFiles(dir, c.seed);
    const round = (seed: number, compressed: boolean) =>
      qemuIoOk(
        image,
        workload({ sizeBytes: size, clusterSizeBytes: c.clusterSize, seed, patterns, ops: 12, zeroes: true, discards: true, compressed }),
        ['-f', 'qcow2'],
      );

    round(c.seed, c.compressed === true);
    const first = qemuRaw(image, path.join(dir, 'first.raw'));
    qemuImgOk(['snapshot', '-c', 's1', image]);
    round(c.seed + 1, false);
    const second = qemuRaw(image, path.join(dir, 'second.raw'));
    if (!c.oneSnapshot) {
      qemuImgOk(['snapshot', '-c', 's2', image]);
      round(c.seed + 2, false);
    }

    // The active layer after the snapshots (verifyImage compares the snapshot list too).
    const active = (await verifyImage(image, { dir, irregularSeed: c.seed })).content;
    expect(active.equals(c.oneSnapshot ? first : second), 'the last round changed something').toBe(false);

    // Each snapshot, applied by qemu and by Strata.
    expectSameBytes(await applyBoth(dir, image, 's1', c.seed + 3), first, 's1 content');
    if (!c.oneSnapshot) expectSameBytes(await applyBoth(dir, image, 's2', c.seed + 4), second, 's2 content');

    // Deleting the older snapshot keeps the active content.
    await deleteBoth(dir, image, 's1', active);
  });

  it('snapshot taken before a resize: applying it restores the old size', async () => {
    const dir = shmTempDir();
    const image = path.join(dir, 'resize.qcow2');
    const small = oddSize(8 * MiB, 64 * KiB);
    const large = oddSize(12 * MiB, 64 * KiB);
    qemuImgOk(['create', '-q', '-f', 'qcow2', image, String(small)]);
    const patterns = makePatternFiles(dir, 1101);
    qemuIoOk(image, workload({ sizeBytes: small, clusterSizeBytes: 64 * KiB, seed: 1101, patterns, ops: 8, zeroes: true, discards: true }));
    const before = (await verifyImage(image, { dir })).content;
    qemuImgOk(['snapshot', '-c', 'small', image]);
    qemuImgOk(['resize', '-q', image, String(large)]);
    qemuIoOk(image, workload({ sizeBytes: large, clusterSizeBytes: 64 * KiB, seed: 1102, patterns, ops: 8, zeroes: true, discards: true }));
    const after = (await verifyImage(image, { dir, irregularSeed: 1102 })).content;
    expect(after.length).toBe(large);

    const restored = await applyBoth(dir, image, 'small', 1103);
    expect(restored.length).toBe(small);
    expectSameBytes(restored, before, 'snapshot from before the resize');
  });
});
