/**
 * DedupChunkRepository: a pool's chunks stored once each, in packs of a few MiB in a ChunkStore,
 * indexed with reference counts in the catalog (chunk-index.ts).
 *
 * addReferences hashes the chunks (addHashedReferences takes the names this object's hashChunk
 * gave, tokens it remembers, so a caller that needed the names first hashes each chunk once),
 * reads the index for all distinct hashes in batches (getMany, not one get per chunk), appends the new ones to packs of its own, puts the packs (durable) and only
 * then commits every count change of the call in one catalog transaction. A crash before the commit leaves packs nothing references, which GC
 * removes after the grace period; it can never leave a reference to a chunk that is not stored.
 * Callers in other processes are kept from losing counts by the transaction's compares (a failed
 * compare re-reads and tries again); callers in this process that store the same new content at
 * once wait for each other, so the content is written once.
 *
 * read checks every chunk against its hash, readRange the CRCs of the 4 KiB blocks it reads (pack
 * version 2; a version 1 pack is read whole and hashed): bit rot is CORRUPT naming the chunk and
 * the pack. Both find the chunk through a bounded in-memory map of recent locations before the
 * index (location-hints.ts says why a hint is safe to trust and how a stale one is left).
 */
import type { CatalogStore } from '../../core/catalog-store.js';
import type { ChunkStore } from '../../core/chunk-store.js';
import { StorageError, isStorageError } from '../../core/errors.js';
import { readChunkBlocks, readChunkBlocksNow, readWholeChunk, readWholeChunkInto } from './chunk-reads.js';
import { readChunkRun } from './chunk-runs.js';
import { ChunkLocationHints, LOCATION_HINTS_DEFAULT, type ChunkLocation } from './location-hints.js';
import { TxnBuilder, type Versioned } from '../../meta/table.js';
import { throwIfAborted } from '../memory-chunk-store.js';
import { BLAKE3_HASHER, checkChunkHash, type ChunkHasher } from './chunk-hasher.js';
import { openChunkIndex, type ChunkIndex, type ChunkRecord, type PackRecord } from './chunk-index.js';
import { ChunkTokens } from './chunk-tokens.js';
import { collectGarbage, type GcContext, type GcOptions, type GcReport } from './gc.js';
import { CHUNK_SIZE_BYTES_MAX, PACK_VERSION, newPackId, packKey, type StoredChunk } from './pack-format.js';
import { writePacks, type ChunkToWrite, type PackWriterContext, type Written } from './pack-writer.js';
import { ChunkReadCache } from './read-cache.js';
import type { ChunkHash, ChunkRepository, ChunkRepositoryCallOptions, HashedChunk } from './repository.js';
import { scrubPool, type LeakSuspect, type ScrubOptions } from './scrub.js';
import type { ScrubReport } from './scrub-report.js';

export const PACK_TARGET_BYTES_DEFAULT = 4 * 1024 * 1024;
export const READ_CACHE_BYTES_DEFAULT = 8 * 1024 * 1024;
/** How many times a call re-reads and retries after other writers changed the counts it read. */
const TXN_ATTEMPTS_MAX = 64;
/** How many times a read follows a chunk that GC moved to another pack meanwhile. */
const READ_ATTEMPTS_MAX = 4;

export interface DedupChunkRepositoryOptions {
  /** Where packs go (under `packs/`). */
  readonly chunkStore: ChunkStore;
  /** Where the index goes. */
  readonly catalog: CatalogStore;
  /** Names the chunks; fixed for a pool once chosen. Default BLAKE3. */
  readonly hasher?: ChunkHasher;
  /** The pool whose chunks these are (its own index tables); absent: the default pool. */
  readonly pool?: string;
  /**
   * A pack closes when the next chunk would take its chunks' bytes (not its metadata) over this size
   * by more than 1/64 of it (default 4 MiB): a 4 MiB seal batch or S3 step (with its marker) is one pack.
   */
  readonly packTargetBytes?: number;
  /** Bytes of recently read chunks kept in memory (default 8 MiB; 0: no cache). */
  readonly readCacheBytes?: number;
  /** The clock for zero-count stamps and pack ids (ms since the epoch); default Date.now. */
  readonly nowMs?: () => number;
  /** Chunk locations remembered in memory (default 65,536, ~13 MiB; 0: every read asks the index). */
  readonly locationHintsMax?: number;
  /** The pack format version to write (default the newest); tests write 1 to prove old packs still read. */
  readonly packVersion?: number;
}

