/** strata img convert and compare, checked against qemu-img on the same files. */
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { requireTool } from '../support/tools.js';
import { tempDir } from '../support/tmp.js';
import { assertBuilt, img, imgOk, q, qOk, qemuJson, qioCmds } from './helpers.js';

type MapEntry = { data: boolean; offset?: number };

/** A chain with data in both layers, zero clusters, a discard and a compressed cluster. */
function makeChain(dir: string): void {
  qOk(dir, ['create', '-q', '-f', 'qcow2', 'base.qcow2', '16M']);
  qioCmds(dir, 'base.qcow2', ['write -P 1 0 2M', 'write -P 2 8M 100k', 'write -z 12M 64k']);
  qOk(dir, ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', '-b', 'base.qcow2', '-F', 'qcow2', 'top.qcow2']);
  qioCmds(dir, 'top.qcow2', ['write -P 3 64k 12k', 'write -z 1M 64k', 'discard 8M 4k', 'write -c -P 4 5M 4k', 'write -P 5 15M 1M']);
}

describe.skipIf(!requireTool('qemu-img', 'qemu-io'))('strata img convert against qemu-img', () => {
  beforeAll(assertBuilt);

  it('converts a chain to raw with the same bytes as qemu-img convert, staying sparse', () => {
    const dir = tempDir();
    makeChain(dir);
    imgOk(dir, ['convert', '-O', 'raw', 'top.qcow2', 'mine.raw']);
    qOk(dir, ['convert', '-O', 'raw', 'top.qcow2', 'theirs.raw']);
    expect(readFileSync(path.join(dir, 'mine.raw')).equals(readFileSync(path.join(dir, 'theirs.raw')))).toBe(true);
    // Sparse: no more than a little over what qemu-img allocates (it also skips zero blocks).
    const mine = statSync(path.join(dir, 'mine.raw')).blocks * 512;
    const theirs = statSync(path.join(dir, 'theirs.raw')).blocks * 512;
    expect(mine).toBeLessThanOrEqual(theirs + 64 * 1024);
    expect(mine).toBeLessThan(8 * 1024 * 1024);
  });

  it('converts to qcow2 (plain and -c compressed) with identical contents and clean metadata', () => {
    const dir = tempDir();
    makeChain(dir);
    const plain = imgOk(dir, ['convert', '-O', 'qcow2', '-o', 'cluster_size=16k', 'top.qcow2', 'plain.qcow2']);
    expect(plain.stdout).toBe('');
    expect(qOk(dir, ['compare', 'top.qcow2', 'plain.qcow2']).stdout).toBe('Images are identical.\n');
    expect(qOk(dir, ['check', 'plain.qcow2']).stdout).toMatch(/No errors were found/);
    expect(qemuJson<Record<string, unknown>>(dir, ['info', '--output=json', 'plain.qcow2'])['cluster-size']).toBe(16384);

    const progress = imgOk(dir, ['convert', '-c', '-p', '-O', 'qcow2', 'top.qcow2', 'packed.qcow2']);
    expect(progress.stderr).toMatch(/^ {4}\(0\.00\/100%\)\r.* {4}\(100\.00\/100%\)\r\n$/s);
    expect(qOk(dir, ['compare', 'top.qcow2', 'packed.qcow2']).code).toBe(0);
    const check = qOk(dir, ['check', 'packed.qcow2']).stdout;
    expect(check).toMatch(/No errors were found/);
    expect(check).toMatch(/[1-9][\d.]*% compressed clusters/);
    // Data extents of a compressed image carry no host offset.
    const map = qemuJson<MapEntry[]>(dir, ['map', '--output=json', 'packed.qcow2']);
    expect(map.filter((e) => e.data).every((e) => e.offset === undefined)).toBe(true);
  });

  it('converts qcow2 to qcow2 to raw and back, and honours -n and -S 0', () => {
    const dir = tempDir();
    makeChain(dir);
    imgOk(dir, ['convert', '-O', 'raw', 'top.qcow2', 'a.raw']);
    imgOk(dir, ['convert', '-f', 'raw', '-O', 'qcow2', 'a.raw', 'b.qcow2']);
    expect(q(dir, ['compare', 'top.qcow2', 'b.qcow2']).code).toBe(0);
    // -n: into an existing image whose old contents must be overwritten, zeroes included.
    qOk(dir, ['create', '-q', '-f', 'qcow2', 'existing.qcow2', '16M']);
    qioCmds(dir, 'existing.qcow2', ['write -P 9 0 16M']);
    imgOk(dir, ['convert', '-n', '-O', 'qcow2', 'top.qcow2', 'existing.qcow2']);
    expect(q(dir, ['compare', 'top.qcow2', 'existing.qcow2']).code).toBe(0);
    // -S 0: fully allocated output.
    imgOk(dir, ['convert', '-S', '0', '-O', 'raw', 'top.qcow2', 'full.raw']);
    expect(statSync(path.join(dir, 'full.raw')).blocks * 512).toBeGreaterThanOrEqual(16 * 1024 * 1024);
    expect(q(dir, ['compare', '-f', 'raw', 'full.raw', 'top.qcow2']).code).toBe(0);
  });

  it('rejects bad convert arguments with exit 1', () => {
    const dir = tempDir();
    makeChain(dir);
    for (const args of [
      ['convert', 'top.qcow2'],
      ['convert', '-c', '-O', 'raw', 'top.qcow2', 'x.raw'],
      ['convert', '-O', 'vmdk', 'top.qcow2', 'x.vmdk'],
      ['convert', '-S', '100', 'top.qcow2', 'x.raw'],
      ['convert', 'missing.qcow2', 'x.raw'],
    ]) {
      const r = img(dir, args);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stderr).toMatch(/^strata: .+ \(.+\)\n$/);
    }
  });
});

