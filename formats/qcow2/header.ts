/**
 * The qcow2 header and its extensions: parse with full validation (a header is untrusted input),
 * and serialize back, keeping extensions we do not understand byte for byte.
 */
import { StorageError } from '../../src/core/errors.js';
import {
  CompressionTypeId,
  ExtensionType,
  HeaderOffset,
  IncompatibleBit,
  KNOWN_INCOMPATIBLE_MASK,
  MAX_BACKING_FILE_NAME_BYTES,
  MAX_CLUSTER_BITS,
  MAX_L1_TABLE_BYTES,
  MAX_REFCOUNT_TABLE_BYTES,
  MAX_SNAPSHOTS,
  MIN_CLUSTER_BITS,
  MIN_CLUSTER_BITS_EXTENDED_L2,
  QCOW2_MAGIC,
  V2_HEADER_LENGTH_BYTES,
  V3_HEADER_LENGTH_BYTES,
  V3_MIN_HEADER_LENGTH_BYTES,
} from './constants.js';

export interface FeatureName {
  kind: 'incompatible' | 'compatible' | 'autoclear' | number;
  bit: number;
  name: string;
}

export interface UnknownExtension {
  type: number;
  data: Uint8Array;
}

export interface Qcow2Header {
  version: 2 | 3;
  backingFileOffset: number;
  backingFileSize: number;
  clusterBits: number;
  sizeBytes: number;
  cryptMethod: number;
  l1Size: number;
  l1TableOffset: number;
  refcountTableOffset: number;
  refcountTableClusters: number;
  nbSnapshots: number;
  snapshotsOffset: number;
  incompatibleFeatures: bigint;
  compatibleFeatures: bigint;
  autoclearFeatures: bigint;
  refcountOrder: number;
  headerLengthBytes: number;
  compressionType: number;
  /** Header bytes past the fields we know (from byte 112 up to header_length), kept as they are. */
  extraHeaderBytes: Uint8Array;
  backingFile: string | undefined;
  backingFormat: string | undefined;
  dataFile: string | undefined;
  featureNames: FeatureName[];
  /** Bitmaps and encryption extensions are kept too: we do not interpret them. */
  unknownExtensions: UnknownExtension[];
}

function corrupt(message: string): StorageError {
  return new StorageError('CORRUPT', `qcow2 header: ${message}`);
}

function u64ToNumber(value: bigint, what: string): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw corrupt(`${what} ${value} is out of range`);
  return Number(value);
}

export function hasIncompatible(header: Qcow2Header, bit: number): boolean {
  return (header.incompatibleFeatures & (1n << BigInt(bit))) !== 0n;
}

export function setFeatureBit(features: bigint, bit: number, on: boolean): bigint {
  const mask = 1n << BigInt(bit);
  return on ? features | mask : features & ~mask;
}

const textDecoder = new TextDecoder('utf-8', { fatal: true });

function decodeName(bytes: Uint8Array, what: string): string {
  try {
    return textDecoder.decode(bytes);
  } catch {
    throw corrupt(`${what} is not valid UTF-8`);
  }
}

export function probeQcow2(firstBytes: Uint8Array): boolean {
  if (firstBytes.length < 8) return false;
  const view = new DataView(firstBytes.buffer, firstBytes.byteOffset, firstBytes.byteLength);
  const version = view.getUint32(4);
  return view.getUint32(0) === QCOW2_MAGIC && (version === 2 || version === 3);
}

/**
 * Parses and validates the header from the first cluster of the file (or at least the first
 * 2 MiB / file size, whichever is smaller). `fileSizeBytes` bounds every offset.
 */
