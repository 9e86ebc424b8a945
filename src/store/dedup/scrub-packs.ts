/**
 * The pack pass of a scrub (scrub.ts): reads every pack in the chunk store once, whole, and checks
 *   - the pack decodes (header, footer index, CRC-32: pack-format.ts);
 *   - every chunk the index points into it hashes to its name at the offset and length the index
 *     gives (so the index entry "points at what holds that chunk");
 *   - in a version 2 pack, every 4 KiB block of those chunks matches its CRC (pack-blocks.ts):
 *     a chunk whose bytes hash right but whose block checksums do not would fail partial reads, so
 *     its pack is reported damaged and a repair rewrites its good chunks to a new pack;
 *   - every other chunk its footer lists hashes to its name: those are spare copies (left by an
 *     interrupted call or by a GC rewrite), the material a repair rebuilds index entries from;
 *   - every pack the index records is in the store, and every pack the store has is recorded.
 * It decides about packs and copies only; what to do about each chunk is scrub.ts's.
 */
import { isStorageError } from '../../core/errors.js';
import { TxnBuilder, type Versioned } from '../../meta/table.js';
import { throwIfAborted } from '../memory-chunk-store.js';
import type { ChunkRecord, PackRecord } from './chunk-index.js';
import type { GcContext } from './gc.js';
import { firstBadBlock, storedChunkBytes } from './pack-blocks.js';
import { PACK_KEY_PREFIX, PACK_VERSIONS_READ, PackBuilder, chunkBytesIn, decodePack, packCreatedAtMs, packHeaderVersion, packKey, type PackEntry } from './pack-format.js';
import type { ScrubProblem, ScrubProgress, ScrubReport } from './scrub-report.js';

/** What the pack pass needs of the repository (the same internals GC gets). */
export type ScrubContext = Pick<GcContext, 'index' | 'chunkStore' | 'hasher' | 'isUncommitted' | 'catalog' | 'newPackId'>;

/** The index as the scrub read it first. */
export interface IndexSnapshot {
  readonly chunks: Map<string, Versioned<ChunkRecord>>;
  /** Pack id -> the hashes whose entries point into it. */
  readonly byPack: Map<string, string[]>;
  readonly packs: Map<string, Versioned<PackRecord>>;
}

/** A good copy of a chunk (its bytes hash to its name) at a place the index does not point at. */
export interface SpareCopy {
  readonly pack: string;
  readonly offsetBytes: number;
  readonly lengthBytes: number;
}

/** A pack in the store that no pack record names (as the scrub read the records). */
export interface UnrecordedPack {
  readonly sizeBytes: number;
  /** Chunks its footer lists (0 when the footer is damaged). */
  readonly chunkCount: number;
}

export interface PackPassResult {
  /** Indexed chunks whose copy is not good: hash -> why. */
  readonly bad: Map<string, string>;
  readonly spares: Map<string, SpareCopy>;
  readonly unrecorded: Map<string, UnrecordedPack>;
  /** Packs the index records that the store does not have. */
  readonly missing: Set<string>;
  /** Packs whose header, footer or checksum is damaged: id -> the decoder's message. */
  readonly damaged: Map<string, string>;
}

export interface PackPassOptions {
  readonly signal?: AbortSignal;
  readonly onProgress?: (progress: ScrubProgress) => void;
  readonly problem: (problem: ScrubProblem) => void;
}

