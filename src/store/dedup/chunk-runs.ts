/**
 * Reading a run of chunks (an object's next MiB, say) into one buffer: the chunks are located
 * together (location hints, then one index getMany for the rest), chunks that lie back to back in
 * one pack are read with one ranged read, and each chunk is checked as it is copied out: a chunk in
 * a version 2 pack against the CRC of every 4 KiB block, one in a version 1 pack against its hash.
 * A GET of an object written by one PUT thus costs one pread per MiB instead of one per 64 KiB
 * chunk, no BLAKE3 on the event loop and no read-cache copy (the run is read once; it is not kept).
 *
 * Anything off the fast path (a chunk not located, a pack gone or short, a block that fails its
 * check) is read again by the repository's own `read`, which follows GC moves, forgets stale hints
 * and reports damage: this file never decides that a chunk is missing or corrupt by itself.
 *
 * A run is read into one buffer, the caller's when it offers one large enough (options.into, reused
 * across runs): each span's stored bytes at their place, then checked and compacted in place, front
 * to back, and the answer is a view of it. Runs that cross packs allocate nothing more.
 */
import type { ChunkStore, ChunkStoreCallOptions } from '../../core/chunk-store.js';
import { StorageError } from '../../core/errors.js';
import type { ChunkHasher } from './chunk-hasher.js';
import type { ChunkIndex } from './chunk-index.js';
import type { ChunkLocation, ChunkLocationHints } from './location-hints.js';
import { chunkHashSeed, copyCheckedBlocks, storedChunkBytes } from './pack-blocks.js';
import { packKey } from './pack-format.js';

export interface ChunkRunSource {
  readonly store: ChunkStore;
  readonly hasher: ChunkHasher;
  readonly hints: ChunkLocationHints;
  readonly index: ChunkIndex;
  /** The repository's checked single-chunk read: the slow path for any chunk the run could not serve. */
  readonly readOne: (hash: string) => Promise<Uint8Array>;
}

interface Located {
  readonly hash: string;
  readonly at: ChunkLocation;
  readonly hinted: boolean;
  /** Where the chunk's bytes go in the run's buffer. */
  readonly outOffsetBytes: number;
}

/** Chunks back to back in one pack, read with one ranged read. */
interface Span {
  readonly chunks: readonly Located[];
  /** The pack's format version; undefined when its header could not be read (the slow path's). */
  readonly version: number | undefined;
  readonly storedLengths: readonly number[];
  /** Where the span's stored bytes are read to in the run's buffer. */
  readonly storedOffsetBytes: number;
}

/** The chunks' bytes one after another in one buffer (options.into when it is large enough), each checked. */
export async function readChunkRun(source: ChunkRunSource, hashes: readonly string[], options: ChunkStoreCallOptions | undefined): Promise<Uint8Array> {
  if (hashes.length === 0) return new Uint8Array(0);
  const located = await locate(source, hashes);
  if (located === undefined) return Buffer.concat(await Promise.all(hashes.map((hash) => source.readOne(hash))));
  // Only the spans' reads below write into the run's buffer: a header read there would overwrite it.
  const shared = withoutInto(options);
  await learnPackVersions(source, located, shared);
  const spans: Span[] = [];
  let storedOffsetBytes = 0;
  for (let first = 0; first < located.length; ) {
    let end = first + 1;
    while (end < located.length && adjacent(source, located[end - 1]!, located[end]!)) end++;
    const chunks = located.slice(first, end);
    const version = source.hints.knownPackVersion(chunks[0]!.at.pack);
    // A span of unknown version is the slow path's; its room is its chunks' bytes.
    const storedLengths = chunks.map((chunk) => (version === undefined ? chunk.at.lengthBytes : storedChunkBytes(version, chunk.at.lengthBytes)));
    spans.push({ chunks, version, storedLengths, storedOffsetBytes });
    storedOffsetBytes += storedLengths.reduce((sum, length) => sum + length, 0);
    first = end;
  }
  // Every span's stored bytes at its place in one buffer (each stored span starts at or past where its chunks' bytes go).
  const into = options?.into;
  const buffer = into !== undefined && into.length >= storedOffsetBytes ? Buffer.from(into.buffer, into.byteOffset, into.length) : Buffer.allocUnsafe(storedOffsetBytes);
  const read = await Promise.all(spans.map((span) => readSpanStored(source, span, buffer, shared).catch(() => false)));
  // Checked and moved down front to back: a span's chunks land below its stored bytes, over earlier spans' stored bytes only.
  const slow: Located[] = [];
  spans.forEach((span, i) => {
    const served = read[i] === true ? compactSpan(source, span, buffer) : 0;
    slow.push(...span.chunks.slice(served));
  });
  // Whatever failed (a pack gone or short, a damaged block or header, a read error), the repository's read meets it again and reports it, or reads a good copy.
  await Promise.all(slow.map(async (chunk) => placeChunk(buffer, chunk, await source.readOne(chunk.hash))));
  const last = located[located.length - 1]!;
  return buffer.subarray(0, last.outOffsetBytes + last.at.lengthBytes);
}

