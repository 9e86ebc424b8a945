/**
 * Real qemu-img/qemu-io made images for the hostile-input tests, and a map of where each kind of
 * metadata lives in them (read with Strata from the pristine image).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { MemoryHostFile } from '../../src/store/memory-file.js';
import { Qcow2Image } from '../../formats/qcow2/index.js';
import { readL1Table } from '../../formats/qcow2/l1-table.js';
import { snapshotTableSizeBytes } from '../../formats/qcow2/snapshot-table.js';
import { expectSuccess, qemuImg, qemuIo } from '../support/tools.js';

export type RegionKind = 'header' | 'l1' | 'l2' | 'refcount-table' | 'refcount-block' | 'snapshot-table' | 'snapshot-l1';

export interface Region {
  kind: RegionKind;
  hostOffset: number;
  lengthBytes: number;
}

export interface BaseImage {
  name: string;
  bytes: Uint8Array;
  clusterSizeBytes: number;
  sizeBytes: number;
  regions: Region[];
}

interface Recipe {
  name: string;
  options: string;
  sizeBytes: number;
  backing?: boolean;
  /** qemu-io commands before and after an internal snapshot (none: no snapshot). */
  before: string[];
  snapshot?: boolean;
  after?: string[];
}

const KiB = 1024;
const MiB = 1024 * KiB;

export const RECIPES: Recipe[] = [
  {
    name: '64k-default',
    options: 'cluster_size=64k',
    sizeBytes: 4 * MiB,
    before: ['write -P 0xa1 0 192k', 'write -c -P 0x11 1M 64k', 'write -z 2M 64k', 'write -P 0xa2 3M 100k'],
    snapshot: true,
    after: ['write -P 0xb1 64k 64k', 'write -c -P 0x12 2560k 64k', 'discard 3M 64k'],
  },
  {
    name: '4k-two-l2-tables',
    options: 'cluster_size=4k',
    sizeBytes: 6 * MiB,
    before: ['write -P 0xc1 0 40k', 'write -P 0xc2 2M 24k', 'write -c -P 0x21 4M 4k', 'write -c -P 0x22 4100k 4k', 'write -z 5M 8k'],
    snapshot: true,
    after: ['write -P 0xd1 8k 8k', 'write -P 0xd2 2052k 4k'],
  },
  {
    name: '512b-clusters',
    options: 'cluster_size=512',
    sizeBytes: 1 * MiB,
    before: ['write -P 0xe1 0 20k', 'write -P 0xe2 300k 2k', 'write -c -P 0x31 600k 512', 'write -P 0xe3 900k 40k'],
    snapshot: true,
    after: ['write -P 0xe4 1k 1k'],
  },
  {
    name: 'extended-l2',
    options: 'cluster_size=32k,extended_l2=on',
    sizeBytes: 4 * MiB,
    before: ['write -P 0xf1 0 4k', 'write -P 0xf2 40k 3k', 'write -z 100k 8k', 'write -c -P 0x41 1M 32k', 'write -P 0xf3 2M 96k'],
    snapshot: true,
    after: ['write -P 0xf4 2052k 1k'],
  },
  {
    name: 'compat-0.10',
    options: 'compat=0.10,cluster_size=16k',
    sizeBytes: 2 * MiB,
    before: ['write -P 0x51 0 48k', 'write -c -P 0x52 512k 16k', 'write -P 0x53 1M 20k'],
    snapshot: true,
    after: ['write -P 0x54 16k 4k'],
  },
  {
    name: 'zstd',
    options: 'cluster_size=64k,compression_type=zstd',
    sizeBytes: 2 * MiB,
    before: ['write -c -P 0x61 0 64k', 'write -c -P 0x62 64k 64k', 'write -P 0x63 1M 64k'],
  },
  {
    name: 'backing-lazy-refcounts',
    options: 'cluster_size=4k,lazy_refcounts=on',
    sizeBytes: 2 * MiB,
    backing: true,
    before: ['write -P 0x71 4k 12k', 'write -P 0x72 1M 4k'],
  },
];

