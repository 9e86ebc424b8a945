/**
 * Scrub of a dedup pool: checks the chunk index, the packs, the chunks' hashes and the reference
 * counts against the holders of references (sealed layers' manifests; later S3 objects), reports
 * what is wrong and, asked to, repairs what it can. DedupChunkRepository.scrub() runs it.
 *
 * Passes, in this order (the order is part of the concurrency argument below):
 *   1. index      every `chunk` and `pack` record, with the mod revision it was read at;
 *   2. references every holder from `options.references`, counting the references per chunk;
 *   3. packs      every pack read whole and checked (scrub-packs.ts);
 *   4. repair     each finding re-read, then reported and (with `repair`) fixed, one transaction
 *                 per chunk that compares the revision pass 1 read.
 * Repairs: an index entry rebuilt from a good copy a pack's footer lists (chunk-unindexed), an
 * entry pointed at a good copy instead of a corrupt or missing one (chunk-corrupt), a pack record
 * added for a pack the index points into (pack-unrecorded) or takes a copy from, a record of a
 * missing pack nothing points at any more deleted (pack-missing), a count raised to what holders
 * hold (refs-low) and a leaked count lowered to it (refs-leaked, confirmed as below). A chunk with
 * no good copy anywhere is chunk-lost, naming the holders that need it: only a backup helps.
 *
 * Running beside a daemon that adds and drops references. The daemon keeps one rule: a holder's
 * references are added before the holder appears (seal, copy) and dropped after it is gone
 * (remove), so at every moment a count is at least what the existing holders hold, and is more only
 * while an operation is between its two steps, or after a crash between them (a leak).
 *   - Raising (refs-low) is decided on a count that did not change from before pass 2 began until
 *     the fix commits (the transaction compares the mod revision read in pass 1). With the count
 *     still, no reference to that chunk was added or dropped while the holders were read, so every
 *     holder seen had its references in that count: seeing more is damage, not a race. A count
 *     that changed is left for the next scrub (changedDuringScrub).
 *   - Lowering (refs-leaked) cannot be decided by one scrub: a seal may have added its references
 *     and not yet stored its manifest (for a large layer, for minutes), a remove may have deleted
 *     its manifest and not yet dropped. So a first scrub only marks the excess as suspected (in
 *     memory: the count's mod revision and when it was seen), and a later scrub lowers it when the
 *     count has not changed since (same mod revision), at least `leakConfirmMs` have passed, and
 *     the holders still hold less. `leakConfirmMs` must exceed the longest seal or remove; a lower
 *     count left by a seal slower than that is seen by the next scrub as refs-low and raised, and
 *     a chunk at zero waits out GC's grace period first, so scrubbing more often than GC's grace
 *     period heals even that. Nothing is lowered while any holder was unreadable.
 *   - In this process GC and scrub exclude each other (the repository's maintenance flag); a GC in
 *     another process may move a chunk meanwhile, which the revision compares catch.
 *
 * Memory: pass 1 keeps one record per chunk and pass 2 one count per chunk (~200 bytes each: 1 GiB
 * for 5 million chunks, 300 GiB of unique data at 64 KiB); the packs are read one at a time.
 */
import { StorageError, isStorageError } from '../../core/errors.js';
import { TxnBuilder, type Versioned } from '../../meta/table.js';
import { throwIfAborted } from '../memory-chunk-store.js';
import { checkChunkHash } from './chunk-hasher.js';
import type { ChunkRecord } from './chunk-index.js';
import { packCreatedAtMs } from './pack-format.js';
import type { ChunkHash } from './repository.js';
import { rescueDamagedPack, scrubPacks, type IndexSnapshot, type PackPassResult, type ScrubContext, type SpareCopy } from './scrub-packs.js';
import {
  SCRUB_PROBLEMS_MAX_DEFAULT,
  emptyScrubReport,
  recordProblem,
  type ScrubProblem,
  type ScrubProblemKind,
  type ScrubProgress,
  type ScrubReport,
} from './scrub-report.js';

