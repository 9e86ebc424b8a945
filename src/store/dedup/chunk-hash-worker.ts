/**
 * The body of a chunk-hashing worker thread (chunk-hash-workers.ts starts it, for a BLAKE3 pool's
 * repository): the BLAKE3 name of each chunk it is handed and the CRC-32s of its 4 KiB blocks as a
 * version 2 pack stores them (pack-blocks.ts), sent back with the chunks themselves.
 * The chunks' memory is transferred both ways, never copied, so the bytes named are the bytes the
 * repository then stores, and nobody can change them while they are hashed here.
 * Given a buffer to lay them out in (ChunkHashRequest.layOut), it also writes each chunk there as
 * a version 2 pack stores it (its blocks, each followed by its CRC), back to back from
 * `headBytes`: the copy into the pack's layout, which the main thread made when it built the
 * pack, is made here, and a pack of exactly these chunks is finished in that buffer
 * (pack-format.ts PackBuilder.finishInPlace).
 * Only node: imports, the BLAKE3 package and src/sys/crc.ts loaded by path, so the same file runs
 * from src/ (type stripping, tests) and dist/.
 */
import { createRequire } from 'node:module';
import { parentPort } from 'node:worker_threads';

/** What the repository sends: chunks to name, each one the whole of its (transferred) memory or a view of it. */
export interface ChunkHashRequest {
  readonly id: number;
  readonly chunks: readonly Uint8Array[];
  /** Memory (transferred) to lay the chunks out in from `headBytes`: large enough for all of them (storedChunkBytes each). */
  readonly layOut?: { readonly memory: ArrayBuffer; readonly headBytes: number };
}

/**
 * The same chunks (their memory transferred back), their names as lower-case hex and their blocks'
 * CRCs (every chunk's, one after another: ceil(length / 4096) each), or why hashing failed.
 */
export type ChunkHashReply =
  | { readonly id: number; readonly chunks: readonly Uint8Array[]; readonly hashes: readonly string[]; readonly blockChecksums: Uint32Array; readonly laidOut?: ArrayBuffer }
  | { readonly id: number; readonly chunks: readonly Uint8Array[]; readonly error: string };

type Blake3 = (input: Uint8Array) => Buffer;
/** The package src/sys/blake3.ts loads (the repository only starts this worker after it loaded there). */
const blake3 = (createRequire(import.meta.url)('@napi-rs/blake-hash') as { blake3: Blake3 }).blake3;
/** sys/crc.ts's CRC-32 (the package, zlib's where it does not load), loaded by path: .ts from src/ under type stripping, .js from dist/. */
const { crc32 } = (await import(new URL(`../../sys/crc.${import.meta.url.endsWith('.ts') ? 'ts' : 'js'}`, import.meta.url).href)) as typeof import('../../sys/crc.js');

/** pack-blocks.ts's block size and seeding (which imports this worker cannot follow from src/): a test reads the blocks back through their checks. */
const BLOCK_BYTES = 4096;
const BLOCK_CHECKSUM_BYTES = 4;
const BLOCK_INDEX_MULTIPLIER = 0x9e3779b1;

/** Writes the CRCs of `chunk`'s blocks (named `hash`) into `into` from `at`; returns the index after them. */
function blockChecksums(chunk: Uint8Array, hash: string, into: Uint32Array, at: number): number {
  const hashSeed = crc32(hash);
  for (let block = 0, from = 0; from < chunk.length; block++, from += BLOCK_BYTES) {
    into[at++] = crc32(chunk.subarray(from, from + BLOCK_BYTES), (hashSeed ^ Math.imul(block + 1, BLOCK_INDEX_MULTIPLIER)) >>> 0);
  }
  return at;
}

/**
 * Writes the chunks' blocks, each followed by its CRC (`checksums`, chunk after chunk), into
 * `memory` from `headBytes`; false, nothing promised about `memory`, when they do not fit.
 */
function layOut(chunks: readonly Uint8Array[], checksums: Uint32Array, memory: ArrayBuffer, headBytes: number): boolean {
  const storedBytes = chunks.reduce((sum, chunk) => sum + chunk.length + Math.ceil(chunk.length / BLOCK_BYTES) * BLOCK_CHECKSUM_BYTES, 0);
  if (headBytes + storedBytes > memory.byteLength) return false;
  const target = Buffer.from(memory);
  let at = headBytes;
  let block = 0;
  for (const chunk of chunks) {
    for (let from = 0; from < chunk.length; from += BLOCK_BYTES) {
      const bytes = chunk.subarray(from, Math.min(chunk.length, from + BLOCK_BYTES));
      target.set(bytes, at);
      at = target.writeUInt32LE(checksums[block++]!, at + bytes.length);
    }
  }
  return true;
}

parentPort?.on('message', (request: ChunkHashRequest) => {
  const transfer = request.chunks.map((chunk) => chunk.buffer as ArrayBuffer);
  let reply: ChunkHashReply;
  try {
    const hashes = request.chunks.map((chunk) => blake3(chunk).toString('hex'));
    const checksums = new Uint32Array(request.chunks.reduce((blocks, chunk) => blocks + Math.ceil(chunk.length / BLOCK_BYTES), 0));
    let at = 0;
    for (const [i, chunk] of request.chunks.entries()) at = blockChecksums(chunk, hashes[i]!, checksums, at);
    const memory = request.layOut?.memory;
    const laidOut = memory !== undefined && layOut(request.chunks, checksums, memory, request.layOut!.headBytes) ? memory : undefined;
    reply = { id: request.id, chunks: request.chunks, hashes, blockChecksums: checksums, ...(laidOut === undefined ? {} : { laidOut }) };
    transfer.push(checksums.buffer);
    if (laidOut !== undefined) transfer.push(laidOut);
  } catch (err) {
    reply = { id: request.id, chunks: request.chunks, error: err instanceof Error ? err.message : String(err) };
  }
  parentPort!.postMessage(reply, transfer);
});
