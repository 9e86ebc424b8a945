/**
 * Oracle matrix: images written by qemu-img / qemu-io over cluster sizes, refcount widths, compat
 * levels, extended L2, lazy refcounts and compression; Strata must read exactly what qemu-img
 * convert reads, map each range the way qemu-img map does, and agree with qemu-img info and check.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { shmTempDir } from '../support/tmp.js';
import { requireTool } from '../support/tools.js';
import {
  KiB,
  MiB,
  createOpts,
  makePatternFiles,
  oddSize,
  qemuImgOk,
  qemuIoOk,
  verifyImage,
  workload,
  writeMixedRawFile,
} from './support.js';

interface MatrixCase {
  name: string;
  clusterSize: number;
  /** Virtual size before oddSize() makes the last cluster partial. */
  baseSize: number;
  refcountBits?: number;
  compat?: '0.10' | '1.1';
  extendedL2?: boolean;
  lazyRefcounts?: boolean;
  compressionType?: 'zlib' | 'zstd';
  /** qemu-io `write -c` in the workload. */
  compressedWrites?: boolean;
  seed: number;
}

const cases: MatrixCase[] = [
  // Cluster sizes.
  { name: 'cluster 512', clusterSize: 512, baseSize: 4 * MiB, seed: 101 },
  { name: 'cluster 4k', clusterSize: 4 * KiB, baseSize: 8 * MiB, seed: 102 },
  { name: 'cluster 64k', clusterSize: 64 * KiB, baseSize: 16 * MiB, seed: 103 },
  { name: 'cluster 2M', clusterSize: 2 * MiB, baseSize: 32 * MiB, seed: 104 },
  // Refcount widths (16 is the default above).
  ...[1, 2, 4, 8, 32, 64].map((bits) => ({
    name: `refcount ${bits} bits, cluster 64k`,
    clusterSize: 64 * KiB,
    baseSize: 16 * MiB,
    refcountBits: bits,
    seed: 200 + bits,
  })),
  { name: 'refcount 1 bit, cluster 512', clusterSize: 512, baseSize: 4 * MiB, refcountBits: 1, seed: 301 },
  { name: 'refcount 64 bits, cluster 512', clusterSize: 512, baseSize: 4 * MiB, refcountBits: 64, seed: 364 },
  { name: 'refcount 8 bits, cluster 4k', clusterSize: 4 * KiB, baseSize: 8 * MiB, refcountBits: 8, seed: 308 },
  // compat 0.10 (version 2: no zero flag, refcount 16 only).
  { name: 'compat 0.10, cluster 4k', clusterSize: 4 * KiB, baseSize: 8 * MiB, compat: '0.10', seed: 401 },
  { name: 'compat 0.10, cluster 64k', clusterSize: 64 * KiB, baseSize: 16 * MiB, compat: '0.10', seed: 402 },
  { name: 'compat 0.10, cluster 64k, write -c', clusterSize: 64 * KiB, baseSize: 16 * MiB, compat: '0.10', compressedWrites: true, seed: 403 },
  // Extended L2 (32 subclusters).
  { name: 'extended_l2, cluster 16k', clusterSize: 16 * KiB, baseSize: 8 * MiB, extendedL2: true, seed: 501 },
  { name: 'extended_l2, cluster 64k', clusterSize: 64 * KiB, baseSize: 16 * MiB, extendedL2: true, seed: 502 },
  { name: 'extended_l2, cluster 2M', clusterSize: 2 * MiB, baseSize: 32 * MiB, extendedL2: true, seed: 503 },
  { name: 'extended_l2, cluster 64k, refcount 4', clusterSize: 64 * KiB, baseSize: 16 * MiB, extendedL2: true, refcountBits: 4, seed: 504 },
  // Lazy refcounts, closed cleanly.
  { name: 'lazy_refcounts, cluster 64k', clusterSize: 64 * KiB, baseSize: 16 * MiB, lazyRefcounts: true, seed: 601 },
  // Compressed writes (qemu-io write -c) with both compression types.
  { name: 'write -c zlib, cluster 4k', clusterSize: 4 * KiB, baseSize: 8 * MiB, compressedWrites: true, seed: 701 },
  { name: 'write -c zlib, cluster 64k', clusterSize: 64 * KiB, baseSize: 16 * MiB, compressedWrites: true, seed: 702 },
  { name: 'write -c zstd, cluster 64k', clusterSize: 64 * KiB, baseSize: 16 * MiB, compressionType: 'zstd', compressedWrites: true, seed: 703 },
  { name: 'write -c zstd, cluster 2M', clusterSize: 2 * MiB, baseSize: 32 * MiB, compressionType: 'zstd', compressedWrites: true, seed: 704 },
  { name: 'write -c zstd, extended_l2 64k', clusterSize: 64 * KiB, baseSize: 16 * MiB, compressionType: 'zstd', extendedL2: true, compressedWrites: true, seed: 705 },
  { name: 'write -c zlib, cluster 512', clusterSize: 512, baseSize: 4 * MiB, compressedWrites: true, seed: 706 },
];

