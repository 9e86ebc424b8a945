/**
 * The pack: an immutable object of a few MiB in a ChunkStore (`packs/<id>`) holding chunks back to
 * back, with an index of them at its end, so a scrub can rebuild the catalog's chunk index from
 * the packs alone.
 *
 *   header   magic "STRATAPK" (8) | version u16 | hash algorithm u8 | digest bytes u8 | reserved u32
 *   chunks   the chunks, back to back, in the order of the index: version 1, each chunk's bytes;
 *            version 2, each chunk as 4 KiB blocks each followed by its CRC-32 (pack-blocks.ts),
 *            so a partial read checks only the blocks it reads
 *   index    per chunk: digest (digest bytes) | offset u64 | length u32
 *   trailer  index offset u64 | chunk count u32 | CRC-32 u32 | magic "STRATAPK" (8)
 *
 * Integers are little-endian. The CRC-32 covers the header, the index and the trailer's first 12
 * bytes; each chunk is covered by its own hash, which the repository checks on every whole-chunk
 * read (and, in version 2, each 4 KiB block by its CRC, which partial reads check). An index
 * entry's offset is where the chunk's stored bytes start and its length is the chunk's own length
 * (in version 2 the stored bytes are longer: storedChunkBytes). Packs of both versions are read;
 * new packs are version 2.
 * Decoding checks everything: a damaged pack is CORRUPT naming the pack and what is wrong, never
 * a crash and never wrong offsets.
 */
import { StorageError, assert } from '../../core/errors.js';
import type { ChunkHashAlgorithm } from './chunk-hasher.js';
import { chunkFromBlocks, storedChunkBytes, writeChunkBlocks } from './pack-blocks.js';
import { crc32 } from '../../sys/crc.js';
import { randomHex } from '../../sys/random-hex.js';

export const PACK_MAGIC = 'STRATAPK';
/** The version new packs are written in. */
export const PACK_VERSION = 2;
/** The versions this code reads: 1 (no block checksums) and 2. */
export const PACK_VERSIONS_READ: readonly number[] = [1, 2];
/** Where the header keeps the version (u16). */
const VERSION_OFFSET = 8;
const MAGIC_BYTES = 8;
export const PACK_HEADER_BYTES = 16;
export const PACK_TRAILER_BYTES = 24;
/** Per index entry, after the digest: offset u64 + length u32. */
const ENTRY_FIXED_BYTES = 12;
/** The hash algorithm's code in the header (named once here). */
const ALGORITHM_CODES: Readonly<Record<ChunkHashAlgorithm, number>> = { blake3: 1, xxh128: 2 };
/** Packs close at a few MiB; the bound keeps a damaged count or offset from asking for absurd memory. */
export const PACK_SIZE_BYTES_MAX = 1024 * 1024 * 1024;
/** The largest chunk a pack holds (a qcow2 cluster is at most 2 MiB). */
export const CHUNK_SIZE_BYTES_MAX = 16 * 1024 * 1024;
/** The ChunkStore key prefix of packs. */
export const PACK_KEY_PREFIX = 'packs/';

export interface PackEntry {
  /** The chunk's hash as lower-case hex. */
  readonly hash: string;
  readonly offsetBytes: number;
  readonly lengthBytes: number;
}

export interface PackIndex {
  readonly version: number;
  readonly algorithm: ChunkHashAlgorithm;
  readonly entries: readonly PackEntry[];
}

export function packKey(packId: string): string {
  return PACK_KEY_PREFIX + packId;
}

/**
 * Pack ids start with their creation time in hex (12 digits reach the year 10889), then 16 hex
 * digits: a sequence number of this process (6 digits) and randomness (10). Key order is write
 * order within a process, also for packs made in the same millisecond: the tier's read-ahead
 * follows a stream from a pack into the next key (read-ahead.ts). The randomness keeps ids unique
 * across processes and restarts.
 */
const PACK_ID_TIME_DIGITS = 12;
const PACK_ID_SEQUENCE_DIGITS = 6;
const PACK_ID_RANDOM_BYTES = 5;
const PACK_ID_PATTERN = /^([0-9a-f]{12})-[0-9a-f]{16}$/;
let packIdSequence = 0;

/** A new pack id, made at `nowMs`: GC can tell how old a pack the index never recorded is. */
export function newPackId(nowMs: number): string {
  // Wrapping (after 16 million packs) only misorders ids made in the same millisecond as the wrap.
  packIdSequence = (packIdSequence + 1) % 16 ** PACK_ID_SEQUENCE_DIGITS;
  const sequence = packIdSequence.toString(16).padStart(PACK_ID_SEQUENCE_DIGITS, '0');
  return `${nowMs.toString(16).padStart(PACK_ID_TIME_DIGITS, '0')}-${sequence}${randomHex(PACK_ID_RANDOM_BYTES)}`;
}

