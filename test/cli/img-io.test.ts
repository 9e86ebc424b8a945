/** strata img io (the qemu-io work-alike), checked against qemu-io on the same files. */
import { beforeAll, describe, expect, it } from 'vitest';
import { requireTool } from '../support/tools.js';
import { tempDir } from '../support/tmp.js';
import { assertBuilt, img, imgOk, qOk, qio, qioCmds, withoutTimings } from './helpers.js';

function io(dir: string, file: string, commands: readonly string[], extra: readonly string[] = []) {
  return img(dir, ['io', ...extra, ...commands.flatMap((c) => ['-c', c]), file]);
}

describe.skipIf(!requireTool('qemu-img', 'qemu-io'))('strata img io against qemu-io', () => {
  beforeAll(assertBuilt);

  it('writes patterns that qemu-io reads back, and reads what qemu-io wrote', () => {
    const dir = tempDir();
    qOk(dir, ['create', '-q', '-f', 'qcow2', 'a.qcow2', '8M']);
    const w = io(dir, 'a.qcow2', ['write -P 0xab 0 64k', 'write -P 0x11 100k 3k', 'write -z 1M 64k', 'write 2M 4k', 'write -c -P 5 4M 64k']);
    expect(w.code, w.stderr).toBe(0);
    expect(withoutTimings(w.stdout)).toEqual([
      'wrote 65536/65536 bytes at offset 0',
      'wrote 3072/3072 bytes at offset 102400',
      'wrote 65536/65536 bytes at offset 1048576',
      'wrote 4096/4096 bytes at offset 2097152',
      'wrote 65536/65536 bytes at offset 4194304',
    ]);
    expect(w.stdout).toMatch(/^64 KiB, 1 ops; \d\d\.\d\d sec \([\d.]+ [KMG]?i?B(ytes)?\/sec and [\d.]+ ops\/sec\)$/m);
    qioCmds(dir, 'a.qcow2', [
      'read -P 0xab 0 64k',
      'read -P 0x11 100k 3k',
      'read -P 0 97k 3k',
      'read -P 0 1M 64k',
      'read -P 0xcd 2M 4k',
      'read -P 5 4M 64k',
    ]);
    expect(qOk(dir, ['check', 'a.qcow2']).stdout).toMatch(/No errors were found/);
    qioCmds(dir, 'a.qcow2', ['write -P 0x42 6M 128k', 'write -z 0 4k']);
    const r = io(dir, 'a.qcow2', ['read -P 0x42 6M 128k', 'read -P 0 0 4k', 'read -P 0xab 4k 60k']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
  });

  it('prints the same lines as qemu-io (timings aside), hexdump and map included', () => {
    const dir = tempDir();
    qOk(dir, ['create', '-q', '-f', 'qcow2', 'a.qcow2', '4M']);
    qOk(dir, ['create', '-q', '-f', 'qcow2', 'b.qcow2', '4M']);
    const commands = [
      'write -P 0x41 500 40',
      'write -P 0xcd 512 1k',
      'read -v 480 100',
      'read -P 0xcd 512 1k',
      'read -q -P 0 8k 512',
      'write -z 1M 64k',
      'write -z -u 2M 64k',
      'write 3M 64k',
      'discard 3M 64k',
      'flush',
      'map',
      'length',
      'read 1k 1.5k',
    ];
    const mine = io(dir, 'a.qcow2', commands);
    const theirs = qio(dir, [...commands.flatMap((c) => ['-c', c]), 'b.qcow2']);
    expect(mine.code).toBe(theirs.code);
    expect(withoutTimings(mine.stdout)).toEqual(withoutTimings(theirs.stdout));
  });

  it('fails a read -P whose data does not match, like qemu-io', () => {
    const dir = tempDir();
    qOk(dir, ['create', '-q', '-f', 'qcow2', 'a.qcow2', '1M']);
    const mine = io(dir, 'a.qcow2', ['read -P 1 0 1k', 'read -P 0 0 1k']);
    const theirs = qio(dir, ['-c', 'read -P 1 0 1k', '-c', 'read -P 0 0 1k', 'a.qcow2']);
    expect(mine.code).toBe(1);
    expect(theirs.code).toBe(1);
    expect(mine.stdout).toMatch(/^Pattern verification failed at offset 0, 1024 bytes$/m);
    expect(withoutTimings(mine.stdout)).toEqual(withoutTimings(theirs.stdout));
  });

  it('reads commands from stdin when no -c is given', () => {
    const dir = tempDir();
    qOk(dir, ['create', '-q', '-f', 'qcow2', 'a.qcow2', '1M']);
    const r = img(dir, ['io', 'a.qcow2'], 'write -P 7 0 4k\nread -P 7 0 4k\nquit\nread -P 9 0 4k\n');
    expect(r.code, r.stderr).toBe(0);
    expect(withoutTimings(r.stdout)).toEqual(['wrote 4096/4096 bytes at offset 0', 'read 4096/4096 bytes at offset 0']);
  });

  it('works on raw images with -f raw and honours -r', () => {
    const dir = tempDir();
    qOk(dir, ['create', '-q', '-f', 'raw', 'r.raw', '1M']);
    imgOk(dir, ['io', '-f', 'raw', '-c', 'write -P 0x5a 4k 4k', 'r.raw']);
    qioCmds(dir, 'r.raw', ['read -P 0x5a 4k 4k', 'read -P 0 0 4k'], 'raw');
    const ro = io(dir, 'r.raw', ['write 0 4k'], ['-r', '-f', 'raw']);
    expect(ro.code).toBe(1);
    expect(ro.stdout).toMatch(/^write failed: /m);
  });

  it('reports bad commands and arguments', () => {
    const dir = tempDir();
    qOk(dir, ['create', '-q', '-f', 'qcow2', 'a.qcow2', '1M']);
    const unknown = io(dir, 'a.qcow2', ['bogus']);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toBe('command "bogus" not found\n');
    const count = io(dir, 'a.qcow2', ['read 0']);
    expect(count.code).toBe(1);
    expect(count.stderr).toMatch(/^bad argument count 1 to read/);
    const beyond = io(dir, 'a.qcow2', ['read 0 2M']);
    expect(beyond.code).toBe(1);
    expect(beyond.stdout).toMatch(/^read failed: /);
    const zp = io(dir, 'a.qcow2', ['write -z -P 1 0 4k']);
    expect(zp.code).toBe(1);
    const noFile = img(dir, ['io', '-c', 'read 0 1k']);
    expect(noFile.code).toBe(1);
    expect(noFile.stderr).toMatch(/^strata: img io: missing FILE \(.+\)\n$/);
  });
});
