/**
 * The internal snapshot table: parse (with full validation: the table is untrusted input) and
 * serialize back, byte for byte.
 *
 * On-disk entry, big-endian, each entry starting on an 8-byte boundary of the table:
 *    0  u64 l1_table_offset        24  u64 vm_clock_nsec
 *    8  u32 l1_size                32  u32 vm_state_size (ignored when the extra data has the u64)
 *   12  u16 id_str_size            36  u32 extra_data_size
 *   14  u16 name_size              40  extra data: u64 vm_state_size_large, u64 disk_size,
 *   16  u32 date_sec                   u64 icount (-1: not recorded), then fields we do not know
 *   20  u32 date_nsec              ..  id string, name string (UTF-8, not NUL-terminated), pad to 8
 *
 * QEMU 7.2 writes 24 bytes of extra data; older QEMU (before 5.2) wrote 16 (no icount), and the oldest
 * version 2 images have none (v3 images need at least 16, which qemu-img check enforces, not us).
 * The table's size, as QEMU counts and allocates it, runs to the end of the last entry's name,
 * without the final padding.
 */
import { StorageError } from '../../src/core/errors.js';
import type { HostFile } from '../../src/core/host-file.js';
import { MAX_CLUSTER_BITS, MAX_L1_TABLE_BYTES, MAX_SNAPSHOT_TABLE_BYTES, MAX_SNAPSHOTS } from './constants.js';

/** QEMU refuses entries with more extra data than this (QCOW_MAX_SNAPSHOT_EXTRA_DATA). */
export const MAX_SNAPSHOT_EXTRA_DATA_BYTES = 1024;
/** The fixed part of an entry. */
export const SNAPSHOT_ENTRY_HEADER_BYTES = 40;
/** The extra data fields we know: vm_state_size_large, disk_size, icount. What QEMU 7.2 writes. */
export const SNAPSHOT_KNOWN_EXTRA_DATA_BYTES = 24;

const MAX_U16 = 0xffff;
const MAX_U32 = 0xffffffff;
const MAX_U64 = (1n << 64n) - 1n;
/** icount value meaning "not recorded". */
const ICOUNT_NONE = MAX_U64;

/** fatal: invalid UTF-8 throws; ignoreBOM: a leading U+FEFF stays in the string, for exact rewriting. */
const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const encoder = new TextEncoder();

export type KnownExtraDataSize = 0 | 8 | 16 | 24;

export interface SnapshotEntry {
  /** Host offset of the snapshot's L1 table; cluster-aligned. */
  l1TableOffset: number;
  /** Entries in that L1 table. */
  l1Size: number;
  /** Unique ID (QEMU numbers them "1", "2", ...). */
  id: string;
  name: string;
  /** Wall-clock time the snapshot was taken: seconds since the epoch, and nanoseconds. */
  dateSec: number;
  dateNsec: number;
  /** Guest run time up to the snapshot, in nanoseconds (u64, so a bigint). */
  vmClockNsec: bigint;
  /** VM state size in bytes; 0 for a disk-only snapshot. From the 64-bit extra field when present. */
  vmStateSizeBytes: number;
  /**
   * Guest-visible disk size at snapshot time; undefined when the entry predates the field
   * (knownExtraDataSize < 16): QEMU then takes the image's current size.
   */
  diskSizeBytes: number | undefined;
  /**
   * Instruction count (record/replay) at snapshot time; undefined when not recorded (stored as -1)
   * or when the entry predates the field (knownExtraDataSize < 24).
   */
  icount: bigint | undefined;
  /**
   * How many bytes of the stored extra data are the known fields: 24 for what QEMU 7.2 writes,
   * 16 before QEMU 5.2, 8 or 0 for old version 2 images. Use 24 for new entries.
   */
  knownExtraDataSize: KnownExtraDataSize;
  /**
   * The rest of the stored extra data, kept verbatim for rewriting: fields defined after QEMU 7.2
   * (after the 24 known bytes), or the stray bytes of a truncated field when the extra data is
   * shorter than 24 bytes and not a multiple of 8. Usually empty.
   */
  extraData: Uint8Array;
}

