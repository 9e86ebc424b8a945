/**
 * Consistency groups and group snapshots in the volume layer (src/volume/groups.ts,
 * group-snapshots.ts): membership across pools, member snapshots that read what each volume held,
 * the refusals that name the fix, rollback of all members, delete, and the one-instant guarantee
 * with two live devices written in A-then-B order while 20 group snapshots are taken.
 */
import { describe, expect, it } from 'vitest';
import { isStorageError } from '../../src/core/errors.js';
import { checkGroupSnapshots, lastRecord, OrderedWriter } from '../support/ordered-records.js';
import { requireTool } from '../support/tools.js';
import { expectBytes, expectCode, expectConsistent, makeEnv, MiB, pattern, readVolume, writeVolume, type Env } from './helpers.js';

async function twoPoolGroup(options: { maxChainDepth?: number } = {}): Promise<Env> {
  const env = await makeEnv(options);
  const s = env.service;
  await s.createPool('p');
  await s.createPool('q');
  await s.createVolume('p', 'a', 4 * MiB);
  await s.createVolume('q', 'b', 4 * MiB);
  await s.createGroup('g');
  await s.addToGroup('g', 'p', 'a');
  await s.addToGroup('g', 'q', 'b');
  return env;
}

describe.skipIf(!requireTool('qemu-img'))('consistency groups', () => {
  it('groups volumes of different pools; a volume is in one group at most; membership follows renames', async () => {
    const env = await twoPoolGroup();
    const s = env.service;
    const info = await s.groupInfo('g');
    expect(info.members.map((m) => `${m.pool}/${m.volume}`)).toEqual(['p/a', 'q/b']);
    expect(info.snapshotCount).toBe(0);
    expect((await s.listGroups()).map((g) => g.name)).toEqual(['g']);
    await expectCode(s.createGroup('g'), 'ALREADY_EXISTS');
    await expectCode(s.createGroup('bad/name'), 'INVALID_ARGUMENT');
    await s.createGroup('h');
    const msg = await expectCode(s.addToGroup('h', 'p', 'a'), 'BUSY', /already in group 'g'/);
    expect(msg).toContain('one group at most');
    expect((await s.addToGroup('g', 'p', 'a')).members).toHaveLength(2); // again: no change
    await s.renameVolume('p', 'a', 'a2');
    expect((await s.groupInfo('g')).members.map((m) => `${m.pool}/${m.volume}`)).toEqual(['p/a2', 'q/b']);
    await expectCode(s.groupInfo('nope'), 'NOT_FOUND', /group 'nope' does not exist/);
    await expectCode(s.removeFromGroup('h', 'p', 'a2'), 'NOT_FOUND', /not in group 'h'/);
  });

  it('a group snapshot gives every member a snapshot of what it held; they are deleted and renamed only with the group', async () => {
    const env = await twoPoolGroup();
    const s = env.service;
    await writeVolume(env, 'p', 'a', 0, pattern(MiB, 1));
    await writeVolume(env, 'q', 'b', MiB, pattern(MiB, 2));
    const aBefore = await readVolume(env, 'p', 'a');
    const bBefore = await readVolume(env, 'q', 'b');
    const snap = await s.createGroupSnapshot('g', 's1');
    expect(snap).toMatchObject({ group: 'g', name: 's1', state: 'ready' });
    expect(snap.members).toEqual([
      { pool: 'p', volume: 'a', snapshot: 'group.g.s1' },
      { pool: 'q', volume: 'b', snapshot: 'group.g.s1' },
    ]);
    await writeVolume(env, 'p', 'a', 0, pattern(MiB, 3));
    await writeVolume(env, 'q', 'b', MiB, pattern(MiB, 4));
    expectBytes(await readVolume(env, 'p', 'a', 'group.g.s1'), aBefore, 'a@group.g.s1');
    expectBytes(await readVolume(env, 'q', 'b', 'group.g.s1'), bBefore, 'b@group.g.s1');
    await expectCode(s.createGroupSnapshot('g', 's1'), 'ALREADY_EXISTS');
    expect((await s.listGroupSnapshots('g')).map((x) => x.name)).toEqual(['s1']);
    expect((await s.groupSnapshotInfo('g', 's1')).id).toBe(snap.id);

    // A member snapshot alone: refused, naming the group snapshot and its delete.
    const refused = await s.deleteSnapshot('p', 'a', 'group.g.s1').catch((err: unknown) => err);
    expect(isStorageError(refused, 'BUSY') && refused.message).toMatch(/belongs to group snapshot 'g@s1'/);
    expect(isStorageError(refused) && refused.fix).toMatchObject({ operation: 'deleteGroupSnapshot', group: 'g', snapshot: 's1' });
    await expectCode(s.renameSnapshot('q', 'b', 'group.g.s1', 'mine'), 'BUSY', /belongs to group snapshot 'g@s1'/);
    // A member volume: refused, naming `group remove`.
    const deleting = await s.deleteVolume('p', 'a', { force: true }).catch((err: unknown) => err);
    expect(isStorageError(deleting, 'BUSY') && deleting.message).toMatch(/is in group 'g'/);
    expect(isStorageError(deleting) && deleting.fix).toMatchObject({ operation: 'removeFromGroup', group: 'g', pool: 'p', volume: 'a' });
    await expectCode(s.trashVolume('q', 'b'), 'BUSY', /is in group 'g'/);
    await expectCode(s.deleteGroup('g'), 'BUSY', /group snap delete/);

    // Rollback: every member back, under one intent; refused while a member is exported.
    const device = await s.openDevice('q', 'b', { export: { id: 'x1', type: 'vhost-user' } });
    const exported = await s.rollbackGroupSnapshot('g', 's1').catch((err: unknown) => err);
    expect(isStorageError(exported, 'BUSY') && exported.message).toMatch(/exported members \(q\/b\)/);
    expect(isStorageError(exported) && exported.fix).toEqual({ operation: 'stopExports', exports: [{ id: 'x1', type: 'vhost-user', pool: 'q', volume: 'b' }], text: 'stop them with {}' });
    await device.close();
    await s.rollbackGroupSnapshot('g', 's1');
    expectBytes(await readVolume(env, 'p', 'a'), aBefore, 'a rolled back');
    expectBytes(await readVolume(env, 'q', 'b'), bBefore, 'b rolled back');
    await expectConsistent(env);

    await s.deleteGroupSnapshot('g', 's1');
    expect(await s.listGroupSnapshots('g')).toEqual([]);
    expect(await s.listSnapshots('p', 'a')).toEqual([]);
    expect(await s.listSnapshots('q', 'b')).toEqual([]);
    expectBytes(await readVolume(env, 'p', 'a'), aBefore, 'a after the delete');
    await expectConsistent(env);
    await s.deleteGroup('g');
    await s.deleteVolume('p', 'a'); // out of any group now
  });

  it('group remove makes the member snapshots the volume\'s own; a group snapshot with no member left goes', async () => {
    const env = await twoPoolGroup();
    const s = env.service;
    await s.createGroupSnapshot('g', 's1');
    await s.removeFromGroup('g', 'p', 'a');
    expect((await s.groupSnapshotInfo('g', 's1')).members.map((m) => `${m.pool}/${m.volume}`)).toEqual(['q/b']);
    await s.renameSnapshot('p', 'a', 'group.g.s1', 'kept');
    await s.deleteSnapshot('p', 'a', 'kept');
    await s.removeFromGroup('g', 'q', 'b');
    expect(await s.listGroupSnapshots('g')).toEqual([]);
    expect((await s.listSnapshots('q', 'b')).map((x) => x.name)).toEqual(['group.g.s1']);
    await expectCode(s.createGroupSnapshot('g', 's2'), 'BUSY', /no members/);
    await expectConsistent(env);
  });

  it('a failed member snapshot leaves no member with it (the one intent rolls back); a restart finds it clean', async () => {
    const env = await twoPoolGroup();
    const s = env.service;
    // b already has a snapshot of that name: planning refuses before anything is written.
    await s.createSnapshot('q', 'b', 'group.g.s1');
    await expectCode(s.createGroupSnapshot('g', 's1'), 'ALREADY_EXISTS', /q\/b@group\.g\.s1/);
    expect(await s.listSnapshots('p', 'a')).toEqual([]);
    await expectCode(s.createGroupSnapshot('g', 'x'.repeat(125)), 'INVALID_ARGUMENT', /longer than 128/);
    await env.restart();
    await expectConsistent(env);
  });

  it('20 group snapshots of two live devices written A-then-B: no snapshot shows B ahead of A', async () => {
    const env = await twoPoolGroup({ maxChainDepth: 24 });
    const s = env.service;
    const a = await s.openDevice('p', 'a');
    const b = await s.openDevice('q', 'b');
    const writer = new OrderedWriter((offset, block) => a.write(offset, block), (offset, block) => b.write(offset, block), 4 * MiB);
    const SNAPSHOTS = 20;
    for (let i = 1; i <= SNAPSHOTS; i++) {
      await Promise.race([writer.advanced(3), writer.done]); // the writer goes on between snapshots
      await s.createGroupSnapshot('g', `s${i}`);
    }
    const written = await writer.stop();
    await a.close();
    await b.close();
    await checkGroupSnapshots(SNAPSHOTS, async (i) => [await readVolume(env, 'p', 'a', `group.g.s${i}`), await readVolume(env, 'q', 'b', `group.g.s${i}`)]);
    expect(lastRecord(await readVolume(env, 'q', 'b'))).toBe(written);
    await expectConsistent(env);
  });
});
