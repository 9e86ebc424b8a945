/**
 * Reading a byte range of an object: its chunks are read from the pool's ChunkRepository in runs
 * of up to RUN_CHUNKS_MAX consecutive stored chunks (one `readChunks` call each: one buffer, one
 * ranged read where the chunks lie back to back in a pack), RUNS_IN_FLIGHT_MAX runs ahead of the
 * consumer, and handed out in order, trimmed to the range; zero chunks cost no read. A repository
 * without `readChunks` is read a chunk at a time, CHUNK_READS_IN_FLIGHT_MAX ahead. Memory is
 * bounded by the reads in flight (~2 MiB of 64 KiB chunks).
 *
 * A run is read into an array from run-buffers.ts; the consumer that writes the pieces to a socket
 * gives each back (releaseRunBuffer) once written, so a large GET reuses a few MiB instead of
 * allocating one per MiB; a consumer that does not simply lets them be collected.
 *
 * Large pieces matter past the repository too: the HTTP response writes each piece to the socket
 * as one write, so a MiB goes out in one system call instead of sixteen.
 */
import type { ChunkManifest } from '../store/chunked/manifest.js';
import type { ChunkRepository } from '../store/dedup/repository.js';
import { takeRunBuffer } from './run-buffers.js';

/** Chunk reads ahead of the consumer for a repository read a chunk at a time. */
export const CHUNK_READS_IN_FLIGHT_MAX = 16;
/** Chunks per run: 1 MiB of 64 KiB chunks, one read and one socket write. */
const RUN_CHUNKS_MAX = 16;
/** Runs ahead of the consumer: the next MiB is read while the last one is sent. */
const RUNS_IN_FLIGHT_MAX = 2;
/** Room per chunk in a run's array beyond its bytes, for checksums stored with it (dedup: 4 bytes per 4 KiB block). */
const STORED_OVERHEAD_PER_KIB_BYTES = 1;

/** A shared all-zero chunk handed out for zero chunks (readers must not write to what they get). */
let zeroChunk: Uint8Array | undefined;

/** A read of chunks [firstIndex, firstIndex + chunkCount) of the object, their bytes back to back. */
interface Piece {
  readonly firstIndex: number;
  readonly bytes: Promise<Uint8Array>;
}

/** Bytes [startBytes, endBytes) of the object `manifest` describes, in order. */
export async function* readBody(
  repository: ChunkRepository,
  manifest: ChunkManifest,
  startBytes: number,
  endBytes: number,
  signal?: AbortSignal,
): AsyncGenerator<Uint8Array> {
  if (endBytes <= startBytes) return;
  const chunkSize = manifest.chunkSizeBytes;
  const first = Math.floor(startBytes / chunkSize);
  const last = Math.floor((endBytes - 1) / chunkSize);
  const options = signal === undefined ? {} : { signal };
  const readChunks = repository.readChunks?.bind(repository);
  const inFlightMax = readChunks === undefined ? CHUNK_READS_IN_FLIGHT_MAX : RUNS_IN_FLIGHT_MAX;
  const pieces: Piece[] = [];
  let next = first;
  /** Starts the read of the piece at chunk `next` (a zero chunk, a single chunk, or a run of stored chunks) and moves `next` past it. */
  const startPiece = (): Piece => {
    const firstIndex = next;
    const hash = manifest.hashAt(firstIndex);
    if (hash === undefined) {
      next++;
      zeroChunk ??= new Uint8Array(chunkSize);
      return { firstIndex, bytes: Promise.resolve(zeroChunk.subarray(0, manifest.chunkLengthBytes(firstIndex))) };
    }
    const hashes = [hash];
    next++;
    while (readChunks !== undefined && next <= last && hashes.length < RUN_CHUNKS_MAX) {
      const following = manifest.hashAt(next);
      if (following === undefined) break;
      hashes.push(following);
      next++;
    }
    // A run reads into a reused array; the response gives it back (releaseRunBuffer) once it is written.
    const runBytes = RUN_CHUNKS_MAX * (chunkSize + Math.ceil(chunkSize / 1024) * STORED_OVERHEAD_PER_KIB_BYTES);
    const bytes = hashes.length === 1 ? repository.read(hash, options) : readChunks!(hashes, { ...options, into: takeRunBuffer(runBytes) });
    bytes.catch(() => undefined); // awaited in order below; a consumer that stops early leaves it unobserved
    return { firstIndex, bytes };
  };
  while (next <= last || pieces.length > 0) {
    while (next <= last && pieces.length < inFlightMax) pieces.push(startPiece());
    const piece = pieces.shift()!;
    const bytes = await piece.bytes;
    const pieceStart = piece.firstIndex * chunkSize;
    const from = Math.max(0, startBytes - pieceStart);
    const to = Math.min(bytes.length, endBytes - pieceStart);
    yield from === 0 && to === bytes.length ? bytes : bytes.subarray(from, to);
  }
}