describe.skipIf(!requireTool('qemu-img', 'qemu-io'))('oracle: qemu-written qcow2 images, read by Strata', () => {
  it.each(cases)('$name', async (c) => {
    const dir = shmTempDir();
    const size = oddSize(c.baseSize, c.clusterSize);
    const image = path.join(dir, 'image.qcow2');
    const options = createOpts({
      cluster_size: c.clusterSize,
      refcount_bits: c.refcountBits,
      compat: c.compat,
      extended_l2: c.extendedL2,
      lazy_refcounts: c.lazyRefcounts,
      compression_type: c.compressionType,
    });
    qemuImgOk(['create', '-q', '-f', 'qcow2', ...(options ? ['-o', options] : []), image, String(size)]);
    const commands = workload({
      sizeBytes: size,
      clusterSizeBytes: c.clusterSize,
      seed: c.seed,
      patterns: makePatternFiles(dir, c.seed),
      zeroes: true,
      discards: true,
      compressed: c.compressedWrites === true,
    });
    qemuIoOk(image, commands, ['-f', 'qcow2']);
    const { layers } = await verifyImage(image, { dir, irregularSeed: c.seed });
    // The workload made what this case is about (else the comparison would prove little).
    const top = layers[0]!;
    expect(top.kinds.has('data') && top.kinds.has('unallocated'), 'data and unallocated ranges').toBe(true);
    if (c.compat !== '0.10') expect(top.kinds.has('zero'), 'zero ranges (v3)').toBe(true);
    expect(top.compressed, 'compressed clusters').toBe(c.compressedWrites === true);
  });

  interface ConvertCase {
    name: string;
    clusterSize: number;
    compressionType: 'zlib' | 'zstd';
    extendedL2?: boolean;
    seed: number;
  }
  const convertCases: ConvertCase[] = [
    { name: 'convert -c zlib, cluster 64k', clusterSize: 64 * KiB, compressionType: 'zlib', seed: 801 },
    { name: 'convert -c zstd, cluster 64k', clusterSize: 64 * KiB, compressionType: 'zstd', seed: 802 },
    { name: 'convert -c zstd, cluster 4k', clusterSize: 4 * KiB, compressionType: 'zstd', seed: 803 },
    { name: 'convert -c zlib, cluster 2M', clusterSize: 2 * MiB, compressionType: 'zlib', seed: 804 },
    { name: 'convert -c zstd, extended_l2 32k', clusterSize: 32 * KiB, compressionType: 'zstd', extendedL2: true, seed: 805 },
  ];

  it.each(convertCases)('$name, then partial overwrites', async (c) => {
    const dir = shmTempDir();
    const size = oddSize(c.clusterSize >= MiB ? 32 * MiB : 12 * MiB, c.clusterSize);
    const source = writeMixedRawFile(path.join(dir, 'source.raw'), c.seed, size);
    const image = path.join(dir, 'image.qcow2');
    const options = createOpts({ cluster_size: c.clusterSize, compression_type: c.compressionType, extended_l2: c.extendedL2 });
    qemuImgOk(['convert', '-c', '-f', 'raw', '-O', 'qcow2', '-o', options, source, image]);
    // The converted image alone: qemu compressed it, and reads back the source.
    const first = await verifyImage(image, { dir, irregularSeed: c.seed });
    expect(first.layers[0]!.compressed, 'compressed clusters').toBe(true);
    expect(first.content.equals(fs.readFileSync(source)), 'convert round trip').toBe(true);
    // Then qemu rewrites parts of compressed clusters (decompress, merge, write back uncompressed).
    const commands = workload({
      sizeBytes: size,
      clusterSizeBytes: c.clusterSize,
      seed: c.seed + 1,
      patterns: makePatternFiles(dir, c.seed),
      ops: 10,
      zeroes: true,
      discards: true,
      // No write -c: qemu cannot compress into clusters that are already allocated.
    });
    qemuIoOk(image, commands, ['-f', 'qcow2']);
    await verifyImage(image, { dir, irregularSeed: c.seed + 1 });
  });
});
