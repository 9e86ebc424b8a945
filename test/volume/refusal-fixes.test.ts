/**
 * The fix a refusal carries as data (core/errors.ts ErrorFix), for each interface to word: what
 * holds a busy volume (the exports to stop, by id, kind and target; a job; a client's stream) and
 * the list of the kind of thing that was not found.
 */
import { describe, expect, it } from 'vitest';
import { isStorageError, type ErrorFix } from '../../src/core/errors.js';
import { collect, makeEnv, MiB, pattern, writeVolume } from './helpers.js';

/** The fix of the StorageError the call fails with (undefined: it carries none). */
async function fixOf(call: Promise<unknown>, code: string): Promise<ErrorFix | undefined> {
  const err = await call.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!isStorageError(err)) throw new Error(`expected a ${code} StorageError, got ${String(err)}`);
  expect(err.code, err.message).toBe(code);
  return err.fix;
}

describe('fixes of refusals', () => {
  it('an exported volume: the exports to stop, each with its id, kind and target, until they stop', async () => {
    const env = await makeEnv();
    const s = env.service;
    await s.createPool('p');
    await s.createVolume('p', 'vm', 4 * MiB);
    await s.createSnapshot('p', 'vm', 's1');
    const nbd = await s.openDevice('p', 'vm', { export: { id: 'e1', type: 'nbd' } });
    const vhost = await s.openDevice('p', 'vm', { export: { id: 'e2', type: 'vhost-user' } });
    const snap = await s.openDevice('p', 'vm', { snapshot: 's1', export: { id: 'e3', type: 'nbd' } });

    // Rollback only minds the head's exports; delete and rename every export of the volume.
    expect(await fixOf(s.rollbackSnapshot('p', 'vm', 's1'), 'BUSY')).toEqual({
      operation: 'stopExports',
      exports: [
        { id: 'e1', type: 'nbd', pool: 'p', volume: 'vm' },
        { id: 'e2', type: 'vhost-user', pool: 'p', volume: 'vm' },
      ],
      text: 'stop them with {}',
    });
    const snapExport = { id: 'e3', type: 'nbd', pool: 'p', volume: 'vm', snapshot: 's1' };
    const deleting = await fixOf(s.deleteVolume('p', 'vm', { force: true }), 'BUSY');
    expect(deleting).toMatchObject({ operation: 'stopExports', exports: expect.arrayContaining([snapExport]) });
    expect(deleting && 'exports' in deleting && deleting.exports).toHaveLength(3);

    await nbd.close();
    await vhost.close();
    expect(await fixOf(s.renameVolume('p', 'vm', 'other'), 'BUSY')).toMatchObject({ exports: [snapExport] });
    await s.rollbackSnapshot('p', 'vm', 's1'); // the head is no longer exported
    await snap.close();
    await s.deleteVolume('p', 'vm', { force: true });
  });

  it('a volume held by a job points at the job list; one a client streams from names no job', async () => {
    const env = await makeEnv();
    const s = env.service;
    await s.createPool('p');
    await s.createVolume('p', 'v', 8 * MiB);
    // Data to copy: the copy job is still reading it when the resize asks (as in volumes.test.ts).
    await writeVolume(env, 'p', 'v', 0, pattern(8 * MiB, 1));
    const stream = await s.exportVolume('p', 'v', { format: 'raw' });
    expect(await fixOf(s.resizeVolume('p', 'v', 16 * MiB), 'BUSY')).toBeUndefined();
    await collect(stream.stream);

    const job = await s.copyVolume('p', 'v', 'p', 'copy');
    expect(await fixOf(s.resizeVolume('p', 'v', 16 * MiB), 'BUSY')).toEqual({ operation: 'listJobs', text: '{} shows it and its progress' });
    expect((await s.waitForJob(job.id)).state).toBe('succeeded');
  });

  it('NOT_FOUND names the list of the kind of thing not found', async () => {
    const env = await makeEnv();
    const s = env.service;
    await s.createPool('p');
    await s.createVolume('p', 'v', MiB);
    expect(await fixOf(s.poolInfo('nope'), 'NOT_FOUND')).toMatchObject({ operation: 'listPools' });
    expect(await fixOf(s.volumeInfo('nope', 'v'), 'NOT_FOUND')).toMatchObject({ operation: 'listPools' });
    expect(await fixOf(s.volumeInfo('p', 'nope'), 'NOT_FOUND')).toMatchObject({ operation: 'listVolumes', pool: 'p' });
    expect(await fixOf(s.snapshotInfo('p', 'v', 'nope'), 'NOT_FOUND')).toMatchObject({ operation: 'listSnapshots', pool: 'p', volume: 'v' });
    expect(await fixOf(s.jobInfo('nope'), 'NOT_FOUND')).toMatchObject({ operation: 'listJobs' });
    expect(await fixOf(s.restoreVolume('p', 'f00'), 'NOT_FOUND')).toMatchObject({ operation: 'listTrash', pool: 'p' });
    expect(await fixOf(s.groupInfo('nope'), 'NOT_FOUND')).toMatchObject({ operation: 'listGroups' });
    await s.createGroup('g');
    expect(await fixOf(s.groupSnapshotInfo('g', 'nope'), 'NOT_FOUND')).toMatchObject({ operation: 'listGroupSnapshots', group: 'g' });
  });
});
