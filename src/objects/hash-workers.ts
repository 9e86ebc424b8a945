/**
 * MD5 / SHA-1 / SHA-256 of request bodies off the event loop: a large PUT's ETag (MD5) and its
 * signed payload hash (SHA-256) cost a few ms of CPU per MiB, which on the daemon's one JavaScript
 * thread capped a PUT's throughput; a small pool of worker threads (hash-worker.ts) computes them
 * while the main thread parses, hashes chunks (BLAKE3) and writes.
 *
 * `deferredDigests` gives a body's running digests: `update` copies the bytes into a batch, a slice
 * of a SharedArrayBuffer; a full batch is posted (shared, not copied) to the session's worker,
 * which hashes the batches of a session in order and acknowledges each, after which the batch is
 * filled again. A message names the batch by slab number and place; a slab's SharedArrayBuffer goes
 * to a worker once (postMessage of a Buffer view of shared memory copies it, and of the
 * SharedArrayBuffer itself costs ~0.8 ms a message). Slabs are kept at the pool's peak (at most
 * HASH_QUEUED_BYTES_MAX and a batch per body in flight on a worker). A body that ends within its
 * first batch, or is declared at most OFFLOAD_BYTES_MIN long and begins while no other such body
 * is live, is hashed here (deferredDigests). The sender bounds what is queued with `whenDrained`.
 * A large body's chunks can go instead as the caller's own memory (`updateOwned`): moved to the
 * worker (postMessage's transfer list) and moved back once read, so those bytes are never copied
 * into a batch (one copy of every byte of a large PUT less on the event loop).
 * A worker that dies fails its sessions' digests with a StorageError (the request fails and keeps
 * nothing) and is replaced for the next sessions.
 */
import { createHash } from 'node:crypto';
import type { Worker } from 'node:worker_threads';
import { StorageError } from '../core/errors.js';
import { movableMemories } from '../sys/movable-memory.js';
import { copyBytes } from '../sys/shared-copy.js';
import { poolThreadsBesideMain, startWorkerBeside } from '../sys/worker-thread.js';
import type { HashWorkerReply, HashWorkerRequest, HashWorkerSettings } from './hash-worker.js';
import { inProcessDigests, LANE_BODY_BYTES_MIN } from './lane-digests.js';

export type DeferredAlgorithm = 'md5' | 'sha1' | 'sha256';

/**
 * Bytes gathered before a batch goes to a worker (also: a body at most this long is hashed
 * in-process). Each batch is a message there and an acknowledgement back, which cost the main
 * thread ~0.4 ms each on a busy 2-core machine (a 256 MiB PUT's profile: postMessage 11% of the
 * main thread at 512 KiB); at 2 MiB a quarter of them.
 */
export const HASH_BATCH_BYTES = 2 * 1024 * 1024;
/**
 * A body declared at most this long is hashed in-process when it is the only one (deferredDigests).
 * Measured on 1 MiB PUTs one at a time (a busy 2-core machine), offloading saved the main thread
 * 0 to 1 ms/MiB but cost 1.5 to 4 ms/MiB more CPU in all (a worker wake-up per batch, the wait for
 * the last digest) and lower throughput; from 32 MiB up it saves ~1.1 ms/MiB of the main thread's ~4.2.
 */
export const OFFLOAD_BYTES_MIN = 4 * 1024 * 1024;
/** Bytes a session may have sent but not yet had hashed before its sender waits (`whenDrained`). */
export const HASH_QUEUED_BYTES_MAX = 4 * 1024 * 1024;

/** A body's digests, computed as it streams. */
export interface DeferredDigests {
  update(piece: Uint8Array): void;
  /** A promise when more than HASH_QUEUED_BYTES_MAX is queued for the worker (await it before sending more), else undefined. */
  whenDrained(): Promise<void> | undefined;
  /** The digests, in the order the algorithms were asked for. Call once. */
  digests(): Promise<Buffer[]>;
  /** The body failed: drop the session (its digests are never asked for). */
  abandon(): void;
  /**
   * Where offered: `pieces` hashed after the bytes given so far, each a view of memory of its
   * own that is moved to a worker (detached here meanwhile) or a count of zero bytes; resolves
   * with them (new views of the same memory, counts as they were) once read. Memory that cannot
   * be moved is copied in as update() does and answered as it was.
   */
  updateOwned?(pieces: readonly (Uint8Array | number)[]): Promise<(Uint8Array | number)[]>;
}

