/**
 * Sealing a new layer straight from a stream of guest data (an import into a dedup pool): the
 * result is the manifest sealFile would give for a qcow2 layer holding that data, without the
 * qcow2 file ever being written or read back.
 *
 * The guest's data arrives as ascending pieces. Each guest cluster (= one chunk, 64 KiB) is
 * assembled in a batch span; an all-zero cluster is left unallocated (it reads as zeroes: the
 * layer has no backing), the others go to the repository's addReferences in batches of
 * CHUNKS_PER_BATCH, a bounded number of batches in flight, so reading the stream, hashing and
 * the pack writes overlap. Once the stream ends the layer is laid out as compaction lays out a
 * merged one (formats/qcow2/layout.ts): metadata clusters first (header, refcounts, L1, L2 tables:
 * new chunks), then one host cluster per data cluster in guest order, each named by the chunk
 * already added for it. The file is a whole number of clusters, so its chunks merge by reference.
 *
 * Whatever stops it part-way (an error, an abort) drops every reference it added before it
 * rejects; a process killed part-way leaves references no manifest holds, which the pool's
 * reference audit drops (the caller records an intent so recovery runs it).
 */
import { layoutQcow2, LAYOUT_METADATA_BYTES_MAX, type Qcow2LayoutRun } from '../../../formats/qcow2/index.js';
import type { SealedLayerSource } from '../../core/chunked-pools.js';
import { assert, isStorageError, StorageError } from '../../core/errors.js';
import type { ChunkHash, ChunkRepository } from '../dedup/repository.js';
import { isAllZero } from '../zero-bytes.js';
import { ChunkManifest, ChunkManifestBuilder } from './manifest.js';
import { CHUNKS_PER_BATCH, DEFAULT_CHUNK_SIZE_BYTES, dropInCalls } from './seal.js';

/**
 * addReferences calls kept in flight while the stream is read: each holds one 4 MiB batch, so
 * this bounds the import's buffered data to 32 MiB while pack writes and their fsyncs overlap.
 */
export const STREAM_BATCHES_IN_FLIGHT_MAX = 8;

/** Bytes of metadata per cluster of a fully allocated layer: its L2 entry and its 16-bit refcount. */
const METADATA_BYTES_PER_CLUSTER_MAX = 8 + 2;

export interface SealStreamOptions {
  signal?: AbortSignal;
}

/**
 * True when a layer of this virtual size can be sealed from a stream: its metadata, fully
 * allocated, fits what a layout builds in memory (LAYOUT_METADATA_BYTES_MAX).
 */
export function canSealStream(sizeBytes: number, chunkSizeBytes = DEFAULT_CHUNK_SIZE_BYTES): boolean {
  const clusters = Math.ceil(sizeBytes / chunkSizeBytes);
  return (clusters * METADATA_BYTES_PER_CLUSTER_MAX) + 16 * chunkSizeBytes <= LAYOUT_METADATA_BYTES_MAX;
}

interface PendingBatch {
  clusters: number[];
  span: Uint8Array;
  references: Promise<ChunkHash[]>;
}

