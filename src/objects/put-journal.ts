/**
 * The reference journal of a put: how a put that adds chunk references leaves nothing behind when
 * it fails, is aborted, or its process is killed.
 *
 * A ChunkRepository call is atomic and durable, but anonymous: after a crash nobody could tell
 * whether a call the put had made was applied, and dropping references that were never added
 * would take them from another object. So every reference-adding call is journalled first (a
 * step record: its hashes) and carries a marker chunk of its own (bytes unique to the put and the
 * step), whose count the same atomic call raises: a data step adds the marker with the chunks
 * (count 1 when applied); a by-hash step (a copy) adds the marker alone first (1), then the hashes
 * with the marker by hash (2 when applied). Whoever cleans up reads the marker's count and knows
 * exactly whether the step's references exist.
 *
 *   begin       s3-put/<id> {state: writing}, written with the first step's record (one batch)
 *   each step   s3-put-step/<id>/<seq> {hashes, marker}, durable before the repository call
 *               commits (its packs are written meanwhile: commitAfter); where the repository's
 *               counts share the catalog (sharesCatalog), the step's record, and the put record
 *               with the first one, commit in the repository call's own transaction instead
 *   commit      the caller's transaction that makes the data visible also sets state: committed
 *   settle      markers dropped (count-checked), steps and the put record deleted
 *
 * A put that adds no reference (a small object whose bytes go into the catalog with its version,
 * an all-zero body) never writes a journal record at all: nothing of it exists outside the one
 * transaction that makes it visible. Whatever goes outside the catalog before that transaction (a
 * step, a large manifest in the ChunkStore) is preceded by the put record (`record()`).
 *
 * Cleaning up a 'writing' put drops the references of every applied step and its marker and
 * removes a manifest the put may have stored in the ChunkStore; a 'committed' one drops only the
 * markers. Both run again safely after a crash part-way (every drop is decided by a count read
 * just before it).
 */
import { StorageError, isStorageError } from '../core/errors.js';
import { TxnBuilder, type Versioned } from '../meta/table.js';
import type { CatalogChanges, ChunkHash, ChunkRepository, HashedChunk } from '../store/dedup/repository.js';
import type { ObjectContext } from './context.js';
import { MANIFEST_OBJECT_PREFIX } from './manifest-storage.js';
import { HASHES_PER_CALL } from '../store/chunked/seal.js';
import type { PendingPutRecord, ReferenceStepRecord } from './records.js';
import { settleCommittedPut } from './put-settler.js';

/** Step records read a page at a time when a put is settled or cleaned up. */
const STEP_PAGE = 64;

function markerBytes(putId: string, seq: number): Uint8Array {
  return Buffer.from(`strata-object-put-marker\0${putId}\0${seq}`, 'utf8');
}

export class PutJournal {
  private nextSeq = 0;
  /** The put record once written (or being written with the first step). */
  private recorded: Promise<Versioned<PendingPutRecord>> | undefined;
  /**
   * Each step record as committed, and the marker references of the steps whose calls succeeded
   * (a failed step leaves its marker out, so the two show whether every step was applied).
   */
  private readonly writtenSteps: Versioned<ReferenceStepRecord>[] = [];
  private readonly appliedMarkers: ChunkHash[] = [];
  /** The put record commitInto handed over, and as the caller's commit left it (committedAt). */
  private committing: PendingPutRecord | undefined;
  private committedRecord: Versioned<PendingPutRecord> | undefined;

  private constructor(
    private readonly context: ObjectContext,
    readonly putId: string,
    readonly pool: string,
    readonly repository: ChunkRepository,
  ) {}

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

  /**
   * Writes the put record, with `step` in the same batch when this is the first write; later
   * calls wait for that batch and then write `step` alone.
   */
  private async writeRecordWith(step: ReferenceStepRecord | undefined): Promise<void> {
    if (this.recorded !== undefined) {
      await this.recorded;
      if (step === undefined) return;
      const txn = new TxnBuilder();
      this.context.tables.steps.put(txn, step);
      this.writtenSteps.push({ record: step, modRevision: await txn.commit(this.context.catalog) });
      return;
    }
    const record: PendingPutRecord = { putId: this.putId, pool: this.pool, state: 'writing', startedAtMs: this.context.nowMs() };
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
    const marker = this.repository.hashChunk(markerBytes(this.putId, seq));
    if (this.repository.sharesCatalog?.(this.context.catalog) === true) {
      await this.addChunksWithRecords(seq, chunks, marker, signal);
      return;
    }
    // The step's record is written while the repository stores the chunks; the repository commits
    // the counts only once the record is durable (commitAfter), so a crash never leaves counts
    // nobody journalled. Both settle before this does: the caller reuses the chunks' buffers.
    const journalled = this.journal(seq, chunks.map((chunk) => chunk.hash), marker.hash, 1);
    const added = this.repository.addHashedReferences([...chunks, marker], { commitAfter: journalled, ...(signal === undefined ? {} : { signal }) });
    for (const outcome of await Promise.allSettled([journalled, added])) {
      if (outcome.status === 'rejected') throw outcome.reason;
    }
    this.appliedMarkers.push(marker.hash);
  }

