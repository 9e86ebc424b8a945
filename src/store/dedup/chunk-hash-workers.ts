/**
 * BLAKE3 names of chunks and the CRC-32s of their 4 KiB blocks, computed on worker threads
 * (chunk-hash-worker.ts), for a repository whose caller hands it a step of chunks at a time
 * (DedupChunkRepository.hashOwnedChunks: an S3 PUT's 4 MiB steps). On a 2-core machine a large
 * PUT's one JavaScript thread is the busier core; BLAKE3 of 64 KiB chunks and the block CRCs a
 * pack stores are ~0.3 ms of it per MiB each, which a worker does beside it.
 *
 * The chunks' memory is transferred to the worker and back (postMessage's transfer list), not
 * copied: the caller's views are detached meanwhile, and the chunks come back as new views of the
 * same memory, so the name the worker gives is the name of the very bytes the repository stores.
 * Memory handed to lay the chunks out in (a pack's buffer) moves there and back the same way.
 * A chunk whose memory cannot be moved (shared memory, Node's pooled Buffer memory, memory holding
 * two of the chunks) makes the call answer undefined, nothing moved: the repository hashes on its
 * own thread then.
 * A worker that dies fails the calls it held (StorageError IO_ERROR; their chunks are lost with it)
 * and is replaced for the next call.
 */
import type { Worker } from 'node:worker_threads';
import { StorageError } from '../../core/errors.js';
import { movableMemories } from '../../sys/movable-memory.js';
import { poolThreadsBesideMain, startWorkerBeside } from '../../sys/worker-thread.js';
import type { ChunkHashReply, ChunkHashRequest } from './chunk-hash-worker.js';

/**
 * The fewest chunks a call sends to a worker: a round trip costs the main thread about what BLAKE3
 * of one or two 64 KiB chunks does, so a smaller call is hashed on the caller's thread.
 */
export const HASH_ON_WORKER_CHUNKS_MIN = 8;

/**
 * Named chunks: `chunks` are the call's chunks (same memory, new views), `hashes` their names in
 * order, `blockChecksums` their 4 KiB blocks' CRCs as pack-blocks.ts seeds them, chunk after chunk.
 */
export interface WorkerHashedChunks {
  readonly chunks: readonly Uint8Array[];
  readonly hashes: readonly string[];
  readonly blockChecksums: Uint32Array;
  /** The lay-out memory with the chunks written in it as a version 2 pack stores them (ChunkLayOut), when one was given. */
  readonly laidOut?: Uint8Array;
}

/** Memory for the worker to write the chunks into as a v2 pack stores them, from `headBytes` (chunk-hash-worker.ts). */
export interface ChunkLayOut {
  /** The whole of its ArrayBuffer (moved to the worker: detached here until the answer). */
  readonly memory: Uint8Array;
  readonly headBytes: number;
}

interface Waiting {
  resolve(named: WorkerHashedChunks): void;
  reject(err: Error): void;
}

class ChunkHashWorker {
  readonly waiting = new Map<number, Waiting>();
  private readonly thread: Worker;

  constructor(onDeath: (worker: ChunkHashWorker) => void) {
    this.thread = startWorkerBeside<ChunkHashReply>(import.meta.url, 'chunk-hash-worker', (reply) => this.answer(reply), (why) => {
      onDeath(this);
      const err = new StorageError('IO_ERROR', `a chunk hashing thread stopped (${why}); the write that was using it fails and keeps nothing: send it again`);
      for (const waiting of this.waiting.values()) waiting.reject(err);
      this.waiting.clear();
    });
  }

  /** Sends the chunks (moved, not copied: `transfer` names their memory and layOut's); false, nothing moved, when Node will not move it. */
  send(id: number, chunks: readonly Uint8Array[], layOut: ChunkLayOut | undefined, transfer: ArrayBuffer[], waiting: Waiting): boolean {
    const request: ChunkHashRequest = { id, chunks, ...(layOut === undefined ? {} : { layOut: { memory: layOut.memory.buffer as ArrayBuffer, headBytes: layOut.headBytes } }) };
    try {
      this.thread.postMessage(request, transfer);
    } catch {
      return false; // DataCloneError: memory Node will not move; postMessage then moved none of it
    }
    // The thread keeps the process alive only while it holds a call.
    if (this.waiting.size === 0) this.thread.ref();
    this.waiting.set(id, waiting);
    return true;
  }

  terminate(): Promise<number> {
    return this.thread.terminate();
  }

  private answer(reply: ChunkHashReply): void {
    const waiting = this.waiting.get(reply.id);
    if (waiting === undefined) return;
    this.waiting.delete(reply.id);
    if (this.waiting.size === 0) this.thread.unref();
    if ('error' in reply) waiting.reject(new StorageError('IO_ERROR', `a chunk hashing thread could not hash: ${reply.error}`));
    else waiting.resolve({ chunks: reply.chunks, hashes: reply.hashes, blockChecksums: reply.blockChecksums, ...(reply.laidOut === undefined ? {} : { laidOut: new Uint8Array(reply.laidOut) }) });
  }
}

const workers: ChunkHashWorker[] = [];
let nextCall = 1;

/** The worker holding the fewest calls; a pool short of workers (one died, or none started yet) starts one. */
function pickWorker(): ChunkHashWorker {
  if (workers.length < poolThreadsBesideMain()) {
    const worker = new ChunkHashWorker((dead) => {
      const at = workers.indexOf(dead);
      if (at >= 0) workers.splice(at, 1);
    });
    workers.push(worker);
    return worker;
  }
  return workers.reduce((best, w) => (w.waiting.size < best.waiting.size ? w : best));
}

/**
 * The transfer list moving the chunks' memory and the lay-out memory, when every chunk stands on
 * memory of its own that postMessage can move and the lay-out memory is the whole of another;
 * else undefined.
 */
function transferList(chunks: readonly Uint8Array[], layOut: ChunkLayOut | undefined): ArrayBuffer[] | undefined {
  if (layOut !== undefined && (layOut.memory.byteOffset !== 0 || layOut.memory.length !== layOut.memory.buffer.byteLength)) return undefined;
  return movableMemories(layOut === undefined ? chunks : [...chunks, layOut.memory]);
}

/**
 * BLAKE3 of each chunk on a worker thread, and with `layOut` the chunks written into its memory as
 * a v2 pack stores them. The chunks' memory (and layOut's) moves there and back: the caller's
 * views are detached when this returns a promise, and the answer holds new views of the same bytes.
 * Undefined, nothing moved, for fewer than HASH_ON_WORKER_CHUNKS_MIN chunks or when a chunk's
 * memory cannot be moved. Rejects (IO_ERROR) when the worker dies.
 */
export function hashChunksOnWorker(chunks: readonly Uint8Array[], layOut?: ChunkLayOut): Promise<WorkerHashedChunks> | undefined {
  const transfer = chunks.length < HASH_ON_WORKER_CHUNKS_MIN ? undefined : transferList(chunks, layOut);
  if (transfer === undefined) return undefined;
  let waiting!: Waiting;
  const named = new Promise<WorkerHashedChunks>((resolve, reject) => (waiting = { resolve, reject }));
  return pickWorker().send(nextCall++, chunks, layOut, transfer, waiting) ? named : undefined;
}

/** The pool's live workers (tests kill one to see its calls fail cleanly and the next call work). */
export function chunkHashWorkersForTests(): readonly { terminate(): Promise<number> }[] {
  return workers;
}
