/**
 * Calls to the cold tier, bounded in time: the cold store does its own retries, and this bounds
 * their total so a failing or stalled S3 fails the one call that needs it, with a clear error,
 * while hot data keeps being served. Large ranges are split into parts fetched in parallel (as S3
 * clients do with ranged GETs), a bounded number at a time.
 */
import type { ChunkStore, ChunkStoreCallOptions } from '../../core/chunk-store.js';
import { isStorageError, StorageError } from '../../core/errors.js';

export interface ColdCallOptions {
  /** The most one cold call (with the cold store's retries) may take. */
  readonly timeoutMs: number;
  /** Ranges longer than this are fetched in parts of this size. */
  readonly partSizeBytes: number;
  /** Parts of one range in flight at once. */
  readonly partsInFlightMax: number;
}

export const COLD_TIMEOUT_DEFAULT_MS = 30_000;
export const COLD_PART_DEFAULT_BYTES = 8 * 1024 * 1024;
export const COLD_PARTS_IN_FLIGHT_DEFAULT = 8;

/**
 * Runs `call` with a signal that aborts when the caller's does or when `timeoutMs` passes; the
 * result is a rejection at that moment even when the cold store ignores its signal. Timeouts are
 * UNAVAILABLE naming the tier, the call and the bound: the tier took requests and did not answer
 * in time (a stalled or paused server), which may pass, so the same read may succeed later; the
 * caller's abort is CANCELLED (an enclosing boundedColdCall's timeout stays its UNAVAILABLE).
 */
export async function boundedColdCall<T>(
  what: string,
  timeoutMs: number,
  outer: AbortSignal | undefined,
  call: (options: ChunkStoreCallOptions) => Promise<T>,
): Promise<T> {
  if (outer?.aborted) throw new StorageError('CANCELLED', `${what} was cancelled`);
  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  const stopped = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const error = new StorageError('UNAVAILABLE', `the cold tier did not complete ${what} within ${timeoutMs} ms; check that it is reachable (hot data is still served)`);
      controller.abort(error);
      reject(error);
    }, timeoutMs);
    onAbort = () => {
      // An enclosing bound that ran out (a ranged read's parts are bounded calls inside one)
      // passes its UNAVAILABLE on: the tier failed, nobody cancelled (pool-tier.ts reports it).
      const reason: unknown = outer?.reason;
      const error = isStorageError(reason) && !isStorageError(reason, 'CANCELLED') ? reason : new StorageError('CANCELLED', `${what} was cancelled`);
      controller.abort(error);
      reject(error);
    };
    outer?.addEventListener('abort', onAbort, { once: true });
  });
  try {
    const running = call({ signal: controller.signal });
    // Once the bound has passed nobody awaits the call; its own rejection must not go unhandled.
    running.catch(() => undefined);
    return await Promise.race([running, stopped]);
  } catch (err) {
    if (isStorageError(err) || controller.signal.aborted) throw controller.signal.aborted ? (controller.signal.reason as Error) : err;
    throw new StorageError('IO_ERROR', `the cold tier failed ${what}: ${(err as Error).message}`, { cause: err });
  } finally {
    clearTimeout(timer);
    if (onAbort !== undefined) outer?.removeEventListener('abort', onAbort);
  }
}

/**
 * `lengthBytes` at `offsetBytes` of a cold object, in parts of `partSizeBytes`, at most
 * `partsInFlightMax` at once, each part bounded by the timeout (the whole read by the caller's
 * signal). Undefined when the object is missing; shorter when it ends inside the range.
 */
export async function getColdRange(
  cold: ChunkStore,
  key: string,
  offsetBytes: number,
  lengthBytes: number,
  options: ColdCallOptions,
  signal: AbortSignal | undefined,
): Promise<Uint8Array | undefined> {
  const get = (offset: number, length: number) =>
    boundedColdCall(`get ${key} [${offset}, +${length})`, options.timeoutMs, signal, (o) => cold.getRange(key, offset, length, o));
  if (lengthBytes <= options.partSizeBytes) return get(offsetBytes, lengthBytes);
  const partCount = Math.ceil(lengthBytes / options.partSizeBytes);
  const parts: (Uint8Array | undefined)[] = new Array<Uint8Array | undefined>(partCount);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < partCount) {
      const index = next++;
      const start = index * options.partSizeBytes;
      try {
        parts[index] = await get(offsetBytes + start, Math.min(options.partSizeBytes, lengthBytes - start));
      } catch (err) {
        next = partCount; // no new parts once one failed
        throw err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(options.partsInFlightMax, partCount) }, worker));
  if (parts[0] === undefined) return undefined;
  // The object may end inside the range: keep the parts up to the first short one.
  const kept: Uint8Array[] = [];
  for (const part of parts) {
    if (part === undefined) break;
    kept.push(part);
    if (part.length < options.partSizeBytes) break;
  }
  const out = new Uint8Array(kept.reduce((sum, part) => sum + part.length, 0));
  let at = 0;
  for (const part of kept) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}