describe.skipIf(!requireTool('qemu-img', 'qemu-io'))('strata img compare against qemu-img', () => {
  beforeAll(assertBuilt);

  it('gives the same exit status and message as qemu-img compare', () => {
    const dir = tempDir();
    makeChain(dir);
    qOk(dir, ['convert', '-O', 'qcow2', 'top.qcow2', 'flat.qcow2']);
    qOk(dir, ['create', '-q', '-f', 'qcow2', 'a.qcow2', '1M']);
    qOk(dir, ['create', '-q', '-f', 'qcow2', 'b.qcow2', '1M']);
    qioCmds(dir, 'b.qcow2', ['write -P 1 1000 1']);
    qOk(dir, ['create', '-q', '-f', 'qcow2', 'z.qcow2', '1M']);
    qioCmds(dir, 'z.qcow2', ['write -z 0 64k']);
    qOk(dir, ['create', '-q', '-f', 'qcow2', 'small.qcow2', '1M']);
    qOk(dir, ['create', '-q', '-f', 'qcow2', 'big.qcow2', '2M']);
    qOk(dir, ['create', '-q', '-f', 'qcow2', 'bigdirty.qcow2', '2M']);
    qioCmds(dir, 'bigdirty.qcow2', ['write -P 1 1536k 512']);
    qOk(dir, ['create', '-q', '-f', 'raw', 'r.raw', '1M']);
    for (const args of [
      ['top.qcow2', 'flat.qcow2'],
      ['top.qcow2', 'base.qcow2'],
      ['a.qcow2', 'b.qcow2'],
      ['-s', 'a.qcow2', 'b.qcow2'],
      ['a.qcow2', 'z.qcow2'],
      ['-s', 'a.qcow2', 'z.qcow2'],
      ['small.qcow2', 'big.qcow2'],
      ['-s', 'small.qcow2', 'big.qcow2'],
      ['small.qcow2', 'bigdirty.qcow2'],
      ['bigdirty.qcow2', 'small.qcow2'],
      ['-f', 'raw', '-F', 'qcow2', 'r.raw', 'a.qcow2'],
    ]) {
      const mine = img(dir, ['compare', ...args]);
      const theirs = q(dir, ['compare', ...args]);
      expect(mine.code, args.join(' ')).toBe(theirs.code);
      expect(mine.stdout, args.join(' ')).toBe(theirs.stdout);
    }
  });

  it('exits 2 on errors and 1 on usage mistakes, and -q prints nothing', () => {
    const dir = tempDir();
    qOk(dir, ['create', '-q', '-f', 'qcow2', 'a.qcow2', '1M']);
    const missing = img(dir, ['compare', 'a.qcow2', 'missing.qcow2']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/^strata: .*missing\.qcow2.* \(.+\)\n$/);
    expect(img(dir, ['compare', 'a.qcow2']).code).toBe(1);
    const quiet = img(dir, ['compare', '-q', 'a.qcow2', 'a.qcow2']);
    expect(quiet.code).toBe(0);
    expect(quiet.stdout).toBe('');
  });
});
