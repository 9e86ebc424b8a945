/**
 * The daemon with a full pool and a vhost-user guest (the TypeScript front-end of test/support):
 * the guest's writes wait instead of failing, and the operator sees it: a warning in the log
 * naming the volume, its pool and the fixes, the count in GET /v1/exports/{id}, the WAITING column
 * of `strata volume exports`, `volume info` and strata_export_requests_waiting_for_space in
 * /metrics; once space is freed the writes complete with the guest's data and the log says so.
 * The attach's policy (--on-no-space) is shown, and refused for NBD (the NBD client decides).
 * The pool is full for real: the data folder is on a small tmpfs (root only; skipped where it
 * cannot be mounted).
 */
import { rmSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { requireTool } from '../support/tools.js';
import { VhostUserFrontend } from '../vhost-user/frontend.js';
import { useFullDiskDaemon } from './full-disk-daemon.js';
import { assertBuilt, type Daemon } from './harness.js';
import { fillUp } from '../support/fill-filesystem.js';

assertBuilt();

const TMPFS_BYTES = 24 * 1024 * 1024;
const CHUNK_BYTES = 128 * 1024;

interface ExportJson {
  id: string;
  onNoSpace: string | null;
  waitingForSpace: number;
}

function pattern(seed: number): Uint8Array {
  const b = new Uint8Array(CHUNK_BYTES);
  for (let i = 0; i < b.length; i++) b[i] = (seed * 13 + i * 5 + (i >> 10)) & 0xff;
  return b;
}

/** The WAITING cell of an export's row in `volume exports`. */
function waitingCell(table: string, id: string): string | undefined {
  const lines = table.split('\n');
  const header = lines.find((l) => l.startsWith('ID '));
  const row = lines.find((l) => l.startsWith(`${id} `));
  if (header === undefined || row === undefined) return undefined;
  return row.slice(header.indexOf('WAITING')).split(/\s+/)[0];
}

describe.skipIf(!requireTool('mount', 'umount'))('vhost-user guest writing into a full pool', () => {
  const disk = useFullDiskDaemon(TMPFS_BYTES);
  let d: Daemon | undefined;
  let fe: VhostUserFrontend | undefined;

  // Registered after the daemon's cleanup, so it runs before it (after-hooks run last first).
  afterAll(() => fe?.close());

  it('writes wait, the operator sees them in the log, REST, CLI and /metrics, and they complete once space is freed', async (ctx) => {
    d = await disk.start(ctx);
    d.cliOk(['volume', 'create', 'full', '64M']);
    const socketPath = path.join(disk.outside, 'full.sock');
    const exp = d.json<ExportJson>(['volume', 'attach', 'full', '--vhost-user', socketPath]);
    expect(exp).toMatchObject({ onNoSpace: 'wait', waitingForSpace: 0 });
    fe = await VhostUserFrontend.connect(socketPath, { inflight: true, maxRequestBytes: CHUNK_BYTES });
    await fe.write(0, pattern(1));
    await fe.flush();
    const filler = path.join(disk.mnt, 'filler');
    fillUp(filler);

    const sectors = [(16 << 20) / 512, (40 << 20) / 512];
    let settled = 0;
    const writes = sectors.map((s, i) => fe!.write(s, pattern(10 + i)).finally(() => settled++));
    const waiting = async (): Promise<number> => ((await (await d!.api('GET', `/v1/exports/${exp.id}`)).json()) as ExportJson).waitingForSpace;
    await expect.poll(waiting, { timeout: 30_000 }).toBe(2);
    expect(await fe.read(0, CHUNK_BYTES)).toEqual(pattern(1));
    expect(settled).toBe(0);

    expect(waitingCell(d.cliOk(['volume', 'exports']).stdout, exp.id)).toBe('2');
    expect(d.cliOk(['volume', 'info', 'full']).stdout).toMatch(new RegExp(`vhost-user ${exp.id}: 1 client since \\S+, 2 requests waiting for space \\(the pool is full\\)`));
    const metrics = await (await d.api('GET', '/metrics')).text();
    expect(metrics).toMatch(/# TYPE strata_export_requests_waiting_for_space gauge/);
    expect(metrics).toMatch(new RegExp(`^strata_export_requests_waiting_for_space\\{export="${exp.id}",type="vhost-user",target="default/full"\\} 2$`, 'm'));
    const warnings = () => d!.logs().split('\n').filter((l) => /no space for the guest's writes/.test(l));
    await expect.poll(() => warnings().length, { timeout: 15_000 }).toBe(1);
    expect(warnings()[0]).toMatch(/WARN/);
    expect(warnings()[0]).toMatch(/volume 'default\/full': no space for the guest's writes \(NO_SPACE: .*; \d request\(s\) wait/);
    expect(warnings()[0]).toMatch(/pool 'default', 'strata pool gc default'/);

    rmSync(filler);
    await Promise.all(writes);
    for (const [i, s] of sectors.entries()) expect(await fe.read(s, CHUNK_BYTES)).toEqual(pattern(10 + i));
    expect(await waiting()).toBe(0);
    await expect.poll(() => /the guest's writes resumed after waiting/.test(d!.logs()), { timeout: 15_000 }).toBe(true);
  });

  it("--on-no-space error is the attach's policy; NBD exports have none (the client gets ENOSPC)", async (ctx) => {
    if (d === undefined) ctx.skip();
    d!.cliOk(['volume', 'create', 'strict', '4M']);
    const exp = d!.json<ExportJson>(['volume', 'attach', 'strict', '--vhost-user', path.join(disk.outside, 'strict.sock'), '--on-no-space', 'error']);
    expect(exp.onNoSpace).toBe('error');
    d!.cliFails(['volume', 'attach', 'strict', '--vhost-user', path.join(disk.outside, 'x.sock'), '--on-no-space', 'pause'], 2, /--on-no-space must be 'wait' or 'error'/);
    const nbd = await d!.api('POST', '/v1/exports', { body: { type: 'nbd', pool: 'default', volume: 'strict', onNoSpace: 'wait' } });
    expect(nbd.status).toBe(400);
    expect(await nbd.text()).toMatch(/onNoSpace is for type 'vhost-user'/);
    const listed = d!.json<ExportJson[]>(['volume', 'exports']);
    expect(listed.find((e) => e.id === exp.id)?.onNoSpace).toBe('error');
    d!.cliOk(['volume', 'detach', 'strict']);
  });
});
