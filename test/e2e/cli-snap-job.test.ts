/**
 * `strata snap ...` and `strata job ...` against a running daemon: every subcommand, its output
 * and --json, and its failures with their exit statuses.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requireTool } from '../support/tools.js';
import { makeTempDir, shmBase } from '../support/tmp.js';
import { assertBuilt, diffStream, patternBytes, startDaemon, writeRawImage, type Daemon } from './harness.js';

assertBuilt();

describe.skipIf(!requireTool('qemu-img'))('strata snap / job', () => {
  let d: Daemon;
  let tmp: { path: string; cleanup: () => void };
  const f = (name: string) => path.join(tmp.path, name);

  beforeAll(async () => {
    tmp = makeTempDir(shmBase());
    d = await startDaemon(f('data'));
  });
  afterAll(async () => {
    if (d) expect((await d.stop()).code).toBe(0);
    tmp?.cleanup();
  });

  it('snap create, list, info, rename, rollback, delete, protect, unprotect, limit, clone, children', () => {
    const size = 2 << 20;
    const v1 = writeRawImage(f('v1.raw'), size, [{ offset: 0, data: patternBytes(256 << 10, 31) }]);
    d.cliOk(['pool', 'create', 'other']);
    d.cliOk(['volume', 'import', f('v1.raw'), 'vm']);
    expect(d.cliOk(['snap', 'create', 'vm@one']).stdout).toBe("Snapshot 'default/vm@one' created.\n");
    expect(d.json(['snap', 'create', 'default/vm@two'])).toMatchObject({ pool: 'default', volume: 'vm', name: 'two', sizeBytes: size, protected: false, children: [] });
    d.cliFails(['snap', 'create', 'vm@one'], 4, /snapshot 'default\/vm@one' already exists \[ALREADY_EXISTS\]/);
    d.cliFails(['snap', 'create', 'vm'], 2, /'vm' names no snapshot; expected POOL\/VOLUME@SNAPSHOT/);
    d.cliFails(['snap', 'create', 'vm@'], 2, /'' is not a valid snapshot name/);
    d.cliFails(['snap', 'create', 'gone@s'], 3, /NOT_FOUND/);
    d.cliFails(['snap', 'create'], 2, /missing SNAPSHOT/);

    const list = d.cliOk(['snap', 'list', 'vm']).stdout.split('\n');
    expect(list[0]).toMatch(/^NAME +SIZE +PROTECTED +CLONES +CREATED$/);
    expect(list[1]).toMatch(/^one +2 MiB +no +0 +\d{4}-/);
    expect(list[2]).toMatch(/^two +2 MiB +no +0 +/);
    expect(d.json(['snap', 'list', 'default/vm']).map((s: { name: string }) => s.name)).toEqual(['one', 'two']);
    d.cliFails(['snap', 'list', 'vm@one'], 2, /names a snapshot; expected POOL\/VOLUME/);
    d.cliFails(['snap', 'list', 'gone'], 3, /NOT_FOUND/);

    const info = d.cliOk(['snap', 'info', 'vm@one']).stdout;
    expect(info).toMatch(/^snapshot +default\/vm@one$/m);
    expect(info).toMatch(/^protected +no$/m);
    expect(info).toMatch(/^location +\/.*\.qcow2$/m);
    d.cliFails(['snap', 'info', 'vm@nope'], 3, /NOT_FOUND/);

    expect(d.cliOk(['snap', 'rename', 'vm@two', 'second']).stdout).toBe("Snapshot 'default/vm@two' renamed to 'second'.\n");
    expect(d.json(['snap', 'rename', 'vm@second', 'vm@two']).name).toBe('two');
    d.cliFails(['snap', 'rename', 'vm@two', 'one'], 4, /already exists/);
    d.cliFails(['snap', 'rename', 'vm@two', 'other/vm@x'], 2, /a snapshot stays with its volume/);
    d.cliFails(['snap', 'rename', 'vm@nope', 'x'], 3, /NOT_FOUND/);

    // Change the volume, then roll back to 'one': the change is gone, 'two' still reads its data.
    d.cliOk(['volume', 'import-diff', '-', 'vm'], { input: diffStream(size, null, null, [{ kind: 'd', offset: 0, data: Buffer.alloc(4096, 0x5a) }]) });
    d.cliOk(['volume', 'export', 'vm', f('changed.raw')]);
    expect(readFileSync(f('changed.raw'))[0]).toBe(0x5a);
    expect(d.cliOk(['snap', 'rollback', 'vm@one']).stdout).toBe("Volume 'default/vm' rolled back to snapshot 'one'.\n");
    d.cliOk(['volume', 'export', 'vm', f('rolled.raw')]);
    expect(readFileSync(f('rolled.raw')).equals(v1)).toBe(true);
    expect(d.json(['snap', 'list', 'vm']).length).toBe(2);
    d.cliFails(['snap', 'rollback', 'vm@nope'], 3, /NOT_FOUND/);

    // Protect, clone, children; protected snapshots and snapshots with clones are held.
    expect(d.cliOk(['snap', 'protect', 'vm@one']).stdout).toBe("Snapshot 'default/vm@one' protected.\n");
    d.cliFails(['snap', 'delete', 'vm@one'], 4, /is protected \[BUSY\] \(unprotect it first with 'strata snap unprotect default\/vm@one'\)/);
    d.cliFails(['snap', 'clone', 'vm@two', 'c0'], 4, /not protected, .*\[BUSY\] \(protect it first with 'strata snap protect default\/vm@two'\)/);
    expect(d.cliOk(['snap', 'clone', 'vm@one', 'c1']).stdout).toBe("Snapshot 'default/vm@one' cloned to volume 'default/c1'.\n");
    expect(d.json(['snap', 'clone', 'vm@one', 'other/c2'])).toMatchObject({ pool: 'other', name: 'c2', parent: { pool: 'default', volume: 'vm', snapshot: 'one' } });
    d.cliFails(['snap', 'clone', 'vm@one', 'c1'], 4, /already exists/);
    d.cliFails(['snap', 'clone', 'vm@one', 'nopool/c9'], 3, /pool 'nopool' does not exist/);
    d.cliFails(['snap', 'clone', 'vm@one'], 2, /missing NEWVOLUME/);
    expect(d.cliOk(['snap', 'children', 'vm@one']).stdout.split('\n').filter(Boolean).sort()).toEqual(['default/c1', 'other/c2']);
    expect(d.json(['snap', 'children', 'vm@two'])).toEqual([]);
    expect(d.json(['snap', 'info', 'vm@one']).children.sort()).toEqual(['default/c1', 'other/c2']);
    d.cliFails(['snap', 'unprotect', 'vm@one'], 4, /has clones .*; flatten or delete them first \[BUSY\]/);
    d.cliFails(['volume', 'delete', 'vm', '--now', '--force'], 4, /BUSY/);
    d.cliOk(['volume', 'export', 'c1', f('c1.raw')]);
    expect(readFileSync(f('c1.raw')).equals(v1)).toBe(true);
    d.cliOk(['volume', 'flatten', 'c1']);
    d.cliOk(['volume', 'delete', 'other/c2', '--now']);
    expect(d.json(['snap', 'children', 'vm@one'])).toEqual([]);
    expect(d.cliOk(['snap', 'unprotect', 'vm@one']).stdout).toBe("Snapshot 'default/vm@one' unprotected.\n");
    d.cliOk(['volume', 'export', 'c1', f('c1b.raw')]);
    expect(readFileSync(f('c1b.raw')).equals(v1)).toBe(true);

    // Deleting a snapshot merges it; the volume and the other snapshot read the same.
    expect(d.cliOk(['snap', 'delete', 'vm@one']).stdout).toBe("Snapshot 'default/vm@one' deleted.\n");
    d.cliFails(['snap', 'delete', 'vm@one'], 3, /NOT_FOUND/);
    d.cliOk(['volume', 'export', 'vm', f('after.raw')]);
    expect(readFileSync(f('after.raw')).equals(v1)).toBe(true);

    // Snapshot limit.
    expect(d.cliOk(['snap', 'limit', 'vm', '2']).stdout).toBe("Volume 'default/vm' snapshot limit set to 2.\n");
    d.cliOk(['snap', 'create', 'vm@three']);
    d.cliFails(['snap', 'create', 'vm@four'], 1, /has 2 snapshots, its limit \[LIMIT_EXCEEDED\] \(delete one, or raise the limit with 'strata snap limit default\/vm N'\)/);
    expect(d.cliOk(['volume', 'info', 'vm']).stdout).toMatch(/^snapshots +2 \(limit 2\)$/m);
    expect(d.cliOk(['snap', 'limit', 'vm', 'none']).stdout).toBe("Volume 'default/vm' has no snapshot limit now.\n");
    d.cliOk(['snap', 'create', 'vm@four']);
    d.cliFails(['snap', 'limit', 'vm', 'lots'], 2, /the limit must be a number or 'none'/);
    d.cliFails(['snap', 'limit', 'gone', '3'], 3, /NOT_FOUND/);
  });

  it('job list, info, watch and cancel', () => {
    const size = 96 << 20;
    writeRawImage(f('big.raw'), size, [{ offset: 0, data: patternBytes(64 << 20, 41) }]);
    d.cliOk(['volume', 'import', f('big.raw'), 'big']);
    const copy = d.json(['volume', 'copy', 'big', 'big2', '--no-wait']);
    expect(copy).toMatchObject({ kind: 'copy', target: expect.stringContaining('big') });
    let r = d.cliOk(['job', 'watch', copy.id, '-p']);
    expect(r.stdout).toBe(`Job ${copy.id} (copy ${copy.target}) succeeded.\n`);
    expect(r.stderr).toMatch(/copy \[#+\] 100%/);
    expect(d.json(['job', 'watch', copy.id])).toMatchObject({ id: copy.id, state: 'succeeded' });

    const info = d.cliOk(['job', 'info', copy.id]).stdout;
    expect(info).toMatch(new RegExp(`^job +${copy.id}$`, 'm'));
    expect(info).toMatch(/^state +succeeded$/m);
    expect(info).toMatch(/^progress +100% /m);
    expect(d.json(['job', 'info', copy.id]).doneBytes).toBeGreaterThan(0);
    const table = d.cliOk(['job', 'list']).stdout.split('\n');
    expect(table[0]).toMatch(/^ID +KIND +TARGET +STATE +PROGRESS +CREATED$/);
    expect(table).toContainEqual(expect.stringMatching(new RegExp(`^${copy.id} +copy +\\S+ +succeeded +100% `)));
    expect(d.json(['job', 'list', '--running']).some((j: { id: string }) => j.id === copy.id)).toBe(false);

    // Cancel a copy while it runs (it may win the race and finish: then there was nothing to cancel, 4).
    const second = d.json(['volume', 'copy', 'big', 'big3', '--no-wait']);
    const cancelled = d.cli(['job', 'cancel', second.id, '--json']);
    if (cancelled.code === 0) expect(JSON.parse(cancelled.stdout).state).toBe('cancelled');
    else expect({ code: cancelled.code, stderr: cancelled.stderr }).toEqual({ code: 4, stderr: expect.stringMatching(/succeeded.*nothing to cancel/) });
    r = d.cli(['job', 'watch', second.id]);
    if (r.code === 0) {
      expect(r.stdout).toMatch(/succeeded/);
    } else {
      expect(r.code).toBe(4);
      expect(r.stderr).toMatch(new RegExp(`job ${second.id} was cancelled`));
      // A cancelled copy leaves no volume behind.
      d.cliFails(['volume', 'info', 'big3'], 3, /NOT_FOUND/);
    }
    d.cliFails(['job', 'cancel', copy.id], 4, new RegExp(`job ${copy.id} already succeeded; nothing to cancel`));

    d.cliFails(['job', 'info', 'nope'], 3, /job 'nope'.*NOT_FOUND/);
    d.cliFails(['job', 'watch', 'nope'], 3, /NOT_FOUND/);
    d.cliFails(['job', 'cancel', 'nope'], 3, /NOT_FOUND/);
    d.cliFails(['job', 'info'], 2, /missing JOB/);
    d.cliFails(['job', 'list', 'extra'], 2, /unexpected argument 'extra'/);
  });
});