/** Something that holds chunk references: a sealed layer's manifest (later, an S3 object). */
export interface ReferenceHolder {
  /** Names it in reports: "layer p/0001.qcow2". */
  readonly name: string;
  /** One hash per reference it holds (a chunk used twice appears twice). */
  readonly hashes: Iterable<ChunkHash>;
}

/** A holder that could not be read (a damaged manifest): its references are unknown. */
export interface UnreadableHolder {
  readonly name: string;
  /** Why (the decoder's message). */
  readonly unreadable: string;
}

/**
 * Every holder of the pool's references, read afresh on each call (a scrub calls it once, and
 * again to name the holders of lost chunks). Sealed layers: sealedLayerReferences() in
 * src/store/chunked/manifest-references.ts; more sources join with concatReferenceSources().
 */
export type ReferenceSource = (signal?: AbortSignal) => AsyncIterable<ReferenceHolder | UnreadableHolder>;

/** One source made of several, read one after the other. */
export function concatReferenceSources(...sources: readonly ReferenceSource[]): ReferenceSource {
  return async function* (signal?: AbortSignal) {
    for (const source of sources) yield* source(signal);
  };
}

export interface ScrubOptions {
  /** Every holder of the pool's references. */
  readonly references: ReferenceSource;
  /** Fix what can be fixed (default: only report). */
  readonly repair?: boolean;
  /** The time now (ms since the epoch): when leaks were first seen, and zero-count stamps. */
  readonly nowMs: number;
  /** How long a suspected leak must stay unchanged before a repairing scrub lowers it (default 1 h). */
  readonly leakConfirmMs?: number;
  /** The most problems listed in the report (default 100; all are counted). */
  readonly problemsMax?: number;
  readonly onProgress?: (progress: ScrubProgress) => void;
  /** Aborts the scrub (CANCELLED); repairs already committed stay, each one whole. */
  readonly signal?: AbortSignal;
}

export const LEAK_CONFIRM_MS_DEFAULT = 60 * 60 * 1000;
/** "1 reference", "2 references". */
function references(count: number): string {
  return count === 1 ? '1 reference' : `${count} references`;
}

/** Holders named per lost chunk. */
const LOST_HOLDERS_MAX = 8;

/** A count seen above what holders hold: its revision then, and when it was first seen so. */
export interface LeakSuspect {
  readonly modRevision: number;
  readonly sinceMs: number;
}

export interface ScrubPoolContext extends ScrubContext {
  /** Suspected leaks, kept by the repository from one scrub to the next. */
  readonly leakSuspects: Map<string, LeakSuspect>;
}

/** A finding not yet reported: what is wrong and what the repair does about it. */
interface Finding {
  readonly kind: ScrubProblemKind;
  readonly subject: string;
  readonly message: string;
  /** What a repair does, said so that it reads after "repaired:" and after "a scrub with repair". */
  readonly action: string;
}

/** The change a repair makes to one chunk's index entry. */
interface ChunkFix {
  /** The entry as pass 1 read it (undefined: there was none, the fix creates it). */
  readonly entry: Versioned<ChunkRecord> | undefined;
  location?: SpareCopy;
  refs?: number;
  readonly findings: Finding[];
}