/** DedupChunkRepository.usage: what the index says the pool's chunks occupy. */
export interface DedupUsage {
  readonly packBytes: number;
  readonly packCount: number;
  /** Chunks with at least one reference, each counted once. */
  readonly uniqueChunkCount: number;
  readonly uniqueChunkBytes: number;
  /** Each chunk's bytes times its reference count. */
  readonly referencedChunkBytes: number;
}

/** A distinct chunk of an add call: its references, bytes and, from a worker-named token, its blocks' CRCs and stored form. */
type Wanted = ChunkToWrite & { count: number };

/** A chunk addReferences accepts: 1 to CHUNK_SIZE_BYTES_MAX bytes. */
function checkChunkBytes(chunk: unknown, index: number): void {
  if (!(chunk instanceof Uint8Array) || chunk.length === 0 || chunk.length > CHUNK_SIZE_BYTES_MAX) {
    throw new StorageError('INVALID_ARGUMENT', `chunk ${index} is not 1 to ${CHUNK_SIZE_BYTES_MAX} bytes`);
  }
}

/** New content a call is storing: the call's place in the order calls began, and its end. */
interface InFlightContent {
  readonly callSeq: number;
  readonly settled: Promise<void>;
}

export class DedupChunkRepository implements ChunkRepository {
  private readonly hasher: ChunkHasher;
  private readonly packTargetBytes: number;
  private readonly cache: ChunkReadCache | undefined;
  private readonly hints: ChunkLocationHints;
  private readonly nowMs: () => number;
  /** New content being stored by a call in this process: hash -> that call (addWritingPacks). */
  private readonly inFlight = new Map<string, InFlightContent>();
  /** Calls that add content, numbered as they begin (inFlight's order). */
  private callsBegun = 0;
  /** Packs put by calls in this process that have not committed yet: GC leaves them alone. */
  private readonly uncommittedPacks = new Set<string>();
  /** The GC or scrub running (one at a time: a scrub must not see a GC's half-moved chunks). */
  private maintenance: 'gc' | 'scrub' | undefined;
  /** Counts a scrub saw above what holders hold, kept for the scrub that confirms them (scrub.ts). */
  private readonly leakSuspects = new Map<string, LeakSuspect>();
  /** The tokens hashChunk and hashOwnedChunks gave out: addHashedReferences trusts the hash of these and no others. */
  private readonly tokens: ChunkTokens;
  private readonly packWriter: PackWriterContext;

  private constructor(
    private readonly options: DedupChunkRepositoryOptions,
    private readonly index: ChunkIndex,
  ) {
    this.hasher = options.hasher ?? BLAKE3_HASHER;
    this.tokens = new ChunkTokens(this.hasher, (options.packVersion ?? PACK_VERSION) === 2);
    this.packTargetBytes = options.packTargetBytes ?? PACK_TARGET_BYTES_DEFAULT;
    const cacheBytes = options.readCacheBytes ?? READ_CACHE_BYTES_DEFAULT;
    this.cache = cacheBytes > 0 ? new ChunkReadCache(cacheBytes) : undefined;
    // A pack's version not in memory comes from its index record before its header is read.
    this.hints = new ChunkLocationHints(options.locationHintsMax ?? LOCATION_HINTS_DEFAULT, async (packId) => (await index.packs.get(packId))?.record.version);
    this.nowMs = options.nowMs ?? Date.now;
    this.packWriter = {
      chunkStore: options.chunkStore,
      hasher: this.hasher,
      packTargetBytes: this.packTargetBytes,
      packVersion: options.packVersion,
      nowMs: this.nowMs,
      uncommittedPacks: this.uncommittedPacks,
      packWritten: (packId, version) => this.hints.rememberPackVersion(packId, version),
    };
  }

