/** strata img snapshot and resize, checked against qemu-img on the same files. */
import { beforeAll, describe, expect, it } from 'vitest';
import { requireTool } from '../support/tools.js';
import { tempDir } from '../support/tmp.js';
import { assertBuilt, img, imgOk, q, qOk, qemuJson, qioCmds } from './helpers.js';

type Snapshot = { id: string; name: string };
type Info = Record<string, unknown> & { snapshots?: Snapshot[] };

describe.skipIf(!requireTool('qemu-img', 'qemu-io'))('strata img snapshot against qemu-img', () => {
  beforeAll(assertBuilt);

  it('lists snapshots exactly as qemu-img snapshot -l does', () => {
    const dir = tempDir();
    qOk(dir, ['create', '-q', '-f', 'qcow2', 'a.qcow2', '16M']);
    expect(imgOk(dir, ['snapshot', '-l', 'a.qcow2']).stdout).toBe('');
    qOk(dir, ['snapshot', '-c', 'first', 'a.qcow2']);
    qioCmds(dir, 'a.qcow2', ['write -P 1 0 1M']);
    qOk(dir, ['snapshot', '-c', 'a-much-longer-snapshot-name', 'a.qcow2']);
    const mine = imgOk(dir, ['snapshot', '-l', 'a.qcow2']).stdout;
    expect(mine).toBe(qOk(dir, ['snapshot', '-l', 'a.qcow2']).stdout);
    expect(mine).toMatch(/^Snapshot list:\nID {8}TAG {15}VM SIZE {16}DATE {5}VM CLOCK {5}ICOUNT\n/);
  });

  it('creates, applies and deletes snapshots that qemu-img and qemu-io see', () => {
    const dir = tempDir();
    qOk(dir, ['create', '-q', '-f', 'qcow2', 'a.qcow2', '16M']);
    qioCmds(dir, 'a.qcow2', ['write -P 1 0 1M']);
    imgOk(dir, ['snapshot', '-c', 'one', 'a.qcow2']);
    qioCmds(dir, 'a.qcow2', ['write -P 2 0 512k', 'write -P 3 4M 64k']);
    imgOk(dir, ['snapshot', '-c', 'two', 'a.qcow2']);
    let info = qemuJson<Info>(dir, ['info', '--output=json', 'a.qcow2']);
    expect(info.snapshots?.map((s) => s.name)).toEqual(['one', 'two']);
    expect(qOk(dir, ['check', 'a.qcow2']).stdout).toMatch(/No errors were found/);

    imgOk(dir, ['snapshot', '-a', 'one', 'a.qcow2']);
    qioCmds(dir, 'a.qcow2', ['read -P 1 0 1M', 'read -P 0 4M 64k']);
    imgOk(dir, ['snapshot', '-a', 'two', 'a.qcow2']);
    qioCmds(dir, 'a.qcow2', ['read -P 2 0 512k', 'read -P 1 512k 512k', 'read -P 3 4M 64k']);

    imgOk(dir, ['snapshot', '-d', 'one', 'a.qcow2']);
    info = qemuJson<Info>(dir, ['info', '--output=json', 'a.qcow2']);
    expect(info.snapshots?.map((s) => s.name)).toEqual(['two']);
    expect(qOk(dir, ['check', 'a.qcow2']).stdout).toMatch(/No errors were found/);

    // And the other way round: qemu-img's snapshots, applied and deleted by strata.
    qOk(dir, ['snapshot', '-c', 'three', 'a.qcow2']);
    qioCmds(dir, 'a.qcow2', ['write -P 4 0 64k']);
    imgOk(dir, ['snapshot', '-a', 'three', 'a.qcow2']);
    qioCmds(dir, 'a.qcow2', ['read -P 2 0 64k']);
    imgOk(dir, ['snapshot', '-d', 'three', 'a.qcow2']);
    expect(qOk(dir, ['snapshot', '-l', 'a.qcow2']).stdout).not.toMatch(/three/);
    expect(qOk(dir, ['check', 'a.qcow2']).stdout).toMatch(/No errors were found/);
  });

  it('reports missing snapshots and bad usage with exit 1', () => {
    const dir = tempDir();
    qOk(dir, ['create', '-q', '-f', 'qcow2', 'a.qcow2', '16M']);
    for (const args of [
      ['snapshot', '-a', 'nope', 'a.qcow2'],
      ['snapshot', '-d', 'nope', 'a.qcow2'],
      ['snapshot', 'a.qcow2'],
      ['snapshot', '-l', '-c', 'x', 'a.qcow2'],
      ['snapshot', '-c', 'x'],
    ]) {
      const r = img(dir, args);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stderr).toMatch(/^strata: .+ \(.+\)\n$/);
    }
    expect(img(dir, ['snapshot', '-a', 'nope', 'a.qcow2']).stderr).toMatch(/\[NOT_FOUND\]/);
  });
});

describe.skipIf(!requireTool('qemu-img', 'qemu-io'))('strata img resize against qemu-img', () => {
  beforeAll(assertBuilt);

  it('grows and (with --shrink) shrinks qcow2 and raw images', () => {
    const dir = tempDir();
    qOk(dir, ['create', '-q', '-f', 'qcow2', 'a.qcow2', '64M']);
    qioCmds(dir, 'a.qcow2', ['write -P 1 0 1M']);
    expect(imgOk(dir, ['resize', 'a.qcow2', '+64M']).stdout).toBe('Image resized.\n');
    expect(qemuJson<Info>(dir, ['info', '--output=json', 'a.qcow2'])['virtual-size']).toBe(128 * 1024 * 1024);
    imgOk(dir, ['resize', 'a.qcow2', '3G']);
    expect(qemuJson<Info>(dir, ['info', '--output=json', 'a.qcow2'])['virtual-size']).toBe(3 * 1024 ** 3);
    const refused = img(dir, ['resize', 'a.qcow2', '-1G']);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/--shrink/);
    imgOk(dir, ['resize', '--shrink', 'a.qcow2', '-1G']);
    imgOk(dir, ['resize', '-q', '--shrink', 'a.qcow2', '2M']);
    expect(qemuJson<Info>(dir, ['info', '--output=json', 'a.qcow2'])['virtual-size']).toBe(2 * 1024 * 1024);
    qioCmds(dir, 'a.qcow2', ['read -P 1 0 1M']);
    expect(qOk(dir, ['check', 'a.qcow2']).stdout).toMatch(/No errors were found/);

    qOk(dir, ['create', '-q', '-f', 'raw', 'r.raw', '1M']);
    imgOk(dir, ['resize', '-f', 'raw', 'r.raw', '+1M']);
    expect(qemuJson<Info>(dir, ['info', '--output=json', '-f', 'raw', 'r.raw'])['virtual-size']).toBe(2 * 1024 * 1024);
    expect(img(dir, ['resize', 'a.qcow2']).code).toBe(1);
    expect(img(dir, ['resize', 'a.qcow2', '12Q']).code).toBe(1);
    expect(q(dir, ['check', 'a.qcow2']).code).toBe(0);
  });
});
