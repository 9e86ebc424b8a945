/**
 * Oracle: backing chains built by qemu-img (backing_fmt set, relative backing names) with qemu-io
 * writes at every level. Strata opens the whole chain and must read the guest exactly as qemu-img
 * convert does; every qcow2 layer's own map, info and check must match qemu's for that layer.
 */
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
  qemuInfo,
  qemuIoOk,
  verifyImage,
  workload,
  writeMixedRawFile,
} from './support.js';

interface Layer {
  /** File name inside the test directory. */
  name: string;
  format: 'qcow2' | 'raw';
  clusterSize: number;
  /** Virtual size; defaults to the base's size (qemu-img create -b takes the backing's size). */
  size?: number;
  compat?: '0.10' | '1.1';
  extendedL2?: boolean;
  compressionType?: 'zlib' | 'zstd';
  compressed?: boolean;
}

interface ChainCase {
  name: string;
  /** Base first. */
  layers: Layer[];
  seed: number;
}

const cases: ChainCase[] = [
  {
    name: 'qcow2 base <- mid <- top, 64k clusters',
    layers: [
      { name: 'base.qcow2', format: 'qcow2', clusterSize: 64 * KiB, size: oddSize(16 * MiB, 64 * KiB) },
      { name: 'mid.qcow2', format: 'qcow2', clusterSize: 64 * KiB },
      { name: 'top.qcow2', format: 'qcow2', clusterSize: 64 * KiB },
    ],
    seed: 2001,
  },
  {
    name: 'mixed cluster sizes: 2M base <- 4k mid <- 64k extended_l2 top',
    layers: [
      { name: 'base.qcow2', format: 'qcow2', clusterSize: 2 * MiB, size: oddSize(16 * MiB, 2 * MiB) },
      { name: 'mid.qcow2', format: 'qcow2', clusterSize: 4 * KiB },
      { name: 'top.qcow2', format: 'qcow2', clusterSize: 64 * KiB, extendedL2: true },
    ],
    seed: 2002,
  },
  {
    name: 'raw base <- qcow2 mid (zstd, compressed writes) <- qcow2 top (512)',
    layers: [
      { name: 'base.raw', format: 'raw', clusterSize: 512, size: 12 * MiB + 3 * 512 },
      { name: 'mid.qcow2', format: 'qcow2', clusterSize: 64 * KiB, compressionType: 'zstd', compressed: true },
      { name: 'top.qcow2', format: 'qcow2', clusterSize: 512 },
    ],
    seed: 2003,
  },
  {
    name: 'v2 (compat 0.10) top over a v3 base',
    layers: [
      { name: 'base.qcow2', format: 'qcow2', clusterSize: 64 * KiB, size: oddSize(16 * MiB, 64 * KiB) },
      { name: 'top.qcow2', format: 'qcow2', clusterSize: 64 * KiB, compat: '0.10' },
    ],
    seed: 2004,
  },
  {
    name: 'v2 chain: v2 base <- v2 mid <- v2 top, 4k clusters',
    layers: [
      { name: 'base.qcow2', format: 'qcow2', clusterSize: 4 * KiB, compat: '0.10', size: oddSize(8 * MiB, 4 * KiB) },
      { name: 'mid.qcow2', format: 'qcow2', clusterSize: 4 * KiB, compat: '0.10' },
      { name: 'top.qcow2', format: 'qcow2', clusterSize: 4 * KiB, compat: '0.10' },
    ],
    seed: 2005,
  },
  {
    name: 'top larger than its backing (reads past the base end are zero)',
    layers: [
      { name: 'base.qcow2', format: 'qcow2', clusterSize: 64 * KiB, size: oddSize(6 * MiB, 64 * KiB) },
      { name: 'mid.qcow2', format: 'qcow2', clusterSize: 64 * KiB, size: oddSize(9 * MiB, 64 * KiB) },
      { name: 'top.qcow2', format: 'qcow2', clusterSize: 16 * KiB, size: oddSize(12 * MiB, 16 * KiB), extendedL2: true },
    ],
    seed: 2006,
  },
];

describe.skipIf(!requireTool('qemu-img', 'qemu-io'))('oracle: backing chains made by qemu-img', () => {
  it.each(cases)('$name', async (c) => {
    const dir = shmTempDir();
    const patterns = makePatternFiles(dir, c.seed);
    let below: Layer | undefined;
    let belowSize = 0;
    for (const [level, layer] of c.layers.entries()) {
      const file = path.join(dir, layer.name);
      const size = layer.size ?? belowSize;
      if (layer.format === 'raw') {
        writeMixedRawFile(file, c.seed + level, size);
      } else {
        const options = createOpts({
          cluster_size: layer.clusterSize,
          compat: layer.compat,
          extended_l2: layer.extendedL2,
          compression_type: layer.compressionType,
        });
        const backing = below ? ['-b', below.name, '-F', below.format] : [];
        const sizeArg = layer.size !== undefined || !below ? [String(size)] : [];
        // A bare backing name: stored relative, resolved against the image's own directory.
        qemuImgOk(['create', '-q', '-f', 'qcow2', '-o', options, ...backing, file, ...sizeArg]);
        expect(qemuInfo(file)['virtual-size']).toBe(size);
        qemuIoOk(
          file,
          workload({
            sizeBytes: size,
            clusterSizeBytes: layer.clusterSize,
            seed: c.seed * 10 + level,
            patterns,
            ops: 14,
            zeroes: true,
            discards: true,
            compressed: layer.compressed === true,
          }),
        );
      }
      below = layer;
      belowSize = size;
    }
    const top = path.join(dir, c.layers[c.layers.length - 1]!.name);
    const info = qemuInfo(top);
    if (c.layers.length > 1) {
      expect(info['backing-filename']).toBe(c.layers[c.layers.length - 2]!.name);
      expect(info['backing-filename-format']).toBe(c.layers[c.layers.length - 2]!.format);
    }
    // The whole chain from the top, then each shorter chain from its own top.
    const { layers } = await verifyImage(top, { dir });
    expect(layers.length, 'qcow2 layers opened').toBe(c.layers.filter((l) => l.format === 'qcow2').length);
    const topKinds = layers[0]!.kinds;
    expect(topKinds.has('data') && topKinds.has('unallocated'), 'top has data and unallocated ranges').toBe(true);
    for (let i = c.layers.length - 2; i >= 0; i--) {
      const layer = c.layers[i]!;
      if (layer.format === 'qcow2') await verifyImage(path.join(dir, layer.name), { dir });
    }
  });
});