export async function scrubPacks(ctx: ScrubContext, snapshot: IndexSnapshot, report: ScrubReport, options: PackPassOptions): Promise<PackPassResult> {
  const result: PackPassResult = { bad: new Map(), spares: new Map(), unrecorded: new Map(), missing: new Set(), damaged: new Map() };
  const seen = new Set<string>();
  let done = 0;
  let after: string | undefined;
  do {
    throwIfAborted(options, 'scrub');
    const page = await ctx.chunkStore.list(PACK_KEY_PREFIX, after === undefined ? { signal: options.signal } : { after, signal: options.signal });
    for (const key of page.keys) {
      throwIfAborted(options, 'scrub');
      const id = key.slice(PACK_KEY_PREFIX.length);
      // A pack a call in this process has put and not committed yet is neither checked nor an orphan.
      if (!snapshot.packs.has(id) && ctx.isUncommitted(id)) continue;
      const bytes = await ctx.chunkStore.get(key, { signal: options.signal, readPurpose: 'maintenance' });
      if (bytes === undefined) continue; // deleted since the listing (a GC elsewhere)
      seen.add(id);
      report.packs++;
      report.packBytes += bytes.length;
      const footer = checkPack(ctx, id, bytes, snapshot, result, options);
      if (!snapshot.packs.has(id)) result.unrecorded.set(id, { sizeBytes: bytes.length, chunkCount: footer?.length ?? 0 });
      options.onProgress?.({ phase: 'packs', done: ++done, doneBytes: report.packBytes });
    }
    after = page.nextAfter;
  } while (after !== undefined);
  // Packs the index knows (by record or by an entry pointing into them) that the listing lacked.
  const known = new Set([...snapshot.packs.keys(), ...snapshot.byPack.keys()]);
  for (const id of known) {
    if (seen.has(id)) continue;
    throwIfAborted(options, 'scrub');
    // Read again: a pack put after the listing, or deleted with its record by a GC elsewhere, is not missing.
    if ((await ctx.chunkStore.getRange(packKey(id), 0, 1, { signal: options.signal, readPurpose: 'maintenance' })) !== undefined) continue;
    if (snapshot.packs.has(id) && (await ctx.index.packs.get(id)) === undefined) continue;
    result.missing.add(id);
    for (const hash of snapshot.byPack.get(id) ?? []) result.bad.set(hash, `its pack ${id} is missing from the chunk store`);
  }
  return result;
}

/** Checks one pack's bytes; returns its footer entries (undefined when the footer is damaged). */
function checkPack(
  ctx: ScrubContext,
  id: string,
  bytes: Uint8Array,
  snapshot: IndexSnapshot,
  result: PackPassResult,
  options: PackPassOptions,
): readonly PackEntry[] | undefined {
  let footer: readonly PackEntry[] | undefined;
  let versions = packVersions(id, bytes);
  try {
    const decoded = decodePack(id, bytes);
    footer = decoded.entries;
    versions = [decoded.version];
  } catch (err) {
    if (!isStorageError(err, 'CORRUPT') && !isStorageError(err, 'UNSUPPORTED')) throw err;
    result.damaged.set(id, err.message);
  }
  // The copies the index points at: hash the bytes where the index says they are.
  const verified = new Set<string>();
  for (const hash of snapshot.byPack.get(id) ?? []) {
    const { offsetBytes, lengthBytes } = snapshot.chunks.get(hash)!.record;
    const copy = checkCopy(ctx, bytes, versions, hash, offsetBytes, lengthBytes);
    if (copy === 'short') {
      result.bad.set(hash, `pack ${id} is ${bytes.length} bytes, shorter than the chunk's ${lengthBytes} bytes at ${offsetBytes}`);
    } else if (copy === 'hash') {
      result.bad.set(hash, `its ${lengthBytes} bytes at ${offsetBytes} in pack ${id} do not match its hash (bit rot)`);
    } else {
      verified.add(`${hash}@${offsetBytes}`);
      if (copy !== 'good' && !result.damaged.has(id)) {
        result.damaged.set(id, `pack ${id} is damaged: chunk ${hash} matches its hash but its block ${copy} fails its checksum (partial reads of it fail)`);
      }
    }
  }
  // Every other copy the footer lists: a spare when good, harmless damage when not.
  for (const entry of footer ?? []) {
    const indexed = snapshot.chunks.get(entry.hash)?.record;
    if (indexed?.pack === id && indexed.offsetBytes === entry.offsetBytes) continue; // checked above
    if (verified.has(`${entry.hash}@${entry.offsetBytes}`)) continue;
    if (checkCopy(ctx, bytes, versions, entry.hash, entry.offsetBytes, entry.lengthBytes) === 'good') {
      if (!result.spares.has(entry.hash)) result.spares.set(entry.hash, { pack: id, offsetBytes: entry.offsetBytes, lengthBytes: entry.lengthBytes });
    } else {
      options.problem({
        kind: 'spare-copy-corrupt',
        subject: entry.hash,
        message: `an unused copy of chunk ${entry.hash} in pack ${id} (${entry.lengthBytes} bytes at ${entry.offsetBytes}) fails its hash or block checksums; nothing points at it, and GC drops it with its pack`,
        repaired: false,
      });
    }
  }
  return footer;
}

/** The versions a pack's chunks may be laid out in: its header's, or every one this code reads when the header is damaged. */
function packVersions(id: string, bytes: Uint8Array): readonly number[] {
  try {
    return [packHeaderVersion(id, bytes)];
  } catch {
    return PACK_VERSIONS_READ;
  }
}

