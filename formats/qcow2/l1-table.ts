/** L1 tables: reading one (the active table or a snapshot's) with its checks, and encoding one. */
import { StorageError } from '../../src/core/errors.js';
import type { HostFile } from '../../src/core/host-file.js';
import { L1E_OFFSET_MASK, L1E_RESERVED_MASK, MAX_L1_TABLE_BYTES, OFLAG_COPIED } from './constants.js';
import { encodeEntry } from './l2-entry.js';

export function serializeL1(offsets: number[], copied: boolean[]): Uint8Array {
  const bytes = new Uint8Array(offsets.length * 8);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < offsets.length; i++) {
    const offset = offsets[i] ?? 0;
    const word = encodeEntry(offset, { copied: offset !== 0 && (copied[i] ?? false) });
    view.setUint32(i * 8, word.hi);
    view.setUint32(i * 8 + 4, word.lo);
  }
  return bytes;
}

/** Reads and validates an L1 table (the active one or a snapshot's). */
export async function readL1Table(
  file: HostFile,
  offset: number,
  entries: number,
  clusterSizeBytes: number,
  fileSizeBytes: number,
): Promise<{ offsets: number[]; copied: boolean[] }> {
  if (entries * 8 > MAX_L1_TABLE_BYTES) throw new StorageError('CORRUPT', `L1 table of ${entries} entries is too large`);
  if (entries > 0 && offset + entries * 8 > fileSizeBytes) {
    throw new StorageError('CORRUPT', `L1 table at 0x${offset.toString(16)} (${entries * 8} bytes) runs past the end of the file (${fileSizeBytes} bytes)`);
  }
  const bytes = new Uint8Array(entries * 8);
  if (entries > 0) await file.pread(bytes, offset);
  const view = new DataView(bytes.buffer);
  const offsets: number[] = new Array(entries);
  const copied: boolean[] = new Array(entries);
  for (let i = 0; i < entries; i++) {
    const raw = view.getBigUint64(i * 8);
    if ((raw & L1E_RESERVED_MASK) !== 0n) throw new StorageError('CORRUPT', `L1 entry ${i} has reserved bits set`);
    const l2Offset = Number(raw & L1E_OFFSET_MASK);
    if (l2Offset % clusterSizeBytes !== 0) throw new StorageError('CORRUPT', `L1 entry ${i} is not cluster-aligned`);
    if (l2Offset !== 0 && l2Offset + clusterSizeBytes > fileSizeBytes) {
      throw new StorageError('CORRUPT', `L1 entry ${i} (L2 table at 0x${l2Offset.toString(16)}) points past the end of the file (${fileSizeBytes} bytes)`);
    }
    offsets[i] = l2Offset;
    copied[i] = (raw & OFLAG_COPIED) !== 0n;
  }
  return { offsets, copied };
}

