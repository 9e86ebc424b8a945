/**
 * Who is connected to an export, as an operator asks it (`rbd status` for Ceph): `clients` of
 * each export in GET /v1/exports and /v1/exports/{id}, the CLI's `volume exports` table and
 * --json, `strata status`, `volume info`'s exports line and /metrics, going 0 -> 1 -> 0 while a
 * real NBD client (qemu-io, interactive, kept open) and a vhost-user front-end (the TypeScript
 * one of test/support) connect and leave. Also: unexport-nbd / detach of a volume that does not
 * exist is NOT_FOUND naming the volume list, and a read-only export advertises what qemu-nbd
 * --read-only does.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { requireTool, run } from '../support/tools.js';
import { VhostUserFrontend } from '../vhost-user/frontend.js';
import { assertBuilt, useDaemon, type Daemon } from './harness.js';

assertBuilt();

interface ExportJson {
  id: string;
  type: string;
  clients: number;
  connectedSince: string | null;
}

/** GET /v1/exports/{id}'s clients. */
async function clientsOf(d: Daemon, id: string): Promise<number> {
  const res = await d.api('GET', `/v1/exports/${id}`);
  expect(res.status).toBe(200);
  return ((await res.json()) as ExportJson).clients;
}

/** The strata_export_clients sample of one export in /metrics (undefined: no sample). */
async function clientsMetric(d: Daemon, id: string): Promise<number | undefined> {
  const text = await (await d.api('GET', '/metrics')).text();
  const m = new RegExp(`^strata_export_clients\\{export="${id}",[^}]*\\} (\\d+)$`, 'm').exec(text);
  return m === null ? undefined : Number(m[1]);
}

/** The CLIENTS cell of an export's row in a CLI table (`volume exports`, `status`). */
function clientsCell(table: string, id: string): string | undefined {
  const lines = table.split('\n');
  const header = lines.find((l) => l.startsWith('ID '));
  const row = lines.find((l) => l.startsWith(`${id} `));
  if (header === undefined || row === undefined) return undefined;
  const at = header.indexOf('CLIENTS');
  return row.slice(at).split(/\s+/)[0];
}

