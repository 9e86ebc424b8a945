/**
 * Consistency groups through `strata serve`, the CLI and NBD (docs/groups.md):
 *
 *   - two volumes in two pools, exported over NBD; a client in the test writes numbered records,
 *     each to disk B only after the same record completed on disk A (its NBD reply came back);
 *     20 group snapshots are taken with `strata group snap create` while it runs; each member
 *     snapshot is read back with `strata volume export` and B's last record is never ahead of A's;
 *   - the CLI's refusals name the fix (`group remove`, `group snap delete`), rollback is refused
 *     while a member is exported and rolls both back when not;
 *   - SIGKILL of the daemon while group snapshots are being taken, 4 rounds: after the restart
 *     every group snapshot listed has all its members' snapshots and no member snapshot is left
 *     without its group snapshot.
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { watch, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { GroupSnapshotJson } from '../../src/api/rest/group-schemas.js';
import type { SnapshotJson } from '../../src/api/rest/schemas.js';
import { NbdPipelinedClient } from '../nbd/pipelined-client.js';
import { checkGroupSnapshots, lastRecord, OrderedWriter } from '../support/ordered-records.js';
import { REPO_ROOT, STRATA_BIN, requireTool } from '../support/tools.js';
import { makeTempDir } from '../support/tmp.js';
import { assertBuilt, expectCleanCheck, snapshotContent, startDaemon, type Daemon } from './harness.js';

assertBuilt();

const MiB = 1 << 20;
const DISK_BYTES = 2 * MiB;
const SNAPSHOTS = 20;
const KILL_ROUNDS = 4;

/** `strata ARGS` without blocking this process (the NBD writer keeps going meanwhile). */
async function cliAsync(d: Daemon, args: readonly string[]): Promise<string> {
  const { stdout } = await promisify(execFile)(process.execPath, [STRATA_BIN, ...args], { cwd: REPO_ROOT, env: d.env() as NodeJS.ProcessEnv });
  return stdout;
}

function exportedBytes(d: Daemon, target: string): Buffer {
  const r = d.cliBytes(['volume', 'export', target, '-']);
  if (r.code !== 0) throw new Error(`strata volume export ${target}: ${r.stderr}`);
  return r.stdout;
}

/** Member snapshots and group snapshots agree: each group snapshot's members have it, no member snapshot is left over. */
function expectGroupSnapshotsWhole(d: Daemon, where: string): GroupSnapshotJson[] {
  const groupSnaps = d.json<GroupSnapshotJson[]>(['group', 'snap', 'list', 'g']);
  for (const vol of ['default/a', 'q/b']) {
    const memberSnaps = d.json<SnapshotJson[]>(['snap', 'list', vol]).map((s) => s.name).filter((n) => n.startsWith('group.g.'));
    expect(memberSnaps.sort(), `${where}: ${vol}`).toEqual(groupSnaps.map((s) => `group.g.${s.name}`).sort());
  }
  for (const s of groupSnaps) expect(s.members.map((m) => `${m.pool}/${m.volume}`), `${where}: ${s.name}`).toEqual(['default/a', 'q/b']);
  return groupSnaps;
}

/** A daemon whose volumes may have 20 snapshots and more (maxChainDepth from its config file). */
function useGroupDaemon(): { d: Daemon; args: string[] } {
  const suite = { d: undefined as unknown as Daemon, args: [] as string[] };
  let tmp: { path: string; cleanup: () => void } | undefined;
  beforeAll(async () => {
    tmp = makeTempDir();
    const config = path.join(tmp.path, 'strata.json');
    writeFileSync(config, JSON.stringify({ maxChainDepth: 40 }));
    suite.args = ['--config', config];
    suite.d = await startDaemon(path.join(tmp.path, 'data'), { args: suite.args });
  });
  afterAll(async () => {
    await suite.d?.stop();
    tmp?.cleanup();
  });
  return suite;
}