/** Reads the pieces into the repository; resolves to the sealed qcow2 layer's manifest. */
export async function sealQcow2Stream(source: SealedLayerSource, repository: ChunkRepository, options: SealStreamOptions = {}): Promise<ChunkManifest> {
  const cs = DEFAULT_CHUNK_SIZE_BYTES;
  const { sizeBytes } = source;
  const signal = options.signal;
  if (!canSealStream(sizeBytes, cs)) {
    throw new StorageError('UNSUPPORTED', `a ${sizeBytes}-byte layer is too large to seal from a stream (its metadata would not fit in memory): import it into a local layer and seal that`);
  }
  const hashBytes = repository.hash(new Uint8Array(0)).length / 2;
  const added: ChunkHash[] = [];
  const pending: PendingBatch[] = [];
  // The data clusters, in guest order, and their hashes (binary), as their batches land.
  const runs: Qcow2LayoutRun[] = [];
  let dataHashes = Buffer.alloc(hashBytes * 1024);
  let dataCount = 0;
  // Spans of settled batches, zeroed, for the next batches: the repository copies what it stores
  // into its packs, so a span is free once its call resolves (and not allocating 4 MiB per batch
  // keeps the garbage collector out of the import's way).
  const freeSpans: Uint8Array[] = [];
  const applyOldest = async (): Promise<void> => {
    const batch = pending.shift()!;
    const hashes = await batch.references;
    added.push(...hashes);
    freeSpans.push(batch.span.fill(0));
    assert(hashes.length === batch.clusters.length, 'addReferences returns one hash per chunk');
    if ((dataCount + hashes.length) * hashBytes > dataHashes.length) {
      const grown = Buffer.alloc(Math.max(dataHashes.length * 2, (dataCount + hashes.length) * hashBytes));
      dataHashes.copy(grown, 0, 0, dataCount * hashBytes);
      dataHashes = grown;
    }
    batch.clusters.forEach((cluster, i) => {
      dataHashes.write(hashes[i]!, (dataCount + i) * hashBytes, 'hex');
      const last = runs.at(-1);
      if (last !== undefined && last.guestCluster + last.clusterCount === cluster) last.clusterCount++;
      else runs.push({ guestCluster: cluster, clusterCount: 1, kind: 'data' });
    });
    dataCount += hashes.length;
  };
  try {
    // The batch being filled: a span of CHUNKS_PER_BATCH clusters, zero-filled when allocated;
    // slot `used` assembles cluster `current` (an all-zero cluster leaves its slot for the next).
    let span: Uint8Array = new Uint8Array(CHUNKS_PER_BATCH * cs);
    let clusters: number[] = [];
    let current = -1;
    const dispatch = (): void => {
      if (clusters.length === 0) return;
      const chunks = clusters.map((_, i) => span.subarray(i * cs, (i + 1) * cs));
      const references = repository.addReferences(chunks, { signal });
      // Settled by applyOldest, or by the clean-up below; never left unobserved.
      references.catch(() => undefined);
      pending.push({ clusters, span, references });
      span = freeSpans.pop() ?? new Uint8Array(CHUNKS_PER_BATCH * cs);
      clusters = [];
    };
    const finishCurrent = async (): Promise<void> => {
      if (current < 0) return;
      const cluster = current;
      current = -1;
      if (isAllZero(span.subarray(clusters.length * cs, (clusters.length + 1) * cs))) return;
      clusters.push(cluster);
      if (clusters.length < CHUNKS_PER_BATCH) return;
      dispatch();
      while (pending.length >= STREAM_BATCHES_IN_FLIGHT_MAX) await applyOldest();
    };
    let end = 0;
    for await (const piece of source.pieces) {
      throwIfAborted(signal);
      const { offset, bytes } = piece;
      if (!Number.isSafeInteger(offset) || offset < end || offset + bytes.length > sizeBytes) {
        throw new StorageError('INVALID_ARGUMENT', `a piece of ${bytes.length} bytes at ${offset} is not after the previous one (ending at ${end}) and inside the ${sizeBytes}-byte layer`);
      }
      end = offset + bytes.length;
      for (let pos = 0; pos < bytes.length; ) {
        const at = offset + pos;
        const cluster = Math.floor(at / cs);
        if (cluster !== current) {
          await finishCurrent();
          current = cluster;
        }
        const within = at - cluster * cs;
        const n = Math.min(cs - within, bytes.length - pos);
        span.set(bytes.subarray(pos, pos + n), clusters.length * cs + within);
        pos += n;
      }
    }
    await finishCurrent();
    dispatch();
    while (pending.length > 0) await applyOldest();
    throwIfAborted(signal);
    return await finishLayout(source, runs, dataHashes.subarray(0, dataCount * hashBytes), hashBytes, repository, added, signal);
  } catch (err) {
    // Batches still in flight: what they added is dropped with the rest.
    const settled = await Promise.allSettled(pending.map((batch) => batch.references));
    for (const result of settled) if (result.status === 'fulfilled') added.push(...result.value);
    await dropInCalls(repository, added, `sealing an imported layer failed (${describe(err)})`);
    throw signal?.aborted === true || isStorageError(err, 'CANCELLED') ? cancelled() : err;
  }
}

/** Lays the layer out, adds its metadata clusters as chunks, and builds the manifest. */
async function finishLayout(
  source: SealedLayerSource,
  runs: Qcow2LayoutRun[],
  dataHashes: Buffer,
  hashBytes: number,
  repository: ChunkRepository,
  added: ChunkHash[],
  signal: AbortSignal | undefined,
): Promise<ChunkManifest> {
  const cs = DEFAULT_CHUNK_SIZE_BYTES;
  const layout = layoutQcow2({
    sizeBytes: source.sizeBytes,
    clusterSizeBytes: cs,
    runs,
  });
  assert(layout.dataClusterCount * hashBytes === dataHashes.length, 'the layout has one host cluster per data chunk');
  const metadata: { index: number; bytes: Uint8Array }[] = [];
  for (let index = 0; index < layout.firstDataCluster; index++) {
    const bytes = layout.metadata.subarray(index * cs, (index + 1) * cs);
    if (!isAllZero(bytes)) metadata.push({ index, bytes });
  }
  const builder = new ChunkManifestBuilder(cs, layout.fileSizeBytes, hashBytes);
  for (let i = 0; i < metadata.length; i += CHUNKS_PER_BATCH) {
    throwIfAborted(signal);
    const batch = metadata.slice(i, i + CHUNKS_PER_BATCH);
    const hashes = await repository.addReferences(batch.map((m) => m.bytes), { signal });
    added.push(...hashes);
    batch.forEach((m, j) => builder.setStored(m.index, hashes[j]!));
  }
  for (let j = 0; j < layout.dataClusterCount; j++) {
    builder.setStored(layout.firstDataCluster + j, dataHashes.toString('hex', j * hashBytes, (j + 1) * hashBytes));
  }
  return builder.finish();
}

function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw cancelled();
}

function cancelled(): StorageError {
  return new StorageError('CANCELLED', 'sealing an imported layer was cancelled; every chunk reference it had added was dropped');
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
