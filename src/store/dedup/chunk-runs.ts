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
 */
import type { ChunkStore, ChunkStoreCallOptions } from '../../core/chunk-store.js';
import { StorageError } from '../../core/errors.js';
import type { ChunkHasher } from './chunk-hasher.js';
import type { ChunkIndex } from './chunk-index.js';
import type { ChunkLocation, ChunkLocationHints } from './location-hints.js';
import { compactCheckedBlocks, storedChunkBytes } from './pack-blocks.js';
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

/** The chunks' bytes one after another in one buffer (the caller's), each checked. */
export async function readChunkRun(source: ChunkRunSource, hashes: readonly string[], options: ChunkStoreCallOptions | undefined): Promise<Uint8Array> {
  if (hashes.length === 0) return new Uint8Array(0);
  const located = await locate(source, hashes);
  if (located === undefined) return Buffer.concat(await Promise.all(hashes.map((hash) => source.readOne(hash))));
  await learnPackVersions(source, located, options);
  const spans: Located[][] = [];
  for (let first = 0; first < located.length; ) {
    let end = first + 1;
    while (end < located.length && adjacent(source, located[end - 1]!, located[end]!)) end++;
    spans.push(located.slice(first, end));
    first = end;
  }
  const read = await Promise.all(spans.map((span) => readSpanFast(source, span, options).catch(() => undefined)));
  const only = read[0];
  // The common case (an object written by one PUT): one span, every chunk served, compacted in place.
  if (spans.length === 1 && only !== undefined && only.served === located.length) return only.data;
  const last = located[located.length - 1]!;
  const out = Buffer.allocUnsafe(last.outOffsetBytes + last.at.lengthBytes);
  const slow: Located[] = [];
  spans.forEach((span, i) => {
    const served = read[i]?.served ?? 0;
    if (served > 0) out.set(read[i]!.data, span[0]!.outOffsetBytes);
    slow.push(...span.slice(served));
  });
  // Whatever failed (a pack gone or short, a damaged block or header, a read error), the repository's read meets it again and reports it, or reads a good copy.
  await Promise.all(slow.map(async (chunk) => placeChunk(out, chunk, await source.readOne(chunk.hash))));
  return out;
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

/**
 * One ranged read for chunks back to back in one pack; each chunk is checked and moved down over
 * the checksums in the buffer read, front to back, until one fails. `data`: the bytes of the first
 * `served` chunks, back to back.
 */
async function readSpanFast(source: ChunkRunSource, span: readonly Located[], options: ChunkStoreCallOptions | undefined): Promise<{ data: Uint8Array; served: number } | undefined> {
  const first = span[0]!.at;
  const version = source.hints.knownPackVersion(first.pack);
  if (version === undefined) return undefined;
  const storedLengths = span.map((chunk) => storedChunkBytes(version, chunk.at.lengthBytes));
  const storedBytes = storedLengths.reduce((sum, length) => sum + length, 0);
  const stored = await source.store.getRange(packKey(first.pack), first.offsetBytes, storedBytes, options);
  if (stored === undefined || stored.length !== storedBytes) return undefined;
  const buffer = Buffer.from(stored.buffer, stored.byteOffset, stored.length);
  let served = 0;
  let dataBytes = 0;
  for (let storedStart = 0; served < span.length; storedStart += storedLengths[served]!, served++) {
    const chunk = span[served]!;
    const storedEnd = storedStart + storedLengths[served]!;
    if (!checkAndCompact(source.hasher, version, chunk.hash, buffer, storedStart, storedEnd, dataBytes)) break;
    if (!chunk.hinted) source.hints.set(chunk.hash, chunk.at);
    dataBytes += chunk.at.lengthBytes;
  }
  return { data: buffer.subarray(0, dataBytes), served };
}

/** Checks one chunk's stored bytes and moves its bytes down to `targetStart`; false when they fail their check. */
function checkAndCompact(hasher: ChunkHasher, version: number, hash: string, buffer: Buffer, storedStart: number, storedEnd: number, targetStart: number): boolean {
  if (version !== 1) return compactCheckedBlocks(hash, buffer, storedStart, storedEnd, targetStart);
  if (hasher.hash(buffer.subarray(storedStart, storedEnd)) !== hash) return false;
  if (targetStart !== storedStart) buffer.copyWithin(targetStart, storedStart, storedEnd);
  return true;
}

function placeChunk(out: Buffer, chunk: Located, data: Uint8Array): void {
  if (data.length !== chunk.at.lengthBytes) {
    throw new StorageError('CORRUPT', `chunk ${chunk.hash} read as ${data.length} bytes where its index entry says ${chunk.at.lengthBytes}`);
  }
  out.set(data, chunk.outOffsetBytes);
}