describe.skipIf(!requireTool('qemu-img'))('consistency groups through the daemon, the CLI and NBD', () => {
  const suite = useGroupDaemon();

  it('20 group snapshots while an NBD client writes A-then-B: B is never ahead of A; refusals name the fix; rollback', async () => {
    const { d } = suite;
    d.cliOk(['pool', 'create', 'q']);
    d.cliOk(['volume', 'create', 'a', '2M']);
    d.cliOk(['volume', 'create', 'q/b', '2M']);
    expect(d.cliOk(['group', 'create', 'g']).stdout).toBe("Group 'g' created.\n");
    d.cliOk(['group', 'add', 'g', 'a']);
    expect(d.cliOk(['group', 'add', 'g', 'q/b']).stdout).toBe("Volume 'q/b' added to group 'g' (2 members).\n");
    expect(d.json<{ members: unknown[] }>(['group', 'info', 'g']).members).toEqual([
      { pool: 'default', volume: 'a', volumeId: expect.any(String) },
      { pool: 'q', volume: 'b', volumeId: expect.any(String) },
    ]);
    d.cliOk(['volume', 'export-nbd', 'a']);
    d.cliOk(['volume', 'export-nbd', 'q/b']);
    const socket = path.join(d.dataDir, 'nbd.sock');
    const a = await NbdPipelinedClient.connect(socket, 'default/a');
    const b = await NbdPipelinedClient.connect(socket, 'q/b');
    const writer = new OrderedWriter((offset, block) => a.write(offset, block), (offset, block) => b.write(offset, block), DISK_BYTES);
    for (let i = 1; i <= SNAPSHOTS; i++) {
      await Promise.race([writer.advanced(3), writer.done]);
      expect(await cliAsync(d, ['group', 'snap', 'create', `g@s${i}`])).toBe(`Group snapshot 'g@s${i}' created (2 members).\n`);
    }
    const written = await writer.stop();
    await a.disconnect();
    await b.disconnect();

    await checkGroupSnapshots(SNAPSHOTS, async (i) => [
      await snapshotContent(d, 'default', 'a', `group.g.s${i}`),
      await snapshotContent(d, 'q', 'b', `group.g.s${i}`),
    ]);
    expect(d.json<GroupSnapshotJson[]>(['group', 'snap', 'list', 'g'])).toHaveLength(SNAPSHOTS);

    // Refusals name the command that fixes them.
    d.cliFails(['snap', 'delete', 'q/b@group.g.s1'], 4, /belongs to group snapshot 'g@s1'/, /strata group snap delete g@s1/);
    d.cliFails(['group', 'snap', 'rollback', 'g@s1'], 4, /exported members \(default\/a, q\/b\)/, /\(stop them with 'strata volume unexport-nbd default\/a' and 'strata volume unexport-nbd q\/b'\)$/m);
    d.cliFails(['group', 'snap', 'create', 'g'], 2, /names no group snapshot/);
    expect(d.cliOk(['group', 'snap', 'create', '--help']).stdout).toMatch(/^Usage: strata group snap create GROUP@SNAPSHOT\n/);
    d.cliFails(['group', 'snap', 'info', 'g@nope'], 3, /does not exist/);

    d.cliOk(['volume', 'unexport-nbd', 'a']);
    d.cliOk(['volume', 'unexport-nbd', 'q/b']);
    expect(lastRecord(exportedBytes(d, 'q/b'))).toBe(written);
    d.cliFails(['volume', 'delete', 'a', '--now', '--force'], 4, /is in group 'g'/, /strata group remove g default\/a/);
    const s5a = exportedBytes(d, 'a@group.g.s5');
    const s5b = exportedBytes(d, 'q/b@group.g.s5');
    expect(d.cliOk(['group', 'snap', 'rollback', 'g@s5']).stdout).toBe("Group 'g' rolled back to 's5' (2 members).\n");
    expect(exportedBytes(d, 'a').equals(s5a)).toBe(true);
    expect(exportedBytes(d, 'q/b').equals(s5b)).toBe(true);
    expect(d.cliOk(['group', 'snap', 'delete', 'g@s1']).stdout).toBe("Group snapshot 'g@s1' deleted.\n");
    for (let i = 2; i <= SNAPSHOTS; i++) await d.apiJson('DELETE', `/v1/groups/g/snapshots/s${i}`, undefined, 204);
    expect(d.json(['snap', 'list', 'a'])).toEqual([]);
    expect(d.cliOk(['group', 'remove', 'g', 'a']).stdout).toBe("Volume 'default/a' removed from group 'g' (1 members).\n");
    d.cliFails(['group', 'delete', 'nope'], 3, /group 'nope' does not exist/);
    d.cliOk(['group', 'add', 'g', 'a']);
  });

  it('SIGKILL while group snapshots are taken: after the restart each one is whole or absent', async () => {
    let d = suite.d;
    d.cliOk(['volume', 'export-nbd', 'a']); // its pause is part of every group snapshot
    let next = 100;
    let rolledBack = 0;
    for (let round = 0; round < KILL_ROUNDS; round++) {
      // Group snapshots back to back; in the (round + 1)th the daemon is killed as soon as a
      // member's new layer file appears in a pool folder: between members, before the one transaction.
      const taken: string[] = [];
      let killed: Promise<unknown> | undefined;
      for (;;) {
        const name = `k${next++}`;
        const last = taken.length === round;
        const watchers = last ? ['default', 'q'].map((pool) => watch(path.join(d.dataDir, 'pools', pool), () => (killed ??= d.kill()))) : [];
        const response = await d.api('POST', '/v1/groups/g/snapshots', { body: { name } }).catch(() => undefined);
        for (const w of watchers) w.close();
        if (response?.status === 201) taken.push(name);
        if (last) break;
      }
      await (killed ?? d.kill()); // the snapshot ended before the watcher fired: killed after it
      d = await startDaemon(d.dataDir, { args: suite.args });
      suite.d = d;
      const where = `round ${round}`;
      rolledBack += Number(/intentsRolledBack=(\d+)/.exec(d.logs().split('\n').filter((l) => l.includes('intentsRolledBack=')).at(-1) ?? '')?.[1] ?? 0);
      const names = expectGroupSnapshotsWhole(d, where).map((s) => s.name);
      for (const name of taken) expect(names, where).toContain(name);
      for (const vol of ['a', 'q/b']) {
        const info = d.json<{ location: string }>(['volume', 'info', vol]);
        expectCleanCheck(info.location);
      }
    }
    expect(d.json<{ snapshot: string | null }[]>(['volume', 'exports']).length).toBe(1); // the export came back
    // The watcher's kill lands between members nearly always (4 of 4 on the shared test machine);
    // a round whose snapshot finished first still checks what it must, but not all of them may.
    expect(rolledBack, 'group snapshots interrupted and rolled back by recovery').toBeGreaterThan(0);
  });
});
