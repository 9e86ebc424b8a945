/**
 * The body of a chunk-hashing worker thread (chunk-hash-workers.ts starts it, for a BLAKE3 pool's
 * repository): the BLAKE3 name of each chunk it is handed, sent back with the chunks themselves.
 * The chunks' memory is transferred both ways, never copied, so the bytes named are the bytes the
 * repository then stores, and nobody can change them while they are hashed here.
 * Only node: imports and the BLAKE3 package, so the same file runs from src/ (type stripping,
 * tests) and dist/.
 */
import { createRequire } from 'node:module';
import { parentPort } from 'node:worker_threads';

/** What the repository sends: chunks to name, each one the whole of its (transferred) memory or a view of it. */
export interface ChunkHashRequest {
  readonly id: number;
  readonly chunks: readonly Uint8Array[];
}

/** The same chunks (their memory transferred back) and their names as lower-case hex, or why hashing failed. */
export type ChunkHashReply =
  | { readonly id: number; readonly chunks: readonly Uint8Array[]; readonly hashes: readonly string[] }
  | { readonly id: number; readonly chunks: readonly Uint8Array[]; readonly error: string };

type Blake3 = (input: Uint8Array) => Buffer;
/** The package src/sys/blake3.ts loads (the repository only starts this worker after it loaded there). */
const blake3 = (createRequire(import.meta.url)('@napi-rs/blake-hash') as { blake3: Blake3 }).blake3;

parentPort?.on('message', (request: ChunkHashRequest) => {
  const transfer = request.chunks.map((chunk) => chunk.buffer as ArrayBuffer);
  let reply: ChunkHashReply;
  try {
    reply = { id: request.id, chunks: request.chunks, hashes: request.chunks.map((chunk) => blake3(chunk).toString('hex')) };
  } catch (err) {
    reply = { id: request.id, chunks: request.chunks, error: err instanceof Error ? err.message : String(err) };
  }
  parentPort!.postMessage(reply, transfer);
});
