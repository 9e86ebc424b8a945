/**
 * Sealing: turning an immutable layer file into a chunk manifest whose chunks the pool's
 * ChunkRepository holds, and the reference bookkeeping that goes with manifests (release, copy).
 *
 * sealFile reads the source in spans of CHUNKS_PER_BATCH chunks (skipping the holes a sparse source
 * reports), leaves all-zero chunks out, and hands the others to addReferences in batches, a bounded
 * number of batches in flight. Batches are applied in order, so the manifest is built densely.
 * Whatever stops it part-way (an error, an abort) drops every reference it added before it
 * rejects: a failed seal leaks nothing.
 */
import { isSeekableHostFile } from '../../../formats/raw/index.js';
import { assert, isStorageError, StorageError } from '../../core/errors.js';
import type { HostFile } from '../../core/host-file.js';
import type { ChunkHash, ChunkRepository } from '../dedup/repository.js';
import { isAllZero } from '../zero-bytes.js';
import { ChunkManifest, ChunkManifestBuilder, chunkCountOf } from './manifest.js';
import { checkChunkSize, checkManifestEntries, MANIFEST_HASH_BYTES_MAX } from './manifest-format.js';

/** Chunks per addReferences call: amortises the repository's durable batch, bounds its memory. */
export const CHUNKS_PER_BATCH = 64;
/** addReferences calls a seal keeps in flight (reading goes on while the repository writes). */
export const BATCHES_IN_FLIGHT_MAX = 4;
/** Hashes per addReferencesByHash / dropReferences call when a whole manifest is copied or released. */
export const HASHES_PER_CALL = 4096;
/** Default chunk size: qcow2's default cluster, so equal data clusters of any layers are equal chunks. */
export const DEFAULT_CHUNK_SIZE_BYTES = 64 * 1024;

export interface SealProgress {
  doneBytes: number;
  totalBytes: number;
}

export interface SealOptions {
  /** DEFAULT_CHUNK_SIZE_BYTES when absent. */
  chunkSizeBytes?: number;
  /** Aborts the seal: it rejects with CANCELLED after dropping what it added. */
  signal?: AbortSignal;
  /** Called after each batch is referenced, in order. */
  onProgress?: (progress: SealProgress) => void;
}

interface PendingBatch {
  indexes: number[];
  references: Promise<ChunkHash[]>;
}

/** Reads `source` (which must not change meanwhile) into the repository; resolves to its manifest. */
export async function sealFile(source: HostFile, repository: ChunkRepository, options: SealOptions = {}): Promise<ChunkManifest> {
  const chunkSizeBytes = options.chunkSizeBytes ?? DEFAULT_CHUNK_SIZE_BYTES;
  checkChunkSize(chunkSizeBytes);
  const signal = options.signal;
  const totalBytes = await source.sizeBytes();
  checkManifestEntries(totalBytes, chunkSizeBytes, `sealing ${source.name}`);
  const builder = new ChunkManifestBuilder(chunkSizeBytes, totalBytes, hashBytesOf(repository));
  const entryCount = chunkCountOf(totalBytes, chunkSizeBytes);
  const pending: PendingBatch[] = [];
  const added: ChunkHash[] = [];
  // Settles the oldest batch and records its chunks in the manifest (batches complete in order).
  const applyOldest = async (): Promise<void> => {
    const batch = pending.shift()!;
    const hashes = await batch.references;
    added.push(...hashes);
    assert(hashes.length === batch.indexes.length, 'addReferences returns one hash per chunk');
    batch.indexes.forEach((index, i) => builder.setStored(index, hashes[i]!));
    const lastIndex = batch.indexes.at(-1)!;
    options.onProgress?.({ doneBytes: Math.min(totalBytes, (lastIndex + 1) * chunkSizeBytes), totalBytes });
  };
  try {
    let indexes: number[] = [];
    let chunks: Uint8Array[] = [];
    const dispatch = async (): Promise<void> => {
      if (chunks.length === 0) return;
      const references = repository.addReferences(chunks, { signal });
      // Settled by applyOldest, or by the clean-up below; never left unobserved.
      references.catch(() => undefined);
      pending.push({ indexes, references });
      indexes = [];
      chunks = [];
      while (pending.length >= BATCHES_IN_FLIGHT_MAX) await applyOldest();
    };
    for (let index = 0; index < entryCount; ) {
      throwIfAborted(signal, source.name);
      index = await nextDataChunk(source, index, chunkSizeBytes, totalBytes);
      if (index >= entryCount) break;
      const spanChunks = Math.min(CHUNKS_PER_BATCH - chunks.length, entryCount - index);
      const spanStart = index * chunkSizeBytes;
      const span = new Uint8Array(Math.min(spanChunks * chunkSizeBytes, totalBytes - spanStart));
      await source.pread(span, spanStart);
      for (let i = 0; i < spanChunks; i++) {
        const chunk = span.subarray(i * chunkSizeBytes, Math.min(span.length, (i + 1) * chunkSizeBytes));
        if (isAllZero(chunk)) continue;
        indexes.push(index + i);
        chunks.push(chunk);
      }
      index += spanChunks;
      if (chunks.length >= CHUNKS_PER_BATCH) await dispatch();
    }
    await dispatch();
    while (pending.length > 0) await applyOldest();
    throwIfAborted(signal, source.name);
    return builder.finish();
  } catch (err) {
    // Batches still in flight: what they added is dropped with the rest.
    const settled = await Promise.allSettled(pending.map((batch) => batch.references));
    for (const result of settled) if (result.status === 'fulfilled') added.push(...result.value);
    await dropInCalls(repository, added, `sealing ${source.name} failed (${describe(err)})`);
    throw isAbort(err, signal) ? cancelled(source.name) : err;
  }
}

