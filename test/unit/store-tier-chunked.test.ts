/**
 * A consumer of ChunkStore through the tier, unchanged: a ChunkedLayerStore keeps its sealed
 * layers' manifests in a TieredChunkStore over two local folders; after the manifests moved cold
 * (and after a reopen of the tier), the sealed qcow2 layer reads back the same.
 */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Qcow2Image } from '../../formats/qcow2/index.js';
import { MemoryCatalogStore } from '../../src/meta/memory-catalog.js';
import { ChunkedLayerStore, LAYER_MANIFEST_PREFIX } from '../../src/store/chunked/chunked-layer-store.js';
import { LocalLayerStore } from '../../src/store/local-layer-store.js';
import { SeededRandom } from '../../src/store/seeded-random.js';
import { TieredChunkStore } from '../../src/store/tier/tiered-chunk-store.js';
import { LocalChunkStore } from '../../src/store/local-chunk-store.js';
import { createTestChunkRepository } from '../support/test-chunk-repository.js';
import { tempDir } from '../support/tmp.js';

const MiB = 1024 * 1024;

describe('ChunkedLayerStore over a TieredChunkStore', () => {
  it('a sealed layer whose manifest moved to the cold folder reads back the same', async () => {
    const dir = tempDir();
    const catalog = new MemoryCatalogStore();
    const openTier = async () =>
      TieredChunkStore.open({
        hot: new LocalChunkStore(path.join(dir, 'hot')),
        cold: new LocalChunkStore(path.join(dir, 'cold')),
        catalog,
        coolingMs: 1000,
        flushIntervalMs: 0,
        now: () => 0, // the layer's manifest is written at time 0; migrateCold names its own time
      });
    let tier = await openTier();
    const repository = await createTestChunkRepository();
    const local = new LocalLayerStore(path.join(dir, 'layers'));
    const layers = new ChunkedLayerStore({ local, repository, manifests: tier });
    await layers.prepare();
    await layers.createPool('p');
    const ref = { pool: 'p', fileName: 'base.qcow2' };
    const model = new Uint8Array(4 * MiB);
    const file = await layers.create(ref);
    await Qcow2Image.create(file, { sizeBytes: model.length });
    const image = await Qcow2Image.open(file);
    const random = new SeededRandom(7);
    for (let i = 0; i < 16; i++) {
      const data = random.fill(new Uint8Array(1 + random.int(100_000)));
      const at = random.int(model.length - data.length);
      await image.write(at, data);
      model.set(data, at);
    }
    await image.flush();
    await image.close();
    await layers.seal(ref);

    const keys = (await tier.list(LAYER_MANIFEST_PREFIX)).keys;
    expect(keys.length).toBe(1);
    expect((await tier.migrateCold({ nowMs: 10_000 })).movedObjects).toBe(1);
    await tier.close();
    tier = await openTier();
    expect(tier.stats()).toMatchObject({ hotObjects: 0, coldObjects: 1 });
    const reopened = new ChunkedLayerStore({ local, repository, manifests: tier });
    const sealed = await Qcow2Image.open(await reopened.open(ref, { readOnly: true }), { readOnly: true });
    const out = Buffer.alloc(model.length);
    await sealed.read(0, out);
    await sealed.close();
    expect(out.equals(model)).toBe(true);
  });
});
