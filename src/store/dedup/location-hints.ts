/**
 * Where chunks lie, remembered in memory so a read of a chunk read (or written) lately needs no
 * chunk-index lookup (a LevelDB get, the largest cost of a sealed 4 KiB read after the read
 * itself). A hint is either right or names a pack that is gone: packs are immutable and their ids
 * never reused, and GC moves a chunk only by writing it to a new pack and deleting the old one
 * after. So the reader trusts a hint, and when its pack is missing or short (or the copy fails its
 * checks, which a scrub may have fixed in the index meanwhile) forgets it and asks the index.
 *
 * Bounded by entry count; an entry not used for a generation (half the bound) goes first. Each entry costs ~200 bytes of heap (a
 * 64-digit hex key, the location object, the Map slot; measured in docs/dedup.md; the pack's key
 * string is shared by its chunks, and the checksum seed is a small number), so the default 65,536
 * entries (4 GiB of 64 KiB chunks read at random) hold ~13 MiB, whatever the pool's size.
 *
 * Also remembers each pack's format version (from its index record, else its 16-byte header, on
 * first use), which says how its chunks are laid out (pack-format.ts).
 */
import type { ChunkStore, ChunkStoreCallOptions } from '../../core/chunk-store.js';
import { StorageError } from '../../core/errors.js';
import { chunkHashSeed } from './pack-blocks.js';
import { PACK_HEADER_BYTES, PACK_VERSIONS_READ, packHeaderVersion, packKey } from './pack-format.js';

export interface ChunkLocation {
  readonly pack: string;
  /** Where the chunk's stored bytes start in the pack. */
  readonly offsetBytes: number;
  /** The chunk's own length (its stored bytes are longer in a version 2 pack). */
  readonly lengthBytes: number;
}

/** A remembered location with what a read of it needs made once, not per read. */
export interface HintedLocation extends ChunkLocation {
  /** The pack's ChunkStore key (packKey(pack)). */
  readonly packKey: string;
  /** The chunk's block checksum seed (chunkHashSeed(hash)). */
  readonly hashSeed: number;
}

export const LOCATION_HINTS_DEFAULT = 65_536;
/** Pack versions remembered: a few MiB per pack, so 4096 cover 16 GiB of packs in use. */
const PACK_VERSIONS_MAX = 4096;

/**
 * A bounded map that keeps what is used: two generations of up to half the bound each. A hit in
 * the young one is a plain Map get (no reordering on the hot path: a hinted read does several such
 * lookups); a hit in the old one moves the entry to the young one; when the young one is full it
 * becomes the old one and the old one is dropped whole, so an entry unused for a generation goes.
 */
class BoundedMap<V> {
  private young = new Map<string, V>();
  private old = new Map<string, V>();
  private readonly generationMax: number;

  constructor(entriesMax: number) {
    this.generationMax = Math.ceil(entriesMax / 2);
  }

  get size(): number {
    return this.young.size + this.old.size;
  }

  get(key: string): V | undefined {
    const value = this.young.get(key);
    if (value !== undefined) return value;
    const aging = this.old.get(key);
    if (aging === undefined) return undefined;
    this.old.delete(key);
    this.putYoung(key, aging);
    return aging;
  }

  set(key: string, value: V): void {
    if (this.generationMax === 0) return;
    this.old.delete(key);
    this.putYoung(key, value);
  }

  delete(key: string): void {
    this.young.delete(key);
    this.old.delete(key);
  }

  private putYoung(key: string, value: V): void {
    if (!this.young.has(key) && this.young.size >= this.generationMax) {
      this.old = this.young;
      this.young = new Map();
    }
    this.young.set(key, value);
  }
}

export class ChunkLocationHints {
  private readonly locations: BoundedMap<HintedLocation>;
  private readonly versions = new BoundedMap<number>(PACK_VERSIONS_MAX);
  /** Header reads on their way, shared by the reads that need them. */
  private readonly versionLookups = new Map<string, Promise<number | undefined>>();
  /** One key string per pack, shared by its chunks' hints. */
  private readonly packKeys = new BoundedMap<string>(PACK_VERSIONS_MAX);