export interface SnapshotTableLimits {
  clusterSizeBytes: number;
  /** The image file's size: every snapshot's L1 table must lie inside it. */
  fileSizeBytes: number;
}

/**
 * Parses `count` entries from `bytes`, which holds the table from its first byte (snapshots_offset)
 * and may run on past its end. Throws CORRUPT, naming the entry and the problem, for anything out
 * of bounds: a truncated entry, too much extra data (> 1024 bytes), an L1 table that is not
 * cluster-aligned, lies outside the file or is over 32 MiB, an ID or name that is not valid UTF-8
 * or contains NUL, more than 65536 entries, or a table over 64 MiB.
 */
export function parseSnapshotTable(bytes: Uint8Array, count: number, limits: SnapshotTableLimits): SnapshotEntry[] {
  const result = parse(bytes, count, limits);
  if ('entries' in result) return result.entries;
  throw corrupt(`entry ${result.entryIndex} is truncated: the table data ends at byte ${bytes.length}`);
}

/**
 * Reads and parses the table at `snapshotsOffset` without knowing its size up front: starts with
 * 64 KiB (or less, near the end of the file) and reads more only while an entry runs past what was
 * read. Throws CORRUPT when the table runs past the end of the file.
 */
export async function readSnapshotTable(
  file: HostFile,
  snapshotsOffset: number,
  count: number,
  limits: SnapshotTableLimits,
): Promise<SnapshotEntry[]> {
  checkCount(count);
  if (count === 0) return [];
  if (!Number.isSafeInteger(snapshotsOffset) || snapshotsOffset < 0 || snapshotsOffset > limits.fileSizeBytes) {
    throw corrupt(`table offset ${snapshotsOffset} lies outside the file (${limits.fileSizeBytes} bytes)`);
  }
  const available = Math.min(limits.fileSizeBytes - snapshotsOffset, MAX_SNAPSHOT_TABLE_BYTES);
  let length = Math.min(available, 64 * 1024);
  for (;;) {
    const bytes = new Uint8Array(length);
    await file.pread(bytes, snapshotsOffset);
    const result = parse(bytes, count, limits);
    if ('entries' in result) return result.entries;
    if (length >= available) {
      throw corrupt(
        available < MAX_SNAPSHOT_TABLE_BYTES
          ? `entry ${result.entryIndex} runs past the end of the file`
          : `entry ${result.entryIndex} runs past the ${MAX_SNAPSHOT_TABLE_BYTES}-byte table limit`,
      );
    }
    length = Math.min(available, Math.max(result.neededBytes, length * 2));
  }
}

/** The table's size as QEMU counts it (to the end of the last name, no final padding). */
export function snapshotTableSizeBytes(entries: readonly SnapshotEntry[]): number {
  let offset = 0;
  for (const entry of entries) {
    offset = alignUp8(offset) + entrySizeBytes(entry);
  }
  return offset;
}

/**
 * Serializes entries into a table: the exact inverse of parseSnapshotTable (padding between entries
 * is zero). The result is snapshotTableSizeBytes(entries) long. The 32-bit vm_state_size is written
 * as QEMU writes it: the size when it fits, else 0 (the 64-bit field then carries it).
 * Throws INVALID_ARGUMENT for fields out of range or inconsistent with knownExtraDataSize, and
 * LIMIT_EXCEEDED past 65536 entries or 64 MiB.
 */