export async function scrubPool(ctx: ScrubPoolContext, options: ScrubOptions): Promise<ScrubReport> {
  const { nowMs } = options;
  const leakConfirmMs = options.leakConfirmMs ?? LEAK_CONFIRM_MS_DEFAULT;
  const problemsMax = options.problemsMax ?? SCRUB_PROBLEMS_MAX_DEFAULT;
  if (!Number.isSafeInteger(nowMs) || nowMs < 0 || !Number.isSafeInteger(leakConfirmMs) || leakConfirmMs < 0) {
    throw new StorageError('INVALID_ARGUMENT', `scrub: nowMs ${nowMs} and leakConfirmMs ${leakConfirmMs} must be whole numbers of milliseconds`);
  }
  if (!Number.isSafeInteger(problemsMax) || problemsMax < 0) {
    throw new StorageError('INVALID_ARGUMENT', `scrub: problemsMax ${problemsMax} must be a whole number`);
  }
  const repair = options.repair ?? false;
  const report = emptyScrubReport(repair);
  const problem = (p: ScrubProblem) => recordProblem(report, problemsMax, p);

  const snapshot = await readIndex(ctx, options, report);
  const { expected, complete } = await countReferences(ctx, options, report, problem);
  const packs = await scrubPacks(ctx, snapshot, report, { signal: options.signal, onProgress: options.onProgress, problem });

  const fixes = new Map<string, ChunkFix>();
  const fixOf = (hash: string): ChunkFix => {
    let fix = fixes.get(hash);
    if (fix === undefined) fixes.set(hash, (fix = { entry: snapshot.chunks.get(hash), findings: [] }));
    return fix;
  };
  /** Chunks with no good copy: hash -> why. */
  const lost = new Map<string, string>();

  for (const [hash, why] of packs.bad) {
    const spare = packs.spares.get(hash);
    if (spare === undefined) {
      lost.set(hash, `chunk ${hash}: ${why}, and no pack holds a good copy`);
      continue;
    }
    const fix = fixOf(hash);
    fix.location = spare;
    fix.findings.push({ kind: 'chunk-corrupt', subject: hash, message: `chunk ${hash}: ${why}`, action: `the index points at the good copy in pack ${spare.pack}` });
  }
  for (const [hash, held] of expected) {
    const entry = snapshot.chunks.get(hash);
    if (entry === undefined) {
      const spare = packs.spares.get(hash);
      if (spare === undefined) {
        lost.set(hash, `chunk ${hash}: holders hold ${references(held)} to it, but the index has no entry and no pack holds a good copy`);
        continue;
      }
      const fix = fixOf(hash);
      fix.location = spare;
      fix.refs = held;
      const message = `chunk ${hash}: holders hold ${references(held)} to it, but the index has no entry`;
      fix.findings.push({ kind: 'chunk-unindexed', subject: hash, message, action: `an entry with ${references(held)} is rebuilt from pack ${spare.pack}'s footer` });
    } else if (entry.record.refs < held) {
      const fix = fixOf(hash);
      fix.refs = held;
      const message = `chunk ${hash} has ${references(entry.record.refs)} but holders hold ${held}: GC could collect it while in use`;
      fix.findings.push({ kind: 'refs-low', subject: hash, message, action: `its count is raised to ${held}` });
    }
  }
  const suspected = judgeLeaks(ctx, snapshot, expected, complete, { nowMs, leakConfirmMs }, fixOf);

  await reportSuspects(ctx, snapshot, expected, suspected, { complete, leakConfirmMs }, report, problem);
  options.onProgress?.({ phase: 'repair', done: 0 });
  const adopted = await adoptPacks(ctx, snapshot, packs, fixes, repair, report, problem, options);
  const repairedHashes = await applyFixes(ctx, fixes, repair, nowMs, report, problem, options);
  await reportDamagedPacks(ctx, snapshot, packs, repair, problem, options);
  await reportLost(ctx, snapshot, lost, report, options, problem);
  await reportMissingPacks(ctx, snapshot, packs, lost, repairedHashes, repair, problem, options);
  for (const [id, pack] of packs.unrecorded) {
    if (adopted.has(id) || packs.damaged.has(id) || snapshot.byPack.has(id) || (await ctx.index.packs.get(id)) !== undefined) continue;
    const fate = packCreatedAtMs(id) === undefined
      ? 'its name is not one Strata makes, so GC leaves it alone: delete it by hand if nothing else owns it'
      : 'GC deletes it once it is older than its grace period';
    problem({
      kind: 'pack-orphan',
      subject: id,
      message: `pack ${id} (${pack.sizeBytes} bytes, ${pack.chunkCount} chunks) is in the chunk store but not in the index, left by a write that never committed; ${fate}`,
      repaired: false,
    });
  }
  return report;
}

