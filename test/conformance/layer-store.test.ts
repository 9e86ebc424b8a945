import { statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { ChunkedLayerStore } from '../../src/store/chunked/chunked-layer-store.js';
import type { LayerStore } from '../../src/core/layer-store.js';
import { LocalChunkStore } from '../../src/store/local-chunk-store.js';
import { LocalLayerStore } from '../../src/store/local-layer-store.js';
import { MemoryChunkStore } from '../../src/store/memory-chunk-store.js';
import { MemoryLayerStore } from '../../src/store/memory-layer-store.js';
import { MemoryCatalogStore } from '../../src/meta/memory-catalog.js';
import { localDedupPoolOpener } from '../../src/store/local-dedup-pool.js';
import { PoolRoutingLayerStore } from '../../src/store/pool-routing-layer-store.js';
import { expectCode } from '../support/expect-error.js';
import { createTestChunkRepository } from '../support/test-chunk-repository.js';
import { tempDir } from '../support/tmp.js';
import { layerStoreConformance } from './layer-store.js';

/** The local root folder under each store made here, where a stray is planted. */
const rootOf = new WeakMap<LayerStore, string>();
function withRoot(store: LayerStore, root: string): LayerStore {
  rootOf.set(store, root);
  return store;
}
async function addStray(store: LayerStore, name: string): Promise<void> {
  writeFileSync(path.join(rootOf.get(store)!, name), 'not a pool\n');
}

layerStoreConformance(
  'local folder',
  async () => {
    const root = tempDir();
    return withRoot(new LocalLayerStore(root), root);
  },
  addStray,
);
layerStoreConformance('memory', async () => new MemoryLayerStore());
layerStoreConformance(
  'chunked (sealed layers as manifests, over a local folder)',
  async () => {
    const root = tempDir();
    return withRoot(new ChunkedLayerStore({ local: new LocalLayerStore(root), repository: await createTestChunkRepository(), manifests: new MemoryChunkStore() }), root);
  },
  addStray,
);
layerStoreConformance('chunked, manifests in a LocalChunkStore', async () => {
  const manifests = new LocalChunkStore(tempDir());
  onTestFinished(() => manifests.close());
  return new ChunkedLayerStore({ local: new LocalLayerStore(tempDir()), repository: await createTestChunkRepository(), manifests });
});

// The daemon's store: local pools and dedup pools side by side (p, q and zeta dedup; the rest local).
layerStoreConformance(
  'pool routing (local and dedup pools in one data folder)',
  async () => {
    const root = tempDir();
    const local = new LocalLayerStore(root);
    const store = new PoolRoutingLayerStore(local, localDedupPoolOpener({ chunksRoot: tempDir(), catalog: new MemoryCatalogStore(), local }));
    for (const pool of ['p', 'q', 'zeta']) await store.attachPool(pool, { hash: 'blake3' });
    // Its pools' chunk stores keep packs open: closed with the test, not left to the GC.
    onTestFinished(() => store.close());
    return withRoot(store, root);
  },
  addStray,
);

describe('LocalLayerStore', () => {
  it('keeps every name inside its root: path separators and dot names are refused', async () => {
    const store = new LocalLayerStore(tempDir());
    for (const ref of [
      { pool: '..', fileName: 'x' },
      { pool: 'p', fileName: '../../etc/passwd' },
      { pool: 'a/b', fileName: 'x' },
      { pool: 'p', fileName: '' },
    ]) {
      // A rejected promise, not a synchronous throw: callers await.
      await expectCode(store.open(ref, { readOnly: true }), 'INVALID_ARGUMENT');
    }
  });

  it('lays pools out as folders under its root, creates owner-only files with mode 0600, and prepares a missing root', async () => {
    const root = path.join(tempDir(), 'pools');
    const store = new LocalLayerStore(root);
    await store.prepare();
    expect(statSync(root).isDirectory()).toBe(true);
    await store.createPool('p');
    expect(store.poolLocation('p')).toBe(path.join(root, 'p'));
    expect(store.location({ pool: 'p', fileName: 'a.qcow2' })).toBe(path.join(root, 'p', 'a.qcow2'));
    await (await store.create({ pool: 'p', fileName: '.tmp-x' }, { ownerOnly: true })).close();
    expect(statSync(path.join(root, 'p', '.tmp-x')).mode & 0o777).toBe(0o600);
  });
});
