/**
 * The trash (src/volume/trash.ts): a deleted volume keeps its data, snapshots and layers while its
 * name is free; restore brings it back byte for byte (qemu-img compare against a copy taken
 * before the delete); purge deletes it as `volume delete` does; expiry follows a clock the test
 * moves, not the wall clock.
 */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { isStorageError } from '../../src/core/errors.js';
import { qemuImg, requireTool } from '../support/tools.js';
import { expectBytes, expectCode, expectConsistent, makeEnv, MiB, pattern, poolFiles, readVolume, writeVolume, type Env } from './helpers.js';

const START_MS = Date.parse('2030-01-01T00:00:00.000Z');
const HOUR_MS = 3600 * 1000;

/** A service whose clock the test moves (`clock.ms`). */
async function clockedEnv(trashExpiryMs?: number): Promise<{ env: Env; clock: { ms: number } }> {
  const clock = { ms: START_MS };
  const env = await makeEnv({ clock: () => clock.ms, ...(trashExpiryMs === undefined ? {} : { trashExpiryMs }) });
  await env.service.createPool('p');
  return { env, clock };
}

/** The volume's contents as a raw file made by qemu-img from its active layer (through its chain). */
function rawCopy(env: Env, location: string, name: string): string {
  const out = path.join(env.dir, `${name}.raw`);
  const r = qemuImg(['convert', '-U', '-f', 'qcow2', '-O', 'raw', location, out]);
  if (r.code !== 0) throw new Error(`qemu-img convert ${location}: ${r.stderr}`);
  return out;
}

