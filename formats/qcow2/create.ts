/**
 * Creating qcow2 images: header at cluster 0, then the refcount table, the refcount blocks that
 * describe the initial clusters, and an empty L1 table sized for the virtual size.
 */
import { StorageError } from '../../src/core/errors.js';
import type { HostFile } from '../../src/core/host-file.js';
import { isPowerOfTwo } from '../../src/core/units.js';
import {
  CompatibleBit,
  CompressionTypeId,
  DEFAULT_CLUSTER_SIZE_BYTES,
  DEFAULT_REFCOUNT_BITS,
  IncompatibleBit,
  MAX_CLUSTER_BITS,
  MAX_L1_TABLE_BYTES,
  MIN_CLUSTER_BITS,
  MIN_CLUSTER_BITS_EXTENDED_L2,
  V2_HEADER_LENGTH_BYTES,
  V3_HEADER_LENGTH_BYTES,
} from './constants.js';
import { STANDARD_FEATURE_NAMES, serializeHeader, setFeatureBit, type Qcow2Header } from './header.js';
import type { Qcow2CreateOptions } from './types.js';

function invalid(message: string): StorageError {
  return new StorageError('INVALID_ARGUMENT', message);
}

/** Validates options and fills in defaults, with errors that name the option. */
export function resolveCreateOptions(options: Qcow2CreateOptions): Required<Omit<Qcow2CreateOptions, 'backingFile' | 'backingFormat'>> &
  Pick<Qcow2CreateOptions, 'backingFile' | 'backingFormat'> {
  const compat = options.compat ?? '1.1';
  if (compat !== '1.1' && compat !== '0.10') throw invalid(`compat must be 0.10 or 1.1, not '${String(compat)}'`);
  const clusterSizeBytes = options.clusterSizeBytes ?? DEFAULT_CLUSTER_SIZE_BYTES;
  if (!isPowerOfTwo(clusterSizeBytes) || clusterSizeBytes < 2 ** MIN_CLUSTER_BITS || clusterSizeBytes > 2 ** MAX_CLUSTER_BITS) {
    throw invalid(`cluster_size must be a power of two between 512 and 2M, not ${clusterSizeBytes}`);
  }
  const refcountBits = options.refcountBits ?? DEFAULT_REFCOUNT_BITS;
  if (![1, 2, 4, 8, 16, 32, 64].includes(refcountBits)) {
    throw invalid(`refcount_bits must be one of 1, 2, 4, 8, 16, 32, 64, not ${refcountBits}`);
  }
  if (compat === '0.10' && refcountBits !== 16) throw invalid('compat=0.10 allows only refcount_bits=16');
  const lazyRefcounts = options.lazyRefcounts ?? false;
  if (compat === '0.10' && lazyRefcounts) throw invalid('lazy_refcounts needs compat=1.1');
  const extendedL2 = options.extendedL2 ?? false;
  if (extendedL2 && compat === '0.10') throw invalid('extended_l2 needs compat=1.1');
  if (extendedL2 && clusterSizeBytes < 2 ** MIN_CLUSTER_BITS_EXTENDED_L2) {
    throw invalid('extended_l2 needs a cluster_size of at least 16 KiB');
  }
  const compressionType = options.compressionType ?? 'zlib';
  if (compressionType !== 'zlib' && compressionType !== 'zstd') {
    throw invalid(`compression_type must be zlib or zstd, not '${String(compressionType)}'`);
  }
  if (compressionType === 'zstd' && compat === '0.10') throw invalid('compression_type=zstd needs compat=1.1');
  if (!Number.isSafeInteger(options.sizeBytes) || options.sizeBytes < 0) {
    throw invalid(`image size must be a non-negative number of bytes, not ${options.sizeBytes}`);
  }
  if (options.backingFormat !== undefined && options.backingFile === undefined) {
    throw invalid('a backing format needs a backing file');
  }
  return {
    sizeBytes: options.sizeBytes,
    clusterSizeBytes,
    refcountBits,
    compat,
    lazyRefcounts,
    extendedL2,
    compressionType,
    backingFile: options.backingFile,
    backingFormat: options.backingFormat,
  };
}