export function parseHeader(bytes: Uint8Array, fileSizeBytes: number): Qcow2Header {
  if (bytes.length < V2_HEADER_LENGTH_BYTES) throw corrupt(`file is too short (${bytes.length} bytes)`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint32(HeaderOffset.magic) !== QCOW2_MAGIC) throw corrupt('bad magic (not a qcow2 image)');
  const version = view.getUint32(HeaderOffset.version);
  if (version !== 2 && version !== 3) {
    throw new StorageError('UNSUPPORTED', `qcow2 version ${version} is not supported (only 2 and 3)`);
  }
  const clusterBits = view.getUint32(HeaderOffset.clusterBits);
  if (clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS) {
    throw corrupt(`cluster_bits ${clusterBits} outside ${MIN_CLUSTER_BITS}..${MAX_CLUSTER_BITS}`);
  }
  const clusterSizeBytes = 2 ** clusterBits;
  let headerLengthBytes = V2_HEADER_LENGTH_BYTES;
  let incompatibleFeatures = 0n;
  let compatibleFeatures = 0n;
  let autoclearFeatures = 0n;
  let refcountOrder = 4;
  let compressionType: number = CompressionTypeId.zlib;
  if (version === 3) {
    if (bytes.length < V3_MIN_HEADER_LENGTH_BYTES) throw corrupt('v3 header is truncated');
    incompatibleFeatures = view.getBigUint64(HeaderOffset.incompatibleFeatures);
    compatibleFeatures = view.getBigUint64(HeaderOffset.compatibleFeatures);
    autoclearFeatures = view.getBigUint64(HeaderOffset.autoclearFeatures);
    refcountOrder = view.getUint32(HeaderOffset.refcountOrder);
    headerLengthBytes = view.getUint32(HeaderOffset.headerLength);
    if (headerLengthBytes < V3_MIN_HEADER_LENGTH_BYTES) throw corrupt(`header_length ${headerLengthBytes} < 104`);
    if (headerLengthBytes > clusterSizeBytes || headerLengthBytes > bytes.length) {
      throw corrupt(`header_length ${headerLengthBytes} exceeds the first cluster`);
    }
    if (headerLengthBytes > HeaderOffset.compressionType) {
      compressionType = view.getUint8(HeaderOffset.compressionType);
    }
  }
  if (refcountOrder > 6) throw corrupt(`refcount_order ${refcountOrder} > 6`);

  const header: Qcow2Header = {
    version,
    backingFileOffset: u64ToNumber(view.getBigUint64(HeaderOffset.backingFileOffset), 'backing_file_offset'),
    backingFileSize: view.getUint32(HeaderOffset.backingFileSize),
    clusterBits,
    sizeBytes: u64ToNumber(view.getBigUint64(HeaderOffset.size), 'size'),
    cryptMethod: view.getUint32(HeaderOffset.cryptMethod),
    l1Size: view.getUint32(HeaderOffset.l1Size),
    l1TableOffset: u64ToNumber(view.getBigUint64(HeaderOffset.l1TableOffset), 'l1_table_offset'),
    refcountTableOffset: u64ToNumber(view.getBigUint64(HeaderOffset.refcountTableOffset), 'refcount_table_offset'),
    refcountTableClusters: view.getUint32(HeaderOffset.refcountTableClusters),
    nbSnapshots: view.getUint32(HeaderOffset.nbSnapshots),
    snapshotsOffset: u64ToNumber(view.getBigUint64(HeaderOffset.snapshotsOffset), 'snapshots_offset'),
    incompatibleFeatures,
    compatibleFeatures,
    autoclearFeatures,
    refcountOrder,
    headerLengthBytes,
    compressionType,
    extraHeaderBytes:
      version === 3 && headerLengthBytes > V3_HEADER_LENGTH_BYTES
        ? bytes.slice(V3_HEADER_LENGTH_BYTES, headerLengthBytes)
        : new Uint8Array(0),
    backingFile: undefined,
    backingFormat: undefined,
    dataFile: undefined,
    featureNames: [],
    unknownExtensions: [],
  };

  const unknownIncompatible = incompatibleFeatures & ~KNOWN_INCOMPATIBLE_MASK;
  parseExtensions(bytes, header, clusterSizeBytes);

  if (unknownIncompatible !== 0n) {
    const bits: string[] = [];
    for (let bit = 0; bit < 64; bit++) {
      if (unknownIncompatible & (1n << BigInt(bit))) {
        const named = header.featureNames.find((f) => f.kind === 'incompatible' && f.bit === bit);
        bits.push(named ? `${named.name} (bit ${bit})` : `bit ${bit}`);
      }
    }
    throw new StorageError('UNSUPPORTED', `qcow2 image uses unsupported incompatible features: ${bits.join(', ')}`);
  }
  if (hasIncompatible(header, IncompatibleBit.externalDataFile)) {
    throw new StorageError('UNSUPPORTED', 'qcow2 images with an external data file are not supported');
  }
  if (header.cryptMethod !== 0) {
    throw new StorageError('UNSUPPORTED', `encrypted qcow2 images (crypt_method ${header.cryptMethod}) are not supported`);
  }
  const compressionBit = hasIncompatible(header, IncompatibleBit.compressionType);
  if (compressionType !== CompressionTypeId.zlib && compressionType !== CompressionTypeId.zstd) {
    throw new StorageError('UNSUPPORTED', `unknown compression type ${compressionType}`);
  }
  if (compressionBit !== (compressionType !== CompressionTypeId.zlib)) {
    throw corrupt('compression type field and incompatible bit 3 disagree');
  }
  if (hasIncompatible(header, IncompatibleBit.extendedL2) && clusterBits < MIN_CLUSTER_BITS_EXTENDED_L2) {
    throw corrupt(`extended L2 needs clusters of at least 16 KiB (cluster_bits ${clusterBits})`);
  }
  if (version === 2 && refcountOrder !== 4) throw corrupt('v2 images must use 16-bit refcounts');

  validateLayout(header, clusterSizeBytes, fileSizeBytes);

  if (header.backingFileOffset !== 0) {
    if (header.backingFileSize === 0 || header.backingFileSize > MAX_BACKING_FILE_NAME_BYTES) {
      throw corrupt(`backing file name length ${header.backingFileSize} outside 1..${MAX_BACKING_FILE_NAME_BYTES}`);
    }
    const end = header.backingFileOffset + header.backingFileSize;
    if (end > clusterSizeBytes || end > bytes.length) throw corrupt('backing file name lies outside the first cluster');
    header.backingFile = decodeName(bytes.subarray(header.backingFileOffset, end), 'backing file name');
  }
  return header;
}

