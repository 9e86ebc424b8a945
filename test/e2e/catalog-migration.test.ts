/**
 * A data folder from the first release: pool files plus a catalog in the first layout
 * (`meta:schema` = 1, one JSON record per `<kind>:<key>`, written with `level` as that release
 * did). `strata serve` converts the catalog as it starts, logs what it converted, and serves the
 * volumes and snapshots with their data; a catalog of an unknown newer version is refused.
 */
import { readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { Level } from 'level';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openImage } from '../../src/cli/img/open-image.js';
import { LevelCatalogStore } from '../../src/meta/level-catalog.js';
import { LocalVolumeService } from '../../src/volume/index.js';
import { makeTempDir, shmBase } from '../support/tmp.js';
import { requireTool } from '../support/tools.js';
import { assertBuilt, patternBytes, serveFails, startDaemon } from './harness.js';

assertBuilt();

const MiB = 1 << 20;

async function* chunks(data: Uint8Array): AsyncGenerator<Uint8Array> {
  yield data;
}

/** The first layout's keys and values for every record the service's tables hold. */
async function firstLayoutOf(service: LocalVolumeService): Promise<Record<string, unknown>> {
  const c = service.catalog;
  const out: Record<string, unknown> = { 'meta:schema': 1 };
  for (const pool of await c.pools.all()) out[`pool:${pool.name}`] = pool;
  for (const [kind, records] of [
    ['volume', await c.volumes.all()],
    ['layer', await c.layers.all()],
    ['snapshot', await c.snapshots.all()],
    ['job', await c.jobs.all()],
    ['export', await c.exports.all()],
  ] as const) {
    for (const record of records) out[`${kind}:${record.id}`] = record;
  }
  return out;
}

async function writeFirstLayout(dir: string, entries: Record<string, unknown>): Promise<void> {
  rmSync(dir, { recursive: true, force: true });
  const db = new Level<string, unknown>(dir, { valueEncoding: 'json' });
  await db.batch(Object.entries(entries).map(([key, value]) => ({ type: 'put' as const, key, value })), { sync: true });
  await db.close();
}

describe.skipIf(!requireTool('qemu-img'))('a data folder written by the first release', () => {
  let tmp: { path: string; cleanup: () => void };
  const f = (...parts: string[]) => path.join(tmp.path, ...parts);
  beforeAll(() => {
    tmp = makeTempDir(shmBase());
  });
  afterAll(() => tmp?.cleanup());

  it('strata serve converts the catalog, then lists the volumes and reads their data and snapshots back', async () => {
    const dataDir = f('data');
    const catalogDir = path.join(dataDir, 'catalog');
    // The pool files and records, made by the volume service (its records have the first release's shapes).
    const before = patternBytes(2 * MiB, 11);
    const overwrite = patternBytes(64 * 1024, 12);
    const store = await LevelCatalogStore.open(catalogDir);
    const service = new LocalVolumeService(store, dataDir);
    await service.recover();
    await service.createPool('default');
    await service.createPool('p', { quotaBytes: 64 * MiB });
    await service.importVolume('p', 'v', chunks(before), { format: 'raw' });
    await service.createSnapshot('p', 'v', 's1');
    const opened = await openImage((await service.volumeInfo('p', 'v')).location!, { readOnly: false });
    await opened.image.write(MiB, overwrite);
    await opened.close();
    const entries = await firstLayoutOf(service);
    await service.close();
    await store.close();
    await writeFirstLayout(catalogDir, entries);

    const d = await startDaemon(dataDir);
    try {
      expect(d.json<{ name: string }[]>(['volume', 'list', 'p']).map((v) => v.name)).toEqual(['v']);
      expect(d.json<{ name: string }[]>(['snap', 'list', 'p/v']).map((s) => s.name)).toEqual(['s1']);
      expect(d.json<{ name: string; quotaBytes: number }[]>(['pool', 'list']).map((p) => `${p.name}:${p.quotaBytes ?? '-'}`)).toEqual(['default:-', `p:${64 * MiB}`]);
      d.cliOk(['volume', 'export', 'p/v', f('v.raw')]);
      d.cliOk(['volume', 'export', 'p/v@s1', f('s1.raw')]);
      const after = Buffer.from(before);
      after.set(overwrite, MiB);
      expect(readFileSync(f('v.raw')).equals(after)).toBe(true);
      expect(readFileSync(f('s1.raw')).equals(before)).toBe(true);
      // The converted catalog takes changes, and a name lookup finds the volume.
      d.cliOk(['snap', 'create', 'p/v@s2']);
      d.cliOk(['volume', 'rename', 'p/v', 'w']);
      expect(d.json<{ name: string }[]>(['snap', 'list', 'p/w']).map((s) => s.name)).toEqual(['s1', 's2']);
    } finally {
      expect((await d.stop()).code).toBe(0);
    }
    const log = readFileSync(`${dataDir}.log`, 'utf8');
    expect(log).toMatch(/converted the catalog from the first layout/);
    expect(log).toMatch(/"volume":1/);
    const db = new Level<string, unknown>(catalogDir, { valueEncoding: 'json' });
    const oldKeys = (await db.keys().all()).filter((key) => !key.startsWith('e:') && key !== 'rev');
    await db.close();
    expect(oldKeys).toEqual([]);
  });

  it('a catalog of an unknown newer version is refused, and says which release to run', async () => {
    const dataDir = f('newer');
    await writeFirstLayout(path.join(dataDir, 'catalog'), { 'meta:schema': 9 });
    const r = await serveFails(['--data-dir', dataDir, '--listen', '127.0.0.1:0']);
    expect(r.code).not.toBe(0);
    expect(`${r.stdout}${r.stderr}`).toMatch(/schema version 9.*run the Strata release that wrote it/);
  });
});
