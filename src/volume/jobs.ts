/**
 * JobRunner: long operations (copy, flatten, import, snapshot delete) as jobs with progress
 * (doneBytes/totalBytes), cancellation (an AbortSignal the job's body checks) and state persisted in
 * the catalog. Progress is written at most once per PROGRESS_PERSIST_MS, never per I/O. A job that
 * was queued or running when the process died is marked failed by recover().
 *
 * Background jobs (start) run at most maxConcurrent at a time; the rest wait as 'queued'. A body
 * must call throwIfCancelled() before its first step and release what it holds in a finally. Inline
 * jobs (run) are a caller's request that it awaits itself (import, snapshot delete): they run at
 * once and are listed like the others.
 */
import { StorageError, isStorageError } from '../core/errors.js';
import type { VolumeCatalog } from './catalog.js';
import type { JobRecord } from './records.js';
import type { JobInfo, JobKind } from './types.js';
import { randomHex } from '../sys/random-hex.js';

const PROGRESS_PERSIST_MS = 1000;
/** Finished jobs kept in the catalog (oldest pruned first). */
const FINISHED_JOBS_KEPT = 500;
/** Old finished jobs are pruned at start-up and after this many more have finished. */
const PRUNE_EVERY_FINISHED = 100;

export interface JobContext {
  readonly id: string;
  readonly signal: AbortSignal;
  setTotal(totalBytes: number): void;
  addDone(bytes: number): void;
  /** Throws CANCELLED once the job was cancelled. */
  throwIfCancelled(): void;
}

export type JobBody<T> = (ctx: JobContext) => Promise<T>;

interface LiveJob {
  record: JobRecord;
  /** The copy last written to the catalog: the next write replaces it (compare-and-set). */
  stored: JobRecord;
  controller: AbortController;
  lastPersistMs: number;
  done: Promise<void>;
}

export interface JobRunnerOptions {
  maxConcurrent?: number;
  maxQueued?: number;
}

export function jobInfo(record: JobRecord): JobInfo {
  return {
    id: record.id,
    kind: record.kind,
    target: record.target,
    state: record.state,
    doneBytes: record.doneBytes,
    totalBytes: record.totalBytes,
    error: record.error,
    createdAt: record.createdAt,
    finishedAt: record.finishedAt,
  };
}

export class JobRunner {
  private readonly live = new Map<string, LiveJob>();
  private readonly queue: { id: string; go: () => void }[] = [];
  private running = 0;
  private persistChain: Promise<void> = Promise.resolve();
  private readonly maxConcurrent: number;
  private readonly maxQueued: number;
  private closed = false;
  private finishedSincePrune = 0;

  constructor(
    private readonly catalog: VolumeCatalog,
    options: JobRunnerOptions = {},
  ) {
    this.maxConcurrent = options.maxConcurrent ?? 2;
    this.maxQueued = options.maxQueued ?? 256;
  }

  /** Start-up: jobs the last process left queued or running are marked failed; old ones pruned. */
  async recover(): Promise<number> {
    let marked = 0;
    const records = await this.catalog.jobs.all();
    for (const record of records) {
      if (record.state !== 'queued' && record.state !== 'running') continue;
      if (this.live.has(record.id)) continue;
      const failed: JobRecord = {
        ...record,
        state: 'failed',
        error: { code: 'IO_ERROR', message: 'interrupted: Strata stopped while the job was running' },
        finishedAt: new Date().toISOString(),
      };
      await this.catalog.change((txn) => this.catalog.jobs.update(txn, record, failed));
      marked++;
    }
    await this.prune();
    return marked;
  }

  /** Starts a background job; resolves once it is recorded (queued or running). */
  async start(kind: JobKind, target: string, body: JobBody<void>): Promise<JobInfo> {
    this.checkOpen();
    if (this.queue.length >= this.maxQueued) {
      throw new StorageError('LIMIT_EXCEEDED', `too many jobs waiting (${this.queue.length}); try again later`);
    }
    const job = await this.register(kind, target, 'queued');
    job.done = new Promise<void>((resolve) => {
      const go = () => {
        this.running++;
        this.execute(job, body)
          .catch(() => {})
          .finally(() => {
            this.running--;
            resolve();
            this.queue.shift()?.go();
          });
      };
      if (this.running < this.maxConcurrent) go();
      else this.queue.push({ id: job.record.id, go });
    });
    return jobInfo(job.record);
  }

  /**
   * Runs a job the caller awaits: its result, or its error (CANCELLED when cancelled). `signal`
   * cancels it from outside, its reason (a CANCELLED StorageError) saying why: an upload's
   * client disconnected.
   */
  async run<T>(kind: JobKind, target: string, body: JobBody<T>, options: { signal?: AbortSignal } = {}): Promise<T> {
    this.checkOpen();
    const job = await this.register(kind, target, 'running');
    const outside = options.signal;
    const cancelFromOutside = () => job.controller.abort(outside?.reason);
    if (outside?.aborted) cancelFromOutside();
    else outside?.addEventListener('abort', cancelFromOutside, { once: true });
    let result: { value: T } | undefined;
    const execution = this.execute(job, async (ctx) => {
      result = { value: await body(ctx) };
    });
    job.done = execution.then(
      () => {},
      () => {},
    );
    try {
      await execution;
    } finally {
      outside?.removeEventListener('abort', cancelFromOutside);
    }
    return result!.value;
  }

