/**
 * A cache of cluster-sized metadata tables (L2 tables, refcount blocks) keyed by host offset.
 * Loads are deduplicated; eviction drops only clean tables (the owner writes dirty ones back in
 * the order crash safety needs, then calls evictClean()).
 */
import type { HostFile } from '../../src/core/host-file.js';

export interface CachedTable {
  readonly hostOffset: number;
  readonly bytes: Uint8Array;
  readonly view: DataView;
  dirty: boolean;
  lastUse: number;
}

export class TableCache {
  private readonly tables = new Map<number, CachedTable>();
  private readonly loading = new Map<number, Promise<CachedTable>>();
  private useCounter = 0;

  constructor(
    private readonly file: HostFile,
    readonly tableSizeBytes: number,
    /** How many tables may stay cached before clean ones are evicted. */
    readonly capacityTables: number,
  ) {}

  get size(): number {
    return this.tables.size;
  }

  /** The table if cached (no I/O): the hot path for lookups. */
  peek(hostOffset: number): CachedTable | undefined {
    const table = this.tables.get(hostOffset);
    if (table) table.lastUse = ++this.useCounter;
    return table;
  }

  async get(hostOffset: number): Promise<CachedTable> {
    const cached = this.peek(hostOffset);
    if (cached) return cached;
    let pending = this.loading.get(hostOffset);
    if (!pending) {
      pending = this.load(hostOffset);
      this.loading.set(hostOffset, pending);
    }
    return pending;
  }

  private async load(hostOffset: number): Promise<CachedTable> {
    try {
      const bytes = new Uint8Array(this.tableSizeBytes);
      await this.file.pread(bytes, hostOffset);
      // A table may have been installed (e.g. freshly allocated) while we were reading.
      const raced = this.tables.get(hostOffset);
      if (raced) return raced;
      return this.install(hostOffset, bytes, false);
    } finally {
      this.loading.delete(hostOffset);
    }
  }

  /** Puts a table into the cache without reading it (a new table, or one whose content we built). */
  install(hostOffset: number, bytes: Uint8Array, dirty: boolean): CachedTable {
    const table: CachedTable = {
      hostOffset,
      bytes,
      view: new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength),
      dirty,
      lastUse: ++this.useCounter,
    };
    this.tables.set(hostOffset, table);
    return table;
  }

  drop(hostOffset: number): void {
    this.tables.delete(hostOffset);
  }

  dirtyTables(): CachedTable[] {
    const out: CachedTable[] = [];
    for (const table of this.tables.values()) if (table.dirty) out.push(table);
    // Ascending host offset makes writeback mostly sequential.
    return out.sort((a, b) => a.hostOffset - b.hostOffset);
  }

  hasDirty(): boolean {
    for (const table of this.tables.values()) if (table.dirty) return true;
    return false;
  }

  overCapacity(): boolean {
    return this.tables.size > this.capacityTables;
  }

  /** Drops least-recently-used clean tables until the cache is within capacity. */
  evictClean(): void {
    if (this.tables.size <= this.capacityTables) return;
    const clean = [...this.tables.values()].filter((t) => !t.dirty).sort((a, b) => a.lastUse - b.lastUse);
    let excess = this.tables.size - this.capacityTables;
    for (const table of clean) {
      if (excess-- <= 0) break;
      this.tables.delete(table.hostOffset);
    }
  }

  clear(): void {
    this.tables.clear();
  }
}
