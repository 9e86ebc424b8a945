/**
 * The volume service over a MemoryLayerStore: src/volume reaches layer files through its
 * LayerStore only, so every operation works with no pool folders at all (and leaves none).
 */
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { MemoryLayerStore } from '../../src/store/memory-layer-store.js';
import { chunksOf, collect, expectBytes, makeEnv, MiB, pattern, readVolume } from './helpers.js';

describe('LocalVolumeService over a MemoryLayerStore and a MemoryCatalogStore', () => {
  it('creates, imports, snapshots, clones and exports, with nothing on disk', async () => {
    const store = new MemoryLayerStore();
    const env = await makeEnv({ layerStore: store }, undefined, 'memory');
    const pool = await env.service.createPool('p');
    expect(pool.location).toBeUndefined();
    expect(await store.listPools()).toEqual(['p']);

    const data = pattern(2 * MiB, 7);
    const imported = await env.service.importVolume('p', 'v', chunksOf(data), { format: 'raw' });
    expect(imported.location).toBeUndefined();
    expect(imported.allocatedBytes).toBeGreaterThan(0);
    const snap = await env.service.createSnapshot('p', 'v', 's1');
    expect(snap.location).toBeUndefined();
    await env.service.protectSnapshot('p', 'v', 's1');
    await env.service.cloneSnapshot('p', 'v', 's1', 'p', 'c');
    expectBytes(await readVolume(env, 'p', 'c'), data, 'the clone');

    const { stream } = await env.service.exportVolume('p', 'v', { format: 'qcow2', snapshot: 's1' });
    const qcow2 = await collect(stream);
    await env.service.importVolume('p', 'q', chunksOf(qcow2), { format: 'qcow2' });
    expectBytes(await readVolume(env, 'p', 'q'), data, 'the qcow2 round trip');
    // The spool and the export's temporary file are gone: only layer files remain.
    expect((await store.list('p')).filter((name) => !/^[0-9a-f]{16}\.qcow2$/.test(name))).toEqual([]);

    expect((await env.service.du('p')).map((e) => e.name)).toEqual(['p/c', 'p/q', 'p/v@s1', 'p/v']);
    expect(fs.readdirSync(env.dir)).toEqual([]);
  });

  it('recovers from the store: orphans deleted, unknown pools removed, missing layers reported', async () => {
    const store = new MemoryLayerStore();
    const env = await makeEnv({ layerStore: store }, undefined, 'memory');
    await env.service.createPool('p');
    await env.service.createVolume('p', 'v', MiB);
    await (await store.create({ pool: 'p', fileName: '.tmp-import-1.qcow2' })).close();
    await (await store.create({ pool: 'p', fileName: '00000000000000ff.qcow2' })).close();
    await store.createPool('stray');
    await env.restart();
    expect(await store.list('p')).toHaveLength(1);
    expect(await store.listPools()).toEqual(['p']);

    const [layer] = await store.list('p');
    await store.remove({ pool: 'p', fileName: layer! });
    const report = await env.service.recover();
    expect(report.problems).toEqual([`layer file p/${layer!} of volume ${(await env.service.listVolumes('p'))[0]!.id} is missing`]);
  });
});
