/**
 * `strata volume evict`: the packs holding the chunks of a volume's sealed layers, moved to the
 * pool's tier now. Manifests -> chunk index -> pack keys; a pack also holding chunks of another
 * layer's manifest moves all the same (a pack moves whole) and is counted as shared, so the
 * operator learns that other volumes' reads of it go to the tier too.
 */
import type { ChunkStore } from '../core/chunk-store.js';
import type { ChunkedPoolEviction } from '../core/chunked-pools.js';
import type { LayerRef } from '../core/layer-store.js';
import { sealedLayerReferences } from './chunked/manifest-references.js';
import type { DedupChunkRepository } from './dedup/dedup-repository.js';
import type { TieredChunkStore } from './tier/tiered-chunk-store.js';

export interface EvictLayerPacksInput {
  readonly pool: string;
  readonly layers: readonly LayerRef[];
  readonly manifests: ChunkStore;
  readonly repository: DedupChunkRepository;
  readonly tier: TieredChunkStore;
}

async function packsOf(repository: DedupChunkRepository, hashes: ReadonlySet<string>, signal: AbortSignal | undefined): Promise<Set<string>> {
  const packs = new Set<string>();
  for (const hash of hashes) {
    signal?.throwIfAborted();
    const key = await repository.packKeyOf(hash);
    if (key !== undefined) packs.add(key);
  }
  return packs;
}

export async function evictLayerPacks(
  input: EvictLayerPacksInput,
  options: { signal?: AbortSignal; onProgress?: (done: number, total: number) => void },
): Promise<ChunkedPoolEviction> {
  const wanted = new Set(input.layers.map((ref) => `layer ${ref.pool}/${ref.fileName}`));
  const mine = new Set<string>();
  const others = new Set<string>();
  let layerCount = 0;
  for await (const holder of sealedLayerReferences(input.manifests, [input.pool])(options.signal)) {
    if ('unreadable' in holder) continue; // its chunks are unknown: nothing of it to move or share
    const into = wanted.has(holder.name) ? mine : others;
    if (into === mine) layerCount++;
    for (const hash of holder.hashes) into.add(hash);
  }
  const packs = await packsOf(input.repository, mine, options.signal);
  // Only packs of this volume can be shared: look up the other layers' chunks still unaccounted.
  const shared = new Set<string>();
  for (const hash of others) {
    options.signal?.throwIfAborted();
    const key = await input.repository.packKeyOf(hash);
    if (key !== undefined && packs.has(key)) shared.add(key);
  }
  const keys = [...packs].sort();
  const result = await input.tier.evict(keys, {
    ...(options.signal === undefined ? {} : { signal: options.signal }),
    onProgress: (p) => options.onProgress?.(p.done, p.total),
  });
  return {
    layerCount,
    packCount: keys.length,
    sharedPackCount: shared.size,
    movedPacks: result.movedObjects,
    movedBytes: result.movedBytes,
    alreadyColdPacks: keys.length - result.movedObjects - result.failed.length,
    failed: result.failed.map((f) => ({ pack: f.key, error: f.error.message })),
  };
}