/** The creation time in a pack id, or undefined for an id this code did not make. */
export function packCreatedAtMs(packId: string): number | undefined {
  const match = PACK_ID_PATTERN.exec(packId);
  return match === null ? undefined : Number.parseInt(match[1]!, 16);
}

const magicBytes = Buffer.from(PACK_MAGIC, 'latin1');
assert(magicBytes.length === MAGIC_BYTES, 'the pack magic is 8 bytes');

/**
 * Memory a hashing worker wrote a call's chunks into as a version 2 pack stores them
 * (chunk-hash-worker.ts), back to back from PACK_HEADER_BYTES, with room after the last for the
 * index and trailer of them all (packLayOutBytes): a pack of exactly those chunks is finished
 * there, its chunks never copied on the caller's thread (PackBuilder.finishInPlace).
 */
export interface LaidOutPack {
  /** The whole memory (from the pack's first byte). */
  readonly memory: Uint8Array;
  /** Where the last chunk's stored bytes end. */
  readonly chunksEndBytes: number;
}

/** A chunk's stored bytes (blocks and CRCs) in a LaidOutPack. */
export interface StoredChunk {
  readonly bytes: Uint8Array;
  readonly laidOut: LaidOutPack;
}

/** The bytes of a version 2 pack of chunks of these lengths (the memory a LaidOutPack needs). */
export function packLayOutBytes(chunkLengthsBytes: readonly number[], digestBytes: number): number {
  let bytes = PACK_HEADER_BYTES + PACK_TRAILER_BYTES;
  for (const length of chunkLengthsBytes) bytes += storedChunkBytes(2, length) + digestBytes + ENTRY_FIXED_BYTES;
  return bytes;
}

/** Builds one pack in memory: add chunks, then finish() for the bytes to store. */
export class PackBuilder {
  private readonly parts: Uint8Array[] = [];
  private readonly partChecksums: (Uint32Array | undefined)[] = [];
  private readonly partsStored: (StoredChunk | undefined)[] = [];
  private readonly entries: PackEntry[] = [];
  private dataBytes = 0;

  constructor(
    readonly algorithm: ChunkHashAlgorithm,
    private readonly digestBytes: number,
    /** Only tests write an older version (to prove old packs still read). */
    readonly version: number = PACK_VERSION,
  ) {
    assert(PACK_VERSIONS_READ.includes(version), `pack version ${version} is one this code writes`);
  }

  get chunkCount(): number {
    return this.entries.length;
  }

  /** The pack's size if it were finished now. */
  get sizeBytes(): number {
    return PACK_HEADER_BYTES + this.dataBytes + this.entries.length * (this.digestBytes + ENTRY_FIXED_BYTES) + PACK_TRAILER_BYTES;
  }

  /** The size the pack would have with one more chunk of `lengthBytes`. */
  sizeWith(lengthBytes: number): number {
    return this.sizeBytes + storedChunkBytes(this.version, lengthBytes) + this.digestBytes + ENTRY_FIXED_BYTES;
  }

  /**
   * Appends a chunk (the builder keeps a reference: do not change `data` until finish()).
   * `blockChecksums`: its 4 KiB blocks' CRCs as writeChunkBlocks computes them, already computed
   * by the repository from these bytes (a hashing worker did), else computed in finish().
   * `stored`: the chunk already laid out as version 2 stores it, by the worker that named it.
   */
  add(hash: string, data: Uint8Array, blockChecksums?: Uint32Array, stored?: StoredChunk): PackEntry {
    assert(hash.length === this.digestBytes * 2, `hash ${hash} has ${this.digestBytes} bytes`);
    assert(data.length <= CHUNK_SIZE_BYTES_MAX, `a chunk of ${data.length} bytes fits a pack`);
    assert(stored === undefined || stored.bytes.length === storedChunkBytes(2, data.length), 'a stored chunk has its blocks and their CRCs');
    const entry = { hash, offsetBytes: PACK_HEADER_BYTES + this.dataBytes, lengthBytes: data.length };
    this.parts.push(data);
    this.partChecksums.push(blockChecksums);
    this.partsStored.push(stored);
    this.entries.push(entry);
    this.dataBytes += storedChunkBytes(this.version, data.length);
    return entry;
  }