/** Pass 1: every chunk and pack record, with its revision. */
async function readIndex(ctx: ScrubContext, options: ScrubOptions, report: ScrubReport): Promise<IndexSnapshot> {
  const snapshot: IndexSnapshot = { chunks: new Map(), byPack: new Map(), packs: new Map() };
  let done = 0;
  for (let after: string | undefined, first = true; first || after !== undefined; first = false) {
    throwIfAborted(options, 'scrub');
    const page = await ctx.index.chunks.page(after === undefined ? {} : { after });
    for (const entry of page.records) {
      snapshot.chunks.set(entry.record.hash, entry);
      const inPack = snapshot.byPack.get(entry.record.pack);
      if (inPack === undefined) snapshot.byPack.set(entry.record.pack, [entry.record.hash]);
      else inPack.push(entry.record.hash);
      report.chunks++;
      report.chunkBytes += entry.record.lengthBytes;
    }
    options.onProgress?.({ phase: 'index', done: (done += page.records.length) });
    after = page.nextAfter;
  }
  for (let after: string | undefined, first = true; first || after !== undefined; first = false) {
    throwIfAborted(options, 'scrub');
    const page = await ctx.index.packs.page(after === undefined ? {} : { after });
    for (const entry of page.records) snapshot.packs.set(entry.record.id, entry);
    after = page.nextAfter;
  }
  return snapshot;
}

/** Pass 2: references per chunk; `complete` is false when some holder could not be read. */
async function countReferences(
  ctx: ScrubContext,
  options: ScrubOptions,
  report: ScrubReport,
  problem: (p: ScrubProblem) => void,
): Promise<{ expected: Map<string, number>; complete: boolean }> {
  const expected = new Map<string, number>();
  let complete = true;
  for await (const holder of options.references(options.signal)) {
    throwIfAborted(options, 'scrub');
    let unreadable = 'unreadable' in holder ? holder.unreadable : undefined;
    const counted = new Map<string, number>();
    if (!('unreadable' in holder)) {
      try {
        for (const hash of holder.hashes) {
          checkChunkHash(ctx.hasher, hash);
          counted.set(hash, (counted.get(hash) ?? 0) + 1);
        }
      } catch (err) {
        if (!(err instanceof StorageError)) throw err;
        unreadable = err.message;
      }
    }
    if (unreadable !== undefined) {
      complete = false;
      const message = `${holder.name} cannot be read (${unreadable}): its references are not counted, so this scrub lowers no count; restore or remove it`;
      problem({ kind: 'holder-unreadable', subject: holder.name, message, repaired: false });
      continue;
    }
    for (const [hash, count] of counted) {
      expected.set(hash, (expected.get(hash) ?? 0) + count);
      report.references += count;
    }
    report.holders++;
    options.onProgress?.({ phase: 'references', done: report.holders });
  }
  return { expected, complete };
}

/**
 * Counts above what holders hold: confirmed leaks get a fix lowering them; the others are
 * (re)marked as suspected and returned. Suspicions that no longer hold are dropped.
 */