/** Drops one reference per stored chunk of `manifest` (the layer it describes is gone). */
export async function releaseManifest(manifest: ChunkManifest, repository: ChunkRepository): Promise<void> {
  // Not atomic across calls: a failure part-way leaves the earlier calls' references dropped, so
  // the caller must not release the same manifest again (that would drop them twice); the rest
  // leak until a reference audit against every manifest reclaims them, which loses nothing.
  let batch: ChunkHash[] = [];
  for (const hash of manifest.storedHashes()) {
    batch.push(hash);
    if (batch.length === HASHES_PER_CALL) {
      await repository.dropReferences(batch);
      batch = [];
    }
  }
  if (batch.length > 0) await repository.dropReferences(batch);
}

/**
 * A manifest for a copy of the layer that shares every chunk (a clone or a compaction by
 * reference): adds one reference per stored chunk. On failure, drops what it added.
 */
export async function copyManifest(manifest: ChunkManifest, repository: ChunkRepository, options: { signal?: AbortSignal } = {}): Promise<ChunkManifest> {
  const added: ChunkHash[] = [];
  let batch: ChunkHash[] = [];
  const flush = async (): Promise<void> => {
    await repository.addReferencesByHash(batch, { signal: options.signal });
    added.push(...batch);
    batch = [];
  };
  try {
    for (const hash of manifest.storedHashes()) {
      batch.push(hash);
      if (batch.length === HASHES_PER_CALL) await flush();
    }
    if (batch.length > 0) await flush();
  } catch (err) {
    await dropInCalls(repository, added, `copying a manifest failed (${describe(err)})`);
    throw err;
  }
  // A manifest is immutable, so the copy shares its encoded parts.
  return new ChunkManifest({
    chunkSizeBytes: manifest.chunkSizeBytes,
    fileSizeBytes: manifest.fileSizeBytes,
    hashBytes: manifest.hashBytes,
    bitmap: manifest.bitmap,
    hashes: manifest.hashes,
  });
}

/** The first chunk at or after `index` that may hold data (all of them for a source without seekData). */
async function nextDataChunk(source: HostFile, index: number, chunkSizeBytes: number, totalBytes: number): Promise<number> {
  if (!isSeekableHostFile(source)) return index;
  const data = await source.seekData(index * chunkSizeBytes);
  if (data === undefined) return chunkCountOf(totalBytes, chunkSizeBytes);
  return Math.max(index, Math.floor(data / chunkSizeBytes));
}

/** The binary length of the repository's hashes (its hash of nothing, which it must name alike). */
function hashBytesOf(repository: ChunkRepository): number {
  const hex = repository.hash(new Uint8Array(0));
  const bytes = hex.length / 2;
  assert(Number.isInteger(bytes) && bytes >= 1 && bytes <= MANIFEST_HASH_BYTES_MAX, `the repository's hash "${hex}" is 1..64 bytes of hex`);
  return bytes;
}

/** The undo of a failed seal or copy: it must run even when the caller's signal has aborted. */
export async function dropInCalls(repository: ChunkRepository, hashes: readonly ChunkHash[], why: string): Promise<void> {
  try {
    for (let i = 0; i < hashes.length; i += HASHES_PER_CALL) await repository.dropReferences(hashes.slice(i, i + HASHES_PER_CALL));
  } catch (err) {
    throw new StorageError(
      isStorageError(err) ? err.code : 'IO_ERROR',
      `${why}, and dropping the ${hashes.length} chunk references it had added failed too (${describe(err)}); those chunks leak until a reference audit`,
      { cause: err },
    );
  }
}

function throwIfAborted(signal: AbortSignal | undefined, name: string): void {
  if (signal?.aborted) throw cancelled(name);
}

function isAbort(err: unknown, signal: AbortSignal | undefined): boolean {
  return signal?.aborted === true || isStorageError(err, 'CANCELLED');
}

function cancelled(name: string): StorageError {
  return new StorageError('CANCELLED', `sealing ${name} was cancelled; every chunk reference it had added was dropped`);
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
