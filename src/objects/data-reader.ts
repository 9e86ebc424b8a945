/**
 * Reading a byte range of an object: its chunks are read from the pool's ChunkRepository up to
 * CHUNK_READS_IN_FLIGHT_MAX at a time, ahead of the consumer, and handed out in order, trimmed to
 * the range; zero chunks cost no read. Memory is bounded by the reads in flight (~1 MiB).
 */
import type { ChunkManifest } from '../store/chunked/manifest.js';
import type { ChunkRepository } from '../store/dedup/repository.js';

export const CHUNK_READS_IN_FLIGHT_MAX = 16;

/** A shared all-zero chunk handed out for zero chunks (readers must not write to what they get). */
let zeroChunk: Uint8Array | undefined;

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
  const reads: Promise<Uint8Array>[] = [];
  let next = first;
  const options = signal === undefined ? {} : { signal };
  const start = (index: number): Promise<Uint8Array> => {
    const hash = manifest.hashAt(index);
    if (hash === undefined) {
      zeroChunk ??= new Uint8Array(chunkSize);
      return Promise.resolve(zeroChunk.subarray(0, manifest.chunkLengthBytes(index)));
    }
    const read = repository.read(hash, options);
    read.catch(() => undefined); // awaited in order below; a consumer that stops early leaves it unobserved
    return read;
  };
  for (let index = first; index <= last; index++) {
    while (next <= last && reads.length < CHUNK_READS_IN_FLIGHT_MAX) reads.push(start(next++));
    const chunk = await reads.shift()!;
    const chunkStart = index * chunkSize;
    const from = Math.max(0, startBytes - chunkStart);
    const to = Math.min(chunk.length, endBytes - chunkStart);
    yield from === 0 && to === chunk.length ? chunk : chunk.subarray(from, to);
  }
}