export function serializeSnapshotTable(entries: readonly SnapshotEntry[]): Uint8Array {
  if (entries.length > MAX_SNAPSHOTS) {
    throw new StorageError('LIMIT_EXCEEDED', `${entries.length} snapshots exceed the limit of ${MAX_SNAPSHOTS}`);
  }
  const encoded = entries.map((entry, index) => {
    checkEntry(entry, index);
    const id = encoder.encode(entry.id);
    const name = encoder.encode(entry.name);
    if (id.length > MAX_U16) throw invalid(index, `ID is ${id.length} bytes, more than ${MAX_U16}`);
    if (name.length > MAX_U16) throw invalid(index, `name is ${name.length} bytes, more than ${MAX_U16}`);
    return { entry, id, name };
  });
  let size = 0;
  for (const { entry, id, name } of encoded) {
    const extraDataSize = entry.knownExtraDataSize + entry.extraData.length;
    size = alignUp8(size) + SNAPSHOT_ENTRY_HEADER_BYTES + extraDataSize + id.length + name.length;
  }
  if (size > MAX_SNAPSHOT_TABLE_BYTES) {
    throw new StorageError(
      'LIMIT_EXCEEDED',
      `snapshot table of ${size} bytes exceeds the limit of ${MAX_SNAPSHOT_TABLE_BYTES}`,
    );
  }

  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  let offset = 0;
  for (const { entry, id, name } of encoded) {
    offset = alignUp8(offset);
    const extraDataSize = entry.knownExtraDataSize + entry.extraData.length;
    view.setBigUint64(offset, BigInt(entry.l1TableOffset));
    view.setUint32(offset + 8, entry.l1Size);
    view.setUint16(offset + 12, id.length);
    view.setUint16(offset + 14, name.length);
    view.setUint32(offset + 16, entry.dateSec);
    view.setUint32(offset + 20, entry.dateNsec);
    view.setBigUint64(offset + 24, entry.vmClockNsec);
    view.setUint32(offset + 32, entry.vmStateSizeBytes <= MAX_U32 ? entry.vmStateSizeBytes : 0);
    view.setUint32(offset + 36, extraDataSize);
    let pos = offset + SNAPSHOT_ENTRY_HEADER_BYTES;
    if (entry.knownExtraDataSize >= 8) view.setBigUint64(pos, BigInt(entry.vmStateSizeBytes));
    if (entry.knownExtraDataSize >= 16) view.setBigUint64(pos + 8, BigInt(entry.diskSizeBytes ?? 0));
    if (entry.knownExtraDataSize >= 24) view.setBigUint64(pos + 16, entry.icount ?? ICOUNT_NONE);
    pos += entry.knownExtraDataSize;
    out.set(entry.extraData, pos);
    pos += entry.extraData.length;
    out.set(id, pos);
    pos += id.length;
    out.set(name, pos);
    offset = pos + name.length;
  }
  return out;
}

type ParseResult = { entries: SnapshotEntry[] } | { entryIndex: number; neededBytes: number };

