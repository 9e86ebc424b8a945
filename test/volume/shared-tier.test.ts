/**
 * Two pools made before pool create refused overlapping tiers (src/volume/pools.ts) may share one:
 * each pool's GC deletes the packs under its tier that its own index does not know, so a GC of
 * either would delete the other's data. Neither pool collects, and deleting one leaves the
 * shared tier alone unless forced, and then still deletes nothing there. Start-up recovery
 * reports each such pool as a problem.
 */
import { describe, expect, it } from 'vitest';
import { isStorageError } from '../../src/core/errors.js';
import { MemoryCatalogStore } from '../../src/meta/memory-catalog.js';
import { VolumeCatalog } from '../../src/volume/catalog.js';
import { LocalVolumeService } from '../../src/volume/index.js';
import path from 'node:path';
import { loadConfig } from '../../src/daemon/config.js';
import { openVolumeBackend } from '../../src/daemon/backend.js';
import { createLogger } from '../../src/daemon/logger.js';
import { LevelCatalogStore } from '../../src/meta/level-catalog.js';
import { tempDir } from '../support/tmp.js';

/** pino's number for the warn level (the daemon's JSON log lines carry numbers). */
const PINO_WARN = 40;

async function refusal(call: Promise<unknown>): Promise<{ code: string; message: string; fixText?: string }> {
  const err = await call.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!isStorageError(err)) throw new Error(`expected a StorageError, got ${String(err)}`);
  return { code: err.code, message: err.message, ...(err.fix === undefined ? {} : { fixText: err.fix.text }) };
}

describe('pools that share a tier (made before pool create refused it)', () => {
  it('neither collects; a delete is refused, and --force deletes the pool leaving the tier to the other', async () => {
    const store = new MemoryCatalogStore();
    const dir = tempDir();
    const createdAt = new Date().toISOString();
    // Written as an older daemon would have: pool create now refuses the second.
    const catalog = new VolumeCatalog(store);
    await catalog.change((txn) => {
      catalog.pools.create(txn, { name: 'a', dedup: { hash: 'blake3', tier: { url: `file://${dir}/tier` } }, createdAt });
      catalog.pools.create(txn, { name: 'b', dedup: { hash: 'blake3', tier: { url: `file://${dir}/tier/b` } }, createdAt });
      catalog.pools.create(txn, { name: 'c', dedup: { hash: 'blake3', tier: { url: `file://${dir}/tier-c` } }, createdAt });
    });
    const service = new LocalVolumeService(store, dir);
    try {
      for (const [pool, other] of [['a', 'b'], ['b', 'a']] as const) {
        const gc = await refusal(service.gcPool(pool, { graceMs: 0 }));
        expect(gc.code).toBe('BUSY');
        expect(gc.message).toContain(`pool '${pool}' shares its tier`);
        expect(gc.message).toContain(`with pool '${other}'`);
        expect(gc.message).toContain('strata volume copy');
      }
      // A tier that only starts with the same letters ('tier-c' beside 'tier') is not shared.
      expect((await refusal(service.gcPool('c', { graceMs: 0 }))).message).not.toContain('shares its tier');

      const del = await refusal(service.deletePool('b'));
      expect(del.code).toBe('BUSY');
      expect(del.message).toContain("pool 'b' was not deleted");
      expect(del.fixText).toContain('{}');
      expect((await service.listPools()).map((p) => p.name).sort()).toEqual(['a', 'b', 'c']);

      const report = await service.deletePool('b', { force: true });
      expect(report).toEqual({ pool: 'b', packsLeftIn: `file://${dir}/tier/b`, packsLeftReason: "the tier is shared with pool 'a': its packs cannot be told apart there" });
      expect((await service.listPools()).map((p) => p.name).sort()).toEqual(['a', 'c']);
      // With 'b' gone, 'a' no longer shares its tier: its GC is not refused for it.
      expect((await refusal(service.gcPool('a', { graceMs: 0 }))).message).not.toContain('shares its tier');
    } finally {
      await service.close();
      await store.close();
    }
  });

  it("the daemon's start-up recovery warns of each pool that shares its tier, naming the other and the way out", async () => {
    const dir = tempDir();
    const catalogDir = path.join(dir, 'catalog');
    const store = await LevelCatalogStore.open(catalogDir);
    const catalog = new VolumeCatalog(store);
    const createdAt = new Date().toISOString();
    await catalog.change((txn) => {
      catalog.pools.create(txn, { name: 'a', dedup: { hash: 'blake3', tier: { url: `file://${dir}/tier` } }, createdAt });
      catalog.pools.create(txn, { name: 'b', dedup: { hash: 'blake3', tier: { url: `file://${dir}/tier/b` } }, createdAt });
      catalog.pools.create(txn, { name: 'c', dedup: { hash: 'blake3', tier: { url: `file://${dir}/tier-c` } }, createdAt });
    });
    await store.close();
    const lines: { level: number; msg: string; problem?: string }[] = [];
    const logger = createLogger({ format: 'json', level: 'info', write: (text) => void lines.push(JSON.parse(text) as (typeof lines)[number]) });
    const backend = await openVolumeBackend({ dataDir: dir, catalogDir, poolsDir: path.join(dir, 'pools'), config: loadConfig({ dataDir: dir }, {}, dir), logger });
    try {
      const report = await backend.recover();
      expect(report?.problems).toBe(2);
      const warned = lines.filter((l) => l.level === PINO_WARN && l.msg === 'recovery could not fix').map((l) => l.problem ?? '');
      expect(warned).toHaveLength(2);
      for (const [pool, other] of [['a', 'b'], ['b', 'a']] as const) {
        expect(warned.some((p) => p.includes(`pool '${pool}' shares its tier`) && p.includes(`with pool '${other}'`) && p.includes('strata volume copy'))).toBe(true);
      }
    } finally {
      await backend.close();
    }
  });
});
