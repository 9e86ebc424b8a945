/**
 * The trash through `strata serve` and the CLI: `volume delete` moves a volume to the trash (its
 * name free at once, its data kept), `trash list --json`, `trash restore` (the data compared with
 * qemu-img against a copy taken before the delete), `trash purge`, the daemon's expiry timer (a
 * short `--trash-check-interval-ms` and `--expires-in 2s`, awaited by polling `trash list`) and
 * its catch-up at start-up.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import type { TrashEntryJson } from '../../src/api/rest/schemas.js';
import { qemuImg, requireTool } from '../support/tools.js';
import { assertBuilt, patternBytes, qemuCompare, startDaemon, useDaemon, writeRawImage, type Daemon } from './harness.js';

assertBuilt();

const MiB = 1 << 20;
const DAY_MS = 24 * 3600 * 1000;
const CHECK_INTERVAL_MS = '100';
/** How long the expiry may take to show up in `trash list` on a loaded machine. */
const EXPIRY_DEADLINE_MS = 60_000;

type TrashEntry = TrashEntryJson;

/** Polls `trash list --json` until `done` holds for it (the daemon's timer purges on its own time). */
async function pollTrash(d: Daemon, done: (entries: TrashEntry[]) => boolean): Promise<TrashEntry[]> {
  const deadline = Date.now() + EXPIRY_DEADLINE_MS;
  for (;;) {
    const entries = d.json<TrashEntry[]>(['trash', 'list']);
    if (done(entries)) return entries;
    if (Date.now() > deadline) throw new Error(`the trash did not change as awaited: ${JSON.stringify(entries)}\n${d.logs().slice(-3000)}`);
    await sleep(100);
  }
}