function parse(bytes: Uint8Array, count: number, limits: SnapshotTableLimits): ParseResult {
  checkCount(count);
  checkLimits(limits);
  const { clusterSizeBytes, fileSizeBytes } = limits;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const entries: SnapshotEntry[] = [];
  let offset = 0;
  for (let index = 0; index < count; index++) {
    offset = alignUp8(offset);
    const headerEnd = offset + SNAPSHOT_ENTRY_HEADER_BYTES;
    if (headerEnd > MAX_SNAPSHOT_TABLE_BYTES) throw tooBig(index);
    if (headerEnd > bytes.length) return { entryIndex: index, neededBytes: headerEnd };

    const l1TableOffsetRaw = view.getBigUint64(offset);
    const l1Size = view.getUint32(offset + 8);
    const idSize = view.getUint16(offset + 12);
    const nameSize = view.getUint16(offset + 14);
    const dateSec = view.getUint32(offset + 16);
    const dateNsec = view.getUint32(offset + 20);
    const vmClockNsec = view.getBigUint64(offset + 24);
    const vmStateSize32 = view.getUint32(offset + 32);
    const extraDataSize = view.getUint32(offset + 36);

    if (extraDataSize > MAX_SNAPSHOT_EXTRA_DATA_BYTES) {
      throw corrupt(
        `entry ${index} has ${extraDataSize} bytes of extra data, more than ${MAX_SNAPSHOT_EXTRA_DATA_BYTES}`,
      );
    }
    const end = headerEnd + extraDataSize + idSize + nameSize;
    if (end > MAX_SNAPSHOT_TABLE_BYTES) throw tooBig(index);
    if (end > bytes.length) return { entryIndex: index, neededBytes: end };

    const id = decodeString(bytes, headerEnd + extraDataSize, idSize, index, 'ID');
    const name = decodeString(bytes, headerEnd + extraDataSize + idSize, nameSize, index, 'name');
    const where = `entry ${index} (ID ${JSON.stringify(id.length > 40 ? `${id.slice(0, 40)}...` : id)})`;

    if (l1Size * 8 > MAX_L1_TABLE_BYTES) {
      throw corrupt(`${where} has an L1 table of ${l1Size} entries, more than ${MAX_L1_TABLE_BYTES} bytes`);
    }
    if (l1TableOffsetRaw % BigInt(clusterSizeBytes) !== 0n) {
      throw corrupt(`${where} has an L1 table offset 0x${l1TableOffsetRaw.toString(16)} not aligned to a cluster`);
    }
    if (l1TableOffsetRaw + BigInt(l1Size * 8) > BigInt(fileSizeBytes)) {
      throw corrupt(
        `${where} has an L1 table at 0x${l1TableOffsetRaw.toString(16)} (${l1Size} entries) ` +
          `past the end of the file (${fileSizeBytes} bytes)`,
      );
    }
    const l1TableOffset = Number(l1TableOffsetRaw);
    if (l1TableOffset === 0 && l1Size > 0) throw corrupt(`${where} has its L1 table at offset 0, over the header`);

    const knownExtraDataSize: KnownExtraDataSize =
      extraDataSize >= 24 ? 24 : extraDataSize >= 16 ? 16 : extraDataSize >= 8 ? 8 : 0;
    let vmStateSizeBytes = vmStateSize32;
    let diskSizeBytes: number | undefined;
    let icount: bigint | undefined;
    if (knownExtraDataSize >= 8) {
      vmStateSizeBytes = toSafeNumber(view.getBigUint64(headerEnd), `${where} VM state size`);
    }
    if (knownExtraDataSize >= 16) {
      diskSizeBytes = toSafeNumber(view.getBigUint64(headerEnd + 8), `${where} disk size`);
    }
    if (knownExtraDataSize >= 24) {
      const raw = view.getBigUint64(headerEnd + 16);
      icount = raw === ICOUNT_NONE ? undefined : raw;
    }
    const extraData = bytes.slice(headerEnd + knownExtraDataSize, headerEnd + extraDataSize);

    entries.push({
      l1TableOffset,
      l1Size,
      id,
      name,
      dateSec,
      dateNsec,
      vmClockNsec,
      vmStateSizeBytes,
      diskSizeBytes,
      icount,
      knownExtraDataSize,
      extraData,
    });
    offset = end;
  }
  return { entries };
}

function decodeString(bytes: Uint8Array, start: number, length: number, index: number, what: string): string {
  const raw = bytes.subarray(start, start + length);
  if (raw.includes(0)) throw corrupt(`entry ${index}: the ${what} contains a NUL byte`);
  try {
    return decoder.decode(raw);
  } catch {
    throw corrupt(`entry ${index}: the ${what} is not valid UTF-8`);
  }
}

function checkCount(count: number): void {
  if (!Number.isInteger(count) || count < 0 || count > MAX_SNAPSHOTS) {
    throw corrupt(`${count} snapshots exceed the limit of ${MAX_SNAPSHOTS}`);
  }
}

function checkLimits({ clusterSizeBytes, fileSizeBytes }: SnapshotTableLimits): void {
  const maxClusterSize = 2 ** MAX_CLUSTER_BITS;
  const powerOfTwo = (clusterSizeBytes & (clusterSizeBytes - 1)) === 0;
  const inRange = clusterSizeBytes >= 512 && clusterSizeBytes <= maxClusterSize;
  if (!Number.isSafeInteger(clusterSizeBytes) || !inRange || !powerOfTwo) {
    throw new StorageError(
      'INVALID_ARGUMENT',
      `cluster size ${clusterSizeBytes} is not a power of two from 512 to ${maxClusterSize}`,
    );
  }
  if (!Number.isSafeInteger(fileSizeBytes) || fileSizeBytes < 0) {
    throw new StorageError('INVALID_ARGUMENT', `file size ${fileSizeBytes} is invalid`);
  }
}

