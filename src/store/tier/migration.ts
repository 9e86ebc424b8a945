/**
 * Moving objects from the hot tier to the cold one, local-first: an object's hot copy is deleted
 * only after the cold tier acknowledged the copy, the copy read back equal to the hot bytes, and
 * the catalog durably says so (`both`). A failure at any step leaves the object hot, its record
 * unchanged, for the next pass to retry; a crash at any step leaves at least one whole copy that
 * the catalog (or open()'s reconciliation) points reads to.
 */
import type { ChunkStore, ChunkStoreCallOptions } from '../../core/chunk-store.js';
import { isStorageError, StorageError } from '../../core/errors.js';
import type { KeyLock } from './key-lock.js';
import type { TierCatalog } from './tier-catalog.js';
import { sameBytes } from '../../sys/same-bytes.js';

export interface MigrationProgress {
  readonly key: string;
  readonly outcome: 'moved' | 'failed';
  /** Why it failed (the object stays hot). */
  readonly error?: StorageError;
  /** Objects handled so far, and in all, in this pass. */
  readonly done: number;
  readonly total: number;
}

export interface MigrationResult {
  /** Objects whose hot copy is gone now (their cold copy verified). */
  readonly movedObjects: number;
  readonly movedBytes: number;
  /** Objects still hot because a step failed; the next pass retries them. */
  readonly failed: readonly { readonly key: string; readonly error: StorageError }[];
}

export interface MigrationOptions {
  readonly signal?: AbortSignal;
  readonly onProgress?: (progress: MigrationProgress) => void;
}

/** What a migration needs of its TieredChunkStore. */
export interface MigrationContext {
  readonly hot: ChunkStore;
  readonly cold: ChunkStore;
  readonly catalog: TierCatalog;
  readonly lock: KeyLock;
  readonly inFlightMax: number;
  coldCall<T>(what: string, signal: AbortSignal | undefined, call: (options: ChunkStoreCallOptions) => Promise<T>): Promise<T>;
  /** The hot copy of `key` is gone (the cache stops counting it). */
  droppedHot(key: string): void;
  /** Whether `key` should still move when its turn comes (re-checked under the key's lock). */
  stillWanted(key: string): boolean;
}

/** Moves one object cold; returns the bytes moved, 0 when there was nothing to move. */
async function moveOne(ctx: MigrationContext, key: string, signal: AbortSignal | undefined): Promise<number> {
  return ctx.lock.with(key, async () => {
    const record = ctx.catalog.get(key);
    if (record === undefined || !ctx.stillWanted(key)) return 0;
    if (record.place === 'hot') {
      const data = await ctx.hot.get(key, signal === undefined ? {} : { signal });
      if (data === undefined) throw new StorageError('NOT_FOUND', `the hot copy of ${key} is missing although the tier catalog lists it`);
      await ctx.coldCall(`put ${key}`, signal, (o) => ctx.cold.put(key, data, o));
      const back = await ctx.coldCall(`read back ${key}`, signal, (o) => ctx.cold.get(key, o));
      if (back === undefined || !sameBytes(back, data)) {
        // The copy is no one's (the record still says hot): drop it if the tier lets us.
        await ctx.coldCall(`delete ${key}`, signal, (o) => ctx.cold.delete(key, o)).catch(() => undefined);
        throw new StorageError(
          'CORRUPT',
          `the cold tier ${back === undefined ? 'lost' : 'returned different bytes for'} ${key} right after storing it; the hot copy is kept (check the cold tier's storage)`,
        );
      }
      await ctx.catalog.markVerified(key);
    }
    await ctx.hot.delete(key, signal === undefined ? {} : { signal });
    ctx.catalog.noteHotDropped(key);
    ctx.droppedHot(key);
    return record.sizeBytes;
  });
}

/** Moves `keys` cold, `ctx.inFlightMax` at a time; failures are reported, not thrown. */
export async function migrate(ctx: MigrationContext, keys: readonly string[], options: MigrationOptions): Promise<MigrationResult> {
  const failed: { key: string; error: StorageError }[] = [];
  let movedObjects = 0;
  let movedBytes = 0;
  let next = 0;
  let done = 0;
  const worker = async (): Promise<void> => {
    while (next < keys.length && options.signal?.aborted !== true) {
      const key = keys[next++] as string;
      let error: StorageError | undefined;
      try {
        const bytes = await moveOne(ctx, key, options.signal);
        if (bytes > 0) {
          movedObjects++;
          movedBytes += bytes;
        }
      } catch (err) {
        error = isStorageError(err) ? err : new StorageError('IO_ERROR', `moving ${key} cold failed: ${(err as Error).message}`, { cause: err });
        failed.push({ key, error });
      }
      done++;
      options.onProgress?.({ key, outcome: error === undefined ? 'moved' : 'failed', ...(error === undefined ? {} : { error }), done, total: keys.length });
    }
  };
  await Promise.all(Array.from({ length: Math.min(ctx.inFlightMax, keys.length) }, worker));
  // The `cold` records are a batch like any other: if this write fails the next flush retries
  // it, and open() would settle them anyway (a `both` record without a hot copy is cold).
  await ctx.catalog.flush().catch(() => undefined);
  if (options.signal?.aborted) throw new StorageError('CANCELLED', `moving objects cold was cancelled after ${done} of ${keys.length}`);
  return { movedObjects, movedBytes, failed };
}
