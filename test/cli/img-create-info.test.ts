/** strata img create and info, checked against qemu-img on the same files. */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { requireTool } from '../support/tools.js';
import { tempDir } from '../support/tmp.js';
import { assertBuilt, img, imgOk, qOk, qemuJson, qio, qioCmds, strataJson, without } from './helpers.js';

type Info = Record<string, unknown> & { 'format-specific'?: { type: string; data: Record<string, unknown> } };

describe.skipIf(!requireTool('qemu-img', 'qemu-io'))('strata img create / info against qemu-img', () => {
  beforeAll(assertBuilt);

  it.each([
    [[], { 'cluster-size': 65536, compat: '1.1', 'refcount-bits': 16, 'lazy-refcounts': false, 'extended-l2': false, 'compression-type': 'zlib' }],
    [['-o', 'cluster_size=4k,lazy_refcounts=on'], { 'cluster-size': 4096, 'lazy-refcounts': true }],
    [['-o', 'compat=0.10'], { 'cluster-size': 65536, compat: '0.10', 'refcount-bits': 16 }],
    [['-o', 'refcount_bits=8,extended_l2=on,compression_type=zstd'], { 'refcount-bits': 8, 'extended-l2': true, 'compression-type': 'zstd' }],
    [['-o', 'cluster_size=2M,refcount_bits=64', '-o', 'compat=v3'], { 'cluster-size': 2 * 1024 * 1024, 'refcount-bits': 64, compat: '1.1' }],
    [['-o', 'cluster_size=512,refcount_bits=1'], { 'cluster-size': 512, 'refcount-bits': 1 }],
  ] as const)('create -f qcow2 %j gives what qemu-img info reads back', (options, expected) => {
    const dir = tempDir();
    const out = imgOk(dir, ['create', '-f', 'qcow2', ...options, 'a.qcow2', '100M']);
    expect(out.stdout).toMatch(/^Formatting 'a\.qcow2', fmt=qcow2 cluster_size=\d+ .*size=104857600 .*refcount_bits=\d+\n$/);
    const info = qemuJson<Info>(dir, ['info', '--output=json', 'a.qcow2']);
    expect(info['virtual-size']).toBe(104857600);
    expect(info['format']).toBe('qcow2');
    const data = info['format-specific']?.data ?? {};
    for (const [key, value] of Object.entries(expected)) {
      if (key === 'cluster-size') expect(info['cluster-size']).toBe(value);
      else expect(data[key], key).toBe(value);
    }
    expect(qOk(dir, ['check', 'a.qcow2']).stdout).toMatch(/No errors were found/);
  });

  it('prints the Formatting line exactly as qemu-img create does', () => {
    const dir = tempDir();
    qOk(dir, ['create', '-q', '-f', 'qcow2', 'base.qcow2', '64M']);
    for (const args of [
      ['-f', 'qcow2', 'X', '1G'],
      ['-f', 'qcow2', '-o', 'cluster_size=4k,lazy_refcounts=on,compat=1.1', 'X', '1G'],
      ['-f', 'qcow2', '-o', 'extended_l2=on,compression_type=zstd,refcount_bits=8', 'X', '100M'],
      ['-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'X'],
      ['-f', 'raw', 'X', '1M'],
    ]) {
      const mine = imgOk(dir, ['create', ...args.map((a) => (a === 'X' ? 's.img' : a))]);
      const theirs = qOk(dir, ['create', ...args.map((a) => (a === 'X' ? 's.img' : a))]);
      expect(mine.stdout, args.join(' ')).toBe(theirs.stdout);
    }
  });

  it('defaults the size to the backing file, resolving it relative to the new image', () => {
    const dir = tempDir();
    mkdirSync(path.join(dir, 'sub'));
    qOk(dir, ['create', '-q', '-f', 'qcow2', 'base.qcow2', '3M']);
    imgOk(dir, ['create', '-f', 'qcow2', '-b', '../base.qcow2', 'sub/child.qcow2']);
    const info = qemuJson<Info>(dir, ['info', '--output=json', 'sub/child.qcow2']);
    expect(info['virtual-size']).toBe(3 * 1024 * 1024);
    expect(info['backing-filename']).toBe('../base.qcow2');
    expect(info['backing-filename-format']).toBe('qcow2');
    // -u: the backing file is not opened, so a size is needed and a missing backing is fine.
    imgOk(dir, ['create', '-f', 'qcow2', '-u', '-b', 'missing.qcow2', '-F', 'qcow2', 'u.qcow2', '1M']);
    expect(qemuJson<Info>(dir, ['info', '--output=json', '-U', 'u.qcow2'])['backing-filename']).toBe('missing.qcow2');
    const noSize = img(dir, ['create', '-f', 'qcow2', '-u', '-b', 'missing.qcow2', 'v.qcow2']);
    expect(noSize.code).toBe(1);
    expect(noSize.stderr).toMatch(/^strata: .*size.*\(.+\)\n$/);
  });

  it('info --output=json equals qemu-img info --output=json, except actual-size', () => {
    const dir = tempDir();
    mkdirSync(path.join(dir, 'sub'));
    qOk(dir, ['create', '-q', '-f', 'qcow2', 'base.qcow2', '64M']);
    qioCmds(dir, 'base.qcow2', ['write -P 1 0 1M']);
    qOk(dir, ['snapshot', '-c', 'first', 'base.qcow2']);
    qOk(dir, ['snapshot', '-c', 'second', 'base.qcow2']);
    qOk(dir, ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k,lazy_refcounts=on', '-b', 'base.qcow2', '-F', 'qcow2', 'top.qcow2']);
    qOk(dir, ['create', '-q', '-f', 'qcow2', '-b', '../base.qcow2', '-F', 'qcow2', 'sub/c.qcow2']);
    qOk(dir, ['create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', 'v2.qcow2', '1G']);
    qOk(dir, ['create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on,compression_type=zstd,refcount_bits=8', 'e.qcow2', '100M']);
    qOk(dir, ['create', '-q', '-f', 'raw', 'r.raw', '1M']);
    for (const args of [
      ['base.qcow2'],
      ['top.qcow2'],
      ['sub/c.qcow2'],
      ['v2.qcow2'],
      ['e.qcow2'],
      ['-f', 'raw', 'r.raw'],
      ['--backing-chain', 'top.qcow2'],
      ['--backing-chain', 'sub/c.qcow2'],
      [path.join(dir, 'top.qcow2')],
    ]) {
      const mine = strataJson(dir, ['info', '--output=json', ...args]);
      const theirs = qemuJson(dir, ['info', '--output=json', ...args]);
      expect(without(mine, ['actual-size']), args.join(' ')).toEqual(without(theirs, ['actual-size']));
      // --json is a synonym.
      expect(strataJson(dir, ['info', '--json', ...args])).toEqual(mine);
    }
  });

  it('human info equals qemu-img info, except the disk size line', () => {
    const dir = tempDir();
    mkdirSync(path.join(dir, 'sub'));
    qOk(dir, ['create', '-q', '-f', 'qcow2', 'base.qcow2', '64M']);
    qOk(dir, ['snapshot', '-c', 'snap', 'base.qcow2']);
    qOk(dir, ['create', '-q', '-f', 'qcow2', '-b', '../base.qcow2', '-F', 'qcow2', 'sub/c.qcow2']);
    qOk(dir, ['create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', 'v2.qcow2', '1G']);
    qOk(dir, ['create', '-q', '-f', 'raw', 'r.raw', '1M']);
    const strip = (text: string) => text.split('\n').filter((l) => !l.startsWith('disk size:'));
    for (const args of [['base.qcow2'], ['sub/c.qcow2'], ['v2.qcow2'], ['-f', 'raw', 'r.raw'], ['--backing-chain', 'sub/c.qcow2']]) {
      expect(strip(imgOk(dir, ['info', ...args]).stdout), args.join(' ')).toEqual(strip(qOk(dir, ['info', ...args]).stdout));
    }
  });

  it('reports a dirty image the way qemu-img does', () => {
    const dir = tempDir();
    qOk(dir, ['create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', 'd.qcow2', '1M']);
    // qemu-io aborts after a write with lazy refcounts: the dirty bit stays set.
    qio(dir, ['-c', 'write -P 7 0 64k', '-c', 'abort', 'd.qcow2']);
    const mine = strataJson<Info>(dir, ['info', '--output=json', 'd.qcow2']);
    expect(mine['dirty-flag']).toBe(true);
    expect(without(mine, ['actual-size'])).toEqual(without(qemuJson(dir, ['info', '--output=json', 'd.qcow2']), ['actual-size']));
    expect(imgOk(dir, ['info', 'd.qcow2']).stdout).toMatch(/^cleanly shut down: no$/m);
  });
});
