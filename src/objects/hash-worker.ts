/**
 * The body of a hashing worker thread (hash-workers.ts starts it): running MD5 / SHA-1 / SHA-256
 * digests of request bodies, one session per body, fed batches of bytes in order. It acknowledges
 * each batch (so the sender can bound what is queued and fill the batch's shared memory again) and answers a finish with the digests.
 * Only node: imports, so the same file runs from src/ (type stripping, tests) and dist/.
 */
import { createHash, type Hash } from 'node:crypto';
import { parentPort } from 'node:worker_threads';

/** What the main thread sends: bytes for a session, its end, or its abandonment. */
export type HashWorkerRequest =
  | {
      readonly kind: 'update';
      readonly session: number;
      readonly algorithms: readonly string[];
      /** The batch's slab of shared memory, by number; sent with the slab's first batch to this worker. */
      readonly slab: number;
      readonly memory?: SharedArrayBuffer;
      readonly offsetBytes: number;
      readonly lengthBytes: number;
    }
  | { readonly kind: 'finish'; readonly session: number; readonly algorithms: readonly string[] }
  | { readonly kind: 'abandon'; readonly session: number };

/** What the worker answers. */
export type HashWorkerReply =
  | { readonly kind: 'ack'; readonly session: number }
  | { readonly kind: 'digests'; readonly session: number; readonly digests: readonly Uint8Array[] };

const sessions = new Map<number, Hash[]>();
/** The sender's slabs of shared memory (kept for the thread's life, as the sender keeps them). */
const slabs = new Map<number, SharedArrayBuffer>();

function hashesOf(session: number, algorithms: readonly string[]): Hash[] {
  let hashes = sessions.get(session);
  if (hashes === undefined) {
    hashes = algorithms.map((algorithm) => createHash(algorithm));
    sessions.set(session, hashes);
  }
  return hashes;
}

parentPort?.on('message', (request: HashWorkerRequest) => {
  switch (request.kind) {
    case 'update': {
      if (request.memory !== undefined) slabs.set(request.slab, request.memory);
      const data = new Uint8Array(slabs.get(request.slab)!, request.offsetBytes, request.lengthBytes);
      for (const hash of hashesOf(request.session, request.algorithms)) hash.update(data);
      // The batch (shared memory) may be filled again once acknowledged.
      parentPort!.postMessage({ kind: 'ack', session: request.session } satisfies HashWorkerReply);
      break;
    }
    case 'finish': {
      const digests = hashesOf(request.session, request.algorithms).map((hash) => new Uint8Array(hash.digest()));
      sessions.delete(request.session);
      parentPort!.postMessage({ kind: 'digests', session: request.session, digests } satisfies HashWorkerReply);
      break;
    }
    case 'abandon':
      sessions.delete(request.session);
      break;
  }
});
