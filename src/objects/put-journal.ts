/**
 * The reference journal of a put: how a put that adds chunk references leaves nothing behind when
 * it fails, is aborted, or its process is killed.
 *
 * A ChunkRepository call is atomic and durable, but anonymous: after a crash nobody could tell
 * whether a call the put had made was applied, and dropping references that were never added
 * would take them from another object. So every reference-adding call is a journalled step
 * (s3-put-step: its hashes), of one of two kinds (records.ts):
 *
 *   recorded  where the repository's counts share the catalog (sharesCatalog): the step's record,
 *             and the put record with the first one, commit in the repository call's own
 *             transaction (catalogChanges). The record exists exactly when the references do.
 *   marked    otherwise: the record is durable before the call commits (commitAfter), and the
 *             call carries a marker chunk of its own (bytes unique to the put and the step) whose
 *             count it raises: a data step adds the marker with the chunks (1 when applied); a
 *             by-hash step (a copy) adds the marker alone first (1), then the hashes with the
 *             marker by hash (2). Whoever cleans up reads the marker's count.
 *
 *   begin    s3-put/<id> {state: writing}, written with the first step's record
 *   commit   the caller's transaction that makes the data visible (installs the version or part)
 *            also deletes the journal when every step is recorded (at most
 *            JOURNAL_RECORDS_PER_COMMIT records): the references are the record's from then on.
 *            Otherwise it sets state: committed, and settling drops the markers (count-checked)
 *            and deletes the steps and the put record.
 *
 * A put that adds no reference (a small object whose bytes go into the catalog with its version,
 * an all-zero body), or adds them in the transaction that makes it visible (a body of one step
 * into a pool that shares the catalog: versions.ts commitWithReferences), never writes a journal
 * record at all: nothing of it exists outside that one transaction but packs nothing references. Whatever goes outside the catalog before that transaction (a
 * step, a large manifest in the ChunkStore) is preceded by the put record (`record()`).
 *
 * Cleaning up a 'writing' put drops the references of every applied step (and its marker) and
 * removes a manifest the put may have stored in the ChunkStore; a 'committed' one drops only the
 * markers. Both run again safely after a crash part-way: a recorded step's drop deletes its record
 * in the same commit, and a marked step's drop is decided by a count read just before it.
 */
import { StorageError, isStorageError } from '../core/errors.js';
import { TxnBuilder, type Versioned } from '../meta/table.js';
import type { CatalogChanges, ChunkHash, ChunkRepository, ChunkRepositoryCallOptions, HashedChunk } from '../store/dedup/repository.js';
import type { ObjectContext } from './context.js';
import { MANIFEST_OBJECT_PREFIX } from './manifest-storage.js';
import { HASHES_PER_CALL } from '../store/chunked/seal.js';
import { isMarkedStep, type MarkedStepRecord, type PendingPutRecord, type RecordedStepRecord, type ReferenceStepRecord } from './records.js';
import { JOURNAL_RECORDS_PER_COMMIT, settleCommittedPut } from './put-settler.js';

/** Step records read a page at a time when a put is settled or cleaned up. */
const STEP_PAGE = 64;

function markerBytes(putId: string, seq: number): Uint8Array {
  return Buffer.from(`strata-object-put-marker\0${putId}\0${seq}`, 'utf8');
}

export class PutJournal {
  private nextSeq = 0;
  /** The put record once written (or being written with the first step). */
  private recorded: Promise<Versioned<PendingPutRecord>> | undefined;
  /** Each step record as committed, the steps whose calls succeeded, and the markers they hold. */
  private readonly writtenSteps: Versioned<ReferenceStepRecord>[] = [];
  private appliedSteps = 0;
  private readonly appliedMarkers: ChunkHash[] = [];
  /**
   * The repository's counts share the catalog: each step's record commits in the repository
   * call's own transaction (a recorded step, no marker). Else a marked step: record first, then
   * the call with its marker.
   */
  readonly recordsWithReferences: boolean;
  /** What commitInto put into the caller's transaction: the journal deleted, or the put record marked committed. */
  private handedOver: { kind: 'deleted' } | { kind: 'committed'; record: PendingPutRecord } | undefined;
  /** The put record as the caller's commit left it, or 'deleted' when that commit deleted the journal. */
  private committed: Versioned<PendingPutRecord> | 'deleted' | undefined;

  private constructor(
    private readonly context: ObjectContext,
    readonly putId: string,
    readonly pool: string,
    readonly repository: ChunkRepository,
  ) {
    this.recordsWithReferences = repository.sharesCatalog?.(context.catalog) === true;
  }

