/**
 * Image variants and seeded random workloads for the crash tests. A workload is generated up front
 * from its seed alone (it does not look at the engine), so a failing seed prints as a plain list of
 * operations that replays exactly.
 */
import { SeededRandom } from '../../src/store/seeded-random.js';
import type { Qcow2CreateOptions } from '../../formats/qcow2/index.js';

export interface Variant {
  name: string;
  /** Which of the two crash test files runs it (they run in parallel; groups take similar time). */
  group: 'a' | 'b';
  create: Omit<Qcow2CreateOptions, 'backingFile' | 'backingFormat'>;
  /** Backing file (a qcow2 image in memory, filled with random data) of this many bytes. */
  backingSizeBytes?: number;
  /** Internal snapshot create/delete in the workload (needs refcount_bits >= 2... 16 here). */
  snapshots: boolean;
  /** Guest bytes written (and flushed) from offset 0 before the workload starts. */
  prefillBytes?: number;
  /** Largest multi-cluster write, in clusters. */
  maxWriteClusters: number;
  /** Operations per workload. */
  ops: [number, number];
}

const KiB = 1024;
const MiB = 1024 * KiB;

export const VARIANTS: Variant[] = [
  {
    name: 'default (64 KiB clusters)',
    group: 'a',
    create: { sizeBytes: 4 * MiB },
    snapshots: true,
    maxWriteClusters: 4,
    ops: [30, 50],
  },
  {
    name: '512 B clusters, refcount_bits=1',
    group: 'a',
    // 512 B clusters: one refcount block covers 2 MiB of host file. The prefill brings the file
    // close to that, so the workload creates a new refcount block; the L1 table spans 2 clusters.
    create: { sizeBytes: 3 * MiB, clusterSizeBytes: 512, refcountBits: 1 },
    prefillBytes: 2000 * KiB,
    snapshots: false,
    maxWriteClusters: 512,
    ops: [30, 45],
  },
  {
    name: '512 B clusters, refcount_bits=64 (refcount table growth)',
    group: 'b',
    // One refcount block covers 64 clusters (32 KiB) and the one-cluster table 2 MiB of host file:
    // the prefill brings the file close to that, so the workload moves the refcount table.
    create: { sizeBytes: 4 * MiB, clusterSizeBytes: 512, refcountBits: 64 },
    prefillBytes: 1850 * KiB,
    snapshots: true,
    maxWriteClusters: 512,
    ops: [30, 45],
  },
  {
    name: '4 KiB clusters, unaligned size',
    group: 'b',
    create: { sizeBytes: 3 * MiB + 1536, clusterSizeBytes: 4 * KiB },
    snapshots: true,
    maxWriteClusters: 16,
    ops: [35, 55],
  },
  {
    name: 'extended_l2 (32 KiB clusters)',
    group: 'a',
    create: { sizeBytes: 4 * MiB, clusterSizeBytes: 32 * KiB, extendedL2: true },
    snapshots: true,
    maxWriteClusters: 4,
    ops: [35, 55],
  },
  {
    name: 'extended_l2 with backing file',
    group: 'b',
    create: { sizeBytes: 2 * MiB, clusterSizeBytes: 16 * KiB, extendedL2: true },
    backingSizeBytes: 1536 * KiB,
    snapshots: false,
    maxWriteClusters: 4,
    ops: [35, 55],
  },
  {
    name: 'lazy_refcounts',
    group: 'a',
    create: { sizeBytes: 2 * MiB, clusterSizeBytes: 4 * KiB, lazyRefcounts: true },
    snapshots: true,
    maxWriteClusters: 16,
    ops: [35, 55],
  },
  {
    name: 'compat 0.10',
    group: 'a',
    create: { sizeBytes: 2 * MiB, clusterSizeBytes: 4 * KiB, compat: '0.10' },
    snapshots: true,
    maxWriteClusters: 16,
    ops: [35, 55],
  },
  {
    name: 'backing file (64 KiB clusters)',
    group: 'b',
    create: { sizeBytes: 4 * MiB },
    backingSizeBytes: 3 * MiB,
    snapshots: true,
    maxWriteClusters: 4,
    ops: [30, 50],
  },
  {
    name: 'compat 0.10 with backing file',
    group: 'b',
    create: { sizeBytes: 2 * MiB, clusterSizeBytes: 4 * KiB, compat: '0.10' },
    backingSizeBytes: 2 * MiB - 8 * KiB,
    snapshots: false,
    maxWriteClusters: 16,
    ops: [35, 55],
  },
];

export type WorkloadOp =
  | { kind: 'write'; guestOffset: number; data: Uint8Array }
  | { kind: 'writeZeroes'; guestOffset: number; lengthBytes: number; mayUnmap: boolean }
  | { kind: 'discard'; guestOffset: number; lengthBytes: number }
  | { kind: 'writeCompressed'; guestOffset: number; data: Uint8Array }
  | { kind: 'flush' }
  | { kind: 'createSnapshot'; name: string }
  | { kind: 'deleteSnapshot'; name: string };

