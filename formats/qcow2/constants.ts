/** qcow2 on-disk constants (docs/interop/qcow2.txt), named once. All fields are big-endian. */

export const QCOW2_MAGIC = 0x514649fb; // "QFI\xfb"

export const MIN_CLUSTER_BITS = 9;
export const MAX_CLUSTER_BITS = 21; // QEMU's limit (2 MiB)
export const MIN_CLUSTER_BITS_EXTENDED_L2 = 14; // 16 KiB: subclusters stay >= 512 B
export const DEFAULT_CLUSTER_SIZE_BYTES = 64 * 1024;
export const DEFAULT_REFCOUNT_BITS = 16;

export const V2_HEADER_LENGTH_BYTES = 72;
export const V3_MIN_HEADER_LENGTH_BYTES = 104;
/** What QEMU 7.2 writes: 104 bytes plus the compression type byte, padded to 8. */
export const V3_HEADER_LENGTH_BYTES = 112;

export const HeaderOffset = {
  magic: 0,
  version: 4,
  backingFileOffset: 8,
  backingFileSize: 16,
  clusterBits: 20,
  size: 24,
  cryptMethod: 32,
  l1Size: 36,
  l1TableOffset: 40,
  refcountTableOffset: 48,
  refcountTableClusters: 56,
  nbSnapshots: 60,
  snapshotsOffset: 64,
  incompatibleFeatures: 72,
  compatibleFeatures: 80,
  autoclearFeatures: 88,
  refcountOrder: 96,
  headerLength: 100,
  compressionType: 104,
} as const;

export const IncompatibleBit = {
  dirty: 0,
  corrupt: 1,
  externalDataFile: 2,
  compressionType: 3,
  extendedL2: 4,
} as const;
export const KNOWN_INCOMPATIBLE_MASK = 0b11111n;

export const CompatibleBit = { lazyRefcounts: 0 } as const;
export const AutoclearBit = { bitmaps: 0, rawExternalData: 1 } as const;

export const CompressionTypeId = { zlib: 0, zstd: 1 } as const;

export const ExtensionType = {
  end: 0x00000000,
  backingFormat: 0xe2792aca,
  featureNames: 0x6803f857,
  bitmaps: 0x23852875,
  fullDiskEncryption: 0x0537be77,
  dataFileName: 0x44415441,
} as const;

export const MAX_BACKING_FILE_NAME_BYTES = 1023;

/** Bounds QEMU enforces, which keep hostile headers from making us allocate without limit. */
export const MAX_L1_TABLE_BYTES = 32 * 1024 * 1024;
export const MAX_REFCOUNT_TABLE_BYTES = 8 * 1024 * 1024;
export const MAX_SNAPSHOTS = 65536;
export const MAX_SNAPSHOT_TABLE_BYTES = 64 * 1024 * 1024;

/** L1 entry: bits 9-55 L2 table offset, bit 63 COPIED. */
export const L1E_OFFSET_MASK = 0x00fffffffffffe00n;
/** L2 entry (standard cluster): bits 9-55 host offset, bit 0 zero flag. */
export const L2E_OFFSET_MASK = 0x00fffffffffffe00n;
export const OFLAG_COPIED = 1n << 63n;
export const OFLAG_COMPRESSED = 1n << 62n;
export const OFLAG_ZERO = 1n;
/** Bits 1-8 and 56-61 of a standard L2 entry are reserved. */
export const L2E_STD_RESERVED_MASK = 0x3f000000000001fen;
export const L1E_RESERVED_MASK = 0x7f000000000001ffn;
/** Refcount table entry: bits 9-63 refcount block offset; bits 0-8 reserved. */
export const REFT_OFFSET_MASK = 0xfffffffffffffe00n;

export const SUBCLUSTERS_PER_CLUSTER = 32;
export const L2_BITMAP_ALL_ALLOCATED = 0xffffffffn;
export const L2_BITMAP_ALL_ZEROES = 0xffffffffn << 32n;

/*
 * The same fields as the hot paths see them: an entry read as two u32 halves (hi = bits 32-63,
 * lo = bits 0-31), so that no BigInt is made per cluster. Derived from the 64-bit masks above, so
 * the two forms cannot disagree.
 */
const U32_MASK = 0xffffffffn;
const hiWord = (mask: bigint): number => Number((mask >> 32n) & U32_MASK);
const loWord = (mask: bigint): number => Number(mask & U32_MASK);
/** COPIED (bit 63) in the high half. */
export const ENTRY_HI_COPIED = hiWord(OFLAG_COPIED);
/** COMPRESSED (bit 62) in the high half. */
export const ENTRY_HI_COMPRESSED = hiWord(OFLAG_COMPRESSED);
/** Host offset bits 32-55 of an L1 or standard L2 entry. */
export const ENTRY_HI_OFFSET_MASK = hiWord(L2E_OFFSET_MASK);
/** Host offset bits 9-31 of an L1 or standard L2 entry. */
export const ENTRY_LO_OFFSET_MASK = loWord(L2E_OFFSET_MASK);
/** The zero flag (bit 0) of a standard L2 entry. */
export const ENTRY_LO_ZERO_FLAG = loWord(OFLAG_ZERO);
/** Reserved bits 56-61 and 1-8 of a standard L2 entry. */
export const L2E_HI_STD_RESERVED_MASK = hiWord(L2E_STD_RESERVED_MASK);
export const L2E_LO_STD_RESERVED_MASK = loWord(L2E_STD_RESERVED_MASK);
/** A compressed entry's descriptor (bits 0-61) in the high half: all but COPIED and COMPRESSED. */
export const COMPRESSED_HI_DESCRIPTOR_MASK = hiWord(~(OFLAG_COPIED | OFLAG_COMPRESSED) & 0xffffffffffffffffn);
/** One half of an extended L2 entry's subcluster bitmap with every subcluster set (zero or allocated). */
export const SUBCLUSTER_BITMAP_HALF_ALL = loWord(L2_BITMAP_ALL_ALLOCATED);