  /**
   * A put in progress. Nothing is written yet: the put record goes into the catalog with the first
   * step's record, or on its own by `record()`, before anything outside the catalog exists.
   */
  static begin(context: ObjectContext, pool: string, repository: ChunkRepository): PutJournal {
    return new PutJournal(context, context.newId(), pool, repository);
  }

  /** Makes sure the put record is in the catalog (before a large manifest goes into the ChunkStore). */
  async record(): Promise<void> {
    await this.writeRecordWith(undefined);
  }

  private newPutRecord(): PendingPutRecord {
    return { putId: this.putId, pool: this.pool, state: 'writing', startedAtMs: this.context.nowMs() };
  }

  /**
   * Writes the put record, with `step` in the same batch when this is the first write; later
   * calls wait for that batch and then write `step` alone.
   */
  private async writeRecordWith(step: MarkedStepRecord | undefined): Promise<void> {
    if (this.recorded !== undefined) {
      await this.recorded;
      if (step === undefined) return;
      const txn = new TxnBuilder();
      this.context.tables.steps.put(txn, step);
      this.writtenSteps.push({ record: step, modRevision: await txn.commit(this.context.catalog) });
      return;
    }
    const record = this.newPutRecord();
    const txn = new TxnBuilder();
    this.context.tables.puts.put(txn, record);
    if (step !== undefined) this.context.tables.steps.put(txn, step);
    this.recorded = txn.commit(this.context.catalog).then((modRevision) => ({ record, modRevision }));
    const { modRevision } = await this.recorded;
    if (step !== undefined) this.writtenSteps.push({ record: step, modRevision });
  }

  /** Adds one reference per chunk (named by the repository's hashChunk: hashed once, not again here). */
  async addChunks(chunks: readonly HashedChunk[], signal?: AbortSignal): Promise<void> {
    const seq = this.nextSeq++;
    const hashes = chunks.map((chunk) => chunk.hash);
    if (this.recordsWithReferences) {
      // The step's packs are written while an earlier step's commit (with the put record) runs:
      // the repository commits this one's counts only after it (commitAfter).
      await this.addWithRecord(seq, hashes, true, (options) => this.repository.addHashedReferences(chunks, { ...options, ...(signal === undefined ? {} : { signal }) }));
      return;
    }
    const marker = this.repository.hashChunk(markerBytes(this.putId, seq));
    // The step's record is written while the repository stores the chunks; the repository commits
    // the counts only once the record is durable (commitAfter), so a crash never leaves counts
    // nobody journalled. Both settle before this does: the caller reuses the chunks' buffers.
    const journalled = this.journal(seq, hashes, marker.hash, 1);
    const added = this.repository.addHashedReferences([...chunks, marker], { commitAfter: journalled, ...(signal === undefined ? {} : { signal }) });
    for (const outcome of await Promise.allSettled([journalled, added])) {
      if (outcome.status === 'rejected') throw outcome.reason;
    }
    this.appliedSteps++;
    this.appliedMarkers.push(marker.hash);
  }

  /**
   * A recorded step: its record (and, for the put's first write, the put record) commit in the
   * repository call's own transaction, so the record exists exactly when the references do, one
   * commit and no marker. A later step commits only after the put record: by commitAfter when
   * `overlaps` (the call stores packs meanwhile), else by waiting for it first. So no step is
   * ever found without its put.
   */
  private async addWithRecord(
    seq: number,
    hashes: readonly ChunkHash[],
    overlaps: boolean,
    call: (options: ChunkRepositoryCallOptions) => Promise<unknown>,
  ): Promise<void> {
    const step: RecordedStepRecord = { putId: this.putId, seq, pool: this.pool, hashes: [...hashes], appliedWithRecord: true };
    const putRecord = this.recorded === undefined ? this.newPutRecord() : undefined;
    if (putRecord === undefined && !overlaps) await this.recorded;
    let stepRevision = 0;
    const catalogChanges: CatalogChanges = {
      catalog: this.context.catalog,
      add: (txn) => {
        if (putRecord !== undefined) this.context.tables.puts.put(txn, putRecord);
        this.context.tables.steps.put(txn, step);
      },
      committedAt: (revision) => (stepRevision = revision),
    };
    const added = call({ catalogChanges, ...(putRecord === undefined && overlaps ? { commitAfter: this.recorded } : {}) });
    if (putRecord !== undefined) {
      this.recorded = added.then(() => ({ record: putRecord, modRevision: stepRevision }));
      this.recorded.catch(() => undefined); // seen by whoever awaits it, and by this call below
    }
    await added;
    this.writtenSteps.push({ record: step, modRevision: stepRevision });
    this.appliedSteps++;
  }

