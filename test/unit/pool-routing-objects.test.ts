/**
 * PoolRoutingLayerStore and the S3 object model side by side: a dedup pool's repository shared by
 * sealed layers and objects (the reference audit and scrub count the model's holders, so an
 * object's references are neither dropped nor reported as leaked), and a local pool's chunks kept
 * apart for its objects (opened on first use; usage, gc with its grace period, scrub). Real
 * stores: LocalLayerStore and LocalChunkStore in temporary folders, the real DedupChunkRepository,
 * the real ObjectModel, a MemoryCatalogStore.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { MemoryCatalogStore } from '../../src/meta/memory-catalog.js';
import { ObjectModel } from '../../src/objects/model.js';
import { localDedupPoolOpener, localPoolChunks } from '../../src/store/local-dedup-pool.js';
import { LocalLayerStore } from '../../src/store/local-layer-store.js';
import { MemoryChunkStore } from '../../src/store/memory-chunk-store.js';
import { PoolRoutingLayerStore } from '../../src/store/pool-routing-layer-store.js';
import { expectCode } from '../support/expect-error.js';
import { tempDir } from '../support/tmp.js';

const CHUNK = 64 * 1024;

function routedWithObjects() {
  const chunksRoot = tempDir();
  const catalog = new MemoryCatalogStore();
  const local = new LocalLayerStore(tempDir());
  const store = new PoolRoutingLayerStore(local, localDedupPoolOpener({ chunksRoot, catalog, local }), { localPoolChunks: localPoolChunks({ chunksRoot, catalog }) });
  const model = new ObjectModel({ catalog, manifestStore: new MemoryChunkStore(), repositoryOf: (pool) => store.chunkRepository(pool) });
  onTestFinished(async () => {
    await model.close();
    await store.close();
  });
  return { store, model, chunksRoot };
}

/** A body of `pattern.length` chunks: chunk i holds byte value pattern[i] (0: zeroes). */
function body(pattern: number[]): Buffer {
  return Buffer.concat(pattern.map((v) => Buffer.alloc(CHUNK, v)));
}

async function put(model: ObjectModel, bucket: string, key: string, data: Buffer): Promise<void> {
  await model.putObject({ bucket, key, owner: 'alice', body: (async function* () { yield data; })() });
}

async function sealLayer(store: PoolRoutingLayerStore, ref: { pool: string; fileName: string }, data: Buffer): Promise<void> {
  const file = await store.create(ref);
  await file.pwrite(data, 0);
  await file.flush();
  await file.close();
  await store.seal(ref);
}

describe('PoolRoutingLayerStore with S3 objects', () => {
  it("a dedup pool's objects share its sealed layers' chunks; the audit and scrub count their references", async () => {
    const { store, model } = routedWithObjects();
    await store.attachPool('dd', { hash: 'blake3' });
    await store.createPool('dd');
    await model.createBucket({ name: 'images', owner: 'alice', pool: 'dd' });
    await put(model, 'images', 'a', body([1, 2, 0, 3]));
    await sealLayer(store, { pool: 'dd', fileName: '00000000000000a1.qcow2' }, body([3, 2, 1, 4]));
    const usage = await store.usage('dd');
    expect(usage.uniqueChunkCount).toBe(4); // 1, 2, 3 shared; 4 the layer's own
    expect(usage.referencedChunkBytes).toBe(7 * CHUNK);

    // Without the model's holders the audit would take the object's references as leaked.
    const blind = await store.audit('dd', { repair: false });
    expect(blind.leakedReferences).toBeGreaterThanOrEqual(3);
    store.addReferenceSource((pool) => model.referenceHolders(pool));
    const audit = await store.audit('dd', { repair: true });
    expect(audit).toMatchObject({ leakedReferences: 0, missingReferences: 0, unreadableManifests: false, repaired: false });
    const scrub = await store.scrub('dd', { repair: true });
    expect(scrub.problemCount).toBe(0);
    expect(scrub.clean).toBe(true);
    expect((await store.usage('dd')).referencedChunkBytes).toBe(7 * CHUNK);

    // GC keeps what the object still uses after the layer goes.
    await store.remove({ pool: 'dd', fileName: '00000000000000a1.qcow2' });
    await store.gc('dd', { graceMs: 0 });
    expect((await store.usage('dd')).uniqueChunkCount).toBe(3);
    const got = await model.getObject({ bucket: 'images', key: 'a' });
    if (got.outcome !== 'ok') throw new Error(`expected the object, got ${got.outcome}`);
    const parts: Uint8Array[] = [];
    for await (const piece of got.body()) parts.push(piece);
    expect(Buffer.concat(parts)).toEqual(body([1, 2, 0, 3]));
  });

  it("a local pool keeps its objects' chunks apart, opened on first use; usage, gc (grace respected) and scrub work on them", async () => {
    const { store, model, chunksRoot } = routedWithObjects();
    store.addReferenceSource((pool) => model.referenceHolders(pool));
    await store.createPool('plain');
    expect(await store.hasChunks('plain')).toBe(false);
    await expectCode(store.gc('plain', { graceMs: 0 }), 'INVALID_ARGUMENT');
    await model.createBucket({ name: 'scratch', owner: 'alice', pool: 'plain' });
    expect(await store.hasChunks('plain')).toBe(true);
    expect(store.isChunkedPool('plain')).toBe(false);
    await put(model, 'scratch', 'x', body([9, 8, 9]));
    expect(existsSync(path.join(chunksRoot, 'plain', 'packs'))).toBe(true);
    expect((await store.usage('plain')).uniqueChunkCount).toBe(2);
    expect((await store.scrub('plain', { repair: false })).clean).toBe(true);

    await model.deleteObject({ bucket: 'scratch', key: 'x', owner: 'alice' });
    expect((await store.gc('plain', { graceMs: 3_600_000 })).bytesDeleted).toBe(0);
    expect((await store.usage('plain')).packCount).toBeGreaterThan(0);
    const gc = await store.gc('plain', { graceMs: 0 });
    expect(gc.bytesDeleted).toBeGreaterThan(2 * CHUNK);
    expect(await store.usage('plain')).toMatchObject({ packCount: 0, uniqueChunkCount: 0 });
  });
});
