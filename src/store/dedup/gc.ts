/**
 * Garbage collection of a DedupChunkRepository, in three passes:
 *
 *   1. index: forget chunks whose count has been zero for longer than the grace period (a
 *      transaction that compares, so a chunk referenced again meanwhile stays), and weigh what is
 *      live in each pack;
 *   2. packs: delete packs with nothing live; rewrite packs mostly dead, and small packs together
 *      (live chunks go to new packs, put before the index moves to them; the old pack is deleted
 *      after); packs younger than the grace period are left alone;
 *   3. orphans: delete packs in the store that the index never recorded (written by a call that
 *      crashed or was aborted before its commit), once older than the grace period.
 *
 * Before a pack is deleted, its own index (the pack's footer) is checked against the catalog, so
 * a pack something still points to is never deleted, whatever the first pass saw. The grace period
 * must be longer than any addReferences call in another process takes between putting a pack and
 * committing (calls in this process are known and skipped).
 */
import { StorageError, isStorageError } from '../../core/errors.js';
import { TxnBuilder, type Versioned } from '../../meta/table.js';
import { throwIfAborted } from '../memory-chunk-store.js';
import type { CatalogStore } from '../../core/catalog-store.js';
import type { ChunkStore } from '../../core/chunk-store.js';
import type { ChunkHasher } from './chunk-hasher.js';
import type { ChunkIndex, ChunkRecord, PackRecord } from './chunk-index.js';
import { PACK_KEY_PREFIX, PackBuilder, chunkBytesIn, decodePack, packCreatedAtMs, packKey, type PackEntry } from './pack-format.js';

/** What GC works with: the repository's stores, index and settings. */
export interface GcContext {
  readonly index: ChunkIndex;
  readonly chunkStore: ChunkStore;
  readonly catalog: CatalogStore;
  readonly hasher: ChunkHasher;
  readonly packTargetBytes: number;
  newPackId(): string;
  /** True for a pack a call in this process has put and not yet committed (never an orphan). */
  isUncommitted(packId: string): boolean;
  /** Told of each chunk GC removed from the index (so the read cache forgets it too). */
  forgotten(hash: string): void;
}

export interface GcProgress {
  readonly phase: 'index' | 'packs' | 'orphans';
  /** Records, packs or keys looked at so far in this phase. */
  readonly done: number;
}

export interface GcOptions {
  /** How long a chunk stays after its count reached zero, and how old a pack must be to be touched. */
  readonly graceMs: number;
  /** The time GC measures the grace period against (ms since the epoch). */
  readonly nowMs: number;
  /** A pack whose live bytes fall below this share of its size is rewritten (default 0.5). */
  readonly liveShareMin?: number;
  readonly onProgress?: (progress: GcProgress) => void;
  readonly signal?: AbortSignal;
}

export interface GcReport {
  /** Index entries removed (count zero past the grace period). */
  chunksForgotten: number;
  /** Packs deleted because nothing in them was live. */
  packsDeleted: number;
  /** Packs deleted because the index never recorded them. */
  orphanPacksDeleted: number;
  /** Packs whose live chunks were moved to new packs, then deleted. */
  packsRewritten: number;
  packsWritten: number;
  chunksMoved: number;
  bytesMoved: number;
  /** Pack bytes deleted (dead, orphan and rewritten packs). */
  bytesDeleted: number;
  /** Chunks no one references that are still inside the grace period (a later GC forgets them). */
  chunksWaiting: number;
  /** Their stored bytes. */
  bytesWaiting: number;
  /** When the last of them leaves the grace period (ms since the epoch); null with none waiting. */
  waitingUntilMs: number | null;
  /** Chunks that failed their hash check while being moved and packs that failed to decode or are
   *  missing: left where they are, for a scrub or an operator. */
  damaged: string[];
}

export const LIVE_SHARE_MIN_DEFAULT = 0.5;
/** Packs under this share of the target size are merged when there are two or more of them. */
const SMALL_PACK_SHARE = 0.25;