function validateLayout(header: Qcow2Header, clusterSizeBytes: number, fileSizeBytes: number): void {
  const isAligned = (offset: number) => offset % clusterSizeBytes === 0;
  const l1Bytes = header.l1Size * 8;
  if (l1Bytes > MAX_L1_TABLE_BYTES) throw corrupt(`L1 table of ${header.l1Size} entries is too large`);
  const l2Entries = clusterSizeBytes / (hasIncompatible(header, IncompatibleBit.extendedL2) ? 16 : 8);
  const bytesPerL1Entry = l2Entries * clusterSizeBytes;
  const neededL1 = Math.ceil(header.sizeBytes / bytesPerL1Entry);
  if (neededL1 > header.l1Size) {
    throw corrupt(`L1 table has ${header.l1Size} entries but the image size needs ${neededL1}`);
  }
  if (header.l1Size > 0) {
    if (!isAligned(header.l1TableOffset) || header.l1TableOffset === 0) throw corrupt('L1 table offset is invalid');
    if (header.l1TableOffset + l1Bytes > fileSizeBytes) {
      throw corrupt(`L1 table at 0x${header.l1TableOffset.toString(16)} (${l1Bytes} bytes) runs past the end of the file (${fileSizeBytes} bytes)`);
    }
  }
  if (!isAligned(header.refcountTableOffset) || header.refcountTableOffset === 0) {
    throw corrupt('refcount table offset is invalid');
  }
  const refTableBytes = header.refcountTableClusters * clusterSizeBytes;
  if (header.refcountTableClusters === 0) throw corrupt('refcount table is empty');
  if (refTableBytes > MAX_REFCOUNT_TABLE_BYTES) throw corrupt('refcount table is too large');
  if (header.refcountTableOffset + refTableBytes > fileSizeBytes) {
    throw corrupt(
      `refcount table at 0x${header.refcountTableOffset.toString(16)} (${refTableBytes} bytes) runs past the end of the file (${fileSizeBytes} bytes)`,
    );
  }
  if (header.nbSnapshots > MAX_SNAPSHOTS) throw corrupt(`${header.nbSnapshots} snapshots exceed ${MAX_SNAPSHOTS}`);
  if (header.nbSnapshots > 0) {
    if (!isAligned(header.snapshotsOffset) || header.snapshotsOffset === 0) throw corrupt('snapshot table offset is invalid');
    if (header.snapshotsOffset >= fileSizeBytes) {
      throw corrupt(`snapshot table at 0x${header.snapshotsOffset.toString(16)} lies past the end of the file (${fileSizeBytes} bytes)`);
    }
  }
  // The virtual size must be addressable by the L1 table at its largest.
  const maxSizeBytes = (MAX_L1_TABLE_BYTES / 8) * bytesPerL1Entry;
  if (header.sizeBytes > maxSizeBytes) throw corrupt(`image size ${header.sizeBytes} is too large`);
}