describe.skipIf(!requireTool('qemu-io', 'nbdinfo'))('export clients', () => {
  const suite = useDaemon();
  const d = () => suite.d;

  it('NBD: clients go 0 -> 1 -> 2 -> 0 as qemu-io processes open and quit, in REST, CLI, volume info and /metrics', async () => {
    d().cliOk(['volume', 'create', 'c1', '4M']);
    const exp = d().json<ExportJson>(['volume', 'export-nbd', 'c1']);
    expect(exp.clients).toBe(0);
    expect(exp.connectedSince).toBeNull();
    expect(await clientsMetric(d(), exp.id)).toBe(0);
    expect(d().cliOk(['volume', 'info', 'c1']).stdout).toMatch(new RegExp(`exports +nbd ${exp.id}: 0 clients\\n`));

    const uri = `nbd+unix:///default/c1?socket=${path.join(d().dataDir, 'nbd.sock')}`;
    // qemu-io opens the export at start and holds the connection until it quits.
    const open = () => {
      const child = spawn('qemu-io', ['-f', 'raw', uri], { stdio: ['pipe', 'ignore', 'ignore'] });
      const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
      return { quit: async () => { child.stdin.end('quit\n'); await exited; } };
    };
    const first = open();
    await expect.poll(() => clientsOf(d(), exp.id), { timeout: 15_000 }).toBe(1);
    const second = open();
    await expect.poll(() => clientsOf(d(), exp.id), { timeout: 15_000 }).toBe(2);
    expect(await clientsMetric(d(), exp.id)).toBe(2);
    expect(clientsCell(d().cliOk(['volume', 'exports']).stdout, exp.id)).toBe('2');
    expect(clientsCell(d().cliOk(['status']).stdout, exp.id)).toBe('2');
    expect(d().json<ExportJson[]>(['volume', 'exports']).find((e) => e.id === exp.id)?.clients).toBe(2);
    expect(d().cliOk(['volume', 'info', 'c1']).stdout).toMatch(new RegExp(`exports +nbd ${exp.id}: 2 clients\\n`));
    const info = d().json<{ exports: ExportJson[] }>(['volume', 'info', 'c1']);
    expect(info.exports.map((e) => [e.id, e.clients])).toEqual([[exp.id, 2]]);

    await first.quit();
    await expect.poll(() => clientsOf(d(), exp.id), { timeout: 15_000 }).toBe(1);
    await second.quit();
    await expect.poll(() => clientsOf(d(), exp.id), { timeout: 15_000 }).toBe(0);
    expect(await clientsMetric(d(), exp.id)).toBe(0);
    d().cliOk(['volume', 'unexport-nbd', 'c1']);
    expect(d().cliOk(['volume', 'info', 'c1']).stdout).toMatch(/exports +none\n/);
  });

  it('vhost-user: clients 0 -> 1 (with connectedSince) -> 0 as a front-end connects and leaves', async () => {
    d().cliOk(['volume', 'create', 'v1', '4M']);
    const socketPath = suite.file('v1.sock');
    const exp = d().json<ExportJson>(['volume', 'attach', 'v1', '--vhost-user', socketPath]);
    expect(exp).toMatchObject({ clients: 0, connectedSince: null });
    const before = Date.now();
    const fe = await VhostUserFrontend.connect(socketPath);
    await expect.poll(() => clientsOf(d(), exp.id), { timeout: 15_000 }).toBe(1);
    const listed = ((await (await d().api('GET', '/v1/exports')).json()) as ExportJson[]).find((e) => e.id === exp.id);
    expect(listed?.clients).toBe(1);
    // connectedSince is the connection's: not before the front-end dialled.
    expect(Date.parse(listed?.connectedSince ?? '')).toBeGreaterThanOrEqual(Math.floor(before / 1000) * 1000);
    expect(await clientsMetric(d(), exp.id)).toBe(1);
    expect(clientsCell(d().cliOk(['volume', 'exports']).stdout, exp.id)).toBe('1');
    expect(d().cliOk(['volume', 'info', 'v1']).stdout).toMatch(new RegExp(`exports +vhost-user ${exp.id}: 1 client since \\S+Z\\n`));
    fe.close();
    await expect.poll(() => clientsOf(d(), exp.id), { timeout: 15_000 }).toBe(0);
    const after = (await (await d().api('GET', `/v1/exports/${exp.id}`)).json()) as ExportJson;
    expect(after.connectedSince).toBeNull();
    d().cliOk(['volume', 'detach', 'v1']);
  });

  it('unexport-nbd and detach of a volume that does not exist say NOT_FOUND and name the volume list', () => {
    d().cliOk(['volume', 'create', 'vm3c', '4M']);
    d().cliFails(['volume', 'unexport-nbd', 'vm3C'], 3, /NOT_FOUND/, /vm3C/, /strata volume list default/);
    d().cliFails(['volume', 'unexport-nbd', 'vm3c@nosuch'], 3, /NOT_FOUND/, /strata snap list default\/vm3c/);
    d().cliFails(['volume', 'detach', 'vm3C'], 3, /NOT_FOUND/, /strata volume list default/);
    // The volume exists and is not exported: that is what is said.
    d().cliFails(['volume', 'unexport-nbd', 'vm3c'], 3, /'vm3c' is not exported over NBD/, /strata volume exports/);
    d().cliFails(['volume', 'detach', 'vm3c'], 3, /is not attached over vhost-user/, /strata volume exports/);
  });

  it("a read-only export offers FLUSH and FUA but not TRIM or WRITE_ZEROES, as qemu-nbd --read-only does", () => {
    d().cliOk(['volume', 'create', 'ro1', '4M']);
    d().cliOk(['volume', 'export-nbd', 'ro1', '--read-only']);
    const r = run('nbdinfo', ['--json', `nbd+unix:///default/ro1?socket=${path.join(d().dataDir, 'nbd.sock')}`]);
    expect(r.code, r.stderr).toBe(0);
    const info = (JSON.parse(r.stdout) as { exports: Record<string, unknown>[] }).exports[0];
    expect(info).toMatchObject({ is_read_only: true, can_flush: true, can_fua: true, can_trim: false, can_zero: false });
  });
});