  /** Adds one reference per hash to chunks already stored (a copy by reference). */
  async addByHash(hashes: readonly ChunkHash[], signal?: AbortSignal): Promise<void> {
    if (hashes.length === 0) return;
    const seq = this.nextSeq++;
    const options = signal === undefined ? {} : { signal };
    if (this.recordsWithReferences) {
      await this.addWithRecord(seq, hashes, false, (recordOptions) => this.repository.addReferencesByHash(hashes, { ...recordOptions, ...options }));
      return;
    }
    const marker = markerBytes(this.putId, seq);
    const markerHash = this.repository.hash(marker);
    await this.journal(seq, hashes, markerHash, 2);
    await this.repository.addReferences([marker], options);
    await this.repository.addReferencesByHash([...hashes, markerHash], options);
    this.appliedSteps++;
    this.appliedMarkers.push(markerHash, markerHash);
  }

  /**
   * Adds to the caller's transaction the change that makes the put's references belong to its
   * record. Every step recorded, each seen applied, and few enough records: the journal is
   * deleted in that transaction (the references are the record's from then on, and nothing is
   * left to settle). Else the put record is marked committed, and settle() finishes it.
   */
  async commitInto(txn: TxnBuilder): Promise<void> {
    if (this.recorded === undefined) return; // nothing journalled: nothing to hand over
    const current = await this.recorded;
    const allRecorded = this.recordsWithReferences && this.appliedSteps === this.nextSeq && this.writtenSteps.length === this.nextSeq;
    if (allRecorded && this.writtenSteps.length + 1 <= JOURNAL_RECORDS_PER_COMMIT) {
      for (const step of this.writtenSteps) this.context.tables.steps.delete(txn, step);
      this.context.tables.puts.delete(txn, current);
      this.handedOver = { kind: 'deleted' };
      return;
    }
    this.context.tables.puts.put(txn, { ...current.record, state: 'committed' }, current);
    this.handedOver = { kind: 'committed', record: current.record };
  }

  /** Tells the journal that the transaction commitInto filled committed at `revision`. */
  committedAt(revision: number): void {
    const handedOver = this.handedOver;
    if (handedOver === undefined) return;
    this.committed = handedOver.kind === 'deleted' ? 'deleted' : { record: { ...handedOver.record, state: 'committed' }, modRevision: revision };
  }

  /**
   * After the commit: drops the markers and forgets the journal (nothing left when the commit
   * deleted it). When this process made every step and saw each call succeed, it knows each
   * marker's count and every record's revision, so the put joins other committed puts in one
   * drop and one catalog commit (put-settler.ts); otherwise the counts are read (settlePut).
   */
  async settle(): Promise<void> {
    if (this.recorded === undefined || this.committed === 'deleted') return;
    if (this.committed !== undefined && this.writtenSteps.length === this.nextSeq && this.appliedSteps === this.nextSeq) {
      await settleCommittedPut(this.context, { record: this.committed, steps: this.writtenSteps, markerDrops: this.appliedMarkers });
      return;
    }
    await settlePut(this.context, this.putId, this.pool, 'committed');
  }

  /**
   * After a failure or an abort: gives back every reference the put added (or, had its commit
   * happened after all, only its markers, or nothing when that commit deleted the journal).
   * Never throws, so the caller reports the failure that brought it here: what it cannot give
   * back now stays journalled, onDeferredError is told, and recover() finishes it.
   */
  async abandon(): Promise<void> {
    try {
      if (this.recorded === undefined) return; // nothing was journalled, so nothing was added
      // The put record's own write may have failed (then nothing else was written after it).
      await this.recorded.catch(() => undefined);
      // A commit whose reply was lost may have happened: the record decides.
      const record = await this.context.tables.puts.get(this.putId);
      if (record === undefined) return; // settled or committed with the journal deleted: nothing of it is left to give back
      await settlePut(this.context, this.putId, this.pool, record.record.state);
    } catch (err) {
      this.context.onDeferredError(err);
    }
  }

  private async journal(seq: number, hashes: readonly ChunkHash[], marker: ChunkHash, markerRefsWhenApplied: 1 | 2): Promise<void> {
    await this.writeRecordWith({ putId: this.putId, seq, pool: this.pool, hashes: [...hashes], marker, markerRefsWhenApplied });
  }
}

/**
 * Finishes a put found in the journal: a committed one loses its markers (a recorded step holds
 * nothing of its own then: the version holds its references); a writing one loses every
 * reference its applied steps added and any manifest it stored in the ChunkStore. Then the
 * journal records go. Safe to run again after a crash part-way: a recorded step's references are
 * dropped in the very commit that deletes its record, so a step still recorded still holds them;
 * a marked step's drop is decided by its marker's count read just before it, and its references
 * go in the same call as its markers (several steps to a call, up to about HASHES_PER_CALL
 * hashes). Returns the steps undone.
 */
