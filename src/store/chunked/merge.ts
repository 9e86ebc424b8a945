/**
 * Compaction by reference: two sealed qcow2 layers, `upper` over `lower`, become one sealed layer
 * that reads as the chain upper -> lower does, without copying data. The sealed layers are chunk
 * manifests of qcow2 files whose clusters are the manifest's chunks (both 64 KiB), so every data
 * cluster of either input is a whole chunk already in the repository: the merged file is laid out
 * fresh (formats/qcow2/layout.ts: metadata first, then one host cluster per data cluster) and its
 * manifest names, for each data cluster, the chunk that held it in the input it comes from (the
 * upper layer's clusters win). Only the new metadata clusters are new chunks; every data chunk
 * gets one more reference (addReferencesByHash), nothing is read or hashed again. The one
 * exception is a data cluster held by an input's last chunk when that chunk is short (a file not
 * ending on a cluster boundary): it is read, padded and added as a chunk of its own.
 *
 * Both inputs must have the same virtual size (past a smaller lower layer the upper one reads
 * zeroes where the merged one would read the lower layer's backing file), standard L2 entries
 * and no compressed clusters: anything else is UNSUPPORTED and the pair stays as it is.
 */
import { layoutQcow2, Qcow2Image, type Qcow2LayoutRun, type Qcow2MapExtent } from '../../../formats/qcow2/index.js';
import { StorageError } from '../../core/errors.js';
import type { ChunkHash, ChunkRepository } from '../dedup/repository.js';
import { isAllZero } from '../zero-bytes.js';
import type { ChunkCache } from './chunk-cache.js';
import { ChunkedFile } from './chunked-file.js';
import { ChunkManifest, ChunkManifestBuilder } from './manifest.js';
import { CHUNKS_PER_BATCH, dropInCalls, HASHES_PER_CALL } from './seal.js';

export interface SealedInput {
  name: string;
  manifest: ChunkManifest;
}

export interface MergeOptions {
  /** The backing file the merged layer's header names (the lower layer's backing), or none. */
  backingFile: string | undefined;
  signal?: AbortSignal;
}

/** Where a data cluster of the merged layer comes from: an input and its host cluster there. */
interface DataSource {
  input: SealedInput;
  hostCluster: number;
}

/**
 * Builds the merged manifest, its chunks referenced in the repository (the caller stores it, or
 * releases it). On failure every reference it added is dropped.
 */
export async function mergeSealedLayers(upper: SealedInput, lower: SealedInput, repository: ChunkRepository, cache: ChunkCache, options: MergeOptions): Promise<ChunkManifest> {
  const upperMap = await readLayerMap(upper, repository, cache);
  const lowerMap = await readLayerMap(lower, repository, cache);
  if (upperMap.sizeBytes !== lowerMap.sizeBytes) {
    throw new StorageError('UNSUPPORTED', `${upper.name} (${upperMap.sizeBytes} bytes) and ${lower.name} (${lowerMap.sizeBytes} bytes) differ in size (a resize came between them): they are not merged`);
  }
  const cs = upper.manifest.chunkSizeBytes;
  const { runs, sources } = mergedRuns(upperMap.extents, lowerMap.extents, upper, lower, cs);
  const layout = layoutQcow2({
    sizeBytes: upperMap.sizeBytes,
    clusterSizeBytes: cs,
    backingFile: options.backingFile,
    backingFormat: options.backingFile === undefined ? undefined : 'qcow2',
    runs,
  });
  const builder = new ChunkManifestBuilder(cs, layout.fileSizeBytes, upper.manifest.hashBytes);
  const added: ChunkHash[] = [];
  try {
    // Metadata clusters: new chunks (zero ones are not stored).
    const metadataChunks: { index: number; bytes: Uint8Array }[] = [];
    for (let index = 0; index < layout.firstDataCluster; index++) {
      const bytes = layout.metadata.subarray(index * cs, (index + 1) * cs);
      if (!isAllZero(bytes)) metadataChunks.push({ index, bytes });
    }
    for (let i = 0; i < metadataChunks.length; i += CHUNKS_PER_BATCH) {
      throwIfAborted(options.signal, upper.name);
      const batch = metadataChunks.slice(i, i + CHUNKS_PER_BATCH);
      const hashes = await repository.addReferences(batch.map((c) => c.bytes), { signal: options.signal });
      added.push(...hashes);
      batch.forEach((c, j) => builder.setStored(c.index, hashes[j]!));
    }
    // Data clusters: the inputs' chunks, shared.
    let byHash: { index: number; hash: ChunkHash }[] = [];
    const flush = async (): Promise<void> => {
      throwIfAborted(options.signal, upper.name);
      const hashes = byHash.map((e) => e.hash);
      await repository.addReferencesByHash(hashes, { signal: options.signal });
      added.push(...hashes);
      for (const e of byHash) builder.setStored(e.index, e.hash);
      byHash = [];
    };
    for (let j = 0; j < sources.length; j++) {
      const index = layout.firstDataCluster + j;
      const { input, hostCluster } = sources[j]!;
      const hash = input.manifest.hashAt(hostCluster);
      if (hash === undefined) continue; // an all-zero data cluster: a zero chunk here too
      if (input.manifest.chunkLengthBytes(hostCluster) === cs) {
        byHash.push({ index, hash });
        if (byHash.length >= HASHES_PER_CALL) await flush();
        continue;
      }
      // A short last chunk cannot stand for a whole cluster: copy it, padded with zeroes.
      if (byHash.length > 0) await flush();
      const padded = new Uint8Array(cs);
      padded.set(await repository.read(hash, { signal: options.signal }));
      const [copied] = await repository.addReferences([padded], { signal: options.signal });
      added.push(copied!);
      builder.setStored(index, copied!);
    }
    if (byHash.length > 0) await flush();
    return builder.finish();
  } catch (err) {
    await dropInCalls(repository, added, `merging ${upper.name} over ${lower.name} failed (${err instanceof Error ? err.message : String(err)})`);
    throw err;
  }
}