interface LiveWeight {
  chunks: number;
  bytes: number;
}

export async function collectGarbage(repo: GcContext, options: GcOptions): Promise<GcReport> {
  const { graceMs, nowMs } = options;
  if (!Number.isSafeInteger(graceMs) || graceMs < 0 || !Number.isSafeInteger(nowMs) || nowMs < 0) {
    throw new StorageError('INVALID_ARGUMENT', `gc: graceMs ${graceMs} and nowMs ${nowMs} must be whole numbers of milliseconds`);
  }
  const report: GcReport = {
    chunksForgotten: 0,
    packsDeleted: 0,
    orphanPacksDeleted: 0,
    packsRewritten: 0,
    packsWritten: 0,
    chunksMoved: 0,
    bytesMoved: 0,
    bytesDeleted: 0,
    chunksWaiting: 0,
    bytesWaiting: 0,
    waitingUntilMs: null,
    damaged: [],
  };
  const live = await forgetDeadChunks(repo, options, report);
  await sweepPacks(repo, options, live, report);
  await deleteOrphans(repo, options, report);
  return report;
}

/** Pass 1: removes expired zero-count entries; returns the live weight of each pack. */
async function forgetDeadChunks(repo: GcContext, options: GcOptions, report: GcReport): Promise<Map<string, LiveWeight>> {
  const live = new Map<string, LiveWeight>();
  let done = 0;
  let after: string | undefined;
  do {
    throwIfAborted(options, 'gc');
    const page = await repo.index.chunks.page(after === undefined ? {} : { after });
    const expired: ChunkRecord[] = [];
    for (const { record } of page.records) {
      if (record.refs === 0 && record.zeroSinceMs !== null && record.zeroSinceMs + options.graceMs <= options.nowMs) {
        expired.push(record);
        continue;
      }
      if (record.refs === 0 && record.zeroSinceMs !== null) {
        report.chunksWaiting++;
        report.bytesWaiting += record.lengthBytes;
        report.waitingUntilMs = Math.max(report.waitingUntilMs ?? 0, record.zeroSinceMs + options.graceMs);
      }
      const weight = live.get(record.pack) ?? { chunks: 0, bytes: 0 };
      weight.chunks++;
      weight.bytes += record.lengthBytes;
      live.set(record.pack, weight);
    }
    // Read each expired entry again (a call may have referenced it since the page was read) and
    // delete it only as it was read then.
    for (const record of expired) {
      const current = await repo.index.chunks.get(record.hash);
      if (current === undefined) continue;
      if (current.record.refs === 0 && current.record.zeroSinceMs !== null && current.record.zeroSinceMs + options.graceMs <= options.nowMs) {
        const txn = new TxnBuilder();
        repo.index.chunks.delete(txn, current);
        if (await tryCommit(repo, txn)) {
          repo.forgotten(record.hash);
          report.chunksForgotten++;
          continue;
        }
      }
      // Referenced again (or changed) meanwhile: it stays, and counts as live where it now lies.
      const now = await repo.index.chunks.get(record.hash);
      if (now !== undefined) {
        const weight = live.get(now.record.pack) ?? { chunks: 0, bytes: 0 };
        weight.chunks++;
        weight.bytes += now.record.lengthBytes;
        live.set(now.record.pack, weight);
      }
    }
    done += page.records.length;
    options.onProgress?.({ phase: 'index', done });
    after = page.nextAfter;
  } while (after !== undefined);
  return live;
}