  /** Opens the pool's repository; INVALID_ARGUMENT when the pool was created with another hash. */
  static async open(options: DedupChunkRepositoryOptions): Promise<DedupChunkRepository> {
    const hasher = options.hasher ?? BLAKE3_HASHER;
    const target = options.packTargetBytes ?? PACK_TARGET_BYTES_DEFAULT;
    if (!Number.isSafeInteger(target) || target < 1) {
      throw new StorageError('INVALID_ARGUMENT', `packTargetBytes ${target} is not a positive whole number`);
    }
    const hintsMax = options.locationHintsMax ?? LOCATION_HINTS_DEFAULT;
    if (!Number.isSafeInteger(hintsMax) || hintsMax < 0) {
      throw new StorageError('INVALID_ARGUMENT', `locationHintsMax ${hintsMax} is not a whole number`);
    }
    hasher.hash(new Uint8Array(0)); // fails here, UNSUPPORTED, when the hash's library is missing
    return new DedupChunkRepository(options, await openChunkIndex(options.catalog, options.pool, hasher.algorithm));
  }

  hash(data: Uint8Array): ChunkHash {
    return this.hasher.hash(data);
  }

  hashChunk(data: Uint8Array): HashedChunk {
    return this.tokens.hashChunk(data);
  }

  /** BLAKE3 pools: a step of chunks is hashed on a worker thread of this layer (chunk-tokens.ts). */
  hashOwnedChunks(chunks: readonly Uint8Array[]): Promise<HashedChunk[]> {
    return this.tokens.hashOwnedChunks(chunks);
  }

  async addReferences(chunks: readonly Uint8Array[], options?: ChunkRepositoryCallOptions): Promise<ChunkHash[]> {
    options?.commitAfter?.catch(() => undefined); // its failure is this call's, seen where it is awaited
    throwIfAborted(options, 'addReferences');
    for (const [i, chunk] of chunks.entries()) checkChunkBytes(chunk, i);
    return this.addNamed(chunks.map((chunk) => this.hasher.hash(chunk)), chunks, options);
  }

  async addHashedReferences(chunks: readonly HashedChunk[], options?: ChunkRepositoryCallOptions): Promise<ChunkHash[]> {
    options?.commitAfter?.catch(() => undefined); // its failure is this call's, seen where it is awaited
    throwIfAborted(options, 'addHashedReferences');
    for (const [i, chunk] of chunks.entries()) {
      if (!this.tokens.issued(chunk)) {
        throw new StorageError('INVALID_ARGUMENT', `chunk ${i} was not hashed by this repository: name chunks with its hashChunk, or add their bytes with addReferences`);
      }
      checkChunkBytes(chunk.data, i);
    }
    const blockChecksums = chunks.map((chunk) => this.tokens.blockChecksumsOf(chunk));
    const stored = chunks.map((chunk) => this.tokens.takeStoredChunk(chunk));
    const result = await this.addNamed(chunks.map((chunk) => chunk.hash), chunks.map((chunk) => chunk.data), options, blockChecksums, stored);
    // Every pack put resolved: the laid-out memory is read by nothing now (after a failure it is left to the GC).
    for (const laidOut of new Set(stored.map((form) => form?.laidOut))) if (laidOut !== undefined) this.tokens.giveBackLaidOut(laidOut);
    return result;
  }