  /**
   * The pack's bytes: in a new buffer, or at the start of `into` (at least sizeBytes long; a
   * reused buffer: every byte of the pack is written here, whatever `into` held).
   */
  finish(into?: Uint8Array): Uint8Array {
    const size = this.sizeBytes;
    assert(size <= PACK_SIZE_BYTES_MAX, `a pack of ${size} bytes is within the pack size bound`);
    assert(into === undefined || into.length >= size, `a buffer of ${into?.length} bytes holds a pack of ${size}`);
    // A plain Uint8Array, not a Buffer: Buffer's slice() shares memory, and stores copy with slice().
    const bytes = into === undefined ? new Uint8Array(size) : into.subarray(0, size);
    const pack = Buffer.from(bytes.buffer, bytes.byteOffset, size);
    let offset = PACK_HEADER_BYTES;
    for (const [i, part] of this.parts.entries()) {
      const stored = this.partsStored[i];
      if (this.version === 1) pack.set(part, offset);
      else if (stored !== undefined) pack.set(stored.bytes, offset);
      else writeChunkBlocks(pack, offset, this.entries[i]!.hash, part, this.partChecksums[i]);
      offset += storedChunkBytes(this.version, part.length);
    }
    this.writeFrame(pack, offset);
    return bytes;
  }

  /**
   * The pack finished in the memory its chunks were laid out in (LaidOutPack), without copying
   * them: when it is a version 2 pack of exactly the chunks of one LaidOutPack, in their order,
   * and that memory holds the whole pack. Undefined otherwise (then finish()).
   */
  finishInPlace(): Uint8Array | undefined {
    const first = this.partsStored[0]?.laidOut;
    if (this.version !== 2 || first === undefined) return undefined;
    let offset = PACK_HEADER_BYTES;
    for (const stored of this.partsStored) {
      // Each chunk where the previous ended, in the same memory, from the header's end on.
      if (stored?.laidOut !== first || stored.bytes.buffer !== first.memory.buffer || stored.bytes.byteOffset - first.memory.byteOffset !== offset) return undefined;
      offset += stored.bytes.length;
    }
    // The index goes right after the last chunk: only over room left for it, never over another chunk.
    if (offset !== first.chunksEndBytes || first.memory.length < this.sizeBytes) return undefined;
    const bytes = first.memory.subarray(0, this.sizeBytes);
    this.writeFrame(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length), offset);
    return bytes;
  }

  /** The header, index and trailer around chunks that end at `indexOffset`. */
  private writeFrame(pack: Buffer, indexOffset: number): void {
    assert(pack.length === this.sizeBytes && indexOffset === PACK_HEADER_BYTES + this.dataBytes, 'the frame fits the pack');
    pack.fill(0, 0, PACK_HEADER_BYTES); // the header's reserved bytes
    pack.set(magicBytes, 0);
    pack.writeUInt16LE(this.version, VERSION_OFFSET);
    pack.writeUInt8(ALGORITHM_CODES[this.algorithm], 10);
    pack.writeUInt8(this.digestBytes, 11);
    let offset = indexOffset;
    for (const entry of this.entries) {
      pack.write(entry.hash, offset, 'hex');
      offset += this.digestBytes;
      pack.writeBigUInt64LE(BigInt(entry.offsetBytes), offset);
      pack.writeUInt32LE(entry.lengthBytes, offset + 8);
      offset += ENTRY_FIXED_BYTES;
    }
    pack.writeBigUInt64LE(BigInt(indexOffset), offset);
    pack.writeUInt32LE(this.entries.length, offset + 8);
    pack.writeUInt32LE(packChecksum(pack, indexOffset, offset + 12), offset + 12);
    pack.set(magicBytes, offset + 16);
  }
}

/** CRC-32 of the header, the index and the trailer's first 12 bytes (ending at `checksumOffset`). */
function packChecksum(pack: Uint8Array, indexOffset: number, checksumOffset: number): number {
  return crc32(pack.subarray(indexOffset, checksumOffset), crc32(pack.subarray(0, PACK_HEADER_BYTES)));
}

