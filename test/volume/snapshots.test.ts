/**
 * The layer model against qemu-img: after every snapshot, rollback, middle-snapshot delete, clone and
 * flatten, each snapshot and each volume reads exactly what it should (qemu-img compare against a
 * raw file of the expected bytes, and the service's own export), qemu-img check is clean on every
 * layer file, the pool folders hold exactly the catalog's files, and `qemu-img info
 * --backing-chain` on a volume's active layer shows its chain.
 */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { requireTool } from '../support/tools.js';
import { expectCode, makeEnv, MiB, KiB, Model, readVolume, expectBytes } from './helpers.js';

const SIZE = 8 * MiB;

describe.skipIf(!requireTool('qemu-img'))('snapshots, rollback, clones and flatten against qemu-img', () => {
  it('snapshots freeze the active layer; each one keeps what the volume read when it was taken', async () => {
    const env = await makeEnv();
    const m = new Model(env);
    await env.service.createPool('p');
    await m.createVolume('p', 'v', SIZE);
    const base = (await env.service.volumeInfo('p', 'v')).location!;
    await m.write('p', 'v', 0, 1 * MiB);
    await m.write('p', 'v', 3 * MiB + 512, 100 * KiB);
    await m.snapshot('p', 'v', 's1');
    await m.verify();
    await m.expectChain('p', 'v', [(await env.service.volumeInfo('p', 'v')).location!, base]);
    expect((await env.service.snapshotInfo('p', 'v', 's1')).location).toBe(base);

    await m.write('p', 'v', 512 * KiB, 1 * MiB);
    await m.zero('p', 'v', 3 * MiB, 256 * KiB);
    await m.snapshot('p', 'v', 's2');
    await m.write('p', 'v', 7 * MiB, 1 * MiB);
    await m.verify();
    const s2 = (await env.service.snapshotInfo('p', 'v', 's2')).location!;
    await m.expectChain('p', 'v', [(await env.service.volumeInfo('p', 'v')).location!, s2, base]);

    // Snapshot creation is O(1): the new active layer is empty.
    const du = await env.service.du('p', 'v');
    expect(du.map((e) => e.name)).toEqual(['p/v@s1', 'p/v@s2', 'p/v']);
    expect(du[0]!.allocatedBytes).toBeGreaterThanOrEqual(1 * MiB);
    await expectCode(env.service.createSnapshot('p', 'v', 's1'), 'ALREADY_EXISTS');
    await expectCode(env.service.createSnapshot('p', 'v', 'bad/name'), 'INVALID_ARGUMENT');
    await expectCode(env.service.createSnapshot('p', 'nope', 's9'), 'NOT_FOUND');
  });

  it('rollback: a new active layer on the snapshot replaces the old one; later snapshots stay valid', async () => {
    const env = await makeEnv();
    const m = new Model(env);
    await env.service.createPool('p');
    await m.createVolume('p', 'v', SIZE);
    await m.write('p', 'v', 0, 2 * MiB);
    await m.snapshot('p', 'v', 's1');
    await m.write('p', 'v', 1 * MiB, 2 * MiB);
    await m.snapshot('p', 'v', 's2');
    await m.write('p', 'v', 5 * MiB, 1 * MiB);
    const oldActive = (await env.service.volumeInfo('p', 'v')).location!;

    await m.rollback('p', 'v', 's1');
    await m.verify();
    expect((await env.service.volumeInfo('p', 'v')).location).not.toBe(oldActive);
    const s1 = (await env.service.snapshotInfo('p', 'v', 's1')).location!;
    await m.expectChain('p', 'v', [(await env.service.volumeInfo('p', 'v')).location!, s1]);

    // Writes after the rollback go to the new branch; rolling back to s2 (on the old branch) works.
    await m.write('p', 'v', 6 * MiB, 512 * KiB);
    await m.snapshot('p', 'v', 's3');
    await m.rollback('p', 'v', 's2');
    await m.verify();
    await m.rollback('p', 'v', 's3');
    await m.verify();
  });

  it('deleting a middle snapshot merges it into its children, whichever branch they are on', async () => {
    const env = await makeEnv();
    const m = new Model(env);
    await env.service.createPool('p');
    await m.createVolume('p', 'v', SIZE);
    await m.write('p', 'v', 0, 3 * MiB);
    await m.snapshot('p', 'v', 's1');
    await m.write('p', 'v', 2 * MiB, 2 * MiB);
    await m.zero('p', 'v', 0, 512 * KiB);
    await m.snapshot('p', 'v', 's2');
    await m.write('p', 'v', 3 * MiB + 4 * KiB, 5 * KiB);
    await m.snapshot('p', 'v', 's3');
    await m.write('p', 'v', 7 * MiB, 1 * MiB);

    // s2 has one child (s3's layer): merge it, then s3 is backed by s1.
    await m.deleteSnapshot('p', 'v', 's2');
    await m.verify();
    const s1 = (await env.service.snapshotInfo('p', 'v', 's1')).location!;
    const s3 = (await env.service.snapshotInfo('p', 'v', 's3')).location!;
    await m.expectChain('p', 'v', [(await env.service.volumeInfo('p', 'v')).location!, s3, s1]);

    // After a rollback, s1 has two children (s3's layer and the new active layer).
    await m.rollback('p', 'v', 's1');
    await m.write('p', 'v', 1 * MiB, 64 * KiB);
    await m.deleteSnapshot('p', 'v', 's1');
    await m.verify();
    await m.expectChain('p', 'v', [(await env.service.volumeInfo('p', 'v')).location!]);
    await m.deleteSnapshot('p', 'v', 's3');
    await m.verify();
    expect(await env.service.listSnapshots('p', 'v')).toEqual([]);
  });

  it('snapshots across resizes: shrink and regrow never show stale data, and merges keep sizes right', async () => {
    const env = await makeEnv();
    const m = new Model(env);
    await env.service.createPool('p');
    await m.createVolume('p', 'v', SIZE);
    await m.write('p', 'v', 0, SIZE);
    await m.snapshot('p', 'v', 'big');
    await m.resize('p', 'v', 3 * MiB + 512);
    await m.snapshot('p', 'v', 'small');
    await m.resize('p', 'v', SIZE);
    await m.write('p', 'v', 6 * MiB, 64 * KiB);
    await m.verify();
    await m.resize('p', 'v', 12 * MiB);
    await m.snapshot('p', 'v', 'bigger');
    await m.deleteSnapshot('p', 'v', 'small');
    await m.verify();
    await m.rollback('p', 'v', 'big');
    await m.verify();
    await m.deleteSnapshot('p', 'v', 'bigger');
    await m.deleteSnapshot('p', 'v', 'big');
    await m.verify();
    await expect(env.service.resizeVolume('p', 'v', 4 * MiB)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', fix: { option: 'allowShrink' } });
  });

  it('clones: a protected snapshot is the base of a new volume; flatten makes it independent', async () => {
    const env = await makeEnv();
    const m = new Model(env);
    await env.service.createPool('p');
    await env.service.createPool('q');
    await m.createVolume('p', 'golden', SIZE);
    await m.write('p', 'golden', 0, 4 * MiB);
    await m.snapshot('p', 'golden', 'base');
    await expectCode(env.service.cloneSnapshot('p', 'golden', 'base', 'p', 'c1'), 'BUSY', /not protected/);
    await env.service.protectSnapshot('p', 'golden', 'base');
    await m.clone('p', 'golden', 'base', 'p', 'c1');
    await m.clone('p', 'golden', 'base', 'q', 'c2');
    await m.write('p', 'golden', 0, 1 * MiB);
    await m.write('p', 'c1', 2 * MiB, 1 * MiB);
    await m.write('q', 'c2', 3 * MiB, 2 * MiB);
    await m.verify();

    const base = (await env.service.snapshotInfo('p', 'golden', 'base')).location!;
    await m.expectChain('q', 'c2', [(await env.service.volumeInfo('q', 'c2')).location!, base]);
    expect((await env.service.snapshotInfo('p', 'golden', 'base')).children).toEqual(['p/c1', 'q/c2']);
    expect((await env.service.volumeInfo('p', 'c1')).parent).toEqual({ pool: 'p', volume: 'golden', snapshot: 'base' });

    // Dependents block: unprotect, snapshot delete (protected), volume delete (clones).
    await expectCode(env.service.unprotectSnapshot('p', 'golden', 'base'), 'BUSY', /clones/);
    await expectCode(env.service.deleteSnapshot('p', 'golden', 'base'), 'BUSY', /protected/);
    await expectCode(env.service.deleteVolume('p', 'golden', { force: true }), 'BUSY', /clones/);

    // A clone's own snapshots, then flatten: its bottom layer gets the parent's data.
    await m.snapshot('p', 'c1', 'cs1');
    await m.write('p', 'c1', 5 * MiB, 1 * MiB);
    const job = await env.service.flattenVolume('p', 'c1');
    expect(job.kind).toBe('flatten');
    const done = await env.service.waitForJob(job.id);
    expect(done.state).toBe('succeeded');
    expect(done.doneBytes).toBe(done.totalBytes);
    await m.verify();
    expect((await env.service.volumeInfo('p', 'c1')).parent).toBeUndefined();
    const cs1 = (await env.service.snapshotInfo('p', 'c1', 'cs1')).location!;
    await m.expectChain('p', 'c1', [(await env.service.volumeInfo('p', 'c1')).location!, cs1]);
    expect((await env.service.snapshotInfo('p', 'golden', 'base')).children).toEqual(['q/c2']);
    await expectCode(env.service.flattenVolume('p', 'c1'), 'BUSY', /not a clone/);

    const job2 = await env.service.flattenVolume('q', 'c2');
    expect((await env.service.waitForJob(job2.id)).state).toBe('succeeded');
    await m.verify();
    await env.service.unprotectSnapshot('p', 'golden', 'base');
    await m.deleteSnapshot('p', 'golden', 'base');
    await m.deleteVolume('p', 'golden');
    await m.verify();
  });

  it('deleting a clone snapshot rebases its child onto the parent volume layer', async () => {
    const env = await makeEnv();
    const m = new Model(env);
    await env.service.createPool('p');
    await m.createVolume('p', 'v', SIZE);
    await m.write('p', 'v', 0, 2 * MiB);
    await m.snapshot('p', 'v', 'gold');
    await env.service.protectSnapshot('p', 'v', 'gold');
    await m.clone('p', 'v', 'gold', 'p', 'c');
    await m.write('p', 'c', 1 * MiB, 2 * MiB);
    await m.snapshot('p', 'c', 'x');
    await m.write('p', 'c', 0, 64 * KiB);
    await m.deleteSnapshot('p', 'c', 'x');
    await m.verify();
    const gold = (await env.service.snapshotInfo('p', 'v', 'gold')).location!;
    await m.expectChain('p', 'c', [(await env.service.volumeInfo('p', 'c')).location!, gold]);
    expect((await env.service.volumeInfo('p', 'c')).parent?.snapshot).toBe('gold');
  });

  it('flatten is cancellable and leaves a valid, partly copied-up clone', async () => {
    const env = await makeEnv();
    const m = new Model(env);
    await env.service.createPool('p');
    const size = 128 * MiB;
    await m.createVolume('p', 'v', size);
    for (let off = 0; off < size; off += 8 * MiB) await m.write('p', 'v', off, 2 * MiB);
    await m.snapshot('p', 'v', 'gold');
    await env.service.protectSnapshot('p', 'v', 'gold');
    await m.clone('p', 'v', 'gold', 'p', 'c');
    const job = await env.service.flattenVolume('p', 'c');
    await expectCode(env.service.createSnapshot('p', 'c', 'during'), 'BUSY', /flatten/);
    // Cancel part-way: once some bytes were copied up.
    for (let i = 0; i < 2000; i++) {
      const info = await env.service.jobInfo(job.id);
      if (info.doneBytes > 0 || info.state !== 'running') break;
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    const cancelled = await env.service.cancelJob(job.id);
    expect(cancelled.state).toBe('cancelled');
    expect(cancelled.error?.code).toBe('CANCELLED');
    expect(cancelled.doneBytes).toBeGreaterThan(0);
    expect(cancelled.doneBytes).toBeLessThan(cancelled.totalBytes);
    expect((await env.service.volumeInfo('p', 'c')).parent?.snapshot).toBe('gold');
    // The copied-up part stays (the clone's layer grew), and the clone reads as before.
    expect((await env.service.du('p', 'c'))[0]!.allocatedBytes).toBeGreaterThan(MiB);
    await m.verify();
    const again = await env.service.flattenVolume('p', 'c');
    expect((await env.service.waitForJob(again.id)).state).toBe('succeeded');
    await m.verify();
    expect((await env.service.listJobs()).map((j) => j.id)).toEqual(expect.arrayContaining([job.id, again.id]));
  });

  it('chain depth: refuse past maxChainDepth with a hint, or flatten a clone first', async () => {
    const env = await makeEnv({ maxChainDepth: 4 });
    const m = new Model(env);
    await env.service.createPool('p');
    await m.createVolume('p', 'v', SIZE);
    await m.write('p', 'v', 0, MiB);
    await m.snapshot('p', 'v', 's1');
    await m.snapshot('p', 'v', 's2');
    await m.write('p', 'v', MiB, MiB);
    await m.snapshot('p', 'v', 's3');
    expect((await env.service.volumeInfo('p', 'v')).chainDepth).toBe(4);
    await expectCode(env.service.createSnapshot('p', 'v', 's4'), 'LIMIT_EXCEEDED', /delete some of its snapshots/);
    await env.service.protectSnapshot('p', 'v', 's3');
    await m.clone('p', 'v', 's3', 'p', 'c');
    await m.write('p', 'c', 2 * MiB, MiB);
    await expectCode(env.service.createSnapshot('p', 'c', 'cs'), 'LIMIT_EXCEEDED', /flatten the volume/);

    await env.restart({ maxChainDepth: 3 });
    await expectCode(env.service.cloneSnapshot('p', 'v', 's3', 'p', 'c2'), 'LIMIT_EXCEEDED', /flatten/);

    await env.restart({ maxChainDepth: 4, chainDepthPolicy: 'flatten' });
    await m.snapshot('p', 'c', 'cs');
    expect((await env.service.volumeInfo('p', 'c')).parent).toBeUndefined();
    expect((await env.service.volumeInfo('p', 'c')).chainDepth).toBe(2);
    await env.restart({ maxChainDepth: 3, chainDepthPolicy: 'flatten' });
    await m.clone('p', 'v', 's3', 'p', 'c2');
    expect((await env.service.volumeInfo('p', 'c2')).chainDepth).toBe(1);
    expect((await env.service.volumeInfo('p', 'c2')).parent).toBeUndefined();
    await m.verify();
  });

  it('snapshot limit, rename, protect and error codes', async () => {
    const env = await makeEnv();
    const m = new Model(env);
    await env.service.createPool('p');
    await m.createVolume('p', 'v', SIZE);
    await env.service.setSnapshotLimit('p', 'v', 2);
    await m.snapshot('p', 'v', 'a');
    await m.snapshot('p', 'v', 'b');
    await expectCode(env.service.createSnapshot('p', 'v', 'c'), 'LIMIT_EXCEEDED', /limit/);
    await expectCode(env.service.setSnapshotLimit('p', 'v', 1), 'BUSY', /more than the limit/);
    expect((await env.service.setSnapshotLimit('p', 'v', undefined)).snapshotLimit).toBeUndefined();
    await m.snapshot('p', 'v', 'c');

    const renamed = await env.service.renameSnapshot('p', 'v', 'a', 'first');
    expect(renamed.name).toBe('first');
    m.contents.set('p/v@first', m.expected('p', 'v', 'a'));
    m.contents.delete('p/v@a');
    await expectCode(env.service.renameSnapshot('p', 'v', 'b', 'c'), 'ALREADY_EXISTS');
    await expectCode(env.service.snapshotInfo('p', 'v', 'a'), 'NOT_FOUND');
    expect((await env.service.protectSnapshot('p', 'v', 'b')).protected).toBe(true);
    expect((await env.service.unprotectSnapshot('p', 'v', 'b')).protected).toBe(false);
    await expectCode(env.service.deleteVolume('p', 'v'), 'BUSY', /snapshot/);
    await env.service.protectSnapshot('p', 'v', 'b');
    await m.verify();
    await m.deleteVolume('p', 'v', true);
    await m.verify();
  });

  it('copy: a job makes a full, independent, sparse copy of the live volume', async () => {
    const env = await makeEnv();
    const m = new Model(env);
    await env.service.createPool('p');
    await env.service.createPool('q');
    await m.createVolume('p', 'v', 32 * MiB);
    await m.write('p', 'v', 0, 2 * MiB);
    await m.snapshot('p', 'v', 's');
    await m.write('p', 'v', 20 * MiB, 1 * MiB);
    const job = await env.service.copyVolume('p', 'v', 'q', 'copy');
    const done = await env.service.waitForJob(job.id);
    expect(done.state, JSON.stringify(done.error)).toBe('succeeded');
    expect(done.totalBytes).toBe(3 * MiB);
    m.contents.set('q/copy', m.expected('p', 'v').slice());
    await m.verify();
    const info = await env.service.volumeInfo('q', 'copy');
    expect(info.chainDepth).toBe(1);
    expect(info.allocatedBytes).toBeLessThan(4 * MiB);
    await expectCode(env.service.copyVolume('p', 'v', 'q', 'copy'), 'ALREADY_EXISTS');
    await expectCode(env.service.copyVolume('p', 'v', 'nopool', 'x'), 'NOT_FOUND');
    await m.deleteVolume('p', 'v', true);
    await m.verify();
  });

  it('all files live flat in the pool folder with relative backing names', async () => {
    const env = await makeEnv();
    const m = new Model(env);
    await env.service.createPool('p');
    await m.createVolume('p', 'v', SIZE);
    await m.snapshot('p', 'v', 's');
    const info = await env.service.volumeInfo('p', 'v');
    expect(path.dirname(info.location!)).toBe(path.join(env.dir, 'pools', 'p'));
    const { Qcow2Image } = await import('../../formats/qcow2/index.js');
    const { LocalHostFile } = await import('../../src/store/local-file.js');
    const image = await Qcow2Image.open(await LocalHostFile.open(info.location!, { readOnly: true }), { readOnly: true, ignoreBacking: true });
    expect(image.info().backingFile).toBe(path.basename((await env.service.snapshotInfo('p', 'v', 's')).location!));
    expect(image.info().backingFormat).toBe('qcow2');
    await image.close();
    expectBytes(await readVolume(env, 'p', 'v'), new Uint8Array(SIZE), 'empty volume');
  });
});