  /** addReferences of checked chunks with their names (and block CRCs, when a token came with them) computed here, from these bytes. */
  private async addNamed(
    names: ChunkHash[],
    chunks: readonly Uint8Array[],
    options: ChunkRepositoryCallOptions | undefined,
    blockChecksums?: readonly (Uint32Array | undefined)[],
    stored?: readonly (StoredChunk | undefined)[],
  ): Promise<ChunkHash[]> {
    if (chunks.length === 0) return [];
    const wanted = new Map<string, Wanted>();
    for (const [i, hash] of names.entries()) {
      const entry = wanted.get(hash);
      if (entry === undefined) wanted.set(hash, { count: 1, data: chunks[i]!, blockChecksums: blockChecksums?.[i], stored: stored?.[i] });
      else entry.count++;
    }
    const written = new Map<string, Written>();
    const writtenPacks: PackRecord[] = [];
    const callSeq = this.callsBegun++;
    try {
      return await this.addWritingPacks(callSeq, names, wanted, written, writtenPacks, options);
    } finally {
      for (const pack of writtenPacks) this.uncommittedPacks.delete(pack.id);
    }
  }

  /**
   * addReferences after hashing: `written` and `writtenPacks` gather what it stored, across
   * retries. `callSeq` is the call's place in the order calls began.
   *
   * Content another call is storing is waited for only when that call began before this one: a
   * later call may be holding its content until this one commits (its commitAfter is a put's
   * first step, and that step is this call), and waiting for it would wait forever (an S3 part of
   * one repeated byte: both steps' chunks are one chunk, and the second step's index read can
   * return first). Content a later call holds is stored here too; whichever commits second finds
   * the record and counts its references on it, the copy it wrote left for the GC, as after any
   * lost race.
   */
  private async addWritingPacks(
    callSeq: number,
    names: ChunkHash[],
    wanted: ReadonlyMap<string, Wanted>,
    written: Map<string, Written>,
    writtenPacks: PackRecord[],
    options: ChunkRepositoryCallOptions | undefined,
  ): Promise<ChunkHash[]> {
    const compared = new Set<string>();
    for (let attempt = 0; attempt < TXN_ATTEMPTS_MAX; attempt++) {
      throwIfAborted(options, 'addReferences');
      const current = await this.readRecords([...wanted.keys()]);
      const missing = [...wanted.keys()].filter((hash) => !current.has(hash) && !written.has(hash));
      const holders = missing.map((hash) => this.inFlight.get(hash)).filter((held) => held !== undefined);
      const earlier = holders.filter((held) => held.callSeq < callSeq);
      if (earlier.length > 0) {
        // An earlier call here is storing some of this content: share its copy once it is indexed.
        await Promise.all(earlier.map((held) => held.settled));
        continue;
      }
      let done!: () => void;
      const claim: InFlightContent = { callSeq, settled: new Promise<void>((resolve) => (done = resolve)) };
      // What a later call holds stays its claim (calls after both wait for that one).
      const claimed = missing.filter((hash) => !this.inFlight.has(hash));
      for (const hash of claimed) this.inFlight.set(hash, claim);
      try {
        let moved = false;
        for (const [hash, entry] of current) {
          if (!this.hasher.byteCompareBeforeSharing || compared.has(hash)) continue;
          moved = !(await this.compareStored(entry.record, wanted.get(hash)!.data, options));
          if (moved) break;
          compared.add(hash);
        }
        if (moved) continue; // GC moved a chunk being compared: read the index again
        await writePacks(this.packWriter, missing.map((hash) => [hash, wanted.get(hash)!] as const), written, writtenPacks, options);
        const txn = new TxnBuilder();
        for (const [hash, { count }] of wanted) {
          const existing = current.get(hash);
          if (existing !== undefined) {
            this.index.chunks.put(txn, { ...existing.record, refs: existing.record.refs + count, zeroSinceMs: null }, existing);
          } else {
            const location = written.get(hash)!;
            this.index.chunks.put(txn, { hash, ...location, refs: count, zeroSinceMs: null });
          }
        }
        for (const pack of writtenPacks) this.index.packs.put(txn, pack);
        await options?.commitAfter;
        throwIfAborted(options, 'addReferences');
        if (await this.tryCommit(txn, options)) {
          for (const [hash, location] of written) this.hints.set(hash, location);
          return names;
        }
      } finally {
        for (const hash of claimed) if (this.inFlight.get(hash) === claim) this.inFlight.delete(hash);
        done();
      }
    }
    throw this.tooBusy('addReferences');
  }

