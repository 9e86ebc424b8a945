/**
 * An ObjectModel over the real DedupChunkRepository for tests: two pools ('pool-a', 'pool-b'),
 * each its own repository in the given CatalogStore; pool-a's packs and the large manifests go
 * to the given ChunkStore (memory ones by default), pool-b's packs to a MemoryChunkStore of its
 * own (a pool's GC and scrub take every pack under `packs/` for theirs). Plus what tests look
 * into: the repositories, the chunk counts, byte helpers.
 */
import type { CatalogOp, CatalogStore } from '../../src/core/catalog-store.js';
import type { ChunkStore } from '../../src/core/chunk-store.js';
import { StorageError } from '../../src/core/errors.js';
import { MemoryCatalogStore } from '../../src/meta/memory-catalog.js';
import { ObjectModel } from '../../src/objects/model.js';
import { DedupChunkRepository } from '../../src/store/dedup/dedup-repository.js';
import type { ChunkRepository } from '../../src/store/dedup/repository.js';
import { MemoryChunkStore } from '../../src/store/memory-chunk-store.js';

export const POOLS = ['pool-a', 'pool-b'] as const;

export interface TestObjectModel {
  readonly model: ObjectModel;
  readonly catalog: CatalogStore;
  readonly chunkStore: ChunkStore;
  readonly repositories: Map<string, DedupChunkRepository>;
  readonly deferredErrors: unknown[];
}

export async function createTestObjectModel(
  options: { catalog?: CatalogStore; chunkStore?: ChunkStore; packTargetBytes?: number; readCacheBytes?: number; wrapRepository?: (repository: ChunkRepository) => ChunkRepository; cleanupInBackground?: boolean } = {},
): Promise<TestObjectModel> {
  const catalog = options.catalog ?? new MemoryCatalogStore();
  const chunkStore = options.chunkStore ?? new MemoryChunkStore();
  const repositories = new Map<string, DedupChunkRepository>();
  for (const pool of POOLS) {
    repositories.set(
      pool,
      await DedupChunkRepository.open({
        chunkStore: pool === 'pool-a' ? chunkStore : new MemoryChunkStore(),
        catalog,
        pool,
        packTargetBytes: options.packTargetBytes ?? 1024 * 1024,
        ...(options.readCacheBytes === undefined ? {} : { readCacheBytes: options.readCacheBytes }),
      }),
    );
  }
  const deferredErrors: unknown[] = [];
  const model = new ObjectModel({
    catalog,
    manifestStore: chunkStore,
    repositoryOf: async (pool) => {
      const repository = repositories.get(pool);
      if (repository === undefined) throw new StorageError('NOT_FOUND', `pool ${pool} does not exist`);
      return options.wrapRepository?.(repository) ?? repository;
    },
    onDeferredError: (err) => deferredErrors.push(err),
    ...(options.cleanupInBackground === undefined ? {} : { cleanupInBackground: options.cleanupInBackground }),
  });
  return { model, catalog, chunkStore, repositories, deferredErrors };
}

/** A body streamed in pieces of `pieceBytes` (a client's socket reads). */
export async function* streamOf(data: Uint8Array, pieceBytes = 16 * 1024): AsyncGenerator<Uint8Array> {
  for (let at = 0; at < data.length; at += pieceBytes) yield data.subarray(at, Math.min(data.length, at + pieceBytes));
}

export async function collect(body: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const pieces: Uint8Array[] = [];
  for await (const piece of body) pieces.push(piece);
  return Buffer.concat(pieces);
}

/** Deterministic bytes, different for every seed (and with no all-zero 64 KiB chunk). */
export function patternBytes(sizeBytes: number, seed: number): Buffer {
  const out = Buffer.alloc(sizeBytes);
  let x = (seed * 2654435761 + 1) >>> 0;
  for (let i = 0; i + 4 <= sizeBytes; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out.writeUInt32LE(x >>> 0, i);
  }
  for (let i = sizeBytes - (sizeBytes % 4); i < sizeBytes; i++) out[i] = (seed + i) & 0xff || 1;
  return out;
}

/** Sum of every chunk reference count in a pool's index (what the pool holds for everyone). */
export async function totalReferences(catalog: CatalogStore, pool: string): Promise<number> {
  let total = 0;
  let after: string | undefined;
  const prefix = `chunk-${pool}/`;
  for (;;) {
    const page = await catalog.list(prefix, after === undefined ? {} : { after });
    for (const entry of page.entries) total += (entry.value as { refs: number }).refs;
    if (page.nextAfter === undefined) return total;
    after = page.nextAfter;
  }
}

/**
 * A catalog that counts transactions and fails the first one `failWhen` picks; `beforeTxn` runs
 * first, on the store itself (another writer's change landing just before this transaction).
 */
export function countingCatalog(
  failWhen?: (ops: readonly CatalogOp[]) => boolean,
  beforeTxn?: (store: CatalogStore, ops: readonly CatalogOp[]) => Promise<void>,
): { catalog: CatalogStore; txns: () => number } {
  const inner = new MemoryCatalogStore();
  let txns = 0;
  let failed = false;
  const catalog = new Proxy(inner, {
    get(target, name, receiver) {
      const value: unknown = Reflect.get(target, name, receiver);
      if (name !== 'txn') return typeof value === 'function' ? value.bind(target) : value;
      return async (compares: Parameters<CatalogStore['txn']>[0], ops: readonly CatalogOp[]) => {
        txns++;
        await beforeTxn?.(target, ops);
        if (!failed && failWhen?.(ops) === true) {
          failed = true;
          throw new StorageError('IO_ERROR', 'commit failed (injected)');
        }
        return target.txn(compares, ops);
      };
    },
  });
  return { catalog, txns: () => txns };
}