describe.skipIf(!requireTool('qemu-img'))('the trash', () => {
  it('delete moves a volume to the trash: name free at once, not listed, not exportable; restore gives the same bytes', async () => {
    const { env, clock } = await clockedEnv();
    const s = env.service;
    await s.createVolume('p', 'vm', 8 * MiB);
    await writeVolume(env, 'p', 'vm', 0, pattern(MiB, 1));
    await s.createSnapshot('p', 'vm', 'base');
    await writeVolume(env, 'p', 'vm', 3 * MiB, pattern(2 * MiB, 2));
    const before = await s.volumeInfo('p', 'vm');
    const copy = rawCopy(env, before.location!, 'before');
    const filesBefore = poolFiles(env.dir);

    const entry = await s.trashVolume('p', 'vm');
    expect(entry).toEqual({
      id: before.id,
      pool: 'p',
      name: 'vm',
      sizeBytes: 8 * MiB,
      snapshotCount: 1,
      deletedAt: new Date(START_MS).toISOString(),
      expiresAt: new Date(START_MS + 7 * 24 * HOUR_MS).toISOString(),
    });
    expect(poolFiles(env.dir)).toEqual(filesBefore); // every layer stays
    expect(await s.listVolumes('p')).toEqual([]);
    expect((await s.poolInfo('p')).volumeCount).toBe(0);
    await expectCode(s.volumeInfo('p', 'vm'), 'NOT_FOUND');
    await expectCode(s.openDevice('p', 'vm'), 'NOT_FOUND');
    await expectCode(s.exportVolume('p', 'vm', { format: 'raw' }), 'NOT_FOUND');
    await expectCode(s.trashVolume('p', 'vm'), 'NOT_FOUND');
    expect(await s.listTrash('p')).toEqual([entry]);
    expect(await s.listTrash()).toEqual([entry]);

    // The name is free: a new volume takes it; restoring under it is refused with the fix.
    await s.createVolume('p', 'vm', MiB);
    const refused = s.restoreVolume('p', entry.id);
    await expectCode(refused, 'ALREADY_EXISTS', /volume 'p\/vm' already exists/);
    await refused.catch((err: unknown) => {
      expect(isStorageError(err) && err.fix).toEqual({ option: 'name', text: 'use {} to restore it under another name' });
    });
    await expectCode(s.restoreVolume('p', entry.id, { name: 'bad name' }), 'INVALID_ARGUMENT');
    await expectCode(s.restoreVolume('p', 'nope'), 'NOT_FOUND', /trash of pool 'p'/);
    await expectCode(s.restoreVolume('nopool', entry.id), 'NOT_FOUND', /pool 'nopool'/);

    clock.ms += HOUR_MS;
    const restored = await s.restoreVolume('p', entry.id, { name: 'vm-old' });
    expect(restored).toMatchObject({ id: before.id, name: 'vm-old', provisionedBytes: 8 * MiB, snapshotCount: 1, location: before.location });
    const compare = qemuImg(['compare', '-f', 'qcow2', '-F', 'raw', restored.location!, copy]);
    expect(compare.code, compare.stdout + compare.stderr).toBe(0);
    expect((await s.listSnapshots('p', 'vm-old')).map((x) => x.name)).toEqual(['base']);
    expect(await s.listTrash('p')).toEqual([]);
    expect((await s.listVolumes('p')).map((v) => v.name)).toEqual(['vm', 'vm-old']);
    await expectConsistent(env);
  });

  it('restore under the old name, quota, a restart in between, and pool delete waits for the trash', async () => {
    const { env } = await clockedEnv();
    const s = env.service;
    await s.createVolume('p', 'a', 4 * MiB);
    await writeVolume(env, 'p', 'a', MiB, pattern(MiB, 7));
    const expected = await readVolume(env, 'p', 'a');
    const entry = await s.trashVolume('p', 'a', { expiresInMs: 5000 });
    expect(entry.expiresAt).toBe(new Date(START_MS + 5000).toISOString());
    await expectCode(s.trashVolume('p', 'x', { expiresInMs: -1 }), 'INVALID_ARGUMENT');

    await env.restart(); // recovery keeps a trashed volume's files
    await expectConsistent(env);
    expect((await env.service.listTrash('p')).map((e) => e.id)).toEqual([entry.id]);
    await expectCode(env.service.deletePool('p'), 'BUSY', /1 volume in its trash; purge/);

    // Trashed volumes leave the quota; restoring one must fit it again.
    await env.service.setPoolQuota('p', 6 * MiB);
    await env.service.createVolume('p', 'b', 4 * MiB);
    await expectCode(env.service.restoreVolume('p', entry.id), 'LIMIT_EXCEEDED', /restoring 'p\/a'/);
    await env.service.deleteVolume('p', 'b');
    const restored = await env.service.restoreVolume('p', entry.id);
    expect(restored.name).toBe('a');
    expectBytes(await readVolume(env, 'p', 'a'), expected, 'restored a');
    await env.service.deleteVolume('p', 'a');
    await env.service.deletePool('p');
  });

  it("a trashed volume's snapshot keeps serving its clone; purge is refused naming the clone until it is flattened", async () => {
    const { env } = await clockedEnv();
    const s = env.service;
    await s.createVolume('p', 'golden', 4 * MiB);
    await writeVolume(env, 'p', 'golden', 0, pattern(2 * MiB, 3));
    await s.createSnapshot('p', 'golden', 'v1');
    await s.protectSnapshot('p', 'golden', 'v1');
    await s.cloneSnapshot('p', 'golden', 'v1', 'p', 'child');
    await writeVolume(env, 'p', 'child', 3 * MiB, pattern(MiB, 4));
    const childBytes = await readVolume(env, 'p', 'child');

    // `delete --now` refuses (clones); the trash takes it and the clone reads on.
    await expectCode(s.deleteVolume('p', 'golden', { force: true }), 'BUSY', /has clones \(p\/child\)/);
    const entry = await s.trashVolume('p', 'golden');
    expectBytes(await readVolume(env, 'p', 'child'), childBytes, 'clone of a trashed volume');
    const device = await s.openDevice('p', 'child', { readOnly: true });
    const head = new Uint8Array(MiB);
    await device.read(0, head);
    await device.close();
    expectBytes(head, childBytes.subarray(0, MiB), 'clone through a live device');

    await expectCode(s.purgeTrash('p', entry.id), 'BUSY', /volume 'p\/golden' \(in the trash as [0-9a-f]+\) has clones \(p\/child\); flatten or delete them first/);
    await expectCode(s.purgePoolTrash('p'), 'BUSY', /p\/child/);
    expect((await s.listTrash('p')).length).toBe(1);

    const job = await s.flattenVolume('p', 'child');
    expect((await s.waitForJob(job.id)).state).toBe('succeeded');
    expect(await s.purgeTrash('p', entry.id)).toMatchObject({ id: entry.id, name: 'golden' });
    expect(await s.listTrash()).toEqual([]);
    await expectCode(s.purgeTrash('p', entry.id), 'NOT_FOUND');
    expectBytes(await readVolume(env, 'p', 'child'), childBytes, 'flattened clone');
    await expectConsistent(env);
  });

  it('expiry: a pass purges what expired by the injected clock, in expiry order, a bounded number at a time', async () => {
    const { env, clock } = await clockedEnv(10_000);
    const s = env.service;
    for (const name of ['a', 'b', 'c', 'd']) await s.createVolume('p', name, MiB);
    const a = await s.trashVolume('p', 'a');
    const b = await s.trashVolume('p', 'b', { expiresInMs: 2000 });
    const c = await s.trashVolume('p', 'c', { expiresInMs: 60_000 });
    // d's snapshot has a clone: it expires but cannot be purged.
    await s.createSnapshot('p', 'd', 's');
    await s.protectSnapshot('p', 'd', 's');
    await s.cloneSnapshot('p', 'd', 's', 'p', 'd-clone');
    const d = await s.trashVolume('p', 'd', { expiresInMs: 1000 });

    expect(await s.purgeExpiredTrash({ limit: 10 })).toEqual({ purged: [], refused: [], nextAfter: undefined });
    clock.ms += 2000; // d and b expired
    const first = await s.purgeExpiredTrash({ limit: 1 });
    expect(first.purged).toEqual([]);
    expect(first.refused.map((r) => [r.entry.id, r.reason])).toEqual([[d.id, expect.stringMatching(/has clones \(p\/d-clone\)/)]]);
    expect(first.nextAfter).toBe(`${d.expiresAt}/${d.id}`);
    const second = await s.purgeExpiredTrash({ limit: 1, after: first.nextAfter! });
    expect(second.purged.map((e) => e.id)).toEqual([b.id]);
    clock.ms += 8000; // a expired too, c not yet
    const third = await s.purgeExpiredTrash({ limit: 10 });
    expect(third.purged.map((e) => e.id)).toEqual([a.id]);
    expect(third.refused.map((r) => r.entry.id)).toEqual([d.id]);
    expect(third.nextAfter).toBeUndefined();
    expect((await s.listTrash('p')).map((e) => e.id).sort()).toEqual([c.id, d.id].sort());

    await expectCode(s.purgePoolTrash('p', { expiredOnly: true }), 'BUSY', /d-clone/);
    await s.deleteVolume('p', 'd-clone');
    expect((await s.purgePoolTrash('p', { expiredOnly: true })).map((e) => e.id)).toEqual([d.id]);
    expect((await s.purgePoolTrash('p')).map((e) => e.id)).toEqual([c.id]);
    expect(await s.listTrash('p')).toEqual([]);
    await expectConsistent(env);
  });
});