/** Every chunk's location, hinted or from the index (one getMany); undefined when one is unknown (the slow path says NOT_FOUND). */
async function locate(source: ChunkRunSource, hashes: readonly string[]): Promise<Located[] | undefined> {
  const hinted = hashes.map((hash) => source.hints.get(hash));
  const missing = hashes.filter((_, i) => hinted[i] === undefined);
  const found = missing.length === 0 ? [] : await source.index.chunks.getMany(missing);
  const located: Located[] = [];
  let outOffsetBytes = 0;
  let nextFound = 0;
  for (let i = 0; i < hashes.length; i++) {
    const hint = hinted[i];
    const at = hint ?? found[nextFound++]?.record;
    if (at === undefined) return undefined;
    located.push({ hash: hashes[i]!, at, hinted: hint !== undefined, outOffsetBytes });
    outOffsetBytes += at.lengthBytes;
  }
  return located;
}

/** Reads the headers of packs met for the first time, so adjacent chunks in them group into one read (a failure is the slow path's to meet). */
async function learnPackVersions(source: ChunkRunSource, located: readonly Located[], options: ChunkStoreCallOptions | undefined): Promise<void> {
  const unknown = new Set(located.map((chunk) => chunk.at.pack).filter((pack) => source.hints.knownPackVersion(pack) === undefined));
  await Promise.all([...unknown].map((pack) => source.hints.packVersion(source.store, pack, options).catch(() => undefined)));
}

/** True when `next`'s stored bytes start right where `previous`'s end, in the same pack. */
function adjacent(source: ChunkRunSource, previous: Located, next: Located): boolean {
  if (previous.at.pack !== next.at.pack) return false;
  const version = source.hints.knownPackVersion(previous.at.pack);
  return version !== undefined && previous.at.offsetBytes + storedChunkBytes(version, previous.at.lengthBytes) === next.at.offsetBytes;
}

/** One ranged read of a span's stored bytes into `buffer` at the span's stored offset; false when the pack is gone or short. */
async function readSpanStored(source: ChunkRunSource, span: Span, buffer: Buffer, options: ChunkStoreCallOptions | undefined): Promise<boolean> {
  if (span.version === undefined) return false;
  const first = span.chunks[0]!.at;
  const storedBytes = span.storedLengths.reduce((sum, length) => sum + length, 0);
  const target = buffer.subarray(span.storedOffsetBytes, span.storedOffsetBytes + storedBytes);
  const stored = await source.store.getRange(packKey(first.pack), first.offsetBytes, storedBytes, { ...options, into: target });
  if (stored === undefined || stored.length !== storedBytes) return false;
  // A store that does not read into the array offered answered its own.
  if (stored.buffer !== target.buffer || stored.byteOffset !== target.byteOffset) target.set(stored);
  return true;
}

/**
 * Checks a span's chunks front to back and moves each one's bytes down over the checksums to its
 * place in the run, until one fails; the number of chunks served.
 */
function compactSpan(source: ChunkRunSource, span: Span, buffer: Buffer): number {
  let served = 0;
  for (let storedStart = span.storedOffsetBytes; served < span.chunks.length; storedStart += span.storedLengths[served]!, served++) {
    const chunk = span.chunks[served]!;
    const storedEnd = storedStart + span.storedLengths[served]!;
    if (!checkAndCompact(source.hasher, span.version!, chunk.hash, buffer, storedStart, storedEnd, chunk.outOffsetBytes)) break;
    if (!chunk.hinted) source.hints.set(chunk.hash, chunk.at);
  }
  return served;
}

/** Checks one chunk's stored bytes and moves its bytes down to `targetStart`; false when they fail their check. */
function checkAndCompact(hasher: ChunkHasher, version: number, hash: string, buffer: Buffer, storedStart: number, storedEnd: number, targetStart: number): boolean {
  if (version !== 1) return copyCheckedBlocks(chunkHashSeed(hash), buffer.subarray(storedStart, storedEnd), buffer, targetStart) === -1;
  if (hasher.hash(buffer.subarray(storedStart, storedEnd)) !== hash) return false;
  if (targetStart !== storedStart) buffer.copyWithin(targetStart, storedStart, storedEnd);
  return true;
}

/** The options without `into` (a read that must not write into the caller's array). */
function withoutInto(options: ChunkStoreCallOptions | undefined): ChunkStoreCallOptions | undefined {
  if (options?.into === undefined) return options;
  const { into: _unused, ...rest } = options;
  return rest;
}

function placeChunk(out: Buffer, chunk: Located, data: Uint8Array): void {
  if (data.length !== chunk.at.lengthBytes) {
    throw new StorageError('CORRUPT', `chunk ${chunk.hash} read as ${data.length} bytes where its index entry says ${chunk.at.lengthBytes}`);
  }
  out.set(data, chunk.outOffsetBytes);
}