  async addReferencesByHash(hashes: readonly ChunkHash[], options?: ChunkRepositoryCallOptions): Promise<void> {
    await this.changeReferences('addReferencesByHash', hashes, +1, options);
  }

  async dropReferences(hashes: readonly ChunkHash[], options?: ChunkRepositoryCallOptions): Promise<void> {
    await this.changeReferences('dropReferences', hashes, -1, options);
  }

  async read(hash: ChunkHash, options?: ChunkRepositoryCallOptions): Promise<Uint8Array> {
    checkChunkHash(this.hasher, hash);
    throwIfAborted(options, `read of chunk ${hash}`);
    const cached = this.cache?.get(hash);
    if (cached !== undefined) return cached;
    return this.readLocated(hash, options, async (at, version) => {
      const data = await readWholeChunk(this.options.chunkStore, this.hasher, hash, at, version, options);
      if (data !== undefined) this.cache?.set(hash, new Uint8Array(data));
      return data;
    });
  }

  async readRange(hash: ChunkHash, offsetBytes: number, lengthBytes: number, options?: ChunkRepositoryCallOptions): Promise<Uint8Array> {
    checkChunkHash(this.hasher, hash);
    if (!Number.isSafeInteger(offsetBytes) || offsetBytes < 0 || !Number.isSafeInteger(lengthBytes) || lengthBytes < 0) {
      throw new StorageError('INVALID_ARGUMENT', `readRange of chunk ${hash}: ${offsetBytes}+${lengthBytes} is not a byte range`);
    }
    throwIfAborted(options, `read of chunk ${hash}`);
    const cached = this.cache?.getRange(hash, offsetBytes, lengthBytes);
    if (cached !== undefined) return cached;
    return this.readLocated(hash, options, async (at, version) => {
      if (offsetBytes + lengthBytes > at.lengthBytes) {
        throw new StorageError('INVALID_ARGUMENT', `readRange of chunk ${hash}: ${offsetBytes}+${lengthBytes} runs past its ${at.lengthBytes} bytes`);
      }
      if (lengthBytes === 0) return new Uint8Array(0);
      if (version !== 1) return readChunkBlocks(this.options.chunkStore, hash, at, offsetBytes, lengthBytes, options);
      const data = await readWholeChunk(this.options.chunkStore, this.hasher, hash, at, version, options);
      if (data === undefined) return undefined;
      this.cache?.set(hash, new Uint8Array(data));
      return data.slice(offsetBytes, offsetBytes + lengthBytes);
    });
  }

  /** The whole chunk into `target`, checked block by block (chunk-reads.ts); the read cache is used, not filled (a stream reads once). */
  async readInto(hash: ChunkHash, target: Uint8Array, options?: ChunkRepositoryCallOptions): Promise<void> {
    checkChunkHash(this.hasher, hash);
    throwIfAborted(options, `read of chunk ${hash}`);
    if (this.cache?.copyInto(hash, target) === true) return;
    await this.readLocated(hash, options, (at, version) => {
      if (target.length !== at.lengthBytes) {
        throw new StorageError('INVALID_ARGUMENT', `readInto of chunk ${hash}: a target of ${target.length} bytes for a chunk of ${at.lengthBytes}`);
      }
      return readWholeChunkInto(this.options.chunkStore, this.hasher, hash, at, version, target, options);
    });
  }

