/**
 * LayerStore: the namespace of a data folder's layer files, pool by pool. The volume layer names
 * layers (pool + file name), and asks the store to create, open, remove, list and measure them;
 * it never sees a path. Local: a folder of qcow2 files per pool (src/store/local-layer-store.ts),
 * which qemu-img opens directly. Chunked (dedup/tiering): sealed layers as chunk manifests.
 *
 * Every implementation runs test/conformance/layer-store.ts.
 */
import type { HostFile } from './host-file.js';

export interface LayerRef {
  readonly pool: string;
  /** The layer's file name in its pool (`<16 hex digits>.qcow2` for layers Strata made). */
  readonly fileName: string;
}

/** An entry in a store's root that is not a pool (a plain file where only pool folders belong). */
export interface StrayEntry {
  readonly name: string;
  /** Where an operator finds it (a local path), when the store has such a thing. */
  readonly location: string | undefined;
}

export interface LayerStore {
  /** Makes the store's own namespace (a local root folder) exist: idempotent, run at start-up. */
  prepare(): Promise<void>;
  /** Makes a pool's namespace (idempotent). */
  createPool(pool: string): Promise<void>;
  /** Removes an empty pool's namespace; BUSY while it holds files. Missing: fine. */
  removePool(pool: string): Promise<void>;
  /**
   * Creates an empty file, failing with ALREADY_EXISTS when one exists. ownerOnly: readable by
   * the daemon's user alone (a spooled upload), where the store has owners.
   */
  create(ref: LayerRef, options?: { ownerOnly?: boolean }): Promise<HostFile>;
  /** Opens an existing file; NOT_FOUND when there is none. */
  open(ref: LayerRef, options: { readOnly: boolean }): Promise<HostFile>;
  /** Removes a file; false when it was already gone. */
  remove(ref: LayerRef): Promise<boolean>;
  /** The pools that have a namespace here, sorted (recovery compares them with the catalog). */
  listPools(): Promise<string[]>;
  /**
   * Entries of the store's root that are not pools, sorted by name: recovery reports them and
   * leaves them alone (a store that can hold nothing but pools returns none).
   */
  listStrays(): Promise<StrayEntry[]>;
  /**
   * The entry names in a pool, sorted: every entry, not only files Strata made (temporary files
   * and anything else found there: recovery removes orphans and reports the rest).
   */
  list(pool: string): Promise<string[]>;
  /** Host bytes a file occupies (0 when it is missing). */
  allocatedBytes(ref: LayerRef): Promise<number>;
  /** Makes the creations and removals in a pool durable (a folder fsync for local files). */
  syncPool(pool: string): Promise<void>;
  /**
   * The backing file name that `child`'s qcow2 header stores for `backing`: relative, so that
   * a local pool's files open with qemu-img wherever the data folder is.
   */
  backingName(child: LayerRef, backing: LayerRef): string;
  /** Where an operator finds the file (a local path), when the store has such a thing. */
  location(ref: LayerRef): string | undefined;
  /** Where an operator finds a pool's files (a local folder), when the store has such a thing. */
  poolLocation(pool: string): string | undefined;
}

/**
 * The backing name a layer store with one folder-like namespace per pool stores in a child's
 * header: the file name within the same pool, `../<pool>/<file>` across pools (what qemu-img
 * resolves relative to the child's folder). Every such store names chains alike.
 */
export function relativeBackingName(child: LayerRef, backing: LayerRef): string {
  return child.pool === backing.pool ? backing.fileName : `../${backing.pool}/${backing.fileName}`;
}