function judgeLeaks(
  ctx: ScrubPoolContext,
  snapshot: IndexSnapshot,
  expected: ReadonlyMap<string, number>,
  complete: boolean,
  times: { nowMs: number; leakConfirmMs: number },
  fixOf: (hash: string) => ChunkFix,
): string[] {
  const suspected: string[] = [];
  for (const hash of ctx.leakSuspects.keys()) {
    const entry = snapshot.chunks.get(hash);
    if (entry === undefined || entry.record.refs <= (expected.get(hash) ?? 0)) ctx.leakSuspects.delete(hash);
  }
  for (const [hash, entry] of snapshot.chunks) {
    const held = expected.get(hash) ?? 0;
    if (entry.record.refs <= held) continue;
    if (!complete) {
      suspected.push(hash);
      continue;
    }
    const suspect = ctx.leakSuspects.get(hash);
    if (suspect !== undefined && suspect.modRevision === entry.modRevision && times.nowMs - suspect.sinceMs >= times.leakConfirmMs) {
      const fix = fixOf(hash);
      fix.refs = held;
      const message = `chunk ${hash} has ${references(entry.record.refs)} but holders hold ${held}, unchanged since ${new Date(suspect.sinceMs).toISOString()}: leaked (a crash between a holder's removal and the drop of its references)`;
      const action = held === 0 ? 'its count is set to 0, and GC collects it after its grace period' : `its count is lowered to ${held}`;
      fix.findings.push({ kind: 'refs-leaked', subject: hash, message, action });
      continue;
    }
    if (suspect === undefined || suspect.modRevision !== entry.modRevision) ctx.leakSuspects.set(hash, { modRevision: entry.modRevision, sinceMs: times.nowMs });
    suspected.push(hash);
  }
  return suspected;
}

/** Reports the suspected leaks still as pass 1 read them (a changed one starts its wait again). */
async function reportSuspects(
  ctx: ScrubPoolContext,
  snapshot: IndexSnapshot,
  expected: ReadonlyMap<string, number>,
  suspected: readonly string[],
  { complete, leakConfirmMs }: { complete: boolean; leakConfirmMs: number },
  report: ScrubReport,
  problem: (p: ScrubProblem) => void,
): Promise<void> {
  for (const hash of suspected) {
    const entry = snapshot.chunks.get(hash)!;
    if (!(await unchangedSince(ctx, hash, entry))) {
      ctx.leakSuspects.delete(hash);
      report.changedDuringScrub++;
      continue;
    }
    const held = expected.get(hash) ?? 0;
    problem({
      kind: 'refs-leak-suspected',
      subject: hash,
      message: complete
        ? `chunk ${hash} has ${references(entry.record.refs)} but holders hold ${held}: a leak if it stays so; a scrub with repair lowers it once it has stayed unchanged for ${leakConfirmMs} ms (since ${new Date(ctx.leakSuspects.get(hash)!.sinceMs).toISOString()})`
        : `chunk ${hash} has ${references(entry.record.refs)} but the holders read hold ${held}; some holders could not be read, so nothing is lowered`,
      repaired: false,
    });
  }
}

/** True when the chunk's entry is as pass 1 read it (both absent, or the same revision). */
async function unchangedSince(ctx: ScrubContext, hash: string, entry: Versioned<ChunkRecord> | undefined): Promise<boolean> {
  const current = await ctx.index.chunks.get(hash);
  return current?.modRevision === entry?.modRevision;
}

/**
 * Adds pack records for packs in the store the index points into, or that a fix takes a copy
 * from, so GC does not delete them as orphans. Returns the packs adopted (or to be, when not
 * repairing).
 */
async function adoptPacks(
  ctx: ScrubContext,
  snapshot: IndexSnapshot,
  packs: PackPassResult,
  fixes: ReadonlyMap<string, ChunkFix>,
  repair: boolean,
  report: ScrubReport,
  problem: (p: ScrubProblem) => void,
  options: ScrubOptions,
): Promise<Set<string>> {
  const needed = new Set<string>();
  for (const fix of fixes.values()) if (fix.location !== undefined && packs.unrecorded.has(fix.location.pack)) needed.add(fix.location.pack);
  const pointedInto = [...packs.unrecorded.keys()].filter((id) => snapshot.byPack.has(id));
  for (const id of new Set([...needed, ...pointedInto])) {
    throwIfAborted(options, 'scrub');
    const pack = packs.unrecorded.get(id)!;
    let repaired = false;
    if (repair) {
      const txn = new TxnBuilder();
      ctx.index.packs.put(txn, { id, sizeBytes: pack.sizeBytes, chunkCount: pack.chunkCount, createdAtMs: packCreatedAtMs(id) ?? options.nowMs });
      repaired = await tryCommit(ctx, txn);
      if (!repaired && (await ctx.index.packs.get(id)) !== undefined) {
        report.changedDuringScrub++; // recorded meanwhile (its writer committed): nothing to report
        continue;
      }
    }
    if (!snapshot.byPack.has(id)) continue; // taken from for a fix: that fix reports it
    problem({
      kind: 'pack-unrecorded',
      subject: id,
      message: `pack ${id} holds chunks the index points at, but has no pack record (GC would delete it as an orphan); ${repaired ? 'repaired: its record is added' : 'a scrub with repair adds its record'}`,
      repaired,
    });
  }
  return new Set([...needed, ...pointedInto]);
}