/** Owned pieces on a worker (updateOwned), answered in order with the batches. */
interface OwnedInFlight {
  resolve(pieces: (Uint8Array | number)[]): void;
  reject(err: Error): void;
}

interface Session {
  queuedBytes: number;
  /** Batches and owned pieces posted and not yet acknowledged or returned, in order (the worker answers in order). */
  readonly sent: (Batch | OwnedInFlight)[];
  /** Abandoned: kept only until its batches are acknowledged (they may not be filled before). */
  abandoned: boolean;
  drained: { promise: Promise<void>; resolve: () => void } | undefined;
  finished: { resolve: (digests: Buffer[]) => void; reject: (err: Error) => void } | undefined;
  failure: Error | undefined;
}

/** One worker thread and the sessions it holds. */
class HashWorker {
  private readonly sessions = new Map<number, Session>();
  /** Slabs whose memory this worker has been sent. */
  private readonly knownSlabs = new Set<number>();
  private readonly worker: Worker;
  dead = false;

  constructor(onDeath: (worker: HashWorker) => void) {
    this.worker = startWorkerBeside<HashWorkerReply>(import.meta.url, 'hash-worker', (reply) => this.onReply(reply), (why) => {
      this.dead = true;
      onDeath(this);
      const err = new StorageError('IO_ERROR', `a hashing worker thread stopped (${why}); the request that was using it fails and keeps nothing: send it again`);
      for (const session of this.sessions.values()) fail(session, err);
      this.sessions.clear();
    }, { senderQueuedBytesMax: HASH_QUEUED_BYTES_MAX } satisfies HashWorkerSettings);
  }

  /** The thread keeps the process alive only while it holds a session (a digest is awaited). */
  addSession(id: number, session: Session): void {
    if (this.sessions.size === 0) this.worker.ref();
    this.sessions.set(id, session);
  }

  dropSession(id: number): void {
    if (this.sessions.delete(id) && this.sessions.size === 0) this.worker.unref();
  }

  get queuedBytes(): number {
    let total = 0;
    for (const session of this.sessions.values()) total += session.queuedBytes;
    return total;
  }

  post(request: HashWorkerRequest): void {
    if (!this.dead) this.worker.postMessage(request);
  }

  /** Posts a batch to hash, with its slab's memory the first time this worker sees that slab. */
  postBatch(session: number, algorithms: readonly DeferredAlgorithm[], batch: Batch, lengthBytes: number): void {
    const known = this.knownSlabs.has(batch.slab);
    this.knownSlabs.add(batch.slab);
    this.post({ kind: 'update', session, algorithms, slab: batch.slab, ...(known ? {} : { memory: batch.memory }), offsetBytes: batch.view.byteOffset, lengthBytes });
  }

  /** Posts owned pieces to hash (their memory moved: `transfer` names it); false, nothing moved, when Node will not move it. */
  postOwned(session: number, algorithms: readonly DeferredAlgorithm[], pieces: readonly (Uint8Array | number)[], transfer: ArrayBuffer[]): boolean {
    if (this.dead) return false;
    try {
      this.worker.postMessage({ kind: 'owned', session, algorithms, pieces } satisfies HashWorkerRequest, transfer);
      return true;
    } catch {
      return false; // DataCloneError: memory Node will not move; postMessage then moved none of it
    }
  }

  /** Ends the thread (tests: a worker that dies mid-body). */
  terminate(): Promise<number> {
    return this.worker.terminate();
  }

