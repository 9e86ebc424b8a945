/**
 * Settling committed puts together: the puts whose install marked them committed (put-journal.ts)
 * in place of deleting their journal, that is puts of marked steps (a repository whose counts
 * are in another catalog) and puts of more steps than one commit deletes. A put this process
 * made and committed knows everything its settling needs without reading: each step's marker
 * count (its calls succeeded: 1 for a data step, 2 for a by-hash step; a recorded step has none)
 * and the revision of every journal record. So the puts committed while one settling runs are
 * settled by the next in one go: one dropReferences per pool for all their markers, then one
 * commit that deletes all their journal records, instead of two reads, a count read, a drop and
 * a delete per put.
 *
 * Crash safety is settlePut's: until the delete commits, each put stays in the journal as
 * 'committed', and settlePut (on any failure here, and in start-up recovery) decides every drop
 * from a count read just before it, so a drop this batch made already is never made again.
 */
import { TxnBuilder, type Versioned } from '../meta/table.js';
import { HASHES_PER_CALL } from '../store/chunked/seal.js';
import type { ChunkHash } from '../store/dedup/repository.js';
import type { ObjectContext } from './context.js';
import { settlePut } from './put-journal.js';
import type { PendingPutRecord, ReferenceStepRecord } from './records.js';

/** Puts settled by one batch at most (bounds the catalog commit's size). */
const PUTS_PER_BATCH = 64;
/**
 * Journal records one commit deletes at most (a batch's, or an install's: put-journal.ts): bounds
 * the size of a catalog transaction.
 */
export const JOURNAL_RECORDS_PER_COMMIT = 512;

export interface CommittedPut {
  /** The put record as its commit left it (state 'committed'). */
  readonly record: Versioned<PendingPutRecord>;
  readonly steps: readonly Versioned<ReferenceStepRecord>[];
  /** Each applied step's marker, once per reference it holds. */
  readonly markerDrops: readonly ChunkHash[];
}

interface Waiting {
  readonly put: CommittedPut;
  readonly done: (err?: unknown) => void;
}

class PutSettler {
  private waiting: Waiting[] = [];
  private running: Promise<void> | undefined;

  constructor(private readonly context: ObjectContext) {}

  settle(put: CommittedPut): Promise<void> {
    if (put.steps.length + 1 > JOURNAL_RECORDS_PER_COMMIT || put.markerDrops.length > HASHES_PER_CALL) {
      return settlePut(this.context, put.record.record.putId, put.record.record.pool, 'committed').then(() => undefined);
    }
    const settled = new Promise<void>((resolve, reject) => {
      this.waiting.push({ put, done: (err) => (err === undefined ? resolve() : reject(err)) });
    });
    this.running ??= this.run();
    return settled;
  }

  /** Settles what waits a batch at a time until nothing does. */
  private async run(): Promise<void> {
    // The puts committed in this turn join the first batch.
    await Promise.resolve();
    while (this.waiting.length > 0) {
      const batch = this.takeBatch();
      try {
        await this.settleBatch(batch.map((entry) => entry.put));
        for (const entry of batch) entry.done();
      } catch {
        // What the batch did is unknown: each put's counts decide what is left to do.
        for (const entry of batch) {
          const { putId, pool } = entry.put.record.record;
          await settlePut(this.context, putId, pool, 'committed').then(() => entry.done(), (err: unknown) => entry.done(err));
        }
      }
    }
    this.running = undefined;
  }

  private takeBatch(): Waiting[] {
    const batch: Waiting[] = [];
    const drops = new Map<string, number>();
    let records = 0;
    while (this.waiting.length > 0 && batch.length < PUTS_PER_BATCH) {
      const next = this.waiting[0]!;
      const pool = next.put.record.record.pool;
      const poolDrops = (drops.get(pool) ?? 0) + next.put.markerDrops.length;
      const nextRecords = records + next.put.steps.length + 1;
      if (batch.length > 0 && (poolDrops > HASHES_PER_CALL || nextRecords > JOURNAL_RECORDS_PER_COMMIT)) break;
      drops.set(pool, poolDrops);
      records = nextRecords;
      batch.push(this.waiting.shift()!);
    }
    return batch;
  }

  private async settleBatch(puts: readonly CommittedPut[]): Promise<void> {
    const byPool = new Map<string, ChunkHash[]>();
    for (const put of puts) {
      const pool = put.record.record.pool;
      const drops = byPool.get(pool) ?? [];
      drops.push(...put.markerDrops);
      byPool.set(pool, drops);
    }
    for (const [pool, drops] of byPool) {
      if (drops.length > 0) await (await this.context.repositoryOf(pool)).dropReferences(drops);
    }
    const txn = new TxnBuilder();
    for (const put of puts) {
      for (const step of put.steps) this.context.tables.steps.delete(txn, step);
      this.context.tables.puts.delete(txn, put.record);
    }
    await txn.commit(this.context.catalog);
  }
}

const settlers = new WeakMap<ObjectContext, PutSettler>();

/** Drops a committed put's markers and deletes its journal records, with the other puts committed meanwhile. */
export function settleCommittedPut(context: ObjectContext, put: CommittedPut): Promise<void> {
  let settler = settlers.get(context);
  if (settler === undefined) {
    settler = new PutSettler(context);
    settlers.set(context, settler);
  }
  return settler.settle(put);
}