  /** Chunks back to back in a pack are read together and checked block by block (chunk-runs.ts); not cached (a run is read once). */
  async readChunks(hashes: readonly ChunkHash[], options?: ChunkRepositoryCallOptions): Promise<Uint8Array> {
    for (const hash of hashes) checkChunkHash(this.hasher, hash);
    throwIfAborted(options, `read of ${hashes.length} chunks`);
    // A chunk read alone never writes into the run's array (options.into): it has its own.
    const one = options?.signal === undefined ? {} : { signal: options.signal };
    const source = { store: this.options.chunkStore, hasher: this.hasher, hints: this.hints, index: this.index, readOne: (hash: string) => this.read(hash, one) };
    return readChunkRun(source, hashes, options);
  }

  /**
   * readRange into `target` without waiting, when the chunk's location is remembered, its pack is a
   * version 2 pack and the store has the bytes at hand (getRangeNow): the blocks are checked as
   * readRange checks them. False otherwise, and for anything readRange would refuse or report
   * (the caller then calls readRange); a block failing its check also forgets the location.
   */
  readRangeNow(hash: ChunkHash, offsetBytes: number, target: Uint8Array): boolean {
    if (this.options.chunkStore.getRangeNow === undefined || target.length === 0) return false;
    if (!Number.isSafeInteger(offsetBytes) || offsetBytes < 0) return false;
    if (this.cache !== undefined) {
      const cached = this.cache.getRange(hash, offsetBytes, target.length);
      if (cached !== undefined) {
        target.set(cached);
        return true;
      }
    }
    const at = this.hints.get(hash);
    if (at === undefined) return false;
    const version = this.hints.knownPackVersion(at.pack);
    if (version === undefined || version === 1) return false; // a version 1 chunk is read whole and hashed
    if (offsetBytes + target.length > at.lengthBytes) return false;
    const outcome = readChunkBlocksNow(this.options.chunkStore, at, offsetBytes, target);
    if (outcome === 'damaged') this.hints.forget(hash);
    return outcome === 'done';
  }

  /**
   * Runs `readAt` on the chunk's location: the remembered one first, else the index's. A GC may
   * move the chunk to a new pack and delete the old one between finding and reading it, and a
   * scrub may point the index at another copy: a read that finds no pack there (undefined), or a
   * damaged copy where a hint led, asks the index again; only a chunk that stays put and missing
   * is damage.
   */
  private async readLocated<T>(
    hash: ChunkHash,
    options: ChunkRepositoryCallOptions | undefined,
    readAt: (at: ChunkLocation, version: number) => Promise<T | undefined>,
  ): Promise<T> {
    let at: ChunkLocation | undefined = this.hints.get(hash);
    let hinted = at !== undefined;
    let previous: ChunkLocation | undefined;
    for (let attempt = 0; attempt < READ_ATTEMPTS_MAX; attempt++) {
      if (at === undefined) {
        const entry = await this.index.chunks.get(hash);
        if (entry === undefined) throw new StorageError('NOT_FOUND', `chunk ${hash} is not in the repository`);
        at = entry.record;
        hinted = false;
      }
      let result: T | undefined;
      try {
        const version = this.hints.knownPackVersion(at.pack) ?? (await this.hints.packVersion(this.options.chunkStore, at.pack, options));
        result = version === undefined ? undefined : await readAt(at, version);
      } catch (err) {
        if (!hinted || !isStorageError(err, 'CORRUPT')) throw err;
      }
      if (result !== undefined) {
        if (!hinted) this.hints.set(hash, at);
        return result;
      }
      this.hints.forget(hash);
      if (!hinted) {
        if (previous !== undefined && previous.pack === at.pack && previous.offsetBytes === at.offsetBytes) {
          throw new StorageError('CORRUPT', `chunk ${hash}: its pack ${at.pack} is missing or shorter than the chunk's ${at.lengthBytes} bytes at ${at.offsetBytes}`);
        }
        previous = at;
      }
      at = undefined;
    }
    throw new StorageError('BUSY', `chunk ${hash} moved between packs ${READ_ATTEMPTS_MAX} times while being read; try again`);
  }

  async referenceCount(hash: ChunkHash): Promise<number> {
    checkChunkHash(this.hasher, hash);
    return (await this.index.chunks.get(hash))?.record.refs ?? 0;
  }