/** Pass 2: deletes dead packs, rewrites mostly dead and small ones. */
async function sweepPacks(repo: GcContext, options: GcOptions, live: Map<string, LiveWeight>, report: GcReport): Promise<void> {
  const liveShareMin = options.liveShareMin ?? LIVE_SHARE_MIN_DEFAULT;
  const smallBytes = repo.packTargetBytes * SMALL_PACK_SHARE;
  const rewrites: Versioned<PackRecord>[] = [];
  const small: Versioned<PackRecord>[] = [];
  let done = 0;
  let after: string | undefined;
  do {
    throwIfAborted(options, 'gc');
    const page = await repo.index.packs.page(after === undefined ? {} : { after });
    for (const { record } of page.records) {
      if (record.createdAtMs + options.graceMs > options.nowMs) continue;
      const weight = live.get(record.id) ?? { chunks: 0, bytes: 0 };
      const target = weight.bytes < record.sizeBytes * liveShareMin ? rewrites : record.sizeBytes < smallBytes ? small : undefined;
      const versioned = target === undefined ? undefined : await repo.index.packs.get(record.id);
      if (versioned !== undefined) target?.push(versioned);
    }
    done += page.records.length;
    options.onProgress?.({ phase: 'packs', done });
    after = page.nextAfter;
  } while (after !== undefined);
  // One small pack alone would only be copied into another small pack.
  if (small.length >= 2) rewrites.push(...small);
  await rewritePacks(repo, options, rewrites, report);
}

interface Move {
  readonly hash: string;
  readonly from: string;
  readonly fromOffsetBytes: number;
  readonly offsetBytes: number;
  readonly lengthBytes: number;
}

/** Moves the live chunks of `packs` to new packs, then deletes the packs whose chunks all moved. */
async function rewritePacks(repo: GcContext, options: GcOptions, packs: readonly Versioned<PackRecord>[], report: GcReport): Promise<void> {
  let builder: PackBuilder | undefined;
  let moves: Move[] = [];
  /** Old packs whose live chunks all went to new packs (none damaged) -> their own index. */
  const emptied = new Map<string, readonly PackEntry[]>();
  /** Old packs -> how many chunks moved out of them. */
  const movedFrom = new Map<string, number>();
  const flush = async () => {
    if (builder === undefined) return;
    const id = repo.newPackId();
    const bytes = builder.finish();
    await repo.chunkStore.put(packKey(id), bytes, options);
    const txn = new TxnBuilder();
    repo.index.packs.put(txn, { id, sizeBytes: bytes.length, chunkCount: builder.chunkCount, createdAtMs: packCreatedAtMs(id)!, version: builder.version });
    await txn.commit(repo.catalog);
    report.packsWritten++;
    for (const move of moves) {
      if (!(await moveChunk(repo, id, move))) continue;
      report.chunksMoved++;
      report.bytesMoved += move.lengthBytes;
      movedFrom.set(move.from, (movedFrom.get(move.from) ?? 0) + 1);
    }
    builder = undefined;
    moves = [];
  };
  for (const pack of packs) {
    throwIfAborted(options, 'gc');
    const bytes = await repo.chunkStore.get(packKey(pack.record.id), { signal: options.signal, readPurpose: 'maintenance' });
    if (bytes === undefined) {
      // GC deletes a pack's record before its object, so a record without an object is damage.
      report.damaged.push(`pack ${pack.record.id}: missing from the chunk store`);
      continue;
    }
    let index;
    try {
      index = decodePack(pack.record.id, bytes);
    } catch (err) {
      if (!isStorageError(err, 'CORRUPT')) throw err;
      report.damaged.push(`pack ${pack.record.id}: ${err.message}`);
      continue;
    }
    let whole = true;
    // The index records of the pack's chunks in batched reads; moveChunk reads each again before
    // it changes it, so one read a little ahead of the move is enough here.
    const records = await repo.index.chunks.getMany(index.entries.map((entry) => entry.hash));
    for (const [i, entry] of index.entries.entries()) {
      const current = records[i];
      if (current === undefined || current.record.pack !== pack.record.id || current.record.offsetBytes !== entry.offsetBytes) continue;
      // decodePack checked the chunk lies inside the pack, so its bytes are there.
      const data = chunkBytesIn(bytes, index.version, entry.offsetBytes, entry.lengthBytes)!;
      if (repo.hasher.hash(data) !== entry.hash) {
        report.damaged.push(`chunk ${entry.hash} in pack ${pack.record.id}`);
        whole = false;
        continue;
      }
      if (builder !== undefined && builder.sizeWith(data.length) > repo.packTargetBytes) await flush();
      builder ??= new PackBuilder(repo.hasher.algorithm, repo.hasher.digestBytes);
      const placed = builder.add(entry.hash, data);
      moves.push({ hash: entry.hash, from: pack.record.id, fromOffsetBytes: entry.offsetBytes, offsetBytes: placed.offsetBytes, lengthBytes: placed.lengthBytes });
    }
    if (whole) emptied.set(pack.record.id, index.entries);
  }
  await flush();
  for (const pack of packs) {
    const entries = emptied.get(pack.record.id);
    // Moves that lost a race left the chunk where it was: check the pack is empty before deleting it.
    if (entries === undefined || !(await nothingPointsInto(repo, pack.record.id, entries))) continue;
    const txn = new TxnBuilder();
    repo.index.packs.delete(txn, pack);
    if (!(await tryCommit(repo, txn))) continue;
    await repo.chunkStore.delete(packKey(pack.record.id), options);
    report.bytesDeleted += pack.record.sizeBytes;
    if ((movedFrom.get(pack.record.id) ?? 0) > 0) report.packsRewritten++;
    else report.packsDeleted++;
  }
}