const LONE_SURROGATE = /\p{Surrogate}/u;

function checkEntry(entry: SnapshotEntry, index: number): void {
  const u32 = (value: number): boolean => Number.isInteger(value) && value >= 0 && value <= MAX_U32;
  const size = (value: number): boolean => Number.isSafeInteger(value) && value >= 0;
  const u64 = (value: bigint): boolean => value >= 0n && value <= MAX_U64;
  if (!size(entry.l1TableOffset)) throw invalid(index, `L1 table offset ${entry.l1TableOffset} is invalid`);
  if (!u32(entry.l1Size)) throw invalid(index, `L1 size ${entry.l1Size} is not a u32`);
  if (!u32(entry.dateSec)) throw invalid(index, `dateSec ${entry.dateSec} is not a u32`);
  if (!u32(entry.dateNsec)) throw invalid(index, `dateNsec ${entry.dateNsec} is not a u32`);
  if (!u64(entry.vmClockNsec)) throw invalid(index, `vmClockNsec ${entry.vmClockNsec} is not a u64`);
  if (!size(entry.vmStateSizeBytes)) throw invalid(index, `VM state size ${entry.vmStateSizeBytes} is invalid`);
  for (const [what, text] of [['ID', entry.id], ['name', entry.name]] as const) {
    if (text.includes('\0')) throw invalid(index, `the ${what} contains NUL`);
    if (LONE_SURROGATE.test(text)) throw invalid(index, `the ${what} is not valid Unicode (lone surrogate)`);
  }
  const known = entry.knownExtraDataSize;
  if (known !== 0 && known !== 8 && known !== 16 && known !== 24) {
    throw invalid(index, `knownExtraDataSize ${String(known)} is not 0, 8, 16 or 24`);
  }
  if (known < 24 && entry.extraData.length >= 8) {
    throw invalid(
      index,
      `with knownExtraDataSize ${known}, extra data must be under 8 bytes (it would read back as known fields)`,
    );
  }
  if (known + entry.extraData.length > MAX_SNAPSHOT_EXTRA_DATA_BYTES) {
    const extraBytes = known + entry.extraData.length;
    throw invalid(index, `extra data of ${extraBytes} bytes exceeds ${MAX_SNAPSHOT_EXTRA_DATA_BYTES}`);
  }
  if (known < 8 && entry.vmStateSizeBytes > MAX_U32) {
    throw invalid(index, `a VM state of ${entry.vmStateSizeBytes} bytes needs knownExtraDataSize >= 8`);
  }
  if ((known >= 16) !== (entry.diskSizeBytes !== undefined)) {
    throw invalid(index, `diskSizeBytes must be set exactly when knownExtraDataSize >= 16`);
  }
  if (entry.diskSizeBytes !== undefined && !size(entry.diskSizeBytes)) {
    throw invalid(index, `disk size ${entry.diskSizeBytes} is invalid`);
  }
  if (entry.icount !== undefined && (known < 24 || !u64(entry.icount) || entry.icount === ICOUNT_NONE)) {
    throw invalid(index, `icount ${entry.icount} needs knownExtraDataSize 24 and a value below 2^64 - 1`);
  }
}

function entrySizeBytes(entry: SnapshotEntry): number {
  return (
    SNAPSHOT_ENTRY_HEADER_BYTES +
    entry.knownExtraDataSize +
    entry.extraData.length +
    encoder.encode(entry.id).length +
    encoder.encode(entry.name).length
  );
}

function alignUp8(value: number): number {
  return Math.ceil(value / 8) * 8;
}

function toSafeNumber(value: bigint, what: string): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw corrupt(`${what} ${value} is out of range`);
  return Number(value);
}

function tooBig(index: number): StorageError {
  return corrupt(`entry ${index} runs past the ${MAX_SNAPSHOT_TABLE_BYTES}-byte table limit`);
}

function corrupt(message: string): StorageError {
  return new StorageError('CORRUPT', `qcow2 snapshot table: ${message}`);
}

function invalid(index: number, message: string): StorageError {
  return new StorageError('INVALID_ARGUMENT', `snapshot table entry ${index}: ${message}`);
}