function parseExtensions(bytes: Uint8Array, header: Qcow2Header, clusterSizeBytes: number): void {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const limit = Math.min(bytes.length, clusterSizeBytes);
  let offset = header.headerLengthBytes;
  // Each extension takes at least 8 bytes, so this bounds the loop.
  for (let guard = 0; guard < clusterSizeBytes / 8; guard++) {
    if (offset + 8 > limit) throw corrupt('header extensions run past the first cluster');
    const type = view.getUint32(offset);
    const length = view.getUint32(offset + 4);
    if (type === ExtensionType.end) return;
    const dataStart = offset + 8;
    if (length > limit - dataStart) throw corrupt(`header extension 0x${type.toString(16)} is too long`);
    const data = bytes.subarray(dataStart, dataStart + length);
    switch (type) {
      case ExtensionType.backingFormat:
        header.backingFormat = decodeName(data, 'backing format');
        break;
      case ExtensionType.dataFileName:
        header.dataFile = decodeName(data, 'data file name');
        break;
      case ExtensionType.featureNames:
        for (let i = 0; i + 48 <= data.length; i += 48) {
          const kindId = data[i] ?? 0;
          const bit = data[i + 1] ?? 0;
          const raw = data.subarray(i + 2, i + 48);
          const end = raw.indexOf(0);
          const name = new TextDecoder().decode(end >= 0 ? raw.subarray(0, end) : raw);
          const kind = kindId === 0 ? 'incompatible' : kindId === 1 ? 'compatible' : kindId === 2 ? 'autoclear' : kindId;
          header.featureNames.push({ kind, bit, name });
        }
        break;
      default:
        header.unknownExtensions.push({ type, data: data.slice() });
    }
    offset = dataStart + Math.ceil(length / 8) * 8;
  }
  throw corrupt('too many header extensions');
}

/** The feature-name table QEMU writes, so tools that see unknown bits can name them. */
export const STANDARD_FEATURE_NAMES: FeatureName[] = [
  { kind: 'incompatible', bit: IncompatibleBit.dirty, name: 'dirty bit' },
  { kind: 'incompatible', bit: IncompatibleBit.corrupt, name: 'corrupt bit' },
  { kind: 'incompatible', bit: IncompatibleBit.externalDataFile, name: 'external data file' },
  { kind: 'incompatible', bit: IncompatibleBit.compressionType, name: 'compression type' },
  { kind: 'incompatible', bit: IncompatibleBit.extendedL2, name: 'extended L2 entries' },
  { kind: 'compatible', bit: 0, name: 'lazy refcounts' },
  { kind: 'autoclear', bit: 0, name: 'bitmaps' },
  { kind: 'autoclear', bit: 1, name: 'raw external data' },
];

function featureKindId(kind: FeatureName['kind']): number {
  return kind === 'incompatible' ? 0 : kind === 'compatible' ? 1 : kind === 'autoclear' ? 2 : kind;
}

/**
 * Serializes the header, its extensions and the backing file name into one buffer that must fit
 * in the first cluster. Backing file offset/size are recomputed.
 */
