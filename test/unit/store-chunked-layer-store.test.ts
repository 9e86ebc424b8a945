/**
 * ChunkedLayerStore beyond the LayerStore conformance suite: sealing a closed local layer into a
 * manifest, reading sealed qcow2 chains through it, and the reference bookkeeping of remove. The
 * repository comes from createTestChunkRepository().
 */
import { describe, expect, it } from 'vitest';
import type { LayerRef } from '../../src/core/layer-store.js';
import type { Image } from '../../src/core/image.js';
import { Qcow2Image } from '../../formats/qcow2/index.js';
import { ChunkedLayerStore, LAYER_MANIFEST_PREFIX } from '../../src/store/chunked/chunked-layer-store.js';
import type { ChunkRepository } from '../../src/store/dedup/repository.js';
import { LocalLayerStore } from '../../src/store/local-layer-store.js';
import { MemoryChunkStore } from '../../src/store/memory-chunk-store.js';
import { SeededRandom } from '../../src/store/seeded-random.js';
import { expectCode } from '../support/expect-error.js';
import { createTestChunkRepository } from '../support/test-chunk-repository.js';
import { tempDir } from '../support/tmp.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const SIZE = 8 * MiB;

interface Fixture {
  store: ChunkedLayerStore;
  local: LocalLayerStore;
  manifests: MemoryChunkStore;
  repository: ChunkRepository;
}

async function fixture(): Promise<Fixture> {
  const local = new LocalLayerStore(tempDir());
  const manifests = new MemoryChunkStore();
  const repository = await createTestChunkRepository();
  const store = new ChunkedLayerStore({ local, repository, manifests });
  await store.prepare();
  await store.createPool('p');
  return { store, local, manifests, repository };
}

/** Opens a layer and its backing chain through the store, read-only. */
async function openChain(store: ChunkedLayerStore, ref: LayerRef): Promise<Image> {
  return Qcow2Image.open(await store.open(ref, { readOnly: true }), {
    readOnly: true,
    openBacking: async (backing) => openChain(store, { pool: ref.pool, fileName: backing.fileName }),
  });
}

/** Creates a qcow2 layer (on `backing`, if given) and writes seeded pieces into it and the model. */
async function writeLayer(store: ChunkedLayerStore, ref: LayerRef, model: Uint8Array, seed: number, backing?: LayerRef): Promise<void> {
  const file = await store.create(ref);
  await Qcow2Image.create(file, { sizeBytes: SIZE, backingFile: backing && store.backingName(ref, backing), backingFormat: backing && 'qcow2' });
  const image = await Qcow2Image.open(file, { openBacking: async (b) => openChain(store, { pool: ref.pool, fileName: b.fileName }) });
  const r = new SeededRandom(seed);
  for (let i = 0; i < 24; i++) {
    const at = r.int(SIZE - 200 * KiB);
    const data = r.fill(new Uint8Array(1 + r.int(200 * KiB)));
    await image.write(at, data);
    model.set(data, at);
  }
  await image.flush();
  await image.close();
}

async function readAll(image: Image): Promise<Buffer> {
  const out = Buffer.alloc(image.sizeBytes);
  await image.read(0, out);
  return out;
}

describe('ChunkedLayerStore', () => {
  it('seals a base and its overlay; the chain reads the same through manifests, and the local files are gone', async () => {
    const { store, local, repository } = await fixture();
    const base = { pool: 'p', fileName: '0000000000000001.qcow2' };
    const top = { pool: 'p', fileName: '0000000000000002.qcow2' };
    const model = new Uint8Array(SIZE);
    await writeLayer(store, base, model, 1);
    const baseModel = model.slice();
    const baseManifest = await store.seal(base);
    expect(await store.isSealed(base)).toBe(true);
    expect(await local.list('p')).toEqual([]);
    await writeLayer(store, top, model, 2, base);
    expect(await store.list('p')).toEqual([base.fileName, top.fileName]);
    const before = await openChain(store, top);
    expect((await readAll(before)).equals(model)).toBe(true);
    await before.close();
    const topManifest = await store.seal(top);
    const chain = await openChain(store, top);
    expect(chain.file.readOnly).toBe(true);
    expect((await readAll(chain)).equals(model)).toBe(true);
    expect((await readAll(chain.backing!)).equals(baseModel)).toBe(true);
    await chain.close();
    expect(await store.allocatedBytes(top)).toBe(topManifest.storedBytes());
    expect(await store.list('p')).toEqual([base.fileName, top.fileName]);
    // remove gives back the layer's references; chunks it shares with the base keep the base's.
    const baseCounts = new Map<string, number>();
    for (const hash of baseManifest.storedHashes()) baseCounts.set(hash, (baseCounts.get(hash) ?? 0) + 1);
    expect(await store.remove(top)).toBe(true);
    expect(await store.remove(top)).toBe(false);
    for (const hash of topManifest.storedHashes()) expect(await repository.referenceCount(hash)).toBe(baseCounts.get(hash) ?? 0);
    expect(await store.list('p')).toEqual([base.fileName]);
    await expectCode(store.removePool('p'), 'BUSY', /sealed/);
    await store.remove(base);
    for (const hash of baseCounts.keys()) expect(await repository.referenceCount(hash)).toBe(0);
    await store.removePool('p');
  });

  it('refuses writing, re-creating or re-sealing a sealed layer, and sealing a missing one', async () => {
    const { store } = await fixture();
    const ref = { pool: 'p', fileName: 'a.qcow2' };
    await writeLayer(store, ref, new Uint8Array(SIZE), 3);
    await store.seal(ref);
    await expectCode(store.open(ref, { readOnly: false }), 'READ_ONLY', /sealed/);
    await expectCode(store.create(ref), 'ALREADY_EXISTS', /sealed/);
    await expectCode(store.seal(ref), 'ALREADY_EXISTS');
    await expectCode(store.seal({ pool: 'p', fileName: 'missing.qcow2' }), 'NOT_FOUND');
    await expectCode(store.open({ pool: 'p', fileName: '../x' }, { readOnly: true }), 'INVALID_ARGUMENT');
  });

  it('an aborted seal keeps the local layer and leaves no reference', async () => {
    const { store, local, repository } = await fixture();
    const ref = { pool: 'p', fileName: 'a.qcow2' };
    await writeLayer(store, ref, new Uint8Array(SIZE), 4);
    const controller = new AbortController();
    await expectCode(store.seal(ref, { signal: controller.signal, onProgress: () => controller.abort() }), 'CANCELLED');
    expect(await store.isSealed(ref)).toBe(false);
    expect(await local.list('p')).toEqual([ref.fileName]);
    const manifest = await store.seal(ref);
    for (const hash of manifest.storedHashes()) expect(await repository.referenceCount(hash)).toBe(1);
  });

  it('a damaged stored manifest opens as CORRUPT naming the layer', async () => {
    const { store, manifests } = await fixture();
    const ref = { pool: 'p', fileName: 'a.qcow2' };
    await writeLayer(store, ref, new Uint8Array(SIZE), 5);
    await store.seal(ref);
    const key = `${LAYER_MANIFEST_PREFIX}p/a.qcow2`;
    const bytes = (await manifests.get(key))!;
    bytes[bytes.length - 10] = bytes[bytes.length - 10]! ^ 1;
    await manifests.put(key, bytes);
    await expectCode(store.open(ref, { readOnly: true }), 'CORRUPT', /p\/a\.qcow2.*checksum/);
  });
});
