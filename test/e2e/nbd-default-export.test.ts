/**
 * The default NBD export: `strata volume export-nbd VOL --name ''` serves VOL to clients that
 * name no export (nbd://host:port, nbd+unix://?socket=..., qemu-nbd's and nbdkit's default), as
 * qemu-img, qemu-io and nbdinfo use it through the real daemon. One default at a time; it is
 * listed (NBD_OPT_LIST, `strata volume exports`, `strata status`) and comes back after a restart.
 */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { qemuImg, qemuIo, requireTool, run } from '../support/tools.js';
import { assertBuilt, startDaemon, useDaemon } from './harness.js';

assertBuilt();

const MiB = 1 << 20;

interface ExportJson {
  id: string;
  name: string | null;
  uris: string[];
}

describe.skipIf(!requireTool('qemu-img', 'qemu-io', 'nbdinfo'))('the default NBD export (empty name)', () => {
  const suite = useDaemon();
  const defaultTcp = () => `nbd://${suite.d.nbdAddress}`;
  const defaultUnix = () => `nbd+unix://?socket=${path.join(suite.d.dataDir, 'nbd.sock')}`;

  it("--name '' serves the volume to clients that name no export; one default at a time", async () => {
    let d = suite.d;
    d.cliOk(['volume', 'create', 'vm1', '32M']);
    d.cliOk(['volume', 'create', 'vm2', '64M']);
    // A named export alone is not what a client naming none gets.
    d.cliOk(['volume', 'export-nbd', 'vm2']);
    expect(qemuImg(['info', defaultTcp()]).code).not.toBe(0);

    const printed = d.cliOk(['volume', 'export-nbd', 'vm1', '--name', '']).stdout;
    expect(printed).toContain('default export');
    expect(printed.split('\n').map((l) => l.trim())).toEqual(expect.arrayContaining([defaultTcp(), defaultUnix()]));
    const exports = d.json<ExportJson[]>(['volume', 'exports']);
    const def = exports.find((e) => e.name === '');
    expect(def?.uris).toEqual([defaultTcp(), defaultUnix()]);
    expect(d.cliOk(['volume', 'exports']).stdout).toMatch(new RegExp(`default/vm1 +rw +\\d+ +- +${defaultTcp()} `));
    expect(d.cliOk(['status']).stdout).toMatch(new RegExp(`default/vm1 +rw +\\d+ +- +${defaultTcp()} `));

    // qemu-img and nbdinfo with no export name, over TCP and the unix socket.
    for (const uri of [defaultTcp(), defaultUnix()]) {
      const info = JSON.parse(qemuImg(['info', '--output=json', uri]).stdout) as { 'virtual-size': number };
      expect(info['virtual-size'], uri).toBe(32 * MiB);
      const r = run('nbdinfo', ['--json', uri]);
      expect(r.code, r.stderr).toBe(0);
      expect((JSON.parse(r.stdout) as { exports: { 'export-name': string; 'export-size': number }[] }).exports[0]).toMatchObject({ 'export-name': '', 'export-size': 32 * MiB });
    }
    const write = qemuIo(['-f', 'raw', '-c', 'write -P 0x61 1M 1M', defaultTcp()]);
    expect(write.code, write.stderr).toBe(0);
    const read = qemuIo(['-f', 'raw', '-c', 'read -P 0x61 1M 1M', defaultUnix()]);
    expect(read.code, read.stderr).toBe(0);
    expect(read.stdout).not.toMatch(/Pattern verification failed/);

    // NBD_OPT_LIST names both.
    const list = run('nbdinfo', ['--list', '--json', defaultTcp()]);
    expect(list.code, list.stderr).toBe(0);
    const names = (JSON.parse(list.stdout) as { exports: { 'export-name': string }[] }).exports.map((e) => e['export-name']).sort();
    expect(names).toEqual(['', 'default/vm2']);

    // A second default is a conflict that names the first.
    d.cliFails(['volume', 'export-nbd', 'vm2', '--read-only', '--name', ''], 4, /default NBD export/, /default\/vm1/, new RegExp(def!.id));

    // It comes back after a restart, like every export.
    await d.kill();
    d = suite.d = await startDaemon(d.dataDir);
    const again = JSON.parse(qemuImg(['info', '--output=json', defaultTcp()]).stdout) as { 'virtual-size': number };
    expect(again['virtual-size']).toBe(32 * MiB);

    // Unexported: clients naming none get nothing again.
    d.cliOk(['volume', 'unexport-nbd', 'vm1']);
    expect(run('nbdinfo', [defaultTcp()]).code).not.toBe(0);
  }, 120_000);
});