/** The layer's own map (no backing), checked for what a merge by reference supports. */
async function readLayerMap(input: SealedInput, repository: ChunkRepository, cache: ChunkCache): Promise<{ sizeBytes: number; extents: Qcow2MapExtent[] }> {
  const file = new ChunkedFile(input.manifest, repository, { name: input.name, cache });
  const image = await Qcow2Image.open(file, { readOnly: true, ignoreBacking: true });
  try {
    const info = image.info();
    if (info.clusterSizeBytes !== input.manifest.chunkSizeBytes || info.extendedL2) {
      throw new StorageError('UNSUPPORTED', `${input.name} has ${info.clusterSizeBytes}-byte clusters${info.extendedL2 ? ' with subclusters' : ''}; a merge by reference needs ${input.manifest.chunkSizeBytes}-byte clusters = chunks`);
    }
    const extents = await image.mapLayer(0, image.sizeBytes);
    if (extents.some((e) => e.kind === 'data' && (e.compressed === true || e.hostOffset === undefined))) {
      throw new StorageError('UNSUPPORTED', `${input.name} has compressed clusters; a merge by reference needs uncompressed ones`);
    }
    return { sizeBytes: image.sizeBytes, extents };
  } finally {
    await image.close();
  }
}

/** The merged cluster map: the upper layer's data and zeroes, the lower layer's where the upper defers. */
function mergedRuns(upper: readonly Qcow2MapExtent[], lower: readonly Qcow2MapExtent[], upperInput: SealedInput, lowerInput: SealedInput, cs: number): { runs: Qcow2LayoutRun[]; sources: DataSource[] } {
  const runs: Qcow2LayoutRun[] = [];
  const sources: DataSource[] = [];
  const take = (extent: Qcow2MapExtent, from: number, to: number, input: SealedInput): void => {
    if (extent.kind === 'unallocated' || from >= to) return;
    const guestCluster = Math.floor(from / cs);
    const clusterCount = Math.ceil(to / cs) - guestCluster;
    const last = runs.at(-1);
    if (last !== undefined && last.kind === extent.kind && last.guestCluster + last.clusterCount === guestCluster) last.clusterCount += clusterCount;
    else runs.push({ guestCluster, clusterCount, kind: extent.kind });
    if (extent.kind !== 'data') return;
    const firstHostCluster = Math.floor((extent.hostOffset! + (from - extent.guestOffset)) / cs);
    for (let i = 0; i < clusterCount; i++) sources.push({ input, hostCluster: firstHostCluster + i });
  };
  let l = 0;
  for (const u of upper) {
    if (u.kind !== 'unallocated') {
      take(u, u.guestOffset, u.guestOffset + u.lengthBytes, upperInput);
      continue;
    }
    const end = u.guestOffset + u.lengthBytes;
    while (l < lower.length && lower[l]!.guestOffset + lower[l]!.lengthBytes <= u.guestOffset) l++;
    for (let k = l; k < lower.length && lower[k]!.guestOffset < end; k++) {
      const x = lower[k]!;
      take(x, Math.max(x.guestOffset, u.guestOffset), Math.min(x.guestOffset + x.lengthBytes, end), lowerInput);
    }
  }
  return { runs, sources };
}

function throwIfAborted(signal: AbortSignal | undefined, name: string): void {
  if (signal?.aborted) throw new StorageError('CANCELLED', `merging ${name} was cancelled; every chunk reference it had added was dropped`);
}