/** Reads and checks a whole pack's header, index and trailer; CORRUPT (naming the pack) when anything is off. */
export function decodePack(packId: string, pack: Uint8Array): PackIndex {
  const damaged = (what: string) => new StorageError('CORRUPT', `pack ${packId} is damaged: ${what}`);
  if (pack.length < PACK_HEADER_BYTES + PACK_TRAILER_BYTES) throw damaged(`${pack.length} bytes is shorter than a header and a trailer`);
  if (pack.length > PACK_SIZE_BYTES_MAX) throw damaged(`${pack.length} bytes is over the ${PACK_SIZE_BYTES_MAX}-byte bound`);
  const view = Buffer.from(pack.buffer, pack.byteOffset, pack.length);
  if (!view.subarray(0, MAGIC_BYTES).equals(magicBytes)) throw damaged('the header has no pack magic');
  const trailer = pack.length - PACK_TRAILER_BYTES;
  if (!view.subarray(trailer + 16).equals(magicBytes)) throw damaged('the trailer has no pack magic (cut short?)');
  const indexOffsetBig = view.readBigUInt64LE(trailer);
  const count = view.readUInt32LE(trailer + 8);
  const storedChecksum = view.readUInt32LE(trailer + 12);
  const version = view.readUInt16LE(VERSION_OFFSET);
  const algorithmCode = view.readUInt8(10);
  const digestBytes = view.readUInt8(11);
  if (indexOffsetBig < BigInt(PACK_HEADER_BYTES) || indexOffsetBig > BigInt(trailer)) {
    throw damaged(`index offset ${indexOffsetBig} is outside ${PACK_HEADER_BYTES}..${trailer}`);
  }
  const indexOffset = Number(indexOffsetBig);
  if (packChecksum(pack, indexOffset, trailer + 12) !== storedChecksum) throw damaged('the header, index or trailer fails its checksum');
  // The checksum holds, so what follows is what a writer wrote: a mismatch is a bug or an unknown format.
  if (!PACK_VERSIONS_READ.includes(version)) {
    throw new StorageError('UNSUPPORTED', `pack ${packId} has format version ${version}; this Strata reads versions ${PACK_VERSIONS_READ.join(' and ')}: upgrade Strata`);
  }
  const algorithm = (Object.keys(ALGORITHM_CODES) as ChunkHashAlgorithm[]).find((name) => ALGORITHM_CODES[name] === algorithmCode);
  if (algorithm === undefined) throw damaged(`unknown hash algorithm code ${algorithmCode}`);
  if (digestBytes === 0) throw damaged('the digest length is 0');
  const entryBytes = digestBytes + ENTRY_FIXED_BYTES;
  if (count * entryBytes !== trailer - indexOffset) {
    throw damaged(`${count} index entries of ${entryBytes} bytes do not fill the ${trailer - indexOffset}-byte index`);
  }
  const entries: PackEntry[] = [];
  let expectedOffset = PACK_HEADER_BYTES;
  for (let i = 0, at = indexOffset; i < count; i++, at += entryBytes) {
    const hash = view.toString('hex', at, at + digestBytes);
    const offsetBig = view.readBigUInt64LE(at + digestBytes);
    const lengthBytes = view.readUInt32LE(at + digestBytes + 8);
    // Chunks lie back to back in index order, so every entry starts where the previous one ended.
    if (offsetBig !== BigInt(expectedOffset)) throw damaged(`chunk ${i} (${hash}) starts at ${offsetBig}, not at ${expectedOffset}`);
    const storedBytes = storedChunkBytes(version, lengthBytes);
    if (lengthBytes > CHUNK_SIZE_BYTES_MAX || expectedOffset + storedBytes > indexOffset) {
      throw damaged(`chunk ${i} (${hash}) of ${lengthBytes} bytes at ${expectedOffset} runs past the chunks' end at ${indexOffset}`);
    }
    entries.push({ hash, offsetBytes: expectedOffset, lengthBytes });
    expectedOffset += storedBytes;
  }
  if (expectedOffset !== indexOffset) throw damaged(`the chunks end at ${expectedOffset}, but the index starts at ${indexOffset}`);
  return { version, algorithm, entries };
}

/**
 * The version a pack's header names, read without the rest of the pack (the header is not checked
 * on its own: a damaged version only makes the chunk fail its hash or block checks, never read
 * wrong); CORRUPT when the bytes are no pack header, UNSUPPORTED for a version this code lacks.
 */
export function packHeaderVersion(packId: string, header: Uint8Array): number {
  const view = Buffer.from(header.buffer, header.byteOffset, header.length);
  if (header.length < PACK_HEADER_BYTES || !view.subarray(0, MAGIC_BYTES).equals(magicBytes)) {
    throw new StorageError('CORRUPT', `pack ${packId} is damaged: the header has no pack magic`);
  }
  const version = view.readUInt16LE(VERSION_OFFSET);
  if (!PACK_VERSIONS_READ.includes(version)) {
    throw new StorageError('UNSUPPORTED', `pack ${packId} has format version ${version}; this Strata reads versions ${PACK_VERSIONS_READ.join(' and ')}: upgrade Strata`);
  }
  return version;
}

/**
 * A chunk's bytes out of a whole pack read into memory (GC, scrub), not checked: the stored bytes
 * at `offsetBytes` as they are in version 1, the blocks without their checksums in version 2;
 * undefined when the pack is too short to hold them.
 */
export function chunkBytesIn(pack: Uint8Array, version: number, offsetBytes: number, lengthBytes: number): Uint8Array | undefined {
  const end = offsetBytes + storedChunkBytes(version, lengthBytes);
  if (end > pack.length) return undefined;
  const stored = pack.subarray(offsetBytes, end);
  return version === 1 ? stored : chunkFromBlocks(stored, lengthBytes);
}