  private onReply(reply: HashWorkerReply): void {
    const session = this.sessions.get(reply.session);
    if (session === undefined) return;
    if (reply.kind === 'returned') {
      const owned = session.sent.shift() as OwnedInFlight;
      if (session.abandoned && session.sent.length === 0) this.dropSession(reply.session);
      owned.resolve([...reply.pieces]);
      return;
    }
    if (reply.kind === 'ack') {
      const batch = session.sent.shift() as Batch;
      giveBackBatch(batch);
      session.queuedBytes -= batch.view.length;
      if (session.abandoned && session.sent.length === 0) this.dropSession(reply.session);
      if (session.queuedBytes <= HASH_QUEUED_BYTES_MAX / 2 && session.drained !== undefined) {
        session.drained.resolve();
        session.drained = undefined;
      }
      return;
    }
    this.dropSession(reply.session);
    if (reply.md5InLane) laneBodies++;
    session.finished?.resolve(reply.digests.map((d) => Buffer.from(d.buffer, d.byteOffset, d.byteLength)));
  }
}

function fail(session: Session, err: Error): void {
  session.failure = err;
  for (const sent of session.sent) if (!('view' in sent)) sent.reject(err);
  session.drained?.resolve();
  session.drained = undefined;
  session.finished?.reject(err);
}

/** Batches carved from one SharedArrayBuffer at a time (8 MiB). */
const BATCHES_PER_SLAB = 4;

/** A batch: a slice of a numbered slab of shared memory. */
interface Batch {
  readonly slab: number;
  readonly memory: SharedArrayBuffer;
  readonly view: Buffer;
}

let slabCount = 0;
/** Every batch not in use; none is dropped (the workers hold the slabs too). */
const spareBatches: Batch[] = [];

function takeBatch(): Batch {
  if (spareBatches.length === 0) {
    const memory = new SharedArrayBuffer(BATCHES_PER_SLAB * HASH_BATCH_BYTES);
    const slab = slabCount++;
    for (let i = 0; i < BATCHES_PER_SLAB; i++) spareBatches.push({ slab, memory, view: Buffer.from(memory, i * HASH_BATCH_BYTES, HASH_BATCH_BYTES) });
  }
  return spareBatches.pop()!;
}

function giveBackBatch(batch: Batch): void {
  spareBatches.push(batch);
}

const workers: HashWorker[] = [];
let nextSession = 1;

/** The live worker with the least queued; a pool short of workers (one died) starts one. */
function pickWorker(): HashWorker {
  if (workers.length < poolThreadsBesideMain()) {
    const worker = new HashWorker((dead) => {
      const at = workers.indexOf(dead);
      if (at >= 0) workers.splice(at, 1);
    });
    workers.push(worker);
    return worker;
  }
  return workers.reduce((best, w) => (w.queuedBytes < best.queuedBytes ? w : best));
}

/** updateOwned calls whose memory went to a worker (tests: a large PUT's steps are hashed where they lie). */
let ownedUpdates = 0;
export function ownedUpdatesForTests(): number {
  return ownedUpdates;
}

/** Bodies whose MD5 ran in a lane (md5-lanes.ts) so far: tests see that concurrent bodies share lanes. */
let laneBodies = 0;
export function laneBodiesForTests(): number {
  return laneBodies;
}

/** The pool's live workers (tests kill one to see its requests fail cleanly). */
export function hashWorkersForTests(): readonly { terminate(): Promise<number> }[] {
  return workers;
}

class WorkerDigests implements DeferredDigests {
  private batch: Batch | undefined;
  private batchBytes = 0;
  private worker: HashWorker | undefined;
  private session: Session | undefined;
  private readonly id = nextSession++;
  private done = false;

  /**
   * `batchBytesMax`: a batch is sent once this full (at most HASH_BATCH_BYTES). `whole`: a body
   * that fits in one batch is hashed on a worker too (a concurrent small body), not here.
   */
  constructor(
    private readonly algorithms: readonly DeferredAlgorithm[],
    private readonly batchBytesMax = HASH_BATCH_BYTES,
    private readonly whole = false,
  ) {}