export async function settlePut(context: ObjectContext, putId: string, pool: string, state: PendingPutRecord['state']): Promise<number> {
  const repository = await context.repositoryOf(pool);
  let undone = 0;
  // A committed put's record goes with its last page of steps (one commit fewer per put); a
  // writing one's only after its manifest is deleted, below.
  let record = state === 'committed' ? await context.tables.puts.get(putId) : undefined;
  for (;;) {
    const page = await context.tables.steps.prefixPage(`${putId}/`, { limit: STEP_PAGE });
    const lastPage = page.records.length < STEP_PAGE;
    if (page.records.length === 0 && record === undefined) break;
    const marked = page.records.filter((step): step is Versioned<MarkedStepRecord> => isMarkedStep(step.record));
    if (state === 'writing') undone += await undoRecordedSteps(context, repository, page.records.filter((step) => !isMarkedStep(step.record)), putId);
    undone += await dropMarkedSteps(repository, marked, state, putId);
    // What is left of the page: its marked steps, and (committed) its recorded ones, which drop nothing.
    const txn = new TxnBuilder();
    for (const step of state === 'writing' ? marked : page.records) context.tables.steps.delete(txn, step);
    if (lastPage && record !== undefined) context.tables.puts.delete(txn, record);
    if (txn.ops.length > 0) await txn.commit(context.catalog);
    if (lastPage && record !== undefined) return undone;
    if (lastPage) break;
  }
  if (state === 'writing') await context.manifestStore.delete(`${MANIFEST_OBJECT_PREFIX}${putId}`);
  record = await context.tables.puts.get(putId);
  if (record !== undefined) {
    const txn = new TxnBuilder();
    context.tables.puts.delete(txn, record);
    await txn.commit(context.catalog);
  }
  return undone;
}

/**
 * Gives back the references of a writing put's recorded steps: each drop call (several steps, up
 * to about HASHES_PER_CALL hashes) deletes those steps' records in its own commit. Returns the
 * steps undone.
 */
async function undoRecordedSteps(context: ObjectContext, repository: ChunkRepository, steps: readonly Versioned<ReferenceStepRecord>[], putId: string): Promise<number> {
  let batch: Versioned<ReferenceStepRecord>[] = [];
  let batchHashes = 0;
  const flush = async (): Promise<void> => {
    if (batch.length === 0) return;
    const records = batch;
    batch = [];
    batchHashes = 0;
    const catalogChanges: CatalogChanges = {
      catalog: context.catalog,
      add: (txn) => {
        for (const step of records) context.tables.steps.delete(txn, step);
      },
      committedAt: () => undefined,
    };
    await dropForPut(repository, records.flatMap((step) => step.record.hashes), putId, { catalogChanges });
  };
  for (const step of steps) {
    if (batchHashes + step.record.hashes.length > HASHES_PER_CALL) await flush();
    batch.push(step);
    batchHashes += step.record.hashes.length;
  }
  await flush();
  return steps.length;
}

/** Drops what a page's marked steps hold, as their markers' counts say. Returns the steps undone. */
async function dropMarkedSteps(repository: ChunkRepository, steps: readonly Versioned<MarkedStepRecord>[], state: PendingPutRecord['state'], putId: string): Promise<number> {
  const markerRefs = await Promise.all(steps.map((step) => repository.referenceCount(step.record.marker)));
  let undone = 0;
  let batch: ChunkHash[] = [];
  const flush = async (): Promise<void> => {
    if (batch.length > 0) await dropForPut(repository, batch, putId);
    batch = [];
  };
  for (const [i, { record: step }] of steps.entries()) {
    const refs = markerRefs[i]!;
    if (refs === 0) continue;
    const undo = state === 'writing' && refs === step.markerRefsWhenApplied;
    if (undo) undone++;
    const drops = [...(undo ? step.hashes : []), ...new Array<ChunkHash>(refs).fill(step.marker)];
    if (batch.length + drops.length > HASHES_PER_CALL) await flush();
    batch.push(...drops);
  }
  await flush();
  return undone;
}

async function dropForPut(repository: ChunkRepository, hashes: readonly ChunkHash[], putId: string, options: ChunkRepositoryCallOptions = {}): Promise<void> {
  try {
    await repository.dropReferences(hashes, options);
  } catch (err) {
    throw new StorageError(
      isStorageError(err) ? err.code : 'IO_ERROR',
      `giving back the references of put ${putId} failed (${err instanceof Error ? err.message : String(err)}); they are given back when the object model recovers`,
      { cause: err },
    );
  }
}
