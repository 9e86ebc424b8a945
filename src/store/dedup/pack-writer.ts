/**
 * Writing an add call's new chunks into packs (DedupChunkRepository): chunks go into packs of
 * about packTargetBytes in the call's order, each pack is put (durable) before the index may
 * name it, and each is marked uncommitted meanwhile so that GC leaves it alone.
 *
 * A pack is finished in the memory a hashing worker laid its chunks out in when it holds exactly
 * those chunks (PackBuilder.finishInPlace: a large PUT's step), else assembled in a reused pack
 * buffer (pack-buffers.ts), which goes back once the put resolved (the store holds the bytes then).
 */
import type { ChunkStore } from '../../core/chunk-store.js';
import type { ChunkHasher } from './chunk-hasher.js';
import type { PackRecord } from './chunk-index.js';
import { giveBackPackBuffer, takePackBuffer } from './pack-buffers.js';
import { PackBuilder, newPackId, packCreatedAtMs, packKey, type StoredChunk } from './pack-format.js';
import type { ChunkRepositoryCallOptions } from './repository.js';

/** A distinct new chunk of an add call: its bytes and, from a worker-named token, its blocks' CRCs and stored form. */
export interface ChunkToWrite {
  readonly data: Uint8Array;
  readonly blockChecksums: Uint32Array | undefined;
  readonly stored: StoredChunk | undefined;
}

/** Where a chunk was stored by this call (not yet in the index). */
export interface Written {
  readonly pack: string;
  readonly offsetBytes: number;
  readonly lengthBytes: number;
}

/** What the repository lends the pack writer. */
export interface PackWriterContext {
  readonly chunkStore: ChunkStore;
  readonly hasher: ChunkHasher;
  readonly packTargetBytes: number;
  /** The version to write (undefined: the newest). */
  readonly packVersion: number | undefined;
  readonly nowMs: () => number;
  /** Packs put but not yet in the index: GC leaves them alone. */
  readonly uncommittedPacks: Set<string>;
  /** Called once a pack is put: its version (for reads through the location hints). */
  packWritten(packId: string, version: number): void;
}

/** Packs finished in laid-out memory so far (tests see that a step's pack takes that path). */
let packsFinishedInPlace = 0;
export function packsFinishedInPlaceForTests(): number {
  return packsFinishedInPlace;
}

/** Appends `chunks` to new packs and puts them (durable); records where each chunk went in `written` and each pack in `writtenPacks`. */
export async function writePacks(
  ctx: PackWriterContext,
  chunks: readonly (readonly [string, ChunkToWrite])[],
  written: Map<string, Written>,
  writtenPacks: PackRecord[],
  options: ChunkRepositoryCallOptions | undefined,
): Promise<void> {
  let builder: PackBuilder | undefined;
  let placed: [string, Written][] = [];
  let chunkBytes = 0;
  const packLimitBytes = ctx.packTargetBytes + Math.floor(ctx.packTargetBytes / 64); // 1/64 of slack (packTargetBytes)
  const flush = async () => {
    if (builder === undefined) return;
    const id = newPackId(ctx.nowMs());
    const inPlace = builder.finishInPlace();
    const buffer = inPlace === undefined ? takePackBuffer(builder.sizeBytes) : undefined;
    const bytes = inPlace ?? builder.finish(buffer);
    if (inPlace !== undefined) packsFinishedInPlace++;
    ctx.uncommittedPacks.add(id);
    try {
      await ctx.chunkStore.put(packKey(id), bytes, options);
    } catch (err) {
      ctx.uncommittedPacks.delete(id);
      throw err;
    }
    // The put resolved: the store holds the bytes now, not this buffer (a laid-out one goes back with its tokens).
    if (buffer !== undefined) giveBackPackBuffer(buffer);
    ctx.packWritten(id, builder.version);
    for (const [hash, at] of placed) written.set(hash, { ...at, pack: id });
    writtenPacks.push({ id, sizeBytes: bytes.length, chunkCount: builder.chunkCount, createdAtMs: packCreatedAtMs(id)!, version: builder.version });
    builder = undefined;
    placed = [];
    chunkBytes = 0;
  };
  for (const [hash, { data, blockChecksums, stored }] of chunks) {
    if (builder !== undefined && chunkBytes + data.length > packLimitBytes) await flush();
    builder ??= new PackBuilder(ctx.hasher.algorithm, ctx.hasher.digestBytes, ctx.packVersion);
    chunkBytes += data.length;
    const entry = builder.add(hash, data, blockChecksums, stored);
    placed.push([hash, { pack: '', offsetBytes: entry.offsetBytes, lengthBytes: entry.lengthBytes }]);
  }
  await flush();
}
