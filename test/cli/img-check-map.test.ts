/** strata img check and map, checked against qemu-img on the same files. */
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { requireTool } from '../support/tools.js';
import { tempDir } from '../support/tmp.js';
import { assertBuilt, img, imgOk, makeLeak, qOk, q, qemuJson, qioCmds, strataJson, zeroRefcount } from './helpers.js';

type Check = Record<string, unknown>;
type MapEntry = { start: number; length: number; depth: number; present: boolean; zero: boolean; data: boolean; offset?: number };

describe.skipIf(!requireTool('qemu-img', 'qemu-io'))('strata img check against qemu-img', () => {
  beforeAll(assertBuilt);

  it('exits 0 on a clean image with the same JSON as qemu-img check', () => {
    const dir = tempDir();
    qOk(dir, ['create', '-q', '-f', 'qcow2', 'a.qcow2', '64M']);
    qioCmds(dir, 'a.qcow2', ['write -P 1 0 1M', 'write -P 2 10M 64k']);
    const r = img(dir, ['check', 'a.qcow2']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(qOk(dir, ['check', 'a.qcow2']).stdout);
    const mine = strataJson<Check>(dir, ['check', '--output=json', 'a.qcow2']);
    expect(mine).toEqual(qemuJson<Check>(dir, ['check', '--output=json', 'a.qcow2']));
    expect(mine).not.toHaveProperty('leaks');
    expect(mine).not.toHaveProperty('corruptions');
  });

  it('exits 3 on leaked clusters, and -r leaks repairs them', () => {
    const dir = tempDir();
    qOk(dir, ['create', '-q', '-f', 'qcow2', 'a.qcow2', '64M']);
    qioCmds(dir, 'a.qcow2', ['write -P 1 0 256k']);
    makeLeak(path.join(dir, 'a.qcow2'));
    expect(q(dir, ['check', 'a.qcow2']).code).toBe(3);
    const r = img(dir, ['check', 'a.qcow2']);
    expect(r.code).toBe(3);
    expect(r.stdout).toMatch(/^1 leaked clusters were found on the image\.$/m);
    const json = img(dir, ['check', '--json', 'a.qcow2']);
    expect(json.code).toBe(3);
    expect(JSON.parse(json.stdout)).toMatchObject({ leaks: 1, 'check-errors': 0, filename: 'a.qcow2', format: 'qcow2' });
    const fixed = img(dir, ['check', '-r', 'leaks', 'a.qcow2']);
    expect(fixed.code, fixed.stdout + fixed.stderr).toBe(0);
    expect(fixed.stdout).toMatch(/The following inconsistencies were found and repaired:\n\n {4}1 leaked clusters\n {4}0 corruptions\n/);
    expect(q(dir, ['check', 'a.qcow2']).code).toBe(0);
    qioCmds(dir, 'a.qcow2', ['read -P 1 0 256k']);
  });

  it('-r all repairs leaked clusters too, reporting leaks-fixed in JSON', () => {
    const dir = tempDir();
    qOk(dir, ['create', '-q', '-f', 'qcow2', 'b.qcow2', '64M']);
    qioCmds(dir, 'b.qcow2', ['write -P 1 0 256k']);
    makeLeak(path.join(dir, 'b.qcow2'));
    const fixedJson = img(dir, ['check', '-r', 'all', '--output=json', 'b.qcow2']);
    expect(fixedJson.code, fixedJson.stdout + fixedJson.stderr).toBe(0);
    expect(JSON.parse(fixedJson.stdout)).toMatchObject({ 'leaks-fixed': 1 });
    expect(q(dir, ['check', 'b.qcow2']).code).toBe(0);
    qioCmds(dir, 'b.qcow2', ['read -P 1 0 256k']);
  });

  it('exits 2 on corruptions', () => {
    const dir = tempDir();
    qOk(dir, ['create', '-q', '-f', 'qcow2', 'a.qcow2', '64M']);
    qioCmds(dir, 'a.qcow2', ['write -P 1 0 64k']);
    const data = qemuJson<MapEntry[]>(dir, ['map', '--output=json', 'a.qcow2'])[0];
    expect(data?.offset).toBeDefined();
    zeroRefcount(path.join(dir, 'a.qcow2'), data?.offset ?? 0);
    expect(q(dir, ['check', 'a.qcow2']).code).toBe(2);
    const r = img(dir, ['check', 'a.qcow2']);
    expect(r.code).toBe(2);
    expect(r.stdout).toMatch(/errors were found on the image\.\nData may be corrupted/);
    expect(JSON.parse(img(dir, ['check', '--output=json', 'a.qcow2']).stdout)).toHaveProperty('corruptions');
  });

  it('-r leaks on an image only a rebuild can repair fails as qemu-img check does: exit 1, no report', () => {
    const dir = tempDir();
    qOk(dir, ['create', '-q', '-f', 'qcow2', 'a.qcow2', '64M']);
    qioCmds(dir, 'a.qcow2', ['write -P 1 0 64k']);
    makeLeak(path.join(dir, 'a.qcow2'));
    const data = qemuJson<MapEntry[]>(dir, ['map', '--output=json', 'a.qcow2'])[0];
    zeroRefcount(path.join(dir, 'a.qcow2'), data?.offset ?? 0);
    copyFileSync(path.join(dir, 'a.qcow2'), path.join(dir, 'b.qcow2'));
    const qemu = q(dir, ['check', '-r', 'leaks', 'a.qcow2']);
    expect(qemu.stderr).toMatch(/ERROR need to rebuild refcount structures/);
    const r = img(dir, ['check', '-r', 'leaks', 'b.qcow2']);
    expect({ code: r.code, stdout: r.stdout }).toEqual({ code: qemu.code, stdout: qemu.stdout });
    expect(r.stderr).toMatch(/^ERROR need to rebuild refcount structures$/m);
    expect(r.stderr).toMatch(/^strata: the check of 'b.qcow2' failed: .*\('-r all' rebuilds the refcount structure/m);
    // Nothing was changed: both still report the same problems.
    expect(img(dir, ['check', '--output=json', 'b.qcow2']).stdout.replace('b.qcow2', 'a.qcow2')).toBe(q(dir, ['check', '--output=json', 'a.qcow2']).stdout);
  });

  it('an image too damaged to open even for a check: exit 1, and the hint does not suggest check again', () => {
    const dir = tempDir();
    qOk(dir, ['create', '-q', '-f', 'qcow2', 'a.qcow2', '64M']);
    const bytes = readFileSync(path.join(dir, 'a.qcow2'));
    bytes.writeUInt32BE(40, 20); // cluster_bits 40: no cluster size
    writeFileSync(path.join(dir, 'a.qcow2'), bytes);
    expect(q(dir, ['check', 'a.qcow2']).code).toBe(1);
    const r = img(dir, ['check', 'a.qcow2']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^strata: could not open 'a.qcow2': .*\[CORRUPT\] \(its header or tables are too damaged to check; restore the image from a copy\)$/m);
    expect(r.stderr).not.toMatch(/img check/);
  });

  it('exits 63 on raw images and 1 on a missing file', () => {
    const dir = tempDir();
    qOk(dir, ['create', '-q', '-f', 'raw', 'r.raw', '1M']);
    expect(img(dir, ['check', '-f', 'raw', 'r.raw']).code).toBe(63);
    expect(img(dir, ['check', 'missing.qcow2']).code).toBe(1);
    expect(img(dir, ['check', '-r', 'some', 'r.raw']).code).toBe(1);
  });
});

describe.skipIf(!requireTool('qemu-img', 'qemu-io'))('strata img map against qemu-img', () => {
  beforeAll(assertBuilt);

  function sameMap(dir: string, args: readonly string[]): void {
    const mine = imgOk(dir, ['map', '--output=json', ...args]).stdout;
    const theirs = qOk(dir, ['map', '--output=json', ...args]).stdout;
    // Byte for byte: qemu-img's one-object-per-line layout too.
    expect(mine, args.join(' ')).toBe(theirs);
  }

  it('maps a chain with data, zero clusters, discards and compressed clusters like qemu-img', () => {
    const dir = tempDir();
    qOk(dir, ['create', '-q', '-f', 'qcow2', 'base.qcow2', '64M']);
    qioCmds(dir, 'base.qcow2', ['write -P 1 0 1M', 'write -P 2 8M 192k', 'write -z 9M 64k']);
    qOk(dir, ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', '-b', 'base.qcow2', '-F', 'qcow2', 'mid.qcow2']);
    qioCmds(dir, 'mid.qcow2', ['write -P 3 0 64k', 'write -z 1M 64k', 'write -P 4 2M 128k', 'discard 0 4k', 'write -c -P 5 4M 4k']);
    qOk(dir, ['create', '-q', '-f', 'qcow2', '-b', 'mid.qcow2', '-F', 'qcow2', 'top.qcow2']);
    qioCmds(dir, 'top.qcow2', ['write -P 6 8M 64k', 'write -z 20M 1M']);
    sameMap(dir, ['base.qcow2']);
    sameMap(dir, ['mid.qcow2']);
    sameMap(dir, ['top.qcow2']);
    sameMap(dir, ['--start-offset=1M', '--max-length=8M', 'top.qcow2']);
    // Human output: identical where qemu-img can print it; both refuse compressed clusters.
    const human = img(dir, ['map', 'top.qcow2']);
    expect(human.code).toBe(1);
    expect(human.stdout).toBe(q(dir, ['map', 'top.qcow2']).stdout);
    expect(human.stderr).toMatch(/^strata: File contains external, encrypted or compressed clusters\. \(.+\)\n$/);
    expect(imgOk(dir, ['map', 'base.qcow2']).stdout).toBe(qOk(dir, ['map', 'base.qcow2']).stdout);
    expect(strataJson(dir, ['map', '--json', 'top.qcow2'])).toEqual(qemuJson(dir, ['map', '--output=json', 'top.qcow2']));
  });

  it('maps raw backings and backings shorter than the image like qemu-img', () => {
    const dir = tempDir();
    qOk(dir, ['create', '-q', '-f', 'raw', 'r.raw', '1M']);
    qioCmds(dir, 'r.raw', ['write -P 1 64k 4k'], 'raw');
    qOk(dir, ['create', '-q', '-f', 'qcow2', '-b', 'r.raw', '-F', 'raw', 'over-raw.qcow2', '4M']);
    qOk(dir, ['create', '-q', '-f', 'qcow2', 'short.qcow2', '1M']);
    qioCmds(dir, 'short.qcow2', ['write -P 2 0 1M']);
    qOk(dir, ['create', '-q', '-f', 'qcow2', '-b', 'short.qcow2', '-F', 'qcow2', 'long.qcow2', '4M']);
    sameMap(dir, ['-f', 'raw', 'r.raw']);
    sameMap(dir, ['over-raw.qcow2']);
    sameMap(dir, ['long.qcow2']);
    expect(imgOk(dir, ['map', 'over-raw.qcow2']).stdout).toBe(qOk(dir, ['map', 'over-raw.qcow2']).stdout);
  });
});