/**
 * One copy of a chunk in a pack read whole: 'good'; 'short' (the pack ends first); 'hash' (its
 * bytes do not hash to its name in any of `versions`' layouts); or, for bytes that hash right in
 * version 2, the index of the first block that fails its checksum.
 */
function checkCopy(ctx: ScrubContext, pack: Uint8Array, versions: readonly number[], hash: string, offsetBytes: number, lengthBytes: number): 'good' | 'short' | 'hash' | number {
  let short = true;
  for (const version of versions) {
    const data = chunkBytesIn(pack, version, offsetBytes, lengthBytes);
    if (data === undefined) continue;
    short = false;
    if (ctx.hasher.hash(data) !== hash) continue;
    if (version === 1) return 'good';
    const bad = firstBadBlock(hash, 0, pack.subarray(offsetBytes, offsetBytes + storedChunkBytes(version, lengthBytes)));
    return bad === -1 ? 'good' : bad;
  }
  return short ? 'short' : 'hash';
}

/** The chunk's bytes in a pack read whole when they hash to its name (any layout `versions` allows), else undefined. */
function goodBytes(ctx: ScrubContext, pack: Uint8Array, versions: readonly number[], hash: string, offsetBytes: number, lengthBytes: number): Uint8Array | undefined {
  for (const version of versions) {
    const data = chunkBytesIn(pack, version, offsetBytes, lengthBytes);
    if (data !== undefined && ctx.hasher.hash(data) === hash) return data;
  }
  return undefined;
}

/**
 * Empties a pack whose footer is damaged (GC cannot rewrite or delete it, having no footer to
 * read) or whose block checksums fail where the chunks' bytes are good: the good chunks the index points into it are copied to a new pack and the index moved to
 * them, each move comparing the entry as read; then, if nothing points into it any more, its
 * record and object are deleted. Chunks that fail their hash stay (chunk-lost, or moved to a spare
 * copy by the caller first). Returns how many chunks moved and whether the pack is gone.
 */
export async function rescueDamagedPack(
  ctx: ScrubContext,
  id: string,
  hashes: readonly string[],
  signal: AbortSignal | undefined,
): Promise<{ moved: number; deleted: boolean }> {
  const bytes = await ctx.chunkStore.get(packKey(id), { signal, readPurpose: 'maintenance' });
  if (bytes === undefined) return { moved: 0, deleted: false };
  const builder = new PackBuilder(ctx.hasher.algorithm, ctx.hasher.digestBytes);
  const moves: { entry: Versioned<ChunkRecord>; placed: PackEntry }[] = [];
  const versions = packVersions(id, bytes);
  for (const hash of hashes) {
    const entry = await ctx.index.chunks.get(hash);
    if (entry === undefined || entry.record.pack !== id) continue;
    const data = goodBytes(ctx, bytes, versions, hash, entry.record.offsetBytes, entry.record.lengthBytes);
    if (data === undefined) continue;
    moves.push({ entry, placed: builder.add(hash, data) });
  }
  let moved = 0;
  if (moves.length > 0) {
    const newId = ctx.newPackId();
    const pack = builder.finish();
    await ctx.chunkStore.put(packKey(newId), pack, { signal });
    const recordTxn = new TxnBuilder();
    ctx.index.packs.put(recordTxn, { id: newId, sizeBytes: pack.length, chunkCount: builder.chunkCount, createdAtMs: packCreatedAtMs(newId)!, version: builder.version });
    await recordTxn.commit(ctx.catalog);
    for (const { entry, placed } of moves) {
      const txn = new TxnBuilder();
      ctx.index.chunks.put(txn, { ...entry.record, pack: newId, offsetBytes: placed.offsetBytes }, entry);
      if ((await ctx.catalog.txn(txn.compares, txn.ops)).succeeded) moved++;
    }
  }
  for (const hash of hashes) if ((await ctx.index.chunks.get(hash))?.record.pack === id) return { moved, deleted: false };
  const record = await ctx.index.packs.get(id);
  if (record !== undefined) {
    const txn = new TxnBuilder();
    ctx.index.packs.delete(txn, record);
    if (!(await ctx.catalog.txn(txn.compares, txn.ops)).succeeded) return { moved, deleted: false };
  }
  await ctx.chunkStore.delete(packKey(id), { signal });
  return { moved, deleted: true };
}