  update(piece: Uint8Array): void {
    if (this.done || this.session?.failure !== undefined) return;
    let at = 0;
    while (at < piece.length) {
      this.batch ??= takeBatch();
      const take = Math.min(piece.length - at, this.batchBytesMax - this.batchBytes);
      // Shared memory: TypedArray.set copies it at a third of memcpy's speed (sys/shared-copy.ts).
      copyBytes(this.batch.view, this.batchBytes, piece.subarray(at, at + take));
      this.batchBytes += take;
      at += take;
      if (this.batchBytes === this.batchBytesMax) this.send();
    }
  }

  updateOwned(pieces: readonly (Uint8Array | number)[]): Promise<(Uint8Array | number)[]> {
    if (this.done) return Promise.reject(new StorageError('INVALID_ARGUMENT', 'a body is not hashed after its digests were asked for'));
    if (this.session?.failure !== undefined) return Promise.reject(this.session.failure);
    const transfer = pieces.length > 0 ? movableMemories(pieces) : undefined;
    if (transfer !== undefined) {
      if (this.batchBytes > 0) this.send(); // the bytes before these go first
      this.beginSession();
      let owned!: OwnedInFlight;
      const returned = new Promise<(Uint8Array | number)[]>((resolve, reject) => (owned = { resolve, reject }));
      if (this.worker!.postOwned(this.id, this.algorithms, pieces, transfer)) {
        ownedUpdates++;
        this.session!.sent.push(owned);
        return returned;
      }
    }
    for (const piece of pieces) this.update(typeof piece === 'number' ? new Uint8Array(piece) : piece);
    return Promise.resolve([...pieces]);
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
    if (this.session === undefined && (!this.whole || this.batchBytes === 0)) {
      // The whole body fitted in one batch: hash it here.
      const data = this.batch === undefined ? new Uint8Array(0) : this.batch.view.subarray(0, this.batchBytes);
      const digests = this.algorithms.map((algorithm) => createHash(algorithm).update(data).digest());
      if (this.batch !== undefined) giveBackBatch(this.batch);
      this.batch = undefined;
      return digests;
    }
    if (this.batchBytes > 0) this.send();
    const session = this.session!; // send() began it
    if (session.failure !== undefined) throw session.failure;
    const result = new Promise<Buffer[]>((resolve, reject) => (session.finished = { resolve, reject }));
    this.worker!.post({ kind: 'finish', session: this.id, algorithms: this.algorithms });
    return await result;
  }

  abandon(): void {
    if (this.done) return;
    this.done = true;
    if (this.batch !== undefined) giveBackBatch(this.batch);
    this.batch = undefined;
    if (this.session === undefined) return;
    this.session.abandoned = true;
    if (this.session.sent.length === 0) this.worker!.dropSession(this.id);
    this.worker!.post({ kind: 'abandon', session: this.id });
  }

  private beginSession(): void {
    if (this.session !== undefined) return;
    this.worker = pickWorker();
    this.session = { queuedBytes: 0, sent: [], abandoned: false, drained: undefined, finished: undefined, failure: undefined };
    this.worker.addSession(this.id, this.session);
  }

  private send(): void {
    this.beginSession();
    const batch = this.batch!;
    this.session!.queuedBytes += batch.view.length;
    this.session!.sent.push(batch);
    this.worker!.postBatch(this.id, this.algorithms, batch, this.batchBytes);
    this.batch = undefined;
    this.batchBytes = 0;
  }
}

/**
 * Declared bodies of at least this many bytes (and at most OFFLOAD_BYTES_MIN) count as live while
 * they stream; one that begins while another is live may be hashed on a worker (deferredDigests).
 */
export const CONCURRENT_OFFLOAD_BYTES_MIN = LANE_BODY_BYTES_MIN;
/** Declared bodies of CONCURRENT_OFFLOAD_BYTES_MIN to OFFLOAD_BYTES_MIN whose digests are still running. */
let liveSmallBodies = 0;

