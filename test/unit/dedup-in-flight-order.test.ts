/**
 * Two calls storing the same new content, the later one told to commit only after the earlier
 * (commitAfter: what an S3 put's second step is told about its first). Found as a hung
 * UploadPart: a 5 MiB part of one repeated byte is one chunk in both of its steps, and when the
 * second step's index read returned first it claimed the chunk, stored it and waited for the
 * first step, which waited for the chunk the second held. Real DedupChunkRepository over memory
 * stores; the catalog holds the first index read back (the only way to choose which read returns
 * first).
 */
import { describe, expect, it } from 'vitest';
import type { CatalogEntry } from '../../src/core/catalog-store.js';
import { MemoryCatalogStore } from '../../src/meta/memory-catalog.js';
import { DedupChunkRepository } from '../../src/store/dedup/dedup-repository.js';
import { PACK_KEY_PREFIX } from '../../src/store/dedup/pack-format.js';
import { MemoryChunkStore } from '../../src/store/memory-chunk-store.js';

/** A catalog whose next getMany waits until release(). */
class HeldReadCatalog extends MemoryCatalogStore {
  private holdNext = false;
  private held: (() => void) | undefined;

  holdNextGetMany(): void {
    this.holdNext = true;
  }

  release(): void {
    this.held?.();
  }

  override async getMany(keys: readonly string[]): Promise<(CatalogEntry | undefined)[]> {
    if (this.holdNext) {
      this.holdNext = false;
      await new Promise<void>((resolve) => (this.held = resolve));
    }
    return super.getMany(keys);
  }
}

/** Resolves once `check` holds, looking after each turn of the event loop. */
async function until(check: () => Promise<boolean>): Promise<void> {
  while (!(await check())) await new Promise((resolve) => setImmediate(resolve));
}

describe('DedupChunkRepository content in flight', () => {
  it('an earlier call does not wait for content a later call holds until the earlier commits', async () => {
    const store = new MemoryChunkStore();
    const catalog = new HeldReadCatalog();
    const repo = await DedupChunkRepository.open({ chunkStore: store, catalog, readCacheBytes: 0 });
    const chunk = new Uint8Array(64 * 1024).fill(0x61);

    catalog.holdNextGetMany();
    const first = repo.addReferences([chunk]);
    const second = repo.addReferences([chunk], { commitAfter: first });
    // The second call read the index, found nothing, and stored its pack: it now waits for the first.
    await until(async () => (await store.list(PACK_KEY_PREFIX)).keys.length === 1);
    catalog.release();

    let timer: NodeJS.Timeout | undefined;
    const stuck = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('the two calls wait on each other')), 10_000);
    });
    try {
      const [firstNames, secondNames] = await Promise.race([Promise.all([first, second]), stuck]);
      expect(secondNames).toEqual(firstNames);
    } finally {
      clearTimeout(timer);
    }
    const [hash] = await first;
    expect(await repo.referenceCount(hash!)).toBe(2);
    expect(Buffer.from(await repo.read(hash!)).equals(Buffer.from(chunk))).toBe(true);
    // Each call stored a copy; the index names one, and counts the chunk once.
    expect((await store.list(PACK_KEY_PREFIX)).keys.length).toBe(2);
    expect(await repo.usage()).toMatchObject({ uniqueChunkCount: 1, uniqueChunkBytes: chunk.length, referencedChunkBytes: 2 * chunk.length });
    // The copy nothing names is the GC's: its pack goes, the named one stays and reads back.
    const report = await repo.gc({ graceMs: 0, nowMs: Date.now() + 60_000 });
    expect(report.packsDeleted + report.orphanPacksDeleted + report.packsRewritten).toBe(1);
    expect((await store.list(PACK_KEY_PREFIX)).keys.length).toBe(1);
    expect(Buffer.from(await repo.read(hash!)).equals(Buffer.from(chunk))).toBe(true);
    expect(await repo.referenceCount(hash!)).toBe(2);
  });

  it('a later call storing the same content waits for the earlier one and shares its copy', async () => {
    const store = new MemoryChunkStore();
    const catalog = new HeldReadCatalog();
    const repo = await DedupChunkRepository.open({ chunkStore: store, catalog, readCacheBytes: 0 });
    const chunk = new Uint8Array(64 * 1024).fill(0x62);

    const first = repo.addReferences([chunk]);
    const second = repo.addReferences([chunk], { commitAfter: first });
    const [hash] = await first;
    await second;
    expect(await repo.referenceCount(hash!)).toBe(2);
    expect((await store.list(PACK_KEY_PREFIX)).keys.length).toBe(1);
  });
});
