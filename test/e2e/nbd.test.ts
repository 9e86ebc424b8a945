/**
 * NBD exports through the daemon, driven by the CLI and used by the real clients: qemu-img
 * (info/map/compare/convert over nbd:// and nbd+unix://), qemu-io, nbdinfo, nbdcopy and fio.
 * Live exports across snapshot create / delete, read-only snapshot exports, errors, and exports
 * coming back after the daemon is killed with SIGKILL.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTempDir, shmBase } from '../support/tmp.js';
import { qemuImg, qemuIo, qemuIoAsync, requireTool, run, runAsync } from '../support/tools.js';
import { assertBuilt, chainFiles, expectCleanCheck, startDaemon, type Daemon } from './harness.js';

assertBuilt();

const MiB = 1 << 20;
const SIZE = 64 * MiB;

interface ExportJson {
  id: string;
  type: string;
  name: string;
  readOnly: boolean;
  uris: string[];
  snapshot: string | null;
}

describe.skipIf(!requireTool('qemu-img', 'qemu-io', 'nbdinfo', 'nbdcopy', 'fio'))('NBD exports of the daemon', () => {
  let d: Daemon;
  let tmp: { path: string; cleanup: () => void };
  const f = (name: string) => path.join(tmp.path, name);
  const tcp = (name: string) => `nbd://${d.nbdAddress}/${name}`;
  const unix = (name: string) => `nbd+unix:///${name}?socket=${path.join(d.dataDir, 'nbd.sock')}`;

  beforeAll(async () => {
    tmp = makeTempDir(shmBase());
    d = await startDaemon(f('data'));
    expect(d.nbdAddress).toMatch(/^127\.0\.0\.1:\d+$/);
  });
  afterAll(async () => {
    await d?.stop();
    tmp?.cleanup();
  });

  it('serves a volume to qemu-img, qemu-io, nbdinfo and nbdcopy over TCP and the unix socket', () => {
    d.cliOk(['volume', 'create', 'vm1', '64M']);
    const exp = d.json<ExportJson>(['volume', 'export-nbd', 'vm1']);
    expect(exp).toMatchObject({ type: 'nbd', name: 'default/vm1', readOnly: false });
    expect(exp.uris).toEqual([tcp('default/vm1'), unix('default/vm1')]);

    // The same random writes over NBD and into a local raw file.
    const local = f('local.raw');
    writeFileSync(local, Buffer.alloc(0));
    expect(qemuImg(['create', '-f', 'raw', local, String(SIZE)]).code).toBe(0);
    const cmds: string[] = [];
    let seed = 7;
    const rnd = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    for (let i = 0; i < 40; i++) {
      const len = (1 + Math.floor(rnd() * 64)) * 4096;
      const off = Math.floor(rnd() * ((SIZE - len) / 512)) * 512;
      cmds.push('-c', i % 7 === 6 ? `write -z ${off} ${len}` : `write -P 0x${(i + 1).toString(16)} ${off} ${len}`);
    }
    cmds.push('-c', 'flush');
    expect(qemuIo(['-f', 'raw', ...cmds, tcp('default/vm1')]).code).toBe(0);
    expect(qemuIo(['-f', 'raw', ...cmds, local]).code).toBe(0);

    // qemu-img over both transports agrees with the local copy.
    for (const uri of [tcp('default/vm1'), unix('default/vm1')]) {
      const info = JSON.parse(qemuImg(['info', '--output=json', '-f', 'raw', uri]).stdout) as { 'virtual-size': number };
      expect(info['virtual-size']).toBe(SIZE);
      const cmp = qemuImg(['compare', '-f', 'raw', '-F', 'raw', uri, local]);
      expect(cmp.code, cmp.stdout + cmp.stderr).toBe(0);
    }
    // nbdcopy: byte for byte.
    const copy = f('copy.raw');
    const r = run('nbdcopy', [unix('default/vm1'), copy]);
    expect(r.code, r.stderr).toBe(0);
    expect(readFileSync(copy).equals(readFileSync(local))).toBe(true);
    // qemu-img convert to qcow2, then compare.
    const converted = f('converted.qcow2');
    expect(qemuImg(['convert', '-f', 'raw', '-O', 'qcow2', tcp('default/vm1'), converted]).code).toBe(0);
    expect(qemuImg(['compare', '-F', 'raw', converted, local]).code).toBe(0);
    expectCleanCheck(converted);
  });

  it('/metrics counts NBD connections and the idle polls that served a queue-depth-1 client', async () => {
    d.cliOk(['volume', 'create', 'metrics1', '16M']);
    d.cliOk(['volume', 'export-nbd', 'metrics1']);
    const value = (text: string, name: string): number => {
      const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
      if (m === null) throw new Error(`no ${name} in /metrics`);
      return Number(m[1]);
    };
    const before = await (await d.api('GET', '/metrics')).text();
    const cmds: string[] = [];
    for (let i = 0; i < 50; i++) cmds.push('-c', `write -P ${i + 1} ${i * 65536} 4k`);
    expect(qemuIo(['-f', 'raw', ...cmds, unix('default/metrics1')]).code).toBe(0);
    const after = await (await d.api('GET', '/metrics')).text();
    expect(after).toMatch(/# TYPE strata_nbd_idle_polls_total counter/);
    expect(value(after, 'strata_nbd_connections')).toBe(0); // qemu-io has disconnected
    // The daemon polls by default: at least the first idle period of the connection polled.
    expect(value(after, 'strata_nbd_idle_polls_total')).toBeGreaterThan(value(before, 'strata_nbd_idle_polls_total'));
    const hits = value(after, 'strata_nbd_idle_poll_hits_total');
    expect(hits).toBeLessThanOrEqual(value(after, 'strata_nbd_idle_polls_total'));
  });

  it('nbdinfo --map and qemu-img map show holes and zeroes where they are', () => {
    d.cliOk(['volume', 'create', 'sparse', '16M']);
    d.cliOk(['volume', 'export-nbd', 'sparse']);
    expect(qemuIo(['-f', 'raw', '-c', 'write -P 0x11 1M 1M', '-c', 'write -P 0x22 8M 64k', '-c', 'write -z 1M 64k', tcp('default/sparse')]).code).toBe(0);
    const map = run('nbdinfo', ['--map', '--json', tcp('default/sparse')]);
    expect(map.code, map.stderr).toBe(0);
    const extents = JSON.parse(map.stdout) as { offset: number; length: number; type: number }[];
    const dataAt = (offset: number) => extents.find((e) => e.offset <= offset && offset < e.offset + e.length)!.type;
    expect(dataAt(0)).toBe(3); // hole, zero
    expect(dataAt(1 * MiB)).toBe(3); // zeroed cluster: reads as zeroes
    expect(dataAt(1 * MiB + 64 * 1024)).toBe(0); // data
    expect(dataAt(8 * MiB)).toBe(0);
    expect(dataAt(12 * MiB)).toBe(3);
    const qmap = JSON.parse(qemuImg(['map', '--output=json', '-f', 'raw', unix('default/sparse')]).stdout) as { start: number; length: number; data: boolean; zero: boolean }[];
    const at = (offset: number) => qmap.find((e) => e.start <= offset && offset < e.start + e.length)!;
    expect(at(1 * MiB + 128 * 1024)).toMatchObject({ data: true, zero: false });
    expect(at(4 * MiB)).toMatchObject({ data: false, zero: true });
  });

  it('fio (ioengine=nbd, verify=crc32c) on a mixed random workload with flushes', async () => {
    d.cliOk(['volume', 'create', 'fio', '64M']);
    d.cliOk(['volume', 'export-nbd', 'fio']);
    const job = f('job.fio');
    writeFileSync(
      job,
      ['[global]', 'ioengine=nbd', `uri=${unix('default/fio')}`, 'size=48M', 'iodepth=16', 'verify=crc32c', 'verify_fatal=1', 'fsync=32', 'randrepeat=1', 'verify_state_save=0',
        '[mixed]', 'rw=randrw', 'rwmixread=40', 'bsrange=4k-128k', 'loops=3', ''].join('\n'),
    );
    const r = await runAsync('fio', ['--output-format=json', job], { cwd: tmp.path, timeoutMs: 90_000 });
    expect(r.code, r.stdout.slice(-2000) + r.stderr).toBe(0);
    const result = JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))) as { jobs: { error: number; write: { io_bytes: number } }[] };
    expect(result.jobs[0]?.error).toBe(0);
    expect(result.jobs[0]?.write.io_bytes).toBeGreaterThan(0);
  });

  it('a snapshot taken while a client writes holds exactly the writes completed before it', async () => {
    d.cliOk(['volume', 'create', 'live', '32M']);
    d.cliOk(['volume', 'export-nbd', 'live']);
    // Phase 1, acknowledged before the snapshot.
    expect(qemuIo(['-f', 'raw', '-c', 'write -P 0xa1 0 4M', tcp('default/live')]).code).toBe(0);
    // A writer running across the snapshot (it writes 0xb2 over 8M..16M in 64 KiB steps).
    const cmds = Array.from({ length: 128 }, (_, i) => ['-c', `write -P 0xb2 ${8 * MiB + i * 65536} 65536`]).flat();
    const writer = qemuIoAsync(['-f', 'raw', ...cmds, tcp('default/live')]);
    d.cliOk(['snap', 'create', 'live@s1']);
    expect((await writer).code).toBe(0);
    // After the snapshot: the live volume changes, the snapshot does not.
    expect(qemuIo(['-f', 'raw', '-c', 'write -P 0xc3 0 1M', tcp('default/live')]).code).toBe(0);
    const snapExp = d.json<ExportJson>(['volume', 'export-nbd', 'live@s1']);
    expect(snapExp).toMatchObject({ readOnly: true, snapshot: 's1', name: 'default/live@s1' });
    const snapUri = tcp('default/live@s1');
    const rs = qemuIo(['-f', 'raw', '-r', '-c', 'read -P 0xa1 0 4M', snapUri]);
    expect(rs.stdout, rs.stderr).not.toMatch(/verification failed|error/i);
    // The writer's blocks in the snapshot: a prefix of 0xb2 blocks, then zeroes (never torn).
    const snapRaw = f('live-s1.raw');
    expect(run('nbdcopy', [snapUri, snapRaw]).code).toBe(0);
    const bytes = readFileSync(snapRaw);
    let seenZero = false;
    for (let i = 0; i < 128; i++) {
      const block = bytes.subarray(8 * MiB + i * 65536, 8 * MiB + (i + 1) * 65536);
      const allB2 = block.every((b) => b === 0xb2);
      const allZero = block.every((b) => b === 0);
      expect(allB2 || allZero, `block ${i} is torn`).toBe(true);
      if (allZero) seenZero = true;
      else expect(seenZero, `block ${i} written after a later block was missing (qemu-io writes in order)`).toBe(false);
    }
    // The live volume has all of it.
    const rl = qemuIo(['-f', 'raw', '-c', 'read -P 0xc3 0 1M', '-c', 'read -P 0xa1 1M 3M', '-c', `read -P 0xb2 ${8 * MiB} ${8 * MiB}`, tcp('default/live')]);
    expect(rl.stdout + rl.stderr).not.toMatch(/verification failed|error/i);
    // Writes to the read-only snapshot export fail.
    const w = qemuIo(['-f', 'raw', '-c', 'write -P 1 0 4k', snapUri]);
    expect(w.code === 0 ? w.stdout + w.stderr : 'failed').toMatch(/failed|read-only|Operation not permitted/i);
    // A second snapshot and deleting the first while exported: the live export keeps its data.
    d.cliOk(['volume', 'unexport-nbd', 'live@s1']);
    d.cliOk(['snap', 'create', 'live@s2']);
    d.cliOk(['snap', 'delete', 'live@s1']);
    const after = qemuIo(['-f', 'raw', '-c', 'read -P 0xc3 0 1M', '-c', 'read -P 0xa1 1M 3M', '-c', `read -P 0xb2 ${8 * MiB} ${8 * MiB}`, tcp('default/live')]);
    expect(after.stdout + after.stderr).not.toMatch(/verification failed|error/i);
    const info = d.json<{ location: string }>(['volume', 'info', 'live']);
    for (const file of chainFiles(info.location)) expectCleanCheck(file);
  });

  it('lists exports in status, refuses what would pull a disk from under a client, and says why', () => {
    d.cliOk(['volume', 'create', 'busy', '8M']);
    const exp = d.json<ExportJson>(['volume', 'export-nbd', 'busy', '--name', 'busy-disk']);
    const status = d.json<{ exports: ExportJson[]; nbd: { listen: string; socket: string } }>(['status']);
    expect(status.nbd.listen).toBe(d.nbdAddress);
    expect(status.exports.map((e) => e.name)).toContain('busy-disk');
    expect(d.cliOk(['status']).stdout).toMatch(/busy-disk/);
    expect(d.cliOk(['volume', 'exports']).stdout).toMatch(new RegExp(`${exp.id}\\s+nbd\\s+default/busy\\s+rw`));
    expect(run('nbdinfo', ['--list', tcp('')]).stdout).toContain('busy-disk');

    d.cliFails(['volume', 'export-nbd', 'busy', '--name', 'busy-disk'], 4, 'already exists');
    d.cliFails(['volume', 'export-nbd', 'nope'], 3, 'nope');
    d.cliFails(['volume', 'export-nbd', 'busy@nosnap'], 3, 'nosnap');
    d.cliFails(['volume', 'export-nbd'], 2, 'missing');
    d.cliFails(['volume', 'delete', 'busy'], 4, 'exported');
    d.cliFails(['volume', 'rename', 'busy', 'other'], 4, 'exported');
    d.cliFails(['volume', 'resize', 'busy', '4M', '--shrink'], 4, 'exported');
    d.cliFails(['volume', 'export', 'busy', f('x.raw')], 4, 'exported');
    // A volume that does not exist is NOT_FOUND, not "not exported" (test/e2e/export-clients.test.ts).
    d.cliFails(['volume', 'unexport-nbd', 'vm-none'], 3, /volume 'default\/vm-none' does not exist \[NOT_FOUND\]/, /strata volume list/);
    d.cliFails(['volume', 'attach', 'busy'], 2, '--vhost-user');
    d.cliFails(['volume', 'attach', 'busy', '--vhost-user', f('v.sock'), '--queues', '99'], 2, 'queues');
    // Growing is fine: the export shows the new size to new connections.
    d.cliOk(['volume', 'resize', 'busy', '16M']);
    const info = JSON.parse(qemuImg(['info', '--output=json', '-f', 'raw', tcp('busy-disk')]).stdout) as { 'virtual-size': number };
    expect(info['virtual-size']).toBe(16 * MiB);
    d.cliOk(['volume', 'unexport-nbd', '--id', exp.id]);
    expect(run('nbdinfo', ['--list', tcp('')]).stdout).not.toContain('busy-disk');
    d.cliOk(['volume', 'delete', 'busy']);
  });

  it('exports come back after the daemon is killed with SIGKILL, with every flushed write', async () => {
    d.cliOk(['volume', 'create', 'persist', '16M']);
    d.cliOk(['volume', 'export-nbd', 'persist']);
    expect(qemuIo(['-f', 'raw', '-c', 'write -P 0x5a 0 2M', '-c', 'flush', tcp('default/persist')]).code).toBe(0);
    await d.kill();
    d = await startDaemon(f('data'));
    expect(d.logs()).toMatch(/exports restored/);
    const r = qemuIo(['-f', 'raw', '-r', '-c', 'read -P 0x5a 0 2M', tcp('default/persist')]);
    expect(r.code).toBe(0);
    expect(r.stdout + r.stderr).not.toMatch(/verification failed|error/i);
  });
});