/**
 * Object writes in progress (beginObjectWrite: a PUT, UploadPart, CopyObject or UploadPartCopy
 * from its first byte to its commit).
 * Bodies themselves rarely overlap on the event loop: a 1 MiB body over loopback arrives in one
 * turn of the loop and is hashed as it arrives, so at 16 concurrent PUTs the next one's headers
 * are parsed after this one's digests are asked for (bench:s3 busy, 1 MiB c16: 1 in 10 bodies
 * began beside a live one). The other writes wait in their commits and parts of their bodies
 * meanwhile: a body's hashing on a worker overlaps them.
 */
let objectWritesInFlight = 0;

/** Counts an object write as in progress until the function returned is called (once). */
export function beginObjectWrite(): () => void {
  objectWritesInFlight++;
  let ended = false;
  return () => {
    if (!ended) objectWritesInFlight--;
    ended = true;
  };
}

/** Runs `work` counted as an object write in progress (beginObjectWrite) until it settles. */
export async function asObjectWrite<T>(work: () => Promise<T>): Promise<T> {
  const endWrite = beginObjectWrite();
  try {
    return await work();
  } finally {
    endWrite();
  }
}

/** Object writes in progress now (tests). */
export function objectWritesInFlightForTests(): number {
  return objectWritesInFlight;
}

/** Counts `digests` as a live small body until its digests are asked for or it is abandoned. */
function countedLive(digests: DeferredDigests): DeferredDigests {
  liveSmallBodies++;
  let live = true;
  const leave = (): void => {
    if (live) liveSmallBodies--;
    live = false;
  };
  const owned = digests.updateOwned?.bind(digests);
  return {
    update: (piece) => digests.update(piece),
    ...(owned === undefined ? {} : { updateOwned: owned }),
    whenDrained: () => digests.whenDrained(),
    digests: () => {
      leave();
      return digests.digests();
    },
    abandon: () => {
      leave();
      digests.abandon();
    },
  };
}

/** Small bodies sent whole to a worker because another was live (tests). */
let concurrentOffloads = 0;
export function concurrentOffloadsForTests(): number {
  return concurrentOffloads;
}

/**
 * Running digests of a body. Past OFFLOAD_BYTES_MIN (or undeclared): on a worker thread once the
 * body outgrows one batch. A declared smaller body alone: here, with no worker round trip (at one
 * PUT at a time the hand-offs cost more than they overlap: 1 MiB PUTs at c1 on a busy machine
 * 63-67 vs 68-76 PUTs/s, 35% more CPU). A declared body of CONCURRENT_OFFLOAD_BYTES_MIN or more
 * that begins while another is live or another object write is in progress (beginObjectWrite): on
 * a worker, where the data writer hands it its chunks' memory (updateOwned) and has them named off
 * this thread too, or, fed by update(), sent whole as one batch (or HASH_BATCH_BYTES pieces); on
 * the worker its MD5 shares lanes with the other bodies'. At 16 concurrent 1 MiB PUTs the event
 * loop is the busy thread, quiet or busy: both paths together took the PUTs from 156-174 to
 * 193-208 PUTs/s quiet and from 120-132 to 149-152 beside two CPU-bound processes, at the same
 * CPU per GiB (bench/RESULTS.md). (Copied into batches and named here, a worker had cost ~20% more
 * CPU per GiB quiet: offloading then waited for the event loop to wait for a CPU.)
 */
export function deferredDigests(algorithms: readonly DeferredAlgorithm[], declaredBytes?: number): DeferredDigests {
  if (declaredBytes === undefined || declaredBytes > OFFLOAD_BYTES_MIN) return new WorkerDigests(algorithms);
  if (declaredBytes < CONCURRENT_OFFLOAD_BYTES_MIN) return inProcessDigests(algorithms, declaredBytes);
  // Another body streaming, or another write past its body (this body's own write counts one).
  const beside = liveSmallBodies > 0 || objectWritesInFlight > 1;
  if (!beside) return countedLive(inProcessDigests(algorithms, declaredBytes));
  concurrentOffloads++;
  return countedLive(new WorkerDigests(algorithms, Math.min(HASH_BATCH_BYTES, declaredBytes), true));
}
