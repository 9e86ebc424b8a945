/**
 * `strata volume import` of an image that is neither raw nor qcow2. Format detection looked only
 * for the qcow2 magic, so a VMDK, VDI, VHDX or VHD made by qemu-img, or a gzip'd raw backup (the
 * CLI's own docs show `strata volume export vm1@snap - | gzip > backup.raw.gz`), was imported as
 * raw and said so ("Imported 'disk.vmdk' (raw)"): a volume holding the container's bytes that no
 * guest can boot. Now the CLI refuses them (exit 1, INVALID_IMAGE, naming the format and the command
 * that converts or decompresses it), nothing is created, and `--format raw` still imports the bytes
 * as they are; raw and qcow2 images are imported as before.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { expectSuccess, qemuImg, requireTool } from '../support/tools.js';
import { assertBuilt, patternBytes, useDaemon } from './harness.js';

assertBuilt();

describe.skipIf(!requireTool('qemu-img'))('import of images that are not raw or qcow2', () => {
  const suite = useDaemon();
  const RAW_BYTES = 4 * 1024 * 1024;

  it('VMDK, VDI, VHDX and VHD images made by qemu-img are refused, naming the format and qemu-img convert', () => {
    const { d } = suite;
    const raw = suite.file('disk.raw');
    writeFileSync(raw, patternBytes(RAW_BYTES, 7));
    const cases: [string, RegExp][] = [
      ['vmdk', /it is a VMDK image, not raw or qcow2/],
      ['vdi', /it is a VDI image, not raw or qcow2/],
      ['vhdx', /it is a VHDX image, not raw or qcow2/],
      ['vpc', /it is a VHD \(dynamic\) image, not raw or qcow2/],
    ];
    for (const [fmt, says] of cases) {
      const file = suite.file(`disk.${fmt}`);
      expectSuccess(qemuImg(['convert', '-f', 'raw', '-O', fmt, raw, file]), `qemu-img convert -O ${fmt}`);
      d.cliFails(['volume', 'import', file, `from-${fmt}`], 1, says, /\[INVALID_IMAGE\]/, /qemu-img convert -O qcow2 '.*' IMAGE\.qcow2 && strata volume import IMAGE\.qcow2 default\/from-/);
    }
    expect(d.json<{ name: string }[]>(['volume', 'list']).map((v) => v.name)).toEqual([]);
  });

  it('a gzip-compressed raw image is refused from a file and from stdin, with the command that decompresses it', () => {
    const { d } = suite;
    const gz = suite.file('backup.raw.gz');
    writeFileSync(gz, gzipSync(patternBytes(RAW_BYTES, 8)));
    d.cliFails(['volume', 'import', gz, 'restored'], 1, /it is gzip-compressed, not raw or qcow2/, /gzip -dc '.*backup\.raw\.gz' \| strata volume import - default\/restored/);
    const piped = d.cliBytes(['volume', 'import', '-', 'restored'], { input: readFileSync(gz) });
    expect(piped.code, piped.stderr).toBe(1);
    expect(piped.stderr).toMatch(/cannot import stdin into volume 'default\/restored': it is gzip-compressed/);
    expect(d.json<unknown[]>(['volume', 'list'])).toEqual([]);
  });

  it('--format raw imports the bytes as they are; raw and qcow2 images are detected as before', () => {
    const { d } = suite;
    const vmdk = suite.file('disk.vmdk');
    const asRaw = d.cliOk(['volume', 'import', vmdk, 'vmdk-bytes', '--format', 'raw']);
    expect(asRaw.stdout).toMatch(/\(raw\)/);
    const back = suite.file('vmdk-bytes.out');
    d.cliOk(['volume', 'export', 'vmdk-bytes', back]);
    const original = readFileSync(vmdk);
    expect(readFileSync(back).subarray(0, original.length).equals(original)).toBe(true);

    expect(d.cliOk(['volume', 'import', suite.file('disk.raw'), 'plain']).stdout).toMatch(/\(raw\)/);
    const qcow2 = suite.file('disk.qcow2');
    expectSuccess(qemuImg(['convert', '-f', 'raw', '-O', 'qcow2', suite.file('disk.raw'), qcow2]), 'qemu-img convert -O qcow2');
    expect(d.cliOk(['volume', 'import', qcow2, 'from-qcow2']).stdout).toMatch(/\(qcow2\)/);
  });

  it('a raw image that is not whole sectors is rounded up with a note, from a file and from stdin; whole sectors get none', () => {
    const { d } = suite;
    const odd = patternBytes(1_000_001, 9);
    const file = suite.file('odd.raw');
    writeFileSync(file, odd);
    const note = /note: the input's 1000001 bytes are not whole 512-byte sectors: volume 'default\/(odd|odd-stdin)' is 1000448 bytes, the last 447 read as zeros/;
    expect(d.cliOk(['volume', 'import', file, 'odd']).stderr).toMatch(note);
    const piped = d.cliBytes(['volume', 'import', '-', 'odd-stdin'], { input: odd });
    expect(piped.code, piped.stderr).toBe(0);
    expect(piped.stderr).toMatch(note);
    const back = suite.file('odd.out');
    d.cliOk(['volume', 'export', 'odd', back]);
    const exported = readFileSync(back);
    expect(exported.length).toBe(1_000_448);
    expect(exported.subarray(0, odd.length).equals(odd)).toBe(true);
    expect(d.cliOk(['volume', 'import', suite.file('disk.raw'), 'whole']).stderr).not.toMatch(/note:/);
  });

  it('a qcow2 image with a backing file is refused with the qemu-img commands that make it standalone, and both work', () => {
    const { d } = suite;
    const base = suite.file('base.raw');
    const data = patternBytes(RAW_BYTES, 9);
    writeFileSync(base, data);
    const overlay = suite.file('overlay.qcow2');
    expectSuccess(qemuImg(['create', '-f', 'qcow2', '-b', base, '-F', 'raw', overlay]), 'qemu-img create -b');
    // The hint used to be the generic "check the arguments; '--help' lists them".
    const r = d.cliFails(['volume', 'import', overlay, 'layered'], 1, /has backing file '.*base\.raw': only standalone images can be imported/, /\[INVALID_ARGUMENT\]/);
    expect(r.stderr).toMatch(/\(make a standalone copy with 'qemu-img convert -O qcow2 IMAGE STANDALONE\.qcow2' .* or merge the backing file into the image itself with 'qemu-img rebase -b "" IMAGE'\)/);
    expect(r.stderr).not.toMatch(/check the arguments/);
    // Both commands of the hint give an image that imports with the backing file's data.
    const standalone = suite.file('standalone.qcow2');
    expectSuccess(qemuImg(['convert', '-O', 'qcow2', overlay, standalone]), 'qemu-img convert');
    d.cliOk(['volume', 'import', standalone, 'converted']);
    expectSuccess(qemuImg(['rebase', '-b', '', overlay]), 'qemu-img rebase -b ""');
    d.cliOk(['volume', 'import', overlay, 'rebased']);
    for (const name of ['converted', 'rebased']) {
      const out = suite.file(`${name}.out`);
      d.cliOk(['volume', 'export', name, out]);
      expect(readFileSync(out).equals(data), name).toBe(true);
    }
  });
});