  /**
   * addChunks where the repository's counts share the catalog with the journal: the step's record
   * (and, for the put's first write, the put record) commit in the repository's own transaction,
   * so a step's record exists exactly when its references do, with one commit instead of two.
   * A later step commits only after the put record (commitAfter), so no step is ever found
   * without its put. The marker stays: settling and recovery read its count as before.
   */
  private async addChunksWithRecords(seq: number, chunks: readonly HashedChunk[], marker: HashedChunk, signal: AbortSignal | undefined): Promise<void> {
    const step: ReferenceStepRecord = { putId: this.putId, seq, pool: this.pool, hashes: chunks.map((chunk) => chunk.hash), marker: marker.hash, markerRefsWhenApplied: 1 };
    const putRecord: PendingPutRecord | undefined = this.recorded === undefined ? { putId: this.putId, pool: this.pool, state: 'writing', startedAtMs: this.context.nowMs() } : undefined;
    let stepRevision = 0;
    const catalogChanges: CatalogChanges = {
      catalog: this.context.catalog,
      add: (txn) => {
        if (putRecord !== undefined) this.context.tables.puts.put(txn, putRecord);
        this.context.tables.steps.put(txn, step);
      },
      committedAt: (revision) => (stepRevision = revision),
    };
    const added = this.repository.addHashedReferences([...chunks, marker], {
      catalogChanges,
      ...(putRecord === undefined ? { commitAfter: this.recorded } : {}),
      ...(signal === undefined ? {} : { signal }),
    });
    if (putRecord !== undefined) {
      this.recorded = added.then(() => ({ record: putRecord, modRevision: stepRevision }));
      this.recorded.catch(() => undefined); // seen by whoever awaits it, and by this call below
    }
    await added;
    this.writtenSteps.push({ record: step, modRevision: stepRevision });
    this.appliedMarkers.push(marker.hash);
  }

  /** Adds one reference per hash to chunks already stored (a copy by reference). */
  async addByHash(hashes: readonly ChunkHash[], signal?: AbortSignal): Promise<void> {
    if (hashes.length === 0) return;
    const seq = this.nextSeq++;
    const marker = markerBytes(this.putId, seq);
    const markerHash = this.repository.hash(marker);
    await this.journal(seq, hashes, markerHash, 2);
    const options = signal === undefined ? {} : { signal };
    await this.repository.addReferences([marker], options);
    await this.repository.addReferencesByHash([...hashes, markerHash], options);
    this.appliedMarkers.push(markerHash, markerHash);
  }

  /** Adds to the caller's transaction the change that makes the put's references belong to its record. */
  async commitInto(txn: TxnBuilder): Promise<void> {
    if (this.recorded === undefined) return; // nothing journalled: nothing to hand over
    const current = await this.recorded;
    this.context.tables.puts.put(txn, { ...current.record, state: 'committed' }, current);
    this.committing = current.record;
  }

  /** Tells the journal that the transaction commitInto filled committed at `revision`. */
  committedAt(revision: number): void {
    if (this.committing !== undefined) this.committedRecord = { record: { ...this.committing, state: 'committed' }, modRevision: revision };
  }

  /**
   * After the commit: drops the markers and forgets the journal. When this process made every
   * step and saw each call succeed, it knows each marker's count and every record's revision, so
   * the put joins other committed puts in one drop and one catalog commit (put-settler.ts);
   * otherwise the counts are read (settlePut).
   */
  async settle(): Promise<void> {
    if (this.recorded === undefined) return;
    if (this.committedRecord !== undefined && this.writtenSteps.length === this.nextSeq && new Set(this.appliedMarkers).size === this.nextSeq) {
      await settleCommittedPut(this.context, { record: this.committedRecord, steps: this.writtenSteps, markerDrops: this.appliedMarkers });
      return;
    }
    await settlePut(this.context, this.putId, this.pool, 'committed');
  }

  /**
   * After a failure or an abort: gives back every reference the put added (or, had its commit
   * happened after all, only its markers). Never throws, so the caller reports the failure that
   * brought it here: what it cannot give back now stays journalled, onDeferredError is told, and
   * recover() finishes it.
   */
  async abandon(): Promise<void> {
    try {
      if (this.recorded === undefined) return; // nothing was journalled, so nothing was added
      // The put record's own write may have failed (then nothing else was written after it).
      await this.recorded.catch(() => undefined);
      // A commit whose reply was lost may have happened: the record decides.
      const record = await this.context.tables.puts.get(this.putId);
      if (record === undefined) return; // settled already: nothing of it is left to give back
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
 * Finishes a put found in the journal: a committed one loses its markers; a writing one loses
 * every reference its applied steps added and any manifest it stored in the ChunkStore. Then the
 * journal records go. Safe to run again after a crash part-way: what each step holds is read from
 * its marker's count just before the drop, and a step's references go in the same call as its
 * markers (several steps to a call, up to about HASHES_PER_CALL hashes). Returns the steps undone.
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
    const markerRefs = await Promise.all(page.records.map((step) => repository.referenceCount(step.record.marker)));
    let batch: ChunkHash[] = [];
    const flush = async (): Promise<void> => {
      if (batch.length > 0) await dropForPut(repository, batch, putId);
      batch = [];
    };
    for (const [i, { record: step }] of page.records.entries()) {
      const refs = markerRefs[i]!;
      if (refs === 0) continue;
      const undo = state === 'writing' && refs === step.markerRefsWhenApplied;
      if (undo) undone++;
      const drops = [...(undo ? step.hashes : []), ...new Array<ChunkHash>(refs).fill(step.marker)];
      if (batch.length + drops.length > HASHES_PER_CALL) await flush();
      batch.push(...drops);
    }
    await flush();
    const txn = new TxnBuilder();
    for (const step of page.records) context.tables.steps.delete(txn, step);
    if (lastPage && record !== undefined) context.tables.puts.delete(txn, record);
    await txn.commit(context.catalog);
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

async function dropForPut(repository: ChunkRepository, hashes: readonly ChunkHash[], putId: string): Promise<void> {
  try {
    await repository.dropReferences(hashes);
  } catch (err) {
    throw new StorageError(
      isStorageError(err) ? err.code : 'IO_ERROR',
      `giving back the references of put ${putId} failed (${err instanceof Error ? err.message : String(err)}); they are given back when the object model recovers`,
      { cause: err },
    );
  }
}