function build(dir: string, recipe: Recipe): string {
  const file = path.join(dir, `${recipe.name}.qcow2`);
  const args = ['create', '-q', '-f', 'qcow2', '-o', recipe.options];
  if (recipe.backing) {
    const base = path.join(dir, `${recipe.name}-base.qcow2`);
    expectSuccess(qemuImg(['create', '-q', '-f', 'qcow2', base, String(recipe.sizeBytes)]), 'qemu-img create (base)');
    expectSuccess(qemuIo(['-f', 'qcow2', '-c', 'write -P 0x99 0 1M', base]), 'qemu-io (base)');
    args.push('-b', base, '-F', 'qcow2');
  }
  expectSuccess(qemuImg([...args, file, String(recipe.sizeBytes)]), `qemu-img create ${recipe.name}`);
  const io = (commands: string[]) => {
    if (commands.length === 0) return;
    expectSuccess(qemuIo(['-f', 'qcow2', ...commands.flatMap((c) => ['-c', c]), file]), `qemu-io ${recipe.name}`);
  };
  io(recipe.before);
  if (recipe.snapshot) expectSuccess(qemuImg(['snapshot', '-c', 'snap1', file]), 'qemu-img snapshot');
  io(recipe.after ?? []);
  expectSuccess(qemuImg(['check', '-q', file]), `qemu-img check ${recipe.name}`);
  return file;
}

/** Where the metadata of a (valid) image lives. */
export async function mapRegions(bytes: Uint8Array): Promise<{ regions: Region[]; clusterSizeBytes: number; sizeBytes: number }> {
  const file = new MemoryHostFile(bytes, { readOnly: true });
  const image = await Qcow2Image.open(file, { readOnly: true, ignoreBacking: true });
  const cs = image.clusterSizeBytes;
  const regions: Region[] = [];
  // Header: the fields, extensions and backing file name are in the first few hundred bytes.
  regions.push({ kind: 'header', hostOffset: 0, lengthBytes: Math.min(cs, 1024) });
  const h = image.header;
  regions.push({ kind: 'l1', hostOffset: h.l1TableOffset, lengthBytes: h.l1Size * 8 });
  for (const offset of image.l1Offsets) if (offset) regions.push({ kind: 'l2', hostOffset: offset, lengthBytes: cs });
  regions.push({ kind: 'refcount-table', hostOffset: h.refcountTableOffset, lengthBytes: h.refcountTableClusters * cs });
  for (const offset of image.refcounts.table) if (offset) regions.push({ kind: 'refcount-block', hostOffset: offset, lengthBytes: cs });
  if (h.nbSnapshots > 0) {
    regions.push({ kind: 'snapshot-table', hostOffset: h.snapshotsOffset, lengthBytes: snapshotTableSizeBytes(image.snapshots) });
    for (const s of image.snapshots) {
      regions.push({ kind: 'snapshot-l1', hostOffset: s.l1TableOffset, lengthBytes: s.l1Size * 8 });
      const { offsets } = await readL1Table(file, s.l1TableOffset, s.l1Size, cs, bytes.length);
      for (const offset of offsets) {
        if (offset && !regions.some((r) => r.kind === 'l2' && r.hostOffset === offset)) {
          regions.push({ kind: 'l2', hostOffset: offset, lengthBytes: cs });
        }
      }
    }
  }
  const sizeBytes = image.sizeBytes;
  await image.close();
  return { regions, clusterSizeBytes: cs, sizeBytes };
}

export async function buildBaseImages(dir: string): Promise<BaseImage[]> {
  const out: BaseImage[] = [];
  for (const recipe of RECIPES) {
    const bytes = new Uint8Array(readFileSync(build(dir, recipe)));
    const { regions, clusterSizeBytes, sizeBytes } = await mapRegions(bytes);
    out.push({ name: recipe.name, bytes, clusterSizeBytes, sizeBytes, regions });
  }
  return out;
}