  /** The ChunkStore key of the pack holding `hash` (undefined: not in the index). */
  async packKeyOf(hash: ChunkHash): Promise<string | undefined> {
    const entry = await this.index.chunks.get(hash);
    return entry === undefined ? undefined : packKey(entry.record.pack);
  }

  /** What the pool's chunks occupy, summed from the index (both tables read page by page). */
  async usage(): Promise<DedupUsage> {
    let packBytes = 0;
    let packCount = 0;
    for await (const pack of this.index.packs.records()) {
      packBytes += pack.sizeBytes;
      packCount++;
    }
    let uniqueChunkCount = 0;
    let uniqueChunkBytes = 0;
    let referencedChunkBytes = 0;
    for await (const chunk of this.index.chunks.records()) {
      if (chunk.refs === 0) continue;
      uniqueChunkCount++;
      uniqueChunkBytes += chunk.lengthBytes;
      referencedChunkBytes += chunk.lengthBytes * chunk.refs;
    }
    return { packBytes, packCount, uniqueChunkCount, uniqueChunkBytes, referencedChunkBytes };
  }

  /** Every indexed chunk's hash and reference count (zero-count ones too), a page at a time. */
  async *referenceCounts(): AsyncIterable<{ hash: ChunkHash; refs: number }> {
    for await (const chunk of this.index.chunks.records()) yield { hash: chunk.hash, refs: chunk.refs };
  }

  /**
   * Removes what is no longer needed: index entries of chunks unreferenced for longer than
   * `graceMs`, packs with no live chunk, packs written but never indexed (a crash) once older than
   * `graceMs`; and rewrites packs mostly dead (or small ones, together). One GC at a time.
   */
  async gc(options: GcOptions): Promise<GcReport> {
    return this.runMaintenance('gc', () => collectGarbage(this.internals(), options));
  }

  /**
   * Checks the pool (index, packs, chunk hashes, reference counts against `options.references`)
   * and, with `repair`, fixes what it can; scrub.ts says what and how it stays safe beside
   * calls that add and drop references. A leak is lowered only by a scrub at least
   * `leakConfirmMs` after the one that first saw it (this object remembers it meanwhile).
   * BUSY while a GC or another scrub of this repository runs.
   */
  async scrub(options: ScrubOptions): Promise<ScrubReport> {
    return this.runMaintenance('scrub', () => scrubPool({ ...this.internals(), leakSuspects: this.leakSuspects }, options));
  }

  private async runMaintenance<T>(what: 'gc' | 'scrub', run: () => Promise<T>): Promise<T> {
    if (this.maintenance !== undefined) {
      const running = this.maintenance === 'gc' ? 'a garbage collection' : 'a scrub';
      throw new StorageError('BUSY', `${running} of this repository is already running; wait for it to finish, then run the ${what}`);
    }
    this.maintenance = what;
    try {
      return await run();
    } finally {
      this.maintenance = undefined;
    }
  }

  private internals(): GcContext {
    return {
      index: this.index,
      chunkStore: this.options.chunkStore,
      catalog: this.options.catalog,
      hasher: this.hasher,
      packTargetBytes: this.packTargetBytes,
      newPackId: () => newPackId(this.nowMs()),
      isUncommitted: (packId) => this.uncommittedPacks.has(packId),
      forgotten: (hash) => {
        this.cache?.delete(hash);
        this.hints.forget(hash);
      },
    };
  }

  /** The index entries of `hashes` that exist (batched catalog reads, not one get per chunk). */
  private async readRecords(hashes: readonly string[]): Promise<Map<string, Versioned<ChunkRecord>>> {
    const entries = await this.index.chunks.getMany(hashes);
    const found = new Map<string, Versioned<ChunkRecord>>();
    for (const [i, entry] of entries.entries()) if (entry !== undefined) found.set(hashes[i]!, entry);
    return found;
  }