export async function createQcow2(file: HostFile, options: Qcow2CreateOptions): Promise<void> {
  const o = resolveCreateOptions(options);
  const cs = o.clusterSizeBytes;
  const l2Entries = cs / (o.extendedL2 ? 16 : 8);
  const l1Size = Math.ceil(o.sizeBytes / (l2Entries * cs));
  if (l1Size * 8 > MAX_L1_TABLE_BYTES) {
    throw invalid(`image size ${o.sizeBytes} is too large for cluster_size ${cs} (the L1 table would exceed 32 MiB)`);
  }
  const l1Clusters = Math.max(1, Math.ceil((l1Size * 8) / cs));
  const { tableClusters, blockClusters } = refcountStructureClusters(1 + l1Clusters, cs, o.refcountBits);
  const tableOffset = cs;
  const blocksOffset = tableOffset + tableClusters * cs;
  const l1Offset = blocksOffset + blockClusters * cs;
  const totalClusters = 1 + tableClusters + blockClusters + l1Clusters;

  const header = newImageHeader(o, { l1Size, l1TableOffset: l1Offset, refcountTableOffset: tableOffset, refcountTableClusters: tableClusters });
  const headerCluster = new Uint8Array(cs);
  headerCluster.set(serializeHeader(header));

  const table = new Uint8Array(tableClusters * cs);
  const tableView = new DataView(table.buffer);
  for (let i = 0; i < blockClusters; i++) tableView.setBigUint64(i * 8, BigInt(blocksOffset + i * cs));

  const blocks = new Uint8Array(blockClusters * cs);
  setRefcountsToOne(blocks, totalClusters, o.refcountBits);
  await file.truncate(0);
  await file.pwrite(table, tableOffset);
  await file.pwrite(blocks, blocksOffset);
  await file.truncate(l1Offset + l1Clusters * cs);
  await file.flush();
  // The header last: until it is written the file is not a qcow2 image at all.
  await file.pwrite(headerCluster.subarray(0, Math.max(serializeHeader(header).length, 512)), 0);
  await file.flush();
}

/** A new image's header (no snapshots, no data file) for resolved create options and its table places. */
export function newImageHeader(
  o: ReturnType<typeof resolveCreateOptions>,
  places: { l1Size: number; l1TableOffset: number; refcountTableOffset: number; refcountTableClusters: number },
): Qcow2Header {
  let incompatible = 0n;
  if (o.extendedL2) incompatible = setFeatureBit(incompatible, IncompatibleBit.extendedL2, true);
  if (o.compressionType === 'zstd') incompatible = setFeatureBit(incompatible, IncompatibleBit.compressionType, true);
  const version = o.compat === '1.1' ? 3 : 2;
  return {
    version,
    backingFileOffset: 0,
    backingFileSize: 0,
    clusterBits: Math.log2(o.clusterSizeBytes),
    sizeBytes: o.sizeBytes,
    cryptMethod: 0,
    ...places,
    nbSnapshots: 0,
    snapshotsOffset: 0,
    incompatibleFeatures: incompatible,
    compatibleFeatures: o.lazyRefcounts ? 1n << BigInt(CompatibleBit.lazyRefcounts) : 0n,
    autoclearFeatures: 0n,
    refcountOrder: Math.log2(o.refcountBits),
    headerLengthBytes: version === 3 ? V3_HEADER_LENGTH_BYTES : V2_HEADER_LENGTH_BYTES,
    compressionType: o.compressionType === 'zstd' ? CompressionTypeId.zstd : CompressionTypeId.zlib,
    extraHeaderBytes: new Uint8Array(0),
    backingFile: o.backingFile,
    backingFormat: o.backingFormat,
    dataFile: undefined,
    featureNames: version === 3 ? STANDARD_FEATURE_NAMES : [],
    unknownExtensions: [],
  };
}

/** Sets the refcounts of host clusters [0, clusterCount) to 1 in zeroed refcount blocks (laid end to end). */
export function setRefcountsToOne(blocks: Uint8Array, clusterCount: number, refcountBits: number): void {
  const view = new DataView(blocks.buffer, blocks.byteOffset, blocks.byteLength);
  for (let cluster = 0; cluster < clusterCount; cluster++) {
    switch (refcountBits) {
      case 64:
        view.setBigUint64(cluster * 8, 1n);
        break;
      case 32:
        view.setUint32(cluster * 4, 1);
        break;
      case 16:
        view.setUint16(cluster * 2, 1);
        break;
      case 8:
        view.setUint8(cluster, 1);
        break;
      default: {
        const bitOffset = cluster * refcountBits;
        blocks[bitOffset >>> 3] = (blocks[bitOffset >>> 3] ?? 0) | (1 << (bitOffset & 7));
      }
    }
  }
}

/**
 * The refcount table and block clusters an image of `otherClusters` further clusters needs: a
 * fixed point, since the blocks must count the table's and their own clusters too.
 */
export function refcountStructureClusters(otherClusters: number, clusterSizeBytes: number, refcountBits: number): { tableClusters: number; blockClusters: number } {
  const entriesPerBlock = (clusterSizeBytes * 8) / refcountBits;
  let tableClusters = 1;
  let blockClusters = 1;
  for (;;) {
    const total = otherClusters + tableClusters + blockClusters;
    const neededBlocks = Math.ceil(total / entriesPerBlock);
    const neededTable = Math.ceil((neededBlocks * 8) / clusterSizeBytes);
    if (neededBlocks <= blockClusters && neededTable <= tableClusters) return { tableClusters, blockClusters };
    blockClusters = Math.max(blockClusters, neededBlocks);
    tableClusters = Math.max(tableClusters, neededTable);
  }
}