  async list(): Promise<JobInfo[]> {
    const records = await this.catalog.jobs.all();
    const byId = new Map(records.map((r) => [r.id, r]));
    for (const job of this.live.values()) byId.set(job.record.id, job.record);
    return [...byId.values()].sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.id.localeCompare(b.id)).map(jobInfo);
  }

  async info(id: string): Promise<JobInfo> {
    const live = this.live.get(id);
    if (live) return jobInfo(live.record);
    const record = await this.catalog.jobs.get(id);
    if (!record) throw new StorageError('NOT_FOUND', `job '${id}' does not exist`, { fix: { operation: 'listJobs', text: 'check the id; {} lists the jobs' } });
    return jobInfo(record);
  }

  /**
   * Asks a job to stop; resolves with its state once it has stopped (succeeded when it finished
   * first). A job that had already ended is refused (BUSY): there is nothing to cancel.
   */
  async cancel(id: string): Promise<JobInfo> {
    const live = this.live.get(id);
    if (!live) {
      const ended = await this.info(id);
      throw new StorageError('BUSY', `job ${id} already ${ended.state}; nothing to cancel`);
    }
    live.controller.abort();
    // A queued job starts at once, sees the cancellation and ends (its body releases what it holds).
    const queued = this.queue.findIndex((q) => q.id === id);
    if (queued >= 0) this.queue.splice(queued, 1)[0]!.go();
    await live.done;
    return this.info(id);
  }

  /** Resolves when the job has finished (for tests and shutdown). */
  async wait(id: string): Promise<JobInfo> {
    const live = this.live.get(id);
    if (live) await live.done;
    return this.info(id);
  }

  /** Cancels every job and waits for them; no new job starts afterwards. */
  async shutdown(): Promise<void> {
    this.closed = true;
    const jobs = [...this.live.values()];
    for (const job of jobs) job.controller.abort(new StorageError('CANCELLED', 'Strata is shutting down'));
    for (const queued of this.queue.splice(0)) queued.go();
    await Promise.all(jobs.map((j) => j.done));
    await this.persistChain;
  }

  private checkOpen(): void {
    if (this.closed) throw new StorageError('BUSY', 'Strata is shutting down');
  }

  private async register(kind: JobKind, target: string, state: 'queued' | 'running'): Promise<LiveJob> {
    const record: JobRecord = {
      id: randomHex(8),
      kind,
      target,
      state,
      doneBytes: 0,
      totalBytes: 0,
      createdAt: new Date().toISOString(),
    };
    const stored = { ...record };
    await this.catalog.change((txn) => this.catalog.jobs.create(txn, stored));
    const job: LiveJob = { record, stored, controller: new AbortController(), lastPersistMs: Date.now(), done: Promise.resolve() };
    this.live.set(record.id, job);
    return job;
  }

  private async execute(job: LiveJob, body: JobBody<void>): Promise<void> {
    const record = job.record;
    record.state = 'running';
    const signal = job.controller.signal;
    const ctx: JobContext = {
      id: record.id,
      signal,
      setTotal: (totalBytes) => {
        record.totalBytes = totalBytes;
        this.maybePersist(job);
      },
      addDone: (bytes) => {
        record.doneBytes += bytes;
        this.maybePersist(job);
      },
      throwIfCancelled: () => {
        if (signal.aborted) throw cancelledError(signal);
      },
    };
    try {
      // The body runs even when the job was cancelled while queued: it checks the signal first and
      // releases what the service holds for it.
      await this.persist(job);
      await body(ctx);
      record.state = 'succeeded';
      if (record.doneBytes < record.totalBytes) record.doneBytes = record.totalBytes;
    } catch (err) {
      const cancelled = signal.aborted && (isStorageError(err, 'CANCELLED') || !isStorageError(err));
      const shuttingDown = cancelled && this.closed;
      record.state = cancelled && !shuttingDown ? 'cancelled' : 'failed';
      record.error = cancelled
        ? { code: 'CANCELLED', message: shuttingDown ? 'Strata shut down while the job was running' : cancelledError(signal).message }
        : { code: isStorageError(err) ? err.code : 'IO_ERROR', message: err instanceof Error ? err.message : String(err) };
      throw cancelled && !isStorageError(err, 'CANCELLED') ? cancelledError(signal) : err;
    } finally {
      record.finishedAt = new Date().toISOString();
      // Live until its final state is stored: info() and cancel() of a job read the catalog once it
      // is not live, and in between they found it 'running' there (cancel: "already running").
      await this.persist(job).catch(() => {});
      this.live.delete(record.id);
      if (++this.finishedSincePrune >= PRUNE_EVERY_FINISHED) {
        this.finishedSincePrune = 0;
        await this.prune().catch(() => {});
      }
    }
  }

  private maybePersist(job: LiveJob): void {
    const now = Date.now();
    if (now - job.lastPersistMs < PROGRESS_PERSIST_MS) return;
    job.lastPersistMs = now;
    void this.persist(job).catch(() => {});
  }

  /** Writes the job's record; writes are chained so that they land in order. */
  private persist(job: LiveJob): Promise<void> {
    const snapshot: JobRecord = { ...job.record };
    const write = this.persistChain.then(async () => {
      await this.catalog.change((txn) => this.catalog.jobs.update(txn, job.stored, snapshot));
      job.stored = snapshot;
    });
    this.persistChain = write.catch(() => {});
    return write;
  }

  private async prune(): Promise<void> {
    const finished = (await this.catalog.jobs.all())
      .filter((r) => r.state !== 'queued' && r.state !== 'running')
      .sort((a, b) => (a.finishedAt ?? a.createdAt).localeCompare(b.finishedAt ?? b.createdAt));
    const excess = finished.length - FINISHED_JOBS_KEPT;
    if (excess <= 0) return;
    await this.catalog.change((txn) => {
      for (const record of finished.slice(0, excess)) this.catalog.jobs.remove(txn, record);
    });
  }
}

function cancelledError(signal: AbortSignal): StorageError {
  return isStorageError(signal.reason, 'CANCELLED') ? signal.reason : new StorageError('CANCELLED', 'the job was cancelled');
}