/** Reports every chunk fix, committing it first when repairing; returns the hashes repaired. */
async function applyFixes(
  ctx: ScrubContext,
  fixes: ReadonlyMap<string, ChunkFix>,
  repair: boolean,
  nowMs: number,
  report: ScrubReport,
  problem: (p: ScrubProblem) => void,
  options: ScrubOptions,
): Promise<Set<string>> {
  const fixed = new Set<string>();
  let done = 0;
  for (const [hash, fix] of fixes) {
    throwIfAborted(options, 'scrub');
    let repaired = false;
    if (repair) {
      const base: ChunkRecord = fix.entry?.record ?? { hash, pack: '', offsetBytes: 0, lengthBytes: 0, refs: 0, zeroSinceMs: null };
      const refs = fix.refs ?? base.refs;
      const next: ChunkRecord = {
        ...base,
        ...(fix.location === undefined ? {} : { pack: fix.location.pack, offsetBytes: fix.location.offsetBytes, lengthBytes: fix.location.lengthBytes }),
        refs,
        zeroSinceMs: refs > 0 ? null : (base.zeroSinceMs ?? nowMs),
      };
      const txn = new TxnBuilder();
      ctx.index.chunks.put(txn, next, fix.entry);
      repaired = await tryCommit(ctx, txn);
    }
    // Not committed (or not asked to): report only what still stands as pass 1 read it.
    if (!repaired && !(await unchangedSince(ctx, hash, fix.entry))) {
      report.changedDuringScrub++;
      continue;
    }
    if (repaired) fixed.add(hash);
    for (const finding of fix.findings) {
      const message = repaired ? `${finding.message}; repaired: ${finding.action}` : `${finding.message}; with repair, ${finding.action}`;
      problem({ kind: finding.kind, subject: finding.subject, message, repaired });
    }
    options.onProgress?.({ phase: 'repair', done: ++done });
  }
  return fixed;
}

/**
 * Reports packs whose footer is damaged; with repair, moves the good chunks the index points into
 * one to a new pack and deletes it (scrub-packs.ts, rescueDamagedPack). An unrecorded one nothing
 * points into is an orphan: GC deletes it.
 */
async function reportDamagedPacks(
  ctx: ScrubContext,
  snapshot: IndexSnapshot,
  packs: PackPassResult,
  repair: boolean,
  problem: (p: ScrubProblem) => void,
  options: ScrubOptions,
): Promise<void> {
  for (const [id, why] of packs.damaged) {
    throwIfAborted(options, 'scrub');
    const pointing = snapshot.byPack.get(id) ?? [];
    if (!snapshot.packs.has(id) && pointing.length === 0) {
      const fate = packCreatedAtMs(id) === undefined ? 'GC leaves a pack of a name Strata does not make alone: delete it by hand' : 'GC deletes it as an orphan once it is older than its grace period';
      problem({ kind: 'pack-damaged', subject: id, message: `${why}; nothing points into it, and ${fate}`, repaired: false });
      continue;
    }
    const done = repair ? await rescueDamagedPack(ctx, id, pointing, options.signal) : undefined;
    const outcome =
      done === undefined
        ? `a scrub with repair moves the good chunks the index points into it (${pointing.length}) to a new pack and deletes it`
        : done.deleted
          ? `repaired: ${done.moved} chunks moved to a new pack, and the pack is deleted`
          : `${done.moved} chunks moved to a new pack; it stays while chunks with no good copy point into it (see chunk-lost)`;
    problem({ kind: 'pack-damaged', subject: id, message: `${why}; ${outcome}`, repaired: done?.deleted ?? false });
  }
}