  /**
   * `entriesMax` 0: remember no locations (every read asks the index). `recordedVersion`: the
   * version the pack's index record holds, asked before the header is read (a local lookup where
   * the header of a cold pack is a GET); undefined when the record has none.
   */
  constructor(
    entriesMax: number = LOCATION_HINTS_DEFAULT,
    private readonly recordedVersion?: (packId: string) => Promise<number | undefined>,
  ) {
    this.locations = new BoundedMap(entriesMax);
  }

  /** Locations held now. */
  get size(): number {
    return this.locations.size;
  }

  get(hash: string): HintedLocation | undefined {
    return this.locations.get(hash);
  }

  /** Remembers a location (copying just its fields: records carry more). */
  set(hash: string, location: ChunkLocation): void {
    const { pack, offsetBytes, lengthBytes } = location;
    let key = this.packKeys.get(pack);
    if (key === undefined) this.packKeys.set(pack, (key = packKey(pack)));
    this.locations.set(hash, { pack, offsetBytes, lengthBytes, packKey: key, hashSeed: chunkHashSeed(hash) });
  }

  forget(hash: string): void {
    this.locations.delete(hash);
  }

  /** The pack's format version when remembered (no await on the hot path), else undefined. */
  knownPackVersion(packId: string): number | undefined {
    return this.versions.get(packId);
  }

  /** Remembers the version of a pack this process wrote: its first reader then reads no header (a GET when the pack is cold). */
  rememberPackVersion(packId: string, version: number): void {
    this.versions.set(packId, version);
  }

  /**
   * The pack's format version, from memory or its header; undefined when the pack is missing.
   * CORRUPT when its header is damaged, UNSUPPORTED for a version this code does not read.
   */
  async packVersion(store: ChunkStore, packId: string, options: ChunkStoreCallOptions | undefined): Promise<number | undefined> {
    const known = this.versions.get(packId);
    if (known !== undefined) return known;
    if (options?.signal?.aborted) throw cancelledHeaderRead(packId);
    // The chunks of a pack read together (a pread's, a stream's) share one header read: each of
    // its own was a GET per chunk from S3, and, read as guest reads, a string of random reads at
    // the pack's start that made the tier promote every pack a stream went through.
    // The shared read carries no caller's signal: a caller that gave up (its NBD client left, its
    // request timed out) must not fail the others waiting on it. Each caller stops waiting on its
    // own signal; the read itself is bounded by the store's own timeouts (cold-calls.ts).
    let lookup = this.versionLookups.get(packId);
    if (lookup === undefined) {
      lookup = this.readPackVersion(store, packId);
      this.versionLookups.set(packId, lookup);
      void lookup.then(
        () => this.versionLookups.delete(packId),
        () => this.versionLookups.delete(packId),
      );
    }
    return untilAborted(lookup, options?.signal, () => cancelledHeaderRead(packId));
  }

  private async readPackVersion(store: ChunkStore, packId: string): Promise<number | undefined> {
    // A version this code does not read is the header's to report (UNSUPPORTED); a record that
    // cannot be read is no reason to fail a read the header can serve.
    if (this.recordedVersion !== undefined) {
      const recorded = await this.recordedVersion(packId).catch(() => undefined);
      if (recorded !== undefined && PACK_VERSIONS_READ.includes(recorded)) {
        this.versions.set(packId, recorded);
        return recorded;
      }
    }
    // A maintenance read: the header says how to read the chunks; it is no guest read of the pack.
    const header = await store.getRange(packKey(packId), 0, PACK_HEADER_BYTES, { readPurpose: 'maintenance' });
    if (header === undefined) return undefined;
    const version = packHeaderVersion(packId, header);
    this.versions.set(packId, version);
    return version;
  }
}

function cancelledHeaderRead(packId: string): StorageError {
  return new StorageError('CANCELLED', `reading the header of pack ${packId} was cancelled`);
}

/** `shared`'s outcome, or `cancelled()` as soon as this caller's `signal` aborts (`shared` runs on). */
function untilAborted<T>(shared: Promise<T>, signal: AbortSignal | undefined, cancelled: () => Error): Promise<T> {
  if (signal === undefined) return shared;
  if (signal.aborted) return Promise.reject(cancelled());
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(cancelled());
    signal.addEventListener('abort', onAbort, { once: true });
    shared.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err as Error);
      },
    );
  });
}
