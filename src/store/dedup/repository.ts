/**
 * ChunkRepository: a pool's deduplicated chunks. Sealed layers (and, later, S3 objects) are cut
 * into chunks; the repository stores each distinct content once (appended to packs in a
 * ChunkStore), counts the references to it, and gives back the bytes of a chunk (or of part of
 * it) by its hash, checked on every read so bit rot is an error, never wrong data.
 *
 * The chunked layer store (src/store/chunked) consumes it; src/store/dedup implements it over a
 * ChunkStore and a CatalogStore; every implementation runs test/conformance/chunk-repository.ts.
 */

import type { CatalogStore } from '../../core/catalog-store.js';
import type { TxnBuilder } from '../../meta/table.js';

/** A chunk's content hash as lower-case hex: what names the chunk everywhere (manifests, index). */
export type ChunkHash = string;

/** Every call refuses a malformed hash (not the repository's digest length in hex) with INVALID_ARGUMENT. */
export interface ChunkRepositoryCallOptions {
  /** Aborts the call: it rejects with StorageError CANCELLED and changes no reference count. */
  readonly signal?: AbortSignal;
  /**
   * addReferences and addHashedReferences: the call stores what it must meanwhile, but changes no
   * count before this settles (a journal record that has to be durable first); when it rejects,
   * the call rejects with its error and changes nothing. It may wait for calls to this repository
   * begun before this one (a put's first step), never for one begun after it: an earlier call
   * does not wait for a later one's content in flight, so the two cannot wait on each other.
   */
  readonly commitAfter?: Promise<unknown>;
  /**
   * addReferences, addHashedReferences, addReferencesByHash and dropReferences of a repository
   * whose `sharesCatalog` is true for the caller's catalog: the caller's own records changed in
   * the very transaction that changes the counts (a put's journal record goes in with the
   * references it journals, or goes with their drop, so the two exist together or not at all,
   * one catalog commit instead of two). `add` runs on each attempt's transaction (an attempt that
   * loses a race is made again); `committedAt` is told the revision the successful one committed
   * at. An addReferences of no chunks commits nothing, these changes neither; a by-hash add or a
   * drop of no hashes commits these changes alone.
   */
  readonly catalogChanges?: CatalogChanges;
  /**
   * readChunks: an array the run's stored bytes may be read into (and checked and compacted in),
   * the answer then a view of it, so a caller that reuses its arrays spares a new buffer per run.
   * What it holds after the call is the answer's bytes or undefined; ignored when too small.
   */
  readonly into?: Uint8Array;
}

/** Records committed with a repository call's counts (ChunkRepositoryCallOptions.catalogChanges). */
export interface CatalogChanges {
  /** The caller's catalog: the repository refuses (INVALID_ARGUMENT) changes to another one. */
  readonly catalog: CatalogStore;
  add(txn: TxnBuilder): void;
  committedAt(revision: number): void;
  /**
   * For changes that compare records of their own (a version installed with its references): the
   * error to throw when the transaction failed on `failedKeys`, undefined when none is the
   * caller's. The call then throws it at once instead of trying again, and the caller re-reads
   * its records and calls again; a failure on the counts alone is retried inside the call as
   * without it. Absent: the caller's changes compare nothing that can change.
   */
  conflictOf?(failedKeys: readonly string[]): Error | undefined;
}

/**
 * A chunk and the name this repository gave it (ChunkRepository.hashChunk): a token, so that
 * addHashedReferences never trusts a hash it did not compute itself from these bytes.
 */
export interface HashedChunk {
  readonly hash: ChunkHash;
  readonly data: Uint8Array;
}