function movedId(stdout: string): string {
  const match = /moved to the trash as ([0-9a-f]+) \(purged after /.exec(stdout);
  if (!match) throw new Error(`unexpected output: ${stdout}`);
  return match[1]!;
}

describe.skipIf(!requireTool('qemu-img'))('the trash through the daemon and the CLI', () => {
  const suite = useDaemon({ args: ['--trash-check-interval-ms', CHECK_INTERVAL_MS] });

  it('delete moves to the trash; the name is free; restore (--name when taken) gives the same bytes', () => {
    const { d } = suite;
    writeRawImage(suite.file('vm.raw'), 8 * MiB, [
      { offset: 0, data: patternBytes(MiB, 1) },
      { offset: 5 * MiB, data: patternBytes(2 * MiB, 2) },
    ]);
    d.cliOk(['volume', 'import', suite.file('vm.raw'), 'vm']);
    d.cliOk(['snap', 'create', 'vm@s1']);
    const info = d.json<{ id: string; location: string }>(['volume', 'info', 'vm']);
    const before = suite.file('before.raw');
    expect(qemuImg(['convert', '-U', '-f', 'qcow2', '-O', 'raw', info.location, before]).code).toBe(0);

    const id = movedId(d.cliOk(['volume', 'delete', 'vm']).stdout);
    expect(id).toBe(info.id);
    const [entry, ...rest] = d.json<TrashEntry[]>(['trash', 'list']);
    expect(rest).toEqual([]);
    expect(entry).toMatchObject({ id, pool: 'default', name: 'vm', sizeBytes: 8 * MiB, snapshotCount: 1 });
    expect(Date.parse(entry!.expiresAt) - Date.parse(entry!.deletedAt)).toBe(7 * DAY_MS);
    expect(d.json(['trash', 'list', 'default'])).toEqual([entry]);
    expect(d.cliOk(['trash', 'list']).stdout).toMatch(new RegExp(`^ID +POOL +NAME +SIZE +SNAPSHOTS +DELETED +EXPIRES\\n${id} +default +vm +8 MiB +1 `));
    expect(existsSync(info.location)).toBe(true);
    expect(d.json(['volume', 'list'])).toEqual([]);
    d.cliFails(['volume', 'info', 'vm'], 3, /NOT_FOUND/);
    d.cliFails(['volume', 'export-nbd', 'vm'], 3, /NOT_FOUND/);
    d.cliFails(['volume', 'delete', 'vm', '--now', '--expires-in', '1d'], 2, /--expires-in goes without --now/);
    d.cliFails(['volume', 'delete', 'x', '--expires-in', 'soon'], 2, /invalid duration 'soon'/);

    d.cliOk(['volume', 'create', 'vm', '1M']);
    d.cliFails(['trash', 'restore', 'default', id], 4, /volume 'default\/vm' already exists/, /\[ALREADY_EXISTS\] \(use --name NEW to restore it under another name\)/);
    d.cliFails(['trash', 'restore', 'default', 'f00'], 3, /holds no volume "f00"/);
    expect(d.cliOk(['trash', 'restore', 'default', id, '--name', 'vm-back']).stdout).toBe("Volume 'default/vm-back' restored from the trash.\n");
    const restored = d.json<{ id: string; location: string; snapshotCount: number }>(['volume', 'info', 'vm-back']);
    expect(restored).toMatchObject({ id, location: info.location, snapshotCount: 1 });
    const compare = qemuCompare(restored.location, before, 'qcow2', 'raw');
    expect(compare.code, compare.stdout + compare.stderr).toBe(0);
    expect(d.json(['trash', 'list'])).toEqual([]);
  });

  it('purge: refused naming the clones while a snapshot has them; by id, and the whole pool', () => {
    const { d } = suite;
    d.cliOk(['volume', 'create', 'golden', '4M']);
    d.cliOk(['snap', 'create', 'golden@base']);
    d.cliOk(['snap', 'protect', 'golden@base']);
    d.cliOk(['snap', 'clone', 'golden@base', 'child']);
    const golden = movedId(d.cliOk(['volume', 'delete', 'golden']).stdout);
    d.cliOk(['volume', 'export', 'child', suite.file('child.raw')]); // the clone still reads
    d.cliFails(['trash', 'purge', 'default', golden], 4, /volume 'default\/golden' \(in the trash as [0-9a-f]+\) has clones \(default\/child\); flatten or delete them first \[BUSY\]/);
    d.cliFails(['trash', 'purge', 'default'], 4, /default\/child/);
    d.cliOk(['volume', 'delete', 'child', '--now']);
    d.cliOk(['volume', 'create', 'spare', '1M']);
    const spare = movedId(d.cliOk(['volume', 'delete', 'spare', '--expires-in', '1h']).stdout);
    expect(d.cliOk(['trash', 'purge', 'default', golden]).stdout).toBe(`Volume ${golden} purged from the trash of pool 'default'.\n`);
    expect(d.json<TrashEntry[]>(['trash', 'purge', 'default', '--expired'])).toEqual([]);
    expect(d.json<TrashEntry[]>(['trash', 'purge', 'default']).map((e) => e.id)).toEqual([spare]);
    expect(d.json(['trash', 'list'])).toEqual([]);
  });

  it('REST: the trash routes take no body or a checked one; a taken name names the field', async () => {
    const { d } = suite;
    const V = '/v1/pools/default/volumes';
    d.cliOk(['volume', 'create', 'rest', '1M']);
    expect((await d.api('POST', `${V}/rest/trash`, { body: { expiresIn: 5 } })).status).toBe(400);
    const entry = await d.apiJson<TrashEntry>('POST', `${V}/rest/trash`, undefined, 200);
    expect(Date.parse(entry.expiresAt) - Date.parse(entry.deletedAt)).toBe(7 * DAY_MS);
    expect(await d.apiJson('GET', '/v1/pools/default/trash')).toEqual([entry]);
    d.cliOk(['volume', 'create', 'rest', '1M']);
    const res = await d.api('POST', `/v1/pools/default/trash/${entry.id}/restore`, { body: {} });
    expect(res.status).toBe(409);
    expect(((await res.json()) as { error: { hint: string } }).error.hint).toBe('use {"name": "NEW"} to restore it under another name');
    expect((await d.api('DELETE', `/v1/pools/default/trash/${entry.id}`)).status).toBe(204);
    expect((await d.api('DELETE', `/v1/pools/default/trash/${entry.id}`)).status).toBe(404);
    expect((await d.api('POST', '/v1/pools/nopool/trash/purge', { body: {} })).status).toBe(404);
  });

  it('the daemon purges a volume when its time is up, and logs it', async () => {
    const { d } = suite;
    d.cliOk(['volume', 'create', 'brief', '2M']);
    const location = d.json<{ location: string }>(['volume', 'info', 'brief']).location;
    const id = movedId(d.cliOk(['volume', 'delete', 'brief', '--expires-in', '2s']).stdout);
    const [entry] = d.json<TrashEntry[]>(['trash', 'list']);
    expect(Date.parse(entry!.expiresAt) - Date.parse(entry!.deletedAt)).toBe(2000);
    await pollTrash(d, (entries) => !entries.some((e) => e.id === id));
    expect(existsSync(location)).toBe(false);
    expect(d.logs()).toMatch(new RegExp(`purged an expired volume from the trash.*${id}|${id}.*purged an expired volume from the trash`));
  });

  it('what expired while the daemon was down is purged at start-up, before it listens', async () => {
    const dataDir = suite.d.dataDir;
    await suite.d.stop();
    // A check interval of an hour: only the start-up catch-up can purge within this test.
    const hourly = ['--trash-check-interval-ms', String(3600 * 1000)];
    suite.d = await startDaemon(dataDir, { args: hourly });
    const d = suite.d;
    d.cliOk(['volume', 'create', 'late', '2M']);
    const location = d.json<{ location: string }>(['volume', 'info', 'late']).location;
    const id = movedId(d.cliOk(['volume', 'delete', 'late', '--expires-in', '0s']).stdout);
    expect(d.json<TrashEntry[]>(['trash', 'list']).map((e) => e.id)).toEqual([id]);
    await d.stop();
    suite.d = await startDaemon(dataDir, { args: hourly });
    expect(suite.d.json(['trash', 'list'])).toEqual([]);
    expect(existsSync(location)).toBe(false);
    expect(path.basename(location)).toMatch(/\.qcow2$/);
  });
});
