/**
 * Opening a catalog folder in the first release's layout (`meta:schema` = 1, one JSON record per
 * `<kind>:<key>`, written here with `level` directly, as that release did): it is converted to
 * the tables in one batch, its records read through the indexes, and no old key is left; a
 * folder of an unknown version, a damaged record or two volumes with one name are refused with
 * the folder unchanged.
 */
import path from 'node:path';
import { Level } from 'level';
import { describe, expect, it } from 'vitest';
import { LevelCatalogStore } from '../../src/meta/level-catalog.js';
import { VolumeCatalog } from '../../src/volume/catalog.js';
import { migrateLegacyCatalog } from '../../src/volume/catalog-migration.js';
import { shmTempDir } from '../support/tmp.js';
import { expectCode } from './helpers.js';

const now = '2026-01-02T03:04:05.000Z';

/** The first layout, key by key. */
function firstLayout(): Record<string, unknown> {
  return {
    'meta:schema': 1,
    'pool:p': { name: 'p', quotaBytes: 1 << 30, createdAt: now },
    'volume:v1': { id: 'v1', pool: 'p', name: 'web', sizeBytes: 1 << 20, activeLayerId: 'l2', snapshotLimit: 4, createdAt: now },
    'layer:l1': { id: 'l1', pool: 'p', fileName: 'l1.qcow2', ownerVolumeId: 'v1', frozen: true, createdAt: now },
    'layer:l2': { id: 'l2', pool: 'p', fileName: 'l2.qcow2', backingLayerId: 'l1', ownerVolumeId: 'v1', frozen: false, createdAt: now },
    'snapshot:s1': { id: 's1', volumeId: 'v1', pool: 'p', name: 'before', layerId: 'l1', sizeBytes: 1 << 20, protected: true, createdAt: now },
    'job:j1': { id: 'j1', kind: 'copy', target: 'p/web', state: 'succeeded', doneBytes: 5, totalBytes: 5, createdAt: now, finishedAt: now },
    'export:e1': { id: 'e1', type: 'nbd', pool: 'p', volume: 'web', readOnly: false, name: 'p/web', createdAt: now },
  };
}

async function writeRaw(dir: string, entries: Record<string, unknown>): Promise<void> {
  const db = new Level<string, unknown>(dir, { valueEncoding: 'json' });
  await db.batch(Object.entries(entries).map(([key, value]) => ({ type: 'put' as const, key, value })), { sync: true });
  await db.close();
}

async function rawKeys(dir: string): Promise<string[]> {
  const db = new Level<string, unknown>(dir, { valueEncoding: 'json' });
  const keys = await db.keys().all();
  await db.close();
  return keys;
}

describe('catalog migration from the first layout', () => {
  it('converts every record with its index entries in one batch, and leaves no old key', async () => {
    const dir = path.join(shmTempDir(), 'catalog');
    await writeRaw(dir, firstLayout());
    const store = await LevelCatalogStore.open(dir, { migrateLegacy: migrateLegacyCatalog });
    expect(store.migrated).toEqual({ pool: 1, volume: 1, layer: 2, snapshot: 1, job: 1, intent: 0, export: 1 });
    const catalog = new VolumeCatalog(store);
    await catalog.checkSchema();
    expect(await catalog.pools.get('p')).toEqual(firstLayout()['pool:p']);
    expect((await catalog.volumes.lookup('name', 'p/web'))?.id).toBe('v1');
    expect((await catalog.snapshots.lookup('name', 'v1/before'))?.id).toBe('s1');
    expect((await catalog.snapshots.lookup('layer', 'l1'))?.id).toBe('s1');
    expect((await catalog.layers.byIndexPrefix('backing', 'l1/')).map((l) => l.id)).toEqual(['l2']);
    expect((await catalog.exports.lookup('nbd-name', 'p/web'))?.id).toBe('e1');
    expect(await catalog.jobs.get('j1')).toEqual(firstLayout()['job:j1']);
    await store.close();

    expect((await rawKeys(dir)).filter((key) => !key.startsWith('e:') && key !== 'rev')).toEqual([]);
    const again = await LevelCatalogStore.open(dir, { migrateLegacy: migrateLegacyCatalog });
    expect(again.migrated).toBeUndefined();
    expect((await new VolumeCatalog(again).volumes.lookup('name', 'p/web'))?.id).toBe('v1');
    await again.close();
  });

  it('refuses an unknown version, a damaged record, two volumes with one name, and an unconverted open; the folder stays as it was', async () => {
    const cases: [string, Record<string, unknown>, 'UNSUPPORTED' | 'CORRUPT', RegExp][] = [
      ['newer', { ...firstLayout(), 'meta:schema': 7 }, 'UNSUPPORTED', /schema version 7.*reads version 1/],
      ['damaged', { ...firstLayout(), 'volume:v1': { id: 'v1', pool: 'p', name: 'web' } }, 'CORRUPT', /volume:v1 is damaged: sizeBytes/],
      [
        'duplicate',
        { ...firstLayout(), 'volume:v2': { id: 'v2', pool: 'p', name: 'web', sizeBytes: 512, activeLayerId: 'l9', createdAt: now } },
        'CORRUPT',
        /two records with one name/,
      ],
      ['unknown kind', { ...firstLayout(), 'thing:x': {} }, 'CORRUPT', /thing:x/],
    ];
    for (const [label, entries, code, message] of cases) {
      const dir = path.join(shmTempDir(), `catalog-${label.replace(' ', '-')}`);
      await writeRaw(dir, entries);
      await expectCode(LevelCatalogStore.open(dir, { migrateLegacy: migrateLegacyCatalog }), code, message);
      expect((await rawKeys(dir)).sort(), label).toEqual(Object.keys(entries).sort());
    }
    const dir = path.join(shmTempDir(), 'catalog-plain');
    await writeRaw(dir, firstLayout());
    await expectCode(LevelCatalogStore.open(dir), 'UNSUPPORTED', /first layout.*strata serve/);
  });
});
