/**
 * Pools, volumes, quotas, import and export, du, jobs and recovery: the service's contract
 * (src/volume/types.ts) with its error codes, checked against qemu-img where files are involved.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { qemuImg, requireTool } from '../support/tools.js';
import { chunksOf, collect, expectBytes, expectCode, expectConsistent, KiB, makeEnv, MiB, Model, pattern, poolFiles, readVolume } from './helpers.js';

describe.skipIf(!requireTool('qemu-img'))('pools and volumes', () => {
  it('pools: create, list, quota, delete; names and codes', async () => {
    const env = await makeEnv();
    const s = env.service;
    const pool = await s.createPool('p', { quotaBytes: 10 * MiB });
    expect(pool).toMatchObject({ name: 'p', quotaBytes: 10 * MiB, volumeCount: 0, provisionedBytes: 0, allocatedBytes: 0 });
    expect(pool.location).toBe(path.join(env.dir, 'pools', 'p'));
    expect(fs.statSync(pool.location!).isDirectory()).toBe(true);
    await expectCode(s.createPool('p'), 'ALREADY_EXISTS');
    await expectCode(s.createPool('../x'), 'INVALID_ARGUMENT');
    await expectCode(s.createPool(''), 'INVALID_ARGUMENT');
    await expectCode(s.createPool('q', { quotaBytes: -1 }), 'INVALID_ARGUMENT');
    await expectCode(s.poolInfo('nope'), 'NOT_FOUND');

    await s.createVolume('p', 'a', 6 * MiB);
    await expectCode(s.createVolume('p', 'b', 5 * MiB), 'LIMIT_EXCEEDED', /quota/);
    await s.createVolume('p', 'b', 4 * MiB);
    // The whole provisioned total, and what the resize adds (not the new size).
    await expectCode(s.resizeVolume('p', 'b', 5 * MiB), 'LIMIT_EXCEEDED', /quota of 10 MiB and 10 MiB is provisioned; 1 MiB more \(growing 'p\/b' to 5 MiB\) does not fit/);
    expect((await s.setPoolQuota('p', undefined)).quotaBytes).toBeUndefined();
    await s.resizeVolume('p', 'b', 5 * MiB);
    const info = await s.poolInfo('p');
    expect(info).toMatchObject({ volumeCount: 2, provisionedBytes: 11 * MiB });
    expect(info.allocatedBytes).toBeGreaterThan(0);
    await expectCode(s.setPoolQuota('p', 1.5), 'INVALID_ARGUMENT');
    expect((await s.setPoolQuota('p', 4 * MiB)).quotaBytes).toBe(4 * MiB); // below usage: allowed, blocks growth
    await expectCode(s.createVolume('p', 'c', MiB), 'LIMIT_EXCEEDED');

    await expectCode(s.deletePool('p'), 'BUSY', /volume/);
    await s.deleteVolume('p', 'a');
    await s.deleteVolume('p', 'b');
    await s.deletePool('p');
    expect(fs.existsSync(pool.location!)).toBe(false);
    expect(await s.listPools()).toEqual([]);
    await expectCode(s.deletePool('p'), 'NOT_FOUND');
  });

  it('volumes: create, info, list, resize, rename, delete; errors', async () => {
    const env = await makeEnv();
    const s = env.service;
    await s.createPool('p');
    const v = await s.createVolume('p', 'v', 16 * MiB);
    expect(v).toMatchObject({ pool: 'p', name: 'v', provisionedBytes: 16 * MiB, snapshotCount: 0, chainDepth: 1, parent: undefined });
    expect(v.allocatedBytes).toBeLessThan(1 * MiB); // thin
    const info = JSON.parse(qemuImg(['info', '--output=json', v.location!]).stdout) as { 'virtual-size': number; format: string };
    expect(info).toMatchObject({ 'virtual-size': 16 * MiB, format: 'qcow2' });
    await expectCode(s.createVolume('p', 'v', MiB), 'ALREADY_EXISTS');
    await expectCode(s.createVolume('p', 'w', 1000), 'INVALID_ARGUMENT', /512/);
    await expectCode(s.createVolume('p', 'w', 0), 'INVALID_ARGUMENT');
    await expectCode(s.createVolume('p', 'w x', MiB), 'INVALID_ARGUMENT');
    await expectCode(s.createVolume('nope', 'w', MiB), 'NOT_FOUND');
    await expectCode(s.volumeInfo('p', 'nope'), 'NOT_FOUND');

    const m = new Model(env);
    m.contents.set('p/v', new Uint8Array(16 * MiB));
    await m.write('p', 'v', 15 * MiB, MiB);
    await m.resize('p', 'v', 32 * MiB);
    expect((await s.volumeInfo('p', 'v')).provisionedBytes).toBe(32 * MiB);
    await expect(s.resizeVolume('p', 'v', 8 * MiB)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', fix: { option: 'allowShrink' } });
    await m.resize('p', 'v', 15 * MiB + 512);
    await m.resize('p', 'v', 20 * MiB);
    await m.verify();

    const renamed = await s.renameVolume('p', 'v', 'renamed');
    expect(renamed.id).toBe(v.id);
    m.contents.set('p/renamed', m.expected('p', 'v'));
    m.contents.delete('p/v');
    await s.createVolume('p', 'other', MiB);
    m.contents.set('p/other', new Uint8Array(MiB));
    await expectCode(s.renameVolume('p', 'renamed', 'other'), 'ALREADY_EXISTS');
    expect((await s.listVolumes('p')).map((x) => x.name)).toEqual(['other', 'renamed']);
    await m.verify();
    await s.deleteVolume('p', 'renamed');
    await s.deleteVolume('p', 'other');
    expect(poolFiles(env.dir)).toEqual([]);
    await expectCode(s.deleteVolume('p', 'renamed'), 'NOT_FOUND');
  });

  it('du reports each snapshot layer and active layer', async () => {
    const env = await makeEnv();
    const m = new Model(env);
    await env.service.createPool('p');
    await m.createVolume('p', 'a', 8 * MiB);
    await m.createVolume('p', 'b', 4 * MiB);
    await m.write('p', 'a', 0, 2 * MiB);
    await m.snapshot('p', 'a', 'one');
    await m.write('p', 'a', 4 * MiB, 1 * MiB);
    const du = await env.service.du('p');
    expect(du.map((e) => e.name)).toEqual(['p/a@one', 'p/a', 'p/b']);
    expect(du[0]!.allocatedBytes).toBeGreaterThanOrEqual(2 * MiB);
    expect(du[0]!.allocatedBytes).toBeLessThan(3 * MiB);
    expect(du[1]!.allocatedBytes).toBeGreaterThanOrEqual(1 * MiB);
    expect(du[1]!.allocatedBytes).toBeLessThan(2 * MiB);
    expect(du[2]).toMatchObject({ name: 'p/b', provisionedBytes: 4 * MiB });
    expect((await env.service.du('p', 'b')).map((e) => e.name)).toEqual(['p/b']);
    await expectCode(env.service.du('p', 'c'), 'NOT_FOUND');
    const vol = await env.service.volumeInfo('p', 'a');
    expect(vol.allocatedBytes).toBe(du[0]!.allocatedBytes + du[1]!.allocatedBytes);
  });
});

describe.skipIf(!requireTool('qemu-img'))('import and export', () => {
  it('raw import writes sparsely, with or without sizeBytes, and reads back exactly', async () => {
    const env = await makeEnv();
    await env.service.createPool('p');
    const data = new Uint8Array(10 * MiB + 1000);
    data.set(pattern(MiB, 7), 0);
    data.set(pattern(100 * KiB, 8), 5 * MiB + 3);
    data.set(pattern(1000, 9), 10 * MiB);
    const progress: number[] = [];
    const v = await env.service.importVolume('p', 'raw', chunksOf(data), { format: 'raw', onProgress: (n) => progress.push(n) });
    expect(v.provisionedBytes).toBe(10 * MiB + 1024);
    expect(progress[progress.length - 1]).toBe(data.length);
    expect(v.allocatedBytes).toBeLessThan(2 * MiB);
    const expected = new Uint8Array(10 * MiB + 1024);
    expected.set(data);
    expectBytes(await readVolume(env, 'p', 'raw'), expected, 'imported raw');

    const sized = await env.service.importVolume('p', 'sized', chunksOf(data.subarray(0, 2 * MiB)), { format: 'raw', sizeBytes: 4 * MiB });
    expect(sized.provisionedBytes).toBe(4 * MiB);
    const expected2 = new Uint8Array(4 * MiB);
    expected2.set(data.subarray(0, 2 * MiB));
    expectBytes(await readVolume(env, 'p', 'sized'), expected2, 'imported with sizeBytes');

    await expectCode(env.service.importVolume('p', 'toolong', chunksOf(data), { format: 'raw', sizeBytes: 4 * MiB }), 'INVALID_ARGUMENT', /more than/);
    await expectCode(env.service.importVolume('p', 'empty', chunksOf(new Uint8Array(0)), { format: 'raw' }), 'INVALID_ARGUMENT', /empty/);
    await expectCode(env.service.importVolume('p', 'sized', chunksOf(data), { format: 'raw' }), 'ALREADY_EXISTS');
    await env.service.setPoolQuota('p', 20 * MiB);
    await expectCode(env.service.importVolume('p', 'big', chunksOf(data), { format: 'raw' }), 'LIMIT_EXCEEDED', /quota/);
    await expectCode(env.service.importVolume('p', 'big2', chunksOf(data), { format: 'raw', sizeBytes: 16 * MiB }), 'LIMIT_EXCEEDED');
    expect((await env.service.listVolumes('p')).map((x) => x.name)).toEqual(['raw', 'sized']);
    await expectConsistent(env);
    const jobs = await env.service.listJobs();
    expect(jobs.filter((j) => j.kind === 'import').map((j) => j.state).sort()).toEqual(['failed', 'failed', 'failed', 'succeeded', 'succeeded']);
  });

  it('qcow2 import: spooled, opened with the engine, copied sparsely; the spool is deleted', async () => {
    const env = await makeEnv();
    await env.service.createPool('p');
    const work = path.join(env.dir, 'work');
    fs.mkdirSync(work);
    const raw = new Uint8Array(6 * MiB);
    raw.set(pattern(MiB, 1), 512 * KiB);
    raw.set(pattern(3 * KiB, 2), 4 * MiB + 512);
    fs.writeFileSync(path.join(work, 'src.raw'), raw);
    // A compressed qcow2 v3 made by qemu-img.
    expect(qemuImg(['convert', '-c', '-f', 'raw', '-O', 'qcow2', path.join(work, 'src.raw'), path.join(work, 'src.qcow2')]).code).toBe(0);
    const bytes = fs.readFileSync(path.join(work, 'src.qcow2'));
    const v = await env.service.importVolume('p', 'q', chunksOf(bytes, 70 * KiB), { format: 'qcow2' });
    expect(v.provisionedBytes).toBe(6 * MiB);
    expectBytes(await readVolume(env, 'p', 'q'), raw, 'imported qcow2');
    expect(v.allocatedBytes).toBeLessThan(2 * MiB);

    // A backing file cannot come along; garbage is not an image.
    expect(qemuImg(['create', '-f', 'qcow2', '-b', 'src.qcow2', '-F', 'qcow2', path.join(work, 'child.qcow2')]).code).toBe(0);
    await expectCode(
      env.service.importVolume('p', 'child', chunksOf(fs.readFileSync(path.join(work, 'child.qcow2'))), { format: 'qcow2' }),
      'INVALID_ARGUMENT',
      /backing file/,
    );
    const garbage = await env.service.importVolume('p', 'garbage', chunksOf(pattern(64 * KiB, 3)), { format: 'qcow2' }).catch((e: unknown) => e);
    expect((garbage as { code?: string }).code).toMatch(/INVALID_ARGUMENT|CORRUPT|UNSUPPORTED/);
    expect((await env.service.listVolumes('p')).map((x) => x.name)).toEqual(['q']);
    await expectConsistent(env);
  });

  it('export: raw and standalone qcow2, of the volume or a snapshot; no temp file stays', async () => {
    const env = await makeEnv();
    const m = new Model(env);
    await env.service.createPool('p');
    await m.createVolume('p', 'v', 8 * MiB);
    await m.write('p', 'v', 0, MiB);
    await m.snapshot('p', 'v', 's');
    await m.write('p', 'v', 3 * MiB, 2 * MiB);
    await m.zero('p', 'v', 0, 64 * KiB);

    const raw = await env.service.exportVolume('p', 'v', { format: 'raw' });
    expect(raw.sizeBytes).toBe(8 * MiB);
    // While a live export streams, the volume cannot change.
    await expectCode(env.service.createSnapshot('p', 'v', 'x'), 'BUSY', /export/);
    expectBytes(await collect(raw.stream), m.expected('p', 'v'), 'raw export');
    await env.service.createSnapshot('p', 'v', 'x');
    await env.service.deleteSnapshot('p', 'v', 'x');

    // An export that is abandoned before it starts still releases the volume.
    const abandoned = await env.service.exportVolume('p', 'v', { format: 'raw' });
    await (abandoned.stream as AsyncIterableIterator<Uint8Array>).return?.();
    await env.service.createSnapshot('p', 'v', 'x');
    await env.service.deleteSnapshot('p', 'v', 'x');

    const work = path.join(env.dir, 'work');
    fs.mkdirSync(work);
    for (const snapshot of [undefined, 's']) {
      const q = await env.service.exportVolume('p', 'v', { format: 'qcow2', ...(snapshot ? { snapshot } : {}) });
      expect(poolFiles(env.dir).filter((f) => f.includes('.tmp-'))).toEqual([]);
      const bytes = await collect(q.stream);
      expect(bytes.length).toBe(q.sizeBytes);
      const file = path.join(work, `export-${snapshot ?? 'live'}.qcow2`);
      fs.writeFileSync(file, bytes);
      fs.writeFileSync(`${file}.raw`, m.expected('p', 'v', snapshot));
      const info = JSON.parse(qemuImg(['info', '--output=json', file]).stdout) as Record<string, unknown>;
      expect(info['backing-filename']).toBeUndefined();
      expect(qemuImg(['check', file]).code).toBe(0);
      const cmp = qemuImg(['compare', '-f', 'qcow2', '-F', 'raw', file, `${file}.raw`]);
      expect(cmp.code, cmp.stdout + cmp.stderr).toBe(0);
    }
    await expectCode(env.service.exportVolume('p', 'v', { format: 'vmdk' as 'raw' }), 'INVALID_ARGUMENT');
    await expectCode(env.service.exportVolume('p', 'v', { format: 'raw', snapshot: 'nope' }), 'NOT_FOUND');
    await m.verify();
  });
});

describe.skipIf(!requireTool('qemu-img'))('concurrency', () => {
  it('operations on one volume serialize; names stay unique under races; jobs make the volume BUSY', async () => {
    const env = await makeEnv();
    const m = new Model(env);
    await env.service.createPool('p');
    const results = await Promise.allSettled([0, 1, 2, 3].map(() => env.service.createVolume('p', 'same', MiB)));
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    for (const r of results) if (r.status === 'rejected') expect((r.reason as { code: string }).code).toBe('ALREADY_EXISTS');
    m.contents.set('p/same', new Uint8Array(MiB));

    await m.createVolume('p', 'v', 32 * MiB);
    for (let off = 0; off < 32 * MiB; off += 4 * MiB) await m.write('p', 'v', off, MiB);
    // Snapshots, renames and resizes issued together all land, one after the other.
    await Promise.all([
      env.service.createSnapshot('p', 'v', 'a'),
      env.service.createSnapshot('p', 'v', 'b'),
      env.service.createSnapshot('p', 'v', 'c'),
    ]);
    for (const snap of ['a', 'b', 'c']) m.contents.set(`p/v@${snap}`, m.expected('p', 'v').slice());
    expect((await env.service.volumeInfo('p', 'v')).chainDepth).toBe(4);

    // A copy job holds its source: changes are refused at once, reads go on.
    const job = await env.service.copyVolume('p', 'v', 'p', 'copy');
    await expectCode(env.service.resizeVolume('p', 'v', 64 * MiB), 'BUSY', /copy/);
    await expectCode(env.service.deleteVolume('p', 'v', { force: true }), 'BUSY');
    expect((await env.service.diff('p', 'v', { fromSnapshot: 'a', toSnapshot: undefined }))).toEqual([]);
    expect((await env.service.waitForJob(job.id)).state).toBe('succeeded');
    m.contents.set('p/copy', m.expected('p', 'v').slice());

    // Reads of a clone while it is being flattened see its data throughout.
    await env.service.protectSnapshot('p', 'v', 'c');
    await m.clone('p', 'v', 'c', 'p', 'clone');
    const flatten = await env.service.flattenVolume('p', 'clone');
    for (let i = 0; i < 3; i++) expectBytes(await readVolume(env, 'p', 'clone'), m.expected('p', 'clone'), `clone read ${i} during flatten`);
    expect((await env.service.waitForJob(flatten.id)).state).toBe('succeeded');
    await m.verify();
  });
});

describe.skipIf(!requireTool('qemu-img'))('jobs and recovery', () => {
  it('recover(): interrupted jobs are marked failed; orphan and temp files are deleted; unknown files stay', async () => {
    const env = await makeEnv();
    const m = new Model(env);
    await env.service.createPool('p');
    await m.createVolume('p', 'v', 4 * MiB);
    await m.write('p', 'v', 0, MiB);
    await m.snapshot('p', 'v', 's');
    const dir = path.join(env.dir, 'pools', 'p');
    fs.writeFileSync(path.join(dir, '0123456789abcdef.qcow2'), 'orphan');
    fs.writeFileSync(path.join(dir, '.tmp-import-1.qcow2'), 'spool');
    fs.writeFileSync(path.join(dir, 'notes.txt'), 'mine');
    fs.mkdirSync(path.join(env.dir, 'pools', 'ghost'));
    fs.writeFileSync(path.join(env.dir, 'pools', 'ghost', 'fedcba9876543210.qcow2'), 'x');
    await env.service.catalog.change((txn) => env.service.catalog.jobs.create(txn, {
      id: 'feedfeedfeedfeed',
      kind: 'copy',
      target: 'p/v',
      state: 'running',
      doneBytes: 5,
      totalBytes: 10,
      createdAt: new Date().toISOString(),
    }));
    await env.service.close();
    await env.catalog.close();
    const { LevelCatalogStore } = await import('../../src/meta/level-catalog.js');
    const { LocalVolumeService } = await import('../../src/volume/index.js');
    env.catalog = await LevelCatalogStore.open(path.join(env.dir, 'catalog'));
    env.service = new LocalVolumeService(env.catalog, env.dir);
    const report = await env.service.recover();
    expect(report.jobsMarkedFailed).toBe(1);
    expect(report.orphansDeleted.map((f) => path.relative(env.dir, f)).sort()).toEqual(
      ['pools/ghost', 'pools/ghost/fedcba9876543210.qcow2', 'pools/p/.tmp-import-1.qcow2', 'pools/p/0123456789abcdef.qcow2'].sort(),
    );
    expect(report.problems).toEqual([expect.stringMatching(/notes\.txt/)]);
    const job = await env.service.jobInfo('feedfeedfeedfeed');
    expect(job.state).toBe('failed');
    expect(job.error?.message).toMatch(/interrupted/);
    fs.rmSync(path.join(dir, 'notes.txt'));
    await m.verify();
    await expectCode(env.service.jobInfo('nope'), 'NOT_FOUND');
  });

  it('a second process cannot open the same catalog', async () => {
    const env = await makeEnv();
    const { LevelCatalogStore } = await import('../../src/meta/level-catalog.js');
    await expectCode(LevelCatalogStore.open(path.join(env.dir, 'catalog')), 'BUSY');
  });
});