  /** The chunk's bytes from its pack, checked; undefined when the pack is missing or too short. */
  private async readStored(record: ChunkRecord, options: ChunkRepositoryCallOptions | undefined): Promise<Uint8Array | undefined> {
    const version = await this.hints.packVersion(this.options.chunkStore, record.pack, options);
    if (version === undefined) return undefined;
    return readWholeChunk(this.options.chunkStore, this.hasher, record.hash, record, version, options);
  }

  /**
   * For a hash that does not promise equal bytes: the stored copy must be `data` before it is
   * shared. False when the copy is not where the index said (GC moved it since).
   */
  private async compareStored(record: ChunkRecord, data: Uint8Array, options: ChunkRepositoryCallOptions | undefined): Promise<boolean> {
    const stored = await this.readStored(record, options);
    if (stored === undefined) return false;
    if (!Buffer.from(stored.buffer, stored.byteOffset, stored.length).equals(data)) {
      throw new StorageError(
        'UNSUPPORTED',
        `two different chunks have the ${this.hasher.algorithm} hash ${record.hash}; this pool cannot store the second (a pool that names chunks by BLAKE3 can)`,
      );
    }
    return true;
  }

  /** Adds `delta` references per occurrence of each hash, in one transaction, retried on conflicts. */
  private async changeReferences(what: string, hashes: readonly ChunkHash[], delta: 1 | -1, options?: ChunkRepositoryCallOptions): Promise<void> {
    throwIfAborted(options, what);
    const counts = new Map<string, number>();
    for (const hash of hashes) {
      checkChunkHash(this.hasher, hash);
      counts.set(hash, (counts.get(hash) ?? 0) + 1);
    }
    if (counts.size === 0 && options?.catalogChanges === undefined) return;
    for (let attempt = 0; attempt < TXN_ATTEMPTS_MAX; attempt++) {
      const current = await this.readRecords([...counts.keys()]);
      const txn = new TxnBuilder();
      for (const [hash, count] of counts) {
        const existing = current.get(hash);
        if (existing === undefined) throw new StorageError('NOT_FOUND', `${what}: chunk ${hash} is not in the repository`);
        const refs = existing.record.refs + delta * count;
        if (refs < 0) {
          throw new StorageError('INVALID_ARGUMENT', `${what}: drops ${count} references to chunk ${hash}, which has ${existing.record.refs}`);
        }
        const zeroSinceMs = refs > 0 ? null : (existing.record.zeroSinceMs ?? this.nowMs());
        this.index.chunks.put(txn, { ...existing.record, refs, zeroSinceMs }, existing);
      }
      throwIfAborted(options, what);
      if (await this.tryCommit(txn, options)) return;
    }
    throw this.tooBusy(what);
  }

  sharesCatalog(catalog: CatalogStore): boolean {
    return catalog === this.options.catalog;
  }

  /**
   * Commits, with the caller's catalogChanges; false when another writer changed a compared key
   * first (the caller re-reads).
   */
  private async tryCommit(txn: TxnBuilder, options?: ChunkRepositoryCallOptions): Promise<boolean> {
    const changes = options?.catalogChanges;
    if (changes !== undefined) {
      // Another catalog's records must not be written into this one.
      if (!this.sharesCatalog(changes.catalog)) throw new StorageError('INVALID_ARGUMENT', 'catalogChanges need a repository that shares the caller\'s catalog');
      changes.add(txn);
    }
    // Which keys failed tells a lost race on the counts (tried again here) from one on the
    // caller's own compared records (the caller's to handle: conflictOf).
    const result = await this.options.catalog.txn(txn.compares, txn.ops);
    if (result.succeeded) {
      changes?.committedAt(result.revision);
      return true;
    }
    const conflict = changes?.conflictOf?.(result.failedKeys);
    if (conflict !== undefined) throw conflict;
    return false;
  }

  private tooBusy(what: string): StorageError {
    return new StorageError('BUSY', `${what} lost ${TXN_ATTEMPTS_MAX} races in a row with other writers of the same chunks; try again`);
  }
}