/** Points the chunk at its new place if it is still where it was read; false when it changed. */
async function moveChunk(repo: GcContext, to: string, move: Move): Promise<boolean> {
  for (let attempt = 0; attempt < MOVE_ATTEMPTS_MAX; attempt++) {
    const current = await repo.index.chunks.get(move.hash);
    if (current === undefined || current.record.pack !== move.from || current.record.offsetBytes !== move.fromOffsetBytes) return false;
    const txn = new TxnBuilder();
    repo.index.chunks.put(txn, { ...current.record, pack: to, offsetBytes: move.offsetBytes }, current);
    if (await tryCommit(repo, txn)) return true;
  }
  return false;
}

const MOVE_ATTEMPTS_MAX = 16;

/** True when no index entry points into the pack (`entries`: the pack's own index). */
async function nothingPointsInto(repo: GcContext, packId: string, entries: readonly PackEntry[]): Promise<boolean> {
  const records = await repo.index.chunks.getMany(entries.map((entry) => entry.hash));
  return records.every((current) => current?.record.pack !== packId);
}

/** Pass 3: deletes packs the index never recorded, once older than the grace period. */
async function deleteOrphans(repo: GcContext, options: GcOptions, report: GcReport): Promise<void> {
  let done = 0;
  let after: string | undefined;
  do {
    throwIfAborted(options, 'gc');
    const page = await repo.chunkStore.list(PACK_KEY_PREFIX, after === undefined ? { signal: options.signal } : { after, signal: options.signal });
    for (const key of page.keys) {
      const id = key.slice(PACK_KEY_PREFIX.length);
      const createdAtMs = packCreatedAtMs(id);
      // Left alone: a key this code did not make, a pack inside the grace period, or one a call here
      // has put and not yet committed.
      if (createdAtMs === undefined || createdAtMs + options.graceMs > options.nowMs || repo.isUncommitted(id)) continue;
      if ((await repo.index.packs.get(id)) !== undefined) continue;
      const sizeBytes = (await repo.chunkStore.get(key, { signal: options.signal, readPurpose: 'maintenance' }))?.length ?? 0;
      await repo.chunkStore.delete(key, options);
      report.orphanPacksDeleted++;
      report.bytesDeleted += sizeBytes;
    }
    done += page.keys.length;
    options.onProgress?.({ phase: 'orphans', done });
    after = page.nextAfter;
  } while (after !== undefined);
}

async function tryCommit(repo: GcContext, txn: TxnBuilder): Promise<boolean> {
  try {
    await txn.commit(repo.catalog);
    return true;
  } catch (err) {
    if (isStorageError(err, 'BUSY')) return false;
    throw err;
  }
}