/** Names the holders of each lost chunk (a second read of the holders) and reports them. */
async function reportLost(
  ctx: ScrubContext,
  snapshot: IndexSnapshot,
  lost: Map<string, string>,
  report: ScrubReport,
  options: ScrubOptions,
  problem: (p: ScrubProblem) => void,
): Promise<void> {
  for (const hash of lost.keys()) {
    // Moved (a GC elsewhere) or indexed (a call committed) since pass 1: not judged by this scrub.
    if (await unchangedSince(ctx, hash, snapshot.chunks.get(hash))) continue;
    lost.delete(hash);
    report.changedDuringScrub++;
  }
  if (lost.size === 0) return;
  const holders = new Map<string, string[]>([...lost.keys()].map((hash) => [hash, []]));
  for await (const holder of options.references(options.signal)) {
    throwIfAborted(options, 'scrub');
    if ('unreadable' in holder) continue;
    for (const hash of new Set(holder.hashes)) {
      const names = holders.get(hash);
      if (names !== undefined && names.length < LOST_HOLDERS_MAX) names.push(holder.name);
    }
  }
  for (const [hash, why] of lost) {
    const names = holders.get(hash)!;
    const who = names.length === 0 ? 'no holder names it now' : `needed by ${names.join(', ')}${names.length === LOST_HOLDERS_MAX ? ' and maybe more' : ''}`;
    const entry = await ctx.index.chunks.get(hash);
    const referenced = entry === undefined ? '' : ` (${references(entry.record.refs)})`;
    problem({
      kind: 'chunk-lost',
      subject: hash,
      message: `${why}${referenced}; ${who}: those layers cannot be read whole; restore them from a backup, or remove them`,
      repaired: false,
      holders: names,
    });
  }
}

/** Reports packs the index records that the store lacks; deletes the record once nothing points there. */
async function reportMissingPacks(
  ctx: ScrubContext,
  snapshot: IndexSnapshot,
  packs: PackPassResult,
  lost: ReadonlyMap<string, string>,
  repaired: ReadonlySet<string>,
  repair: boolean,
  problem: (p: ScrubProblem) => void,
  options: ScrubOptions,
): Promise<void> {
  for (const id of packs.missing) {
    throwIfAborted(options, 'scrub');
    const pointing = snapshot.byPack.get(id) ?? [];
    const lostHere = pointing.filter((hash) => lost.has(hash)).length;
    const record = await ctx.index.packs.get(id);
    let deleted = false;
    if (repair && record !== undefined && pointing.every((hash) => repaired.has(hash))) {
      const txn = new TxnBuilder();
      ctx.index.packs.delete(txn, record);
      deleted = await tryCommit(ctx, txn);
    }
    const what = pointing.length === 0 ? 'no chunk points into it' : `${pointing.length} chunks pointed into it, ${lostHere} of them with no good copy elsewhere (chunk-lost)`;
    const outcome = deleted
      ? 'repaired: its record is deleted'
      : lostHere > 0 || record === undefined
        ? 'its record stays while chunks point into it'
        : 'a scrub with repair points its chunks at their good copies and deletes its record';
    problem({ kind: 'pack-missing', subject: id, message: `pack ${id} is in the index but missing from the chunk store; ${what}; ${outcome}`, repaired: deleted });
  }
}

async function tryCommit(ctx: ScrubContext, txn: TxnBuilder): Promise<boolean> {
  try {
    await txn.commit(ctx.catalog);
    return true;
  } catch (err) {
    if (isStorageError(err, 'BUSY') || isStorageError(err, 'ALREADY_EXISTS')) return false;
    throw err;
  }
}
