/**
 * MD5 / SHA-1 / SHA-256 of request bodies off the event loop: a large PUT's ETag (MD5) and its
 * signed payload hash (SHA-256) cost a few ms of CPU per MiB, which on the daemon's one JavaScript
 * thread capped a PUT's throughput; a small pool of worker threads (hash-worker.ts) computes them
 * while the main thread parses, hashes chunks (BLAKE3) and writes.
 *
 * `deferredDigests` gives a body's running digests: `update` copies the bytes into a batch; a full
 * batch is transferred (not copied again) to the session's worker, which hashes the batches of a
 * session in order. A body that ends within its first batch is hashed here (a worker round trip
 * costs more than hashing a few KiB). The sender bounds what is queued with `whenDrained`.
 * A worker that dies fails its sessions' digests with a StorageError (the request fails and keeps
 * nothing) and is replaced for the next sessions.
 */
import { createHash } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { StorageError } from '../core/errors.js';
import type { HashWorkerReply, HashWorkerRequest } from './hash-worker.js';

export type DeferredAlgorithm = 'md5' | 'sha1' | 'sha256';

/** Bytes gathered before a batch goes to a worker (also: a body at most this long is hashed in-process). */
export const HASH_BATCH_BYTES = 256 * 1024;
/** Bytes a session may have sent but not yet had hashed before its sender waits (`whenDrained`). */
export const HASH_QUEUED_BYTES_MAX = 8 * 1024 * 1024;
/** Workers in the pool: the cores beside the main thread's, at least one, at most four. */
const WORKERS_MAX = 4;

/** A body's digests, computed as it streams. */
export interface DeferredDigests {
  update(piece: Uint8Array): void;
  /** A promise when more than HASH_QUEUED_BYTES_MAX is queued for the worker (await it before sending more), else undefined. */
  whenDrained(): Promise<void> | undefined;
  /** The digests, in the order the algorithms were asked for. Call once. */
  digests(): Promise<Buffer[]>;
  /** The body failed: drop the session (its digests are never asked for). */
  abandon(): void;
}

interface Session {
  queuedBytes: number;
  drained: { promise: Promise<void>; resolve: () => void } | undefined;
  finished: { resolve: (digests: Buffer[]) => void; reject: (err: Error) => void } | undefined;
  failure: Error | undefined;
}

/** One worker thread and the sessions it holds. */
class HashWorker {
  readonly sessions = new Map<number, Session>();
  private readonly worker: Worker;
  dead = false;

  constructor(onDeath: (worker: HashWorker) => void) {
    const here = import.meta.url;
    // From src/ (tests, type stripping) the worker is the .ts file beside this one; from dist/, the .js.
    this.worker = new Worker(new URL(here.endsWith('.ts') ? './hash-worker.ts' : './hash-worker.js', here));
    this.worker.unref();
    this.worker.on('message', (reply: HashWorkerReply) => this.onReply(reply));
    const die = (why: string): void => {
      if (this.dead) return;
      this.dead = true;
      onDeath(this);
      const err = new StorageError('IO_ERROR', `a hashing worker thread stopped (${why}); the request that was using it fails and keeps nothing: send it again`);
      for (const session of this.sessions.values()) fail(session, err);
      this.sessions.clear();
    };
    this.worker.on('error', (err) => die(err.message));
    this.worker.on('exit', (code) => die(`exit code ${code}`));
  }

  get queuedBytes(): number {
    let total = 0;
    for (const session of this.sessions.values()) total += session.queuedBytes;
    return total;
  }

  post(request: HashWorkerRequest, transfer: ArrayBuffer[] = []): void {
    if (!this.dead) this.worker.postMessage(request, transfer);
  }

  /** Ends the thread (tests: a worker that dies mid-body). */
  terminate(): Promise<number> {
    return this.worker.terminate();
  }

  private onReply(reply: HashWorkerReply): void {
    if (reply.kind === 'ack') giveBackBatch(reply.data.buffer as ArrayBuffer);
    const session = this.sessions.get(reply.session);
    if (session === undefined) return;
    if (reply.kind === 'ack') {
      session.queuedBytes -= reply.data.length;
      if (session.queuedBytes <= HASH_QUEUED_BYTES_MAX / 2 && session.drained !== undefined) {
        session.drained.resolve();
        session.drained = undefined;
      }
      return;
    }
    this.sessions.delete(reply.session);
    session.finished?.resolve(reply.digests.map((d) => Buffer.from(d.buffer, d.byteOffset, d.byteLength)));
  }
}

function fail(session: Session, err: Error): void {
  session.failure = err;
  session.drained?.resolve();
  session.drained = undefined;
  session.finished?.reject(err);
}