export function serializeHeader(header: Qcow2Header): Uint8Array {
  const clusterSizeBytes = 2 ** header.clusterBits;
  const encoder = new TextEncoder();
  const extensions: { type: number; data: Uint8Array }[] = [];
  if (header.backingFormat !== undefined) {
    extensions.push({ type: ExtensionType.backingFormat, data: encoder.encode(header.backingFormat) });
  }
  if (header.dataFile !== undefined) {
    extensions.push({ type: ExtensionType.dataFileName, data: encoder.encode(header.dataFile) });
  }
  // As QEMU: no feature-name table with clusters of 4 KiB or less (it takes 392 bytes, which with
  // 512-byte clusters leaves no room for a backing file name).
  if (header.version === 3 && clusterSizeBytes > 4096) {
    const names = header.featureNames.length > 0 ? header.featureNames : STANDARD_FEATURE_NAMES;
    const table = new Uint8Array(names.length * 48);
    names.forEach((f, i) => {
      table[i * 48] = featureKindId(f.kind);
      table[i * 48 + 1] = f.bit;
      table.set(encoder.encode(f.name).subarray(0, 46), i * 48 + 2);
    });
    extensions.push({ type: ExtensionType.featureNames, data: table });
  }
  extensions.push(...header.unknownExtensions);
  const headerLengthBytes = header.version === 3 ? Math.max(header.headerLengthBytes, V3_HEADER_LENGTH_BYTES) : V2_HEADER_LENGTH_BYTES;
  let extensionBytes = 8; // end marker
  for (const ext of extensions) extensionBytes += 8 + Math.ceil(ext.data.length / 8) * 8;
  const backingName = header.backingFile === undefined ? undefined : encoder.encode(header.backingFile);
  if (backingName && (backingName.length === 0 || backingName.length > MAX_BACKING_FILE_NAME_BYTES)) {
    throw new StorageError('INVALID_ARGUMENT', `backing file name must be 1..${MAX_BACKING_FILE_NAME_BYTES} bytes`);
  }
  const total = headerLengthBytes + extensionBytes + (backingName?.length ?? 0);
  if (total > clusterSizeBytes) {
    throw new StorageError('INVALID_ARGUMENT', `header, extensions and backing file name (${total} bytes) do not fit in one cluster`);
  }
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  view.setUint32(HeaderOffset.magic, QCOW2_MAGIC);
  view.setUint32(HeaderOffset.version, header.version);
  const backingOffset = backingName ? headerLengthBytes + extensionBytes : 0;
  view.setBigUint64(HeaderOffset.backingFileOffset, BigInt(backingOffset));
  view.setUint32(HeaderOffset.backingFileSize, backingName?.length ?? 0);
  view.setUint32(HeaderOffset.clusterBits, header.clusterBits);
  view.setBigUint64(HeaderOffset.size, BigInt(header.sizeBytes));
  view.setUint32(HeaderOffset.cryptMethod, header.cryptMethod);
  view.setUint32(HeaderOffset.l1Size, header.l1Size);
  view.setBigUint64(HeaderOffset.l1TableOffset, BigInt(header.l1TableOffset));
  view.setBigUint64(HeaderOffset.refcountTableOffset, BigInt(header.refcountTableOffset));
  view.setUint32(HeaderOffset.refcountTableClusters, header.refcountTableClusters);
  view.setUint32(HeaderOffset.nbSnapshots, header.nbSnapshots);
  view.setBigUint64(HeaderOffset.snapshotsOffset, BigInt(header.snapshotsOffset));
  if (header.version === 3) {
    view.setBigUint64(HeaderOffset.incompatibleFeatures, header.incompatibleFeatures);
    view.setBigUint64(HeaderOffset.compatibleFeatures, header.compatibleFeatures);
    view.setBigUint64(HeaderOffset.autoclearFeatures, header.autoclearFeatures);
    view.setUint32(HeaderOffset.refcountOrder, header.refcountOrder);
    view.setUint32(HeaderOffset.headerLength, headerLengthBytes);
    view.setUint8(HeaderOffset.compressionType, header.compressionType);
    out.set(header.extraHeaderBytes.subarray(0, headerLengthBytes - V3_HEADER_LENGTH_BYTES), V3_HEADER_LENGTH_BYTES);
  }
  let offset = headerLengthBytes;
  for (const ext of extensions) {
    view.setUint32(offset, ext.type);
    view.setUint32(offset + 4, ext.data.length);
    out.set(ext.data, offset + 8);
    offset += 8 + Math.ceil(ext.data.length / 8) * 8;
  }
  offset += 8; // end marker: zeroes
  if (backingName) out.set(backingName, offset);
  return out;
}
