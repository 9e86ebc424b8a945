/**
 * qcow2 images damaged on purpose, precisely: a real image made by qemu-img and qemu-io (64 KiB
 * clusters, 2 MiB of data from guest offset 0: one L2 table, 32 data clusters after it), then
 * bytes written at the offsets its header, L1 table, L2 table and refcount table give, or the file
 * cut short. Shared by the check oracle (Strata's check and repair against qemu-img's) and the
 * import end-to-end test (a damaged upload is the uploader's error).
 */
import { readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { HeaderOffset } from '../../formats/qcow2/constants.js';
import { expectSuccess, qemuImg, qemuIo } from '../support/tools.js';

/** A hole no table of the base image reaches: far past its end (256 MiB). */
export const PAST_EOF_OFFSET = 0x1000_0000;
const COPIED = 1n << 63n;
const OFFSET_MASK = 0x00ff_ffff_ffff_fe00n;
/** Guest bytes the base image holds (from offset 0) and the byte pattern of them. */
export const BASE_DATA_BYTES = 2 * 1024 * 1024;
export const BASE_PATTERN = 0x5a;

export interface Layout {
  clusterSizeBytes: number;
  fileSizeBytes: number;
  l1Offset: number;
  refcountTableOffset: number;
  /** The L2 table L1[0] names. */
  l2Offset: number;
  /** Host offsets of the data clusters L2 entries 0.. name. */
  dataOffsets: number[];
}

const u64 = (b: Buffer, offset: number) => b.readBigUInt64BE(offset);

export function readLayout(file: string): Layout {
  const b = readFileSync(file);
  const clusterSizeBytes = 2 ** b.readUInt32BE(HeaderOffset.clusterBits);
  const l1Offset = Number(u64(b, HeaderOffset.l1TableOffset));
  const l2Offset = Number(u64(b, l1Offset) & OFFSET_MASK);
  const dataOffsets: number[] = [];
  for (let i = 0; i < clusterSizeBytes / 8; i++) {
    const host = Number(u64(b, l2Offset + i * 8) & OFFSET_MASK);
    if (host === 0) break;
    dataOffsets.push(host);
  }
  return {
    clusterSizeBytes,
    fileSizeBytes: b.length,
    l1Offset,
    refcountTableOffset: Number(u64(b, HeaderOffset.refcountTableOffset)),
    l2Offset,
    dataOffsets,
  };
}

/** Creates the base image at file (16 MiB, the first 2 MiB written). */
export function makeBaseImage(file: string): Layout {
  expectSuccess(qemuImg(['create', '-q', '-f', 'qcow2', file, '16M']), 'qemu-img create');
  expectSuccess(qemuIo(['-f', 'qcow2', '-c', `write -q -P ${BASE_PATTERN} 0 ${BASE_DATA_BYTES}`, file]), 'qemu-io write');
  const layout = readLayout(file);
  if (layout.dataOffsets.length !== BASE_DATA_BYTES / layout.clusterSizeBytes || layout.dataOffsets[0]! <= layout.l2Offset) {
    throw new Error(`unexpected base layout: ${JSON.stringify(layout)}`);
  }
  return layout;
}

function patchU64(file: string, offset: number, value: bigint): void {
  const b = readFileSync(file);
  b.writeBigUInt64BE(value, offset);
  writeFileSync(file, b);
}

export interface Damage {
  name: string;
  apply(file: string, layout: Layout): void;
}

export const DAMAGES = {
  badMagic: {
    name: 'bad magic',
    apply: (file) => {
      const b = readFileSync(file);
      b.write('XXXX', 0, 'latin1');
      writeFileSync(file, b);
    },
  },
  l1TablePastEof: {
    name: 'L1 table offset past EOF',
    apply: (file) => patchU64(file, HeaderOffset.l1TableOffset, BigInt(PAST_EOF_OFFSET)),
  },
  l1EntryPastEof: {
    name: 'L1 entry past EOF',
    apply: (file, layout) => patchU64(file, layout.l1Offset, COPIED | BigInt(PAST_EOF_OFFSET)),
  },
  l2EntryPastEof: {
    name: 'L2 entry (data cluster) past EOF',
    apply: (file, layout) => patchU64(file, layout.l2Offset + 8, COPIED | BigInt(PAST_EOF_OFFSET)),
  },
  refcountEntryPastEof: {
    name: 'refcount table entry past EOF',
    apply: (file, layout) => patchU64(file, layout.refcountTableOffset, BigInt(PAST_EOF_OFFSET)),
  },
  refcountTablePastEof: {
    name: 'refcount table offset past EOF',
    apply: (file) => patchU64(file, HeaderOffset.refcountTableOffset, BigInt(PAST_EOF_OFFSET)),
  },
  l2ReservedBits: {
    name: 'L2 entry with reserved bits set',
    apply: (file, layout) => patchU64(file, layout.l2Offset + 8, COPIED | (1n << 57n) | BigInt(layout.dataOffsets[1]!)),
  },
  l2Unaligned: {
    name: 'L2 entry not cluster-aligned',
    apply: (file, layout) => patchU64(file, layout.l2Offset + 8, COPIED | BigInt(layout.dataOffsets[1]! + 512)),
  },
  truncatedInData: {
    name: 'truncated in the middle of the data clusters',
    // Half of data cluster 5 stays: the file ends inside it, not on a cluster boundary.
    apply: (file, layout) => truncateSync(file, layout.dataOffsets[5]! + layout.clusterSizeBytes / 2),
  },
  truncatedInL2: {
    name: 'truncated in the middle of the L2 table',
    // Entries 0-15 stay, 16-31 are cut off (and every data cluster with them).
    apply: (file, layout) => truncateSync(file, layout.l2Offset + 16 * 8),
  },
} satisfies Record<string, Damage>;

/** A copy of the base image at file with one damage applied. */
export function makeDamagedImage(base: string, file: string, damage: Damage): void {
  writeFileSync(file, readFileSync(base));
  damage.apply(file, readLayout(base));
}
