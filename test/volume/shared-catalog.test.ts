/**
 * Two volume services over one catalog, one coordinator and one layer store, as two daemons of a
 * cluster would be (here a MemoryCatalogStore, a LocalCoordinator and a MemoryLayerStore shared in
 * one process): a name claimed by one's import is taken for the other, a volume whose
 * head one exports cannot be opened for writing by the other, and a claim left by a stopped
 * daemon is dropped at the next start.
 */
import { describe, expect, it } from 'vitest';
import { MemoryCatalogStore } from '../../src/meta/memory-catalog.js';
import { MemoryLayerStore } from '../../src/store/memory-layer-store.js';
import { LocalCoordinator } from '../../src/volume/coordinator-local.js';
import { LocalVolumeService } from '../../src/volume/index.js';
import { expectCode, makeEnv, MiB, pattern } from './helpers.js';

function twoServices(): { a: LocalVolumeService; b: LocalVolumeService; close: () => Promise<void> } {
  const catalog = new MemoryCatalogStore();
  const coordinator = new LocalCoordinator();
  const layerStore = new MemoryLayerStore();
  const a = new LocalVolumeService(catalog, '/nonexistent', { layerStore, coordinator, writerName: 'daemon-a' });
  const b = new LocalVolumeService(catalog, '/nonexistent', { layerStore, coordinator, writerName: 'daemon-b' });
  return {
    a,
    b,
    close: async () => {
      await a.close();
      await b.close();
      await coordinator.close();
      await catalog.close();
    },
  };
}

describe('two services over one catalog and coordinator', () => {
  it('a name claimed by an import in one is taken in the other until the import ends', async () => {
    const { a, b, close } = twoServices();
    await a.createPool('p');
    let feed!: () => void;
    const fed = new Promise<void>((resolve) => (feed = resolve));
    let reading!: () => void;
    const read = new Promise<void>((resolve) => (reading = resolve));
    async function* slowSource(): AsyncGenerator<Uint8Array> {
      reading();
      yield pattern(MiB, 1);
      await fed;
      yield pattern(MiB, 2);
    }
    const importing = a.importVolume('p', 'disk', slowSource(), { format: 'raw', sizeBytes: 2 * MiB });
    // The import claims the name before it reads its source.
    await read;
    expect((await a.catalog.reservations.all()).map((r) => `${r.pool}/${r.name}`)).toEqual(['p/disk']);
    await expectCode(b.createVolume('p', 'disk', MiB), 'ALREADY_EXISTS', /p\/disk/);
    await expectCode(b.importVolume('p', 'disk', slowSource(), { format: 'raw' }), 'ALREADY_EXISTS');
    await expectCode(b.deletePool('p'), 'BUSY', /being created/);
    feed();
    expect((await importing).name).toBe('disk');
    expect(await a.catalog.reservations.all()).toEqual([]);
    await expectCode(b.createVolume('p', 'disk', MiB), 'ALREADY_EXISTS');
    expect((await b.volumeInfo('p', 'disk')).provisionedBytes).toBe(2 * MiB);
    await close();
  });

  it('the head exported by one cannot be opened for writing by the other (BUSY naming the holder)', async () => {
    const { a, b, close } = twoServices();
    await a.createPool('p');
    await a.createVolume('p', 'v', MiB);
    const device = await a.openDevice('p', 'v');
    await expectCode(b.openDevice('p', 'v'), 'BUSY', /daemon-a/);
    await expectCode(b.resizeVolume('p', 'v', 2 * MiB), 'BUSY', /daemon-a/);
    // A second export in the same service shares the lease.
    const second = await a.openDevice('p', 'v', { readOnly: true });
    await second.close();
    await device.close();
    const other = await b.openDevice('p', 'v');
    await other.close();
    await close();
  });
});

describe('racing changes from two services', () => {
  it('two snapshots of one volume at once: one lands, the other is BUSY and rolled back (no lost update, no orphan)', async () => {
    const { a, b, close } = twoServices();
    await a.createPool('p');
    await a.createVolume('p', 'v', MiB);
    const results = await Promise.allSettled([a.createSnapshot('p', 'v', 'from-a'), b.createSnapshot('p', 'v', 'from-b')]);
    const outcomes = results.map((r) => (r.status === 'fulfilled' ? 'ok' : (r.reason as { code?: string }).code)).sort();
    expect(outcomes).toEqual(['BUSY', 'ok']);
    const snaps = await a.listSnapshots('p', 'v');
    expect(snaps).toHaveLength(1);
    // Every layer file is a recorded layer's, and the chain is what the records say.
    const layers = await a.catalog.layers.all();
    expect((await a.layerStore.list('p')).sort()).toEqual(layers.map((l) => l.fileName).sort());
    expect((await a.volumeInfo('p', 'v')).chainDepth).toBe(2);
    expect(await a.catalog.intents.all()).toEqual([]);
    await close();
  });

  it('two creators of one name at once: one volume, the other ALREADY_EXISTS', async () => {
    const { a, b, close } = twoServices();
    await a.createPool('p');
    const results = await Promise.allSettled([a.createVolume('p', 'same', MiB), b.createVolume('p', 'same', 2 * MiB)]);
    const outcomes = results.map((r) => (r.status === 'fulfilled' ? 'ok' : (r.reason as { code?: string }).code)).sort();
    expect(outcomes).toEqual(['ALREADY_EXISTS', 'ok']);
    expect(await a.listVolumes('p')).toHaveLength(1);
    expect(await a.layerStore.list('p')).toHaveLength(1);
    await close();
  });
});

describe('name claims across a restart', () => {
  it('a claim left by a stopped daemon is dropped at start-up, and the name is free again', async () => {
    const env = await makeEnv({}, undefined, 'memory');
    await env.service.createPool('p');
    const claim = { id: 'c1', pool: 'p', name: 'half', sizeBytes: MiB, createdAt: new Date().toISOString() };
    await env.service.catalog.change((txn) => env.service.catalog.claimVolumeName(txn, claim));
    await expectCode(env.service.createVolume('p', 'half', MiB), 'ALREADY_EXISTS');
    // What start-up runs (the daemon that claimed it is gone).
    const report = await env.service.recover();
    expect(report.claimsDropped).toEqual(['p/half']);
    expect((await env.service.createVolume('p', 'half', MiB)).name).toBe('half');
  });
});