export interface ChunkRepository {
  /** The hash this repository names `data` by (pure: the same bytes always give the same hash). */
  hash(data: Uint8Array): ChunkHash;
  /**
   * hash(data) as a token addHashedReferences accepts (a caller that needs the names before it
   * adds the chunks, for a manifest or a journal, hashes each chunk once). The bytes must not
   * change until the call that takes the token settles.
   */
  hashChunk(data: Uint8Array): HashedChunk;
  /**
   * Optional: hashChunk of each chunk, perhaps on another thread (dedup, BLAKE3 pools: a worker
   * thread, for a large write's 4 MiB steps). The caller hands over each chunk's whole memory
   * (its ArrayBuffer must hold nothing else the caller uses): the memory may be moved to that
   * thread and back, which detaches the caller's views, so the caller uses the tokens' `data`
   * (the same bytes, in the same memory, as new views) from then on. Rejects (IO_ERROR; the chunks
   * are then lost) when that thread dies. The bytes must not change until the call that takes
   * the tokens settles.
   */
  hashOwnedChunks?(chunks: readonly Uint8Array[]): Promise<HashedChunk[]>;
  /**
   * Adds one reference to each chunk (a chunk listed twice gets two): content the pool lacks is
   * stored, content it has is shared (after checking it is the same bytes where the hash alone
   * cannot promise it). Durable when it resolves: the chunks and the counts survive a crash.
   * Returns the chunks' hashes in the order given. An all-zero chunk is the caller's to skip.
   * Keeps no reference to `chunks` once it settles: the caller may reuse those buffers.
   */
  addReferences(chunks: readonly Uint8Array[], options?: ChunkRepositoryCallOptions): Promise<ChunkHash[]>;
  /**
   * addReferences of chunks this repository hashed (hashChunk), without hashing them again; any
   * other object, one that merely looks like a token included, is INVALID_ARGUMENT and changes nothing.
   */
  addHashedReferences(chunks: readonly HashedChunk[], options?: ChunkRepositoryCallOptions): Promise<ChunkHash[]>;
  /**
   * Adds one reference to each chunk already in the repository, by hash (a manifest copied by
   * reference); NOT_FOUND, and no change, when one of them is not stored.
   */
  addReferencesByHash(hashes: readonly ChunkHash[], options?: ChunkRepositoryCallOptions): Promise<void>;
  /**
   * Drops one reference from each; a chunk whose count reaches zero is garbage once the grace
   * period has passed (a dropped reference is not an immediate delete). Durable when it resolves.
   * All or nothing: NOT_FOUND when a chunk is not stored, INVALID_ARGUMENT when the call drops
   * more references to a chunk than it has.
   */
  dropReferences(hashes: readonly ChunkHash[], options?: ChunkRepositoryCallOptions): Promise<void>;
  /**
   * The chunk's bytes (the caller's to change), checked against its hash (CORRUPT on mismatch;
   * NOT_FOUND when unknown). A chunk whose count dropped to zero reads until it is collected.
   */
  read(hash: ChunkHash, options?: ChunkRepositoryCallOptions): Promise<Uint8Array>;
  /**
   * `lengthBytes` of the chunk's bytes from `offsetBytes` (the caller's to change), checked as far
   * as it reads: an implementation may check only the part it reads (dedup: the CRCs of the 4 KiB
   * blocks covering it), never return other bytes (CORRUPT instead). NOT_FOUND when unknown;
   * INVALID_ARGUMENT for a range that is not whole numbers or runs past the chunk's end.
   */
  readRange(hash: ChunkHash, offsetBytes: number, lengthBytes: number, options?: ChunkRepositoryCallOptions): Promise<Uint8Array>;
  /**
   * Optional: readRange of `target.length` bytes from `offsetBytes` into `target`, synchronously,
   * when the implementation can without waiting (dedup: the chunk's location remembered, its pack
   * open, the bytes in the page cache), checked as readRange checks; true then. False otherwise
   * and for anything readRange would refuse or report (nothing is then promised about `target`):
   * the caller calls readRange. Never throws. A sealed layer's 4 KiB read thus needs no promise
   * chain, no allocation and no thread-pool round trip.
   */
  readRangeNow?(hash: ChunkHash, offsetBytes: number, target: Uint8Array): boolean;
  /**
   * The chunks' bytes one after another in one buffer (the caller's to change): what `read` of each
   * would give, checked as far as it reads as readRange is (dedup: the CRC of every 4 KiB block,
   * or the hash in a version 1 pack), NOT_FOUND or CORRUPT as `read` would be. Optional: for
   * streaming many chunks (an object's GET) where one call per run beats one per chunk (dedup:
   * one ranged read for chunks back to back in a pack, no read cache); callers fall back to `read`.
   */
  readChunks?(hashes: readonly ChunkHash[], options?: ChunkRepositoryCallOptions): Promise<Uint8Array>;
  /**
   * Optional: `read` into `target`, which must be exactly the chunk's length (INVALID_ARGUMENT
   * otherwise), checked as far as it reads as readRange is (dedup: the CRC of every 4 KiB block,
   * or the hash in a version 1 pack); NOT_FOUND or CORRUPT as `read` would be, and `target` then
   * holds no promised bytes. For sequential readers of whole chunks (a sealed layer streamed from
   * S3): no buffer per chunk. Callers fall back to `read`.
   */
  readInto?(hash: ChunkHash, target: Uint8Array, options?: ChunkRepositoryCallOptions): Promise<void>;
  /** The chunk's current reference count (0 when unknown or dropped to zero). */
  referenceCount(hash: ChunkHash): Promise<number>;
  /**
   * Optional: true when this repository's counts live in `catalog` (the same store object), so a
   * call may commit the caller's records with its counts (catalogChanges); absent or false: the
   * caller commits its records on its own.
   */
  sharesCatalog?(catalog: CatalogStore): boolean;
}