export function describeOp(op: WorkloadOp): string {
  switch (op.kind) {
    case 'write':
    case 'writeCompressed':
      return `${op.kind}(${op.guestOffset}, ${op.data.length} bytes)`;
    case 'writeZeroes':
      return `writeZeroes(${op.guestOffset}, ${op.lengthBytes}${op.mayUnmap ? ', mayUnmap' : ''})`;
    case 'discard':
      return `discard(${op.guestOffset}, ${op.lengthBytes})`;
    case 'flush':
      return 'flush()';
    case 'createSnapshot':
    case 'deleteSnapshot':
      return `${op.kind}('${op.name}')`;
  }
}

/** Bytes whose every 512-byte sector repeats a 16-byte tag (compressible, and unique per write). */
function compressibleData(length: number, tag: number, guestOffset: number, rng: SeededRandom): Uint8Array {
  const out = new Uint8Array(length);
  const salt = rng.int(2 ** 31);
  for (let sector = 0; sector * 512 < length; sector++) {
    const unit = new Uint8Array(16);
    const u = new DataView(unit.buffer);
    u.setUint32(0, tag);
    u.setUint32(4, guestOffset / 512 + sector);
    u.setUint32(8, salt);
    u.setUint32(12, 0xc0ffee00 | (sector & 0xff));
    for (let i = sector * 512; i < Math.min(length, (sector + 1) * 512); i += 16) {
      out.set(unit.subarray(0, Math.min(16, length - i)), i);
    }
  }
  return out;
}

function randomData(length: number, rng: SeededRandom): Uint8Array {
  return rng.fill(new Uint8Array(length));
}

/** A random operation list for a variant; deterministic in (variant, seed). */
export function generateWorkload(variant: Variant, seed: number): WorkloadOp[] {
  const rng = new SeededRandom(seed);
  const size = variant.create.sizeBytes;
  const cs = variant.create.clusterSizeBytes ?? 64 * KiB;
  const clusters = Math.ceil(size / cs);
  const count = rng.intBetween(variant.ops[0], variant.ops[1]);
  const ops: WorkloadOp[] = [];
  const snapshots: string[] = [];
  let snapshotCounter = 0;
  // Half the operations aim at a "hot" window so that overwrites, COW and frees happen often.
  const hotClusters = Math.max(4, Math.floor(clusters / 4));
  const hotStart = rng.int(clusters - hotClusters + 1);
  const pickCluster = () => (rng.bool(0.5) ? hotStart + rng.int(hotClusters) : rng.int(clusters));
  const clampRange = (offset: number, length: number) => {
    const o = Math.min(offset, size - 1);
    return { guestOffset: o, lengthBytes: Math.max(1, Math.min(length, size - o)) };
  };

  for (let i = 0; i < count; i++) {
    const r = rng.next();
    if (r < 0.4) {
      // Writes: small unaligned, sector-aligned, or whole (multi-)cluster.
      const shape = rng.int(3);
      let range;
      if (shape === 0) {
        range = clampRange(pickCluster() * cs + rng.int(cs), rng.intBetween(1, 3000));
      } else if (shape === 1) {
        range = clampRange(pickCluster() * cs + rng.int(cs / 512) * 512, rng.intBetween(1, 16) * 512);
      } else {
        range = clampRange(pickCluster() * cs, rng.intBetween(1, variant.maxWriteClusters) * cs);
      }
      ops.push({ kind: 'write', guestOffset: range.guestOffset, data: randomData(range.lengthBytes, rng) });
    } else if (r < 0.5) {
      const aligned = rng.bool(0.6);
      const range = aligned
        ? clampRange(pickCluster() * cs, rng.intBetween(1, Math.min(8, variant.maxWriteClusters)) * cs)
        : clampRange(pickCluster() * cs + rng.int(cs), rng.intBetween(1, 3 * cs));
      ops.push({ kind: 'writeZeroes', ...range, mayUnmap: rng.bool() });
    } else if (r < 0.58) {
      const range = rng.bool(0.7)
        ? clampRange(pickCluster() * cs, rng.intBetween(1, Math.min(8, variant.maxWriteClusters)) * cs)
        : clampRange(pickCluster() * cs + rng.int(cs), rng.intBetween(1, 3 * cs));
      ops.push({ kind: 'discard', ...range });
    } else if (r < 0.72) {
      const cluster = pickCluster();
      const guestOffset = cluster * cs;
      const length = Math.min(cs, size - guestOffset);
      // Mostly compressible; sometimes random data, which falls back to a normal write.
      const data = rng.bool(0.85) ? compressibleData(length, i, guestOffset, rng) : randomData(length, rng);
      ops.push({ kind: 'writeCompressed', guestOffset, data });
    } else if (r < 0.87) {
      ops.push({ kind: 'flush' });
    } else if (variant.snapshots && r < 0.93) {
      if (snapshots.length > 0 && rng.bool(0.45)) {
        const name = snapshots.splice(rng.int(snapshots.length), 1)[0]!;
        ops.push({ kind: 'deleteSnapshot', name });
      } else if (snapshots.length < 3) {
        const name = `snap${++snapshotCounter}`;
        snapshots.push(name);
        ops.push({ kind: 'createSnapshot', name });
      } else {
        ops.push({ kind: 'flush' });
      }
    } else {
      // Another write, so that variants without snapshots keep the same mix of data.
      const range = clampRange(pickCluster() * cs + rng.int(cs), rng.intBetween(1, 2 * cs));
      ops.push({ kind: 'write', guestOffset: range.guestOffset, data: randomData(range.lengthBytes, rng) });
    }
  }
  return ops;
}
