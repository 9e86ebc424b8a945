/** strata img rebase and commit, and backing-chain handling, checked against qemu-img. */
import { mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { LocalHostFile } from '../../src/store/local-file.js';
import { Qcow2Image } from '../../formats/qcow2/index.js';
import { requireTool } from '../support/tools.js';
import { tempDir } from '../support/tmp.js';
import { assertBuilt, img, imgOk, q, qOk, qemuJson, qioCmds } from './helpers.js';

type Info = Record<string, unknown>;
type MapEntry = { depth: number; data: boolean };

function rawOf(dir: string, image: string, out: string): Buffer {
  qOk(dir, ['convert', '-O', 'raw', image, out]);
  return readFileSync(path.join(dir, out));
}

/** b0 <- b1 <- top, each layer writing something. */
function makeChain(dir: string): void {
  qOk(dir, ['create', '-q', '-f', 'qcow2', 'b0.qcow2', '4M']);
  qioCmds(dir, 'b0.qcow2', ['write -P 1 0 1M', 'write -P 7 3M 64k']);
  qOk(dir, ['create', '-q', '-f', 'qcow2', '-b', 'b0.qcow2', '-F', 'qcow2', 'b1.qcow2']);
  qioCmds(dir, 'b1.qcow2', ['write -P 2 512k 1M', 'write -z 2M 64k', 'write -z 3M 4k']);
  qOk(dir, ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', '-b', 'b1.qcow2', '-F', 'qcow2', 'top.qcow2']);
  qioCmds(dir, 'top.qcow2', ['write -P 3 1M 64k', 'write -P 4 6k 2k']);
}

describe.skipIf(!requireTool('qemu-img', 'qemu-io'))('strata img rebase against qemu-img', () => {
  beforeAll(assertBuilt);

  it('keeps the guest contents when changing the backing file (safe mode)', () => {
    const dir = tempDir();
    makeChain(dir);
    const before = rawOf(dir, 'top.qcow2', 'before.raw');
    imgOk(dir, ['rebase', '-b', 'b0.qcow2', '-F', 'qcow2', 'top.qcow2']);
    const info = qemuJson<Info>(dir, ['info', '--output=json', 'top.qcow2']);
    expect(info['backing-filename']).toBe('b0.qcow2');
    expect(info['backing-filename-format']).toBe('qcow2');
    expect(rawOf(dir, 'top.qcow2', 'after.raw').equals(before)).toBe(true);
    expect(qOk(dir, ['check', 'top.qcow2']).stdout).toMatch(/No errors were found/);
  });

  it("removes the backing file with -b '' after copying what it supplied", () => {
    const dir = tempDir();
    makeChain(dir);
    const before = rawOf(dir, 'top.qcow2', 'before.raw');
    imgOk(dir, ['rebase', '-b', '', 'top.qcow2']);
    const info = qemuJson<Info>(dir, ['info', '--output=json', 'top.qcow2']);
    expect(info).not.toHaveProperty('backing-filename');
    expect(rawOf(dir, 'top.qcow2', 'after.raw').equals(before)).toBe(true);
    expect(qemuJson<MapEntry[]>(dir, ['map', '--output=json', 'top.qcow2']).every((e) => e.depth === 0)).toBe(true);
  });

  it('only rewrites the header with -u, resolving the name relative to the image', () => {
    const dir = tempDir();
    mkdirSync(path.join(dir, 'sub'));
    qOk(dir, ['create', '-q', '-f', 'qcow2', 'base.qcow2', '1M']);
    qOk(dir, ['create', '-q', '-f', 'qcow2', 'sub/top.qcow2', '1M']);
    imgOk(dir, ['rebase', '-u', '-b', '../base.qcow2', 'sub/top.qcow2']);
    const info = qemuJson<Info>(dir, ['info', '--output=json', 'sub/top.qcow2']);
    expect(info['backing-filename']).toBe('../base.qcow2');
    expect(info['backing-filename-format']).toBe('qcow2');
    expect(info['full-backing-filename']).toBe('sub/../base.qcow2');
    expect(img(dir, ['rebase', 'sub/top.qcow2']).code).toBe(1);
  });
});

describe.skipIf(!requireTool('qemu-img', 'qemu-io'))('strata img commit against qemu-img', () => {
  beforeAll(assertBuilt);

  it('commits into the backing file and empties the top, as qemu-img commit', () => {
    const dir = tempDir();
    makeChain(dir);
    const before = rawOf(dir, 'top.qcow2', 'before.raw');
    expect(imgOk(dir, ['commit', 'top.qcow2']).stdout).toBe('Image committed.\n');
    // b1 now holds everything top held; top reads through to it.
    expect(rawOf(dir, 'b1.qcow2', 'b1.raw').equals(before)).toBe(true);
    expect(rawOf(dir, 'top.qcow2', 'top.raw').equals(before)).toBe(true);
    const map = qemuJson<MapEntry[]>(dir, ['map', '--output=json', 'top.qcow2']);
    expect(map.some((e) => e.depth === 0 && e.data)).toBe(false);
    const info = qemuJson<Info>(dir, ['info', '--output=json', 'top.qcow2']);
    expect(info['cluster-size']).toBe(4096);
    expect(info['backing-filename']).toBe('b1.qcow2');
    for (const f of ['top.qcow2', 'b1.qcow2', 'b0.qcow2']) expect(qOk(dir, ['check', f]).stdout).toMatch(/No errors/);
  });

  it('keeps the top with -d, and commits through intermediate layers with -b', () => {
    const dir = tempDir();
    makeChain(dir);
    const before = rawOf(dir, 'top.qcow2', 'before.raw');
    imgOk(dir, ['commit', '-d', '-b', 'b0.qcow2', 'top.qcow2']);
    expect(rawOf(dir, 'b0.qcow2', 'b0.raw').equals(before)).toBe(true);
    expect(rawOf(dir, 'top.qcow2', 'top.raw').equals(before)).toBe(true);
    const map = qemuJson<MapEntry[]>(dir, ['map', '--output=json', 'top.qcow2']);
    expect(map.some((e) => e.depth === 0 && e.data)).toBe(true);
    expect(qOk(dir, ['check', 'b0.qcow2']).stdout).toMatch(/No errors/);
    const notInChain = img(dir, ['commit', '-b', 'before.raw', 'top.qcow2']);
    expect(notInChain.code).toBe(1);
    expect(notInChain.stderr).toMatch(/not in the backing chain/);
    expect(img(dir, ['commit', 'b0.qcow2']).code).toBe(1);
  });
});

describe.skipIf(!requireTool('qemu-img', 'qemu-io'))('backing chains', () => {
  beforeAll(assertBuilt);

  it('stops chains deeper than 64 images with LIMIT_EXCEEDED, and loops', () => {
    const dir = tempDir();
    qOk(dir, ['create', '-q', '-f', 'qcow2', 'l0.qcow2', '1M']);
    for (let i = 1; i <= 64; i++) {
      qOk(dir, ['create', '-q', '-f', 'qcow2', '-u', '-b', `l${i - 1}.qcow2`, '-F', 'qcow2', `l${i}.qcow2`, '1M']);
    }
    // 64 images (l63 down to l0) open; 65 do not.
    expect(img(dir, ['io', '-c', 'read 0 4k', 'l63.qcow2']).code).toBe(0);
    const deep = img(dir, ['io', '-c', 'read 0 4k', 'l64.qcow2']);
    expect(deep.code).toBe(1);
    expect(deep.stderr).toMatch(/^strata: .*deeper than 64 images.*\[LIMIT_EXCEEDED\] \(.+\)\n$/);
    // info does not open the chain, so it still works.
    expect(imgOk(dir, ['info', 'l64.qcow2']).stdout).toMatch(/backing file: l63\.qcow2/);

    qOk(dir, ['create', '-q', '-f', 'qcow2', '-u', '-b', 'y.qcow2', '-F', 'qcow2', 'x.qcow2', '1M']);
    qOk(dir, ['create', '-q', '-f', 'qcow2', '-u', '-b', 'x.qcow2', '-F', 'qcow2', 'y.qcow2', '1M']);
    const loop = img(dir, ['map', 'x.qcow2']);
    expect(loop.code).toBe(1);
    expect(loop.stderr).toMatch(/loops/);
  });

  it('probes a backing file without a recorded format, and reads through raw backings', async () => {
    const dir = tempDir();
    qOk(dir, ['create', '-q', '-f', 'raw', 'r.raw', '1M']);
    qioCmds(dir, 'r.raw', ['write -P 8 0 64k'], 'raw');
    qOk(dir, ['create', '-q', '-f', 'qcow2', 'child.qcow2', '1M']);
    // qemu-img 7.2 insists on a backing format; older images often lack one.
    const file = await LocalHostFile.open(path.join(dir, 'child.qcow2'));
    const child = await Qcow2Image.open(file, { ignoreBacking: true });
    await child.setBackingFile('r.raw', undefined);
    await child.close();
    expect(q(dir, ['info', '--output=json', 'child.qcow2']).stdout).not.toMatch(/backing-filename-format/);
    const r = img(dir, ['io', '-c', 'read -P 8 0 64k', '-c', 'read -P 0 64k 64k', 'child.qcow2']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
  });
});
