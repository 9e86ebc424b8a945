/**
 * A TieredChunkStore for unit tests: memory tiers wrapped in FaultyChunkStores (so a test can make
 * either tier fail, stall or corrupt), a memory catalog that outlives the store (so a test can
 * reopen over it), and a clock the test sets.
 */
import { createHash } from 'node:crypto';
import { MemoryCatalogStore } from '../../src/meta/memory-catalog.js';
import { MemoryChunkStore } from '../../src/store/memory-chunk-store.js';
import { TieredChunkStore, type TieredChunkStoreOptions } from '../../src/store/tier/tiered-chunk-store.js';
import { FaultyChunkStore } from './faulty-chunk-store.js';

export interface TierFixture {
  store: TieredChunkStore;
  readonly hot: FaultyChunkStore;
  readonly cold: FaultyChunkStore;
  readonly catalog: MemoryCatalogStore;
  /** The time the store reads (ms); tests move it. */
  clock: { nowMs: number };
  /** Closes the store and opens a new one over the same tiers and catalog. */
  reopen(): Promise<TieredChunkStore>;
}

export const TEST_COOLING_MS = 60_000;

export async function openTierFixture(options: Partial<TieredChunkStoreOptions> = {}): Promise<TierFixture> {
  const hot = new FaultyChunkStore(new MemoryChunkStore());
  const cold = new FaultyChunkStore(new MemoryChunkStore());
  const catalog = new MemoryCatalogStore();
  const clock = { nowMs: 0 };
  const open = () =>
    TieredChunkStore.open({ hot, cold, catalog, coolingMs: TEST_COOLING_MS, flushIntervalMs: 0, now: () => clock.nowMs, ...options });
  const fixture: TierFixture = {
    store: await open(),
    hot,
    cold,
    catalog,
    clock,
    async reopen() {
      await fixture.store.close();
      fixture.store = await open();
      return fixture.store;
    },
  };
  return fixture;
}

/** `sizeBytes` bytes that differ for every `seed`. */
export function objectBytes(seed: number, sizeBytes: number): Uint8Array {
  const out = new Uint8Array(sizeBytes);
  let x = Math.imul(seed + 1, 0x9e3779b1);
  for (let i = 0; i < sizeBytes; i++) {
    x = Math.imul(x ^ (x >>> 15), 0x2c1b3c6d);
    x = (x ^ (x >>> 12)) >>> 0;
    out[i] = x & 0xff;
  }
  return out;
}

/** What to compare large byte arrays by (vitest's deep equality walks them byte by byte). */
export function digestOf(data: Uint8Array | undefined): { lengthBytes: number; sha256: string } | undefined {
  return data === undefined ? undefined : { lengthBytes: data.length, sha256: createHash('sha256').update(data).digest('hex') };
}