/** Batch buffers the workers gave back, kept for reuse (at most what two sessions may queue). */
const SPARE_BATCHES_MAX = (2 * HASH_QUEUED_BYTES_MAX) / HASH_BATCH_BYTES;
const spareBatches: ArrayBuffer[] = [];

function takeBatch(): Buffer {
  const spare = spareBatches.pop();
  return spare === undefined ? Buffer.allocUnsafeSlow(HASH_BATCH_BYTES) : Buffer.from(spare);
}

function giveBackBatch(buffer: ArrayBuffer): void {
  if (buffer.byteLength === HASH_BATCH_BYTES && spareBatches.length < SPARE_BATCHES_MAX) spareBatches.push(buffer);
}

const workers: HashWorker[] = [];
let nextSession = 1;

function workerCount(): number {
  return Math.max(1, Math.min(WORKERS_MAX, availableParallelism() - 1));
}

/** The live worker with the least queued; a pool short of workers (one died) starts one. */
function pickWorker(): HashWorker {
  if (workers.length < workerCount()) {
    const worker = new HashWorker((dead) => {
      const at = workers.indexOf(dead);
      if (at >= 0) workers.splice(at, 1);
    });
    workers.push(worker);
    return worker;
  }
  return workers.reduce((best, w) => (w.queuedBytes < best.queuedBytes ? w : best));
}

/** The pool's live workers (tests kill one to see its requests fail cleanly). */
export function hashWorkersForTests(): readonly { terminate(): Promise<number> }[] {
  return workers;
}

class WorkerDigests implements DeferredDigests {
  private batch: Buffer | undefined;
  private batchBytes = 0;
  private worker: HashWorker | undefined;
  private session: Session | undefined;
  private readonly id = nextSession++;
  private done = false;

  constructor(private readonly algorithms: readonly DeferredAlgorithm[]) {}

  update(piece: Uint8Array): void {
    if (this.session?.failure !== undefined) return;
    let at = 0;
    while (at < piece.length) {
      this.batch ??= takeBatch();
      const take = Math.min(piece.length - at, HASH_BATCH_BYTES - this.batchBytes);
      this.batch.set(piece.subarray(at, at + take), this.batchBytes);
      this.batchBytes += take;
      at += take;
      if (this.batchBytes === HASH_BATCH_BYTES) this.send();
    }
  }

  whenDrained(): Promise<void> | undefined {
    const session = this.session;
    if (session === undefined || session.queuedBytes <= HASH_QUEUED_BYTES_MAX) return undefined;
    if (session.drained === undefined) {
      let resolve!: () => void;
      const promise = new Promise<void>((r) => (resolve = r));
      session.drained = { promise, resolve };
    }
    return session.drained.promise;
  }

  async digests(): Promise<Buffer[]> {
    if (this.done) throw new StorageError('INVALID_ARGUMENT', 'the digests of a body are asked for once');
    this.done = true;
    if (this.session === undefined) {
      // The whole body fitted in one batch: hash it here.
      const data = this.batch === undefined ? new Uint8Array(0) : this.batch.subarray(0, this.batchBytes);
      const digests = this.algorithms.map((algorithm) => createHash(algorithm).update(data).digest());
      if (this.batch !== undefined) giveBackBatch(this.batch.buffer as ArrayBuffer);
      this.batch = undefined;
      return digests;
    }
    if (this.batchBytes > 0) this.send();
    const session = this.session;
    if (session.failure !== undefined) throw session.failure;
    const result = new Promise<Buffer[]>((resolve, reject) => (session.finished = { resolve, reject }));
    this.worker!.post({ kind: 'finish', session: this.id, algorithms: this.algorithms });
    return await result;
  }

  abandon(): void {
    if (this.done) return;
    this.done = true;
    if (this.session === undefined) return;
    this.worker!.sessions.delete(this.id);
    this.worker!.post({ kind: 'abandon', session: this.id });
  }

  private send(): void {
    if (this.session === undefined) {
      this.worker = pickWorker();
      this.session = { queuedBytes: 0, drained: undefined, finished: undefined, failure: undefined };
      this.worker.sessions.set(this.id, this.session);
    }
    const data = new Uint8Array(this.batch!.buffer, 0, this.batchBytes);
    this.session.queuedBytes += this.batchBytes;
    this.worker!.post({ kind: 'update', session: this.id, algorithms: this.algorithms, data }, [data.buffer as ArrayBuffer]);
    this.batch = undefined;
    this.batchBytes = 0;
  }
}

/** Running digests of a body, computed on a worker thread once the body outgrows one batch. */
export function deferredDigests(algorithms: readonly DeferredAlgorithm[]): DeferredDigests {
  return new WorkerDigests(algorithms);
}
