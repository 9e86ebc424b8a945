/** The strata entry point (help, unknown commands, error lines) and strata img bench. */
import { beforeAll, describe, expect, it } from 'vitest';
import { requireTool, strata } from '../support/tools.js';
import { tempDir } from '../support/tmp.js';
import { assertBuilt, expectErrorLine, img, imgOk, qOk, qioCmds } from './helpers.js';

describe('strata entry point', () => {
  beforeAll(assertBuilt);

  it('prints help for strata, strata img and each subcommand', () => {
    const top = strata(['--help']);
    expect(top.code).toBe(0);
    expect(top.stdout).toMatch(/^Usage: strata <command>/);
    expect(top.stdout).toMatch(/^ {2}img /m);
    const group = strata(['img', '--help']);
    expect(group.code).toBe(0);
    for (const sub of ['create', 'info', 'check', 'map', 'convert', 'compare', 'snapshot', 'resize', 'rebase', 'commit', 'bench', 'io']) {
      expect(group.stdout).toMatch(new RegExp(`^ {2}${sub} `, 'm'));
      const help = strata(['img', sub, '--help']);
      expect(help.code, sub).toBe(0);
      expect(help.stdout).toMatch(new RegExp(`^Usage: strata img ${sub} `));
    }
  });

  it('gives one clear error line and exit 1 for wrong usage of img (qemu-img), 2 of strata itself', () => {
    expectErrorLine(strata([]), 2, /missing command/);
    expectErrorLine(strata(['frob']), 2, /unknown command 'frob'.*usage: strata <command>/);
    // Commands of other tools' habits name where they are here.
    expectErrorLine(strata(['export', 'list']), 2, /unknown command 'export' \(exports are volume subcommands: 'strata volume exports' lists them/);
    expectErrorLine(strata(['exports']), 2, /'strata volume exports' lists the NBD exports/);
    expectErrorLine(strata(['img']), 1, /missing subcommand/);
    expectErrorLine(strata(['img', 'frobnicate']), 1, /unknown subcommand 'frobnicate'/);
    expectErrorLine(strata(['img', 'info']), 1, /missing FILE/);
    expectErrorLine(strata(['img', 'info', '-Z', 'x']), 1, /unknown option '-Z'/);
    expectErrorLine(strata(['img', 'info', '--output=xml', 'x']), 1, /--output must be/);
    expectErrorLine(strata(['img', 'create', '-f', 'qcow2', 'x.qcow2']), 1, /needs a size/);
    expectErrorLine(strata(['img', 'create', '-f', 'qcow2', '-o', 'bogus=1', 'x.qcow2', '1M']), 1, /invalid parameter 'bogus'/);
    expectErrorLine(strata(['img', 'create', '-f', 'qcow2', 'x.qcow2', '12X']), 1, /invalid image size '12X'/);
    expectErrorLine(strata(['img', 'create', '-f', 'vmdk', 'x.vmdk', '1M']), 1, /unknown format 'vmdk'/);
    expectErrorLine(strata(['img', 'info', '/nonexistent/x.qcow2']), 1, /\[NOT_FOUND\]/);
  });

  it('fails cleanly on a file that is not the forced format', () => {
    const dir = tempDir();
    qOk(dir, ['create', '-q', '-f', 'raw', 'r.raw', '1M']);
    expectErrorLine(img(dir, ['info', '-f', 'qcow2', 'r.raw']), 1, /r\.raw/);
    // Probing picks raw for it.
    expect(imgOk(dir, ['info', 'r.raw']).stdout).toMatch(/^file format: raw$/m);
  });

  it('lists qemu-img create options with -o help', () => {
    const r = strata(['img', 'create', '-f', 'qcow2', '-o', 'help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Supported qcow2 options:\n/);
    expect(r.stdout).toMatch(/^ {2}cluster_size=<size>/m);
  });
});

describe.skipIf(!requireTool('qemu-img', 'qemu-io'))('strata img bench', () => {
  beforeAll(assertBuilt);

  it("prints qemu-img bench's lines and writes the pattern", () => {
    const dir = tempDir();
    qOk(dir, ['create', '-q', '-f', 'qcow2', 'a.qcow2', '64M']);
    const w = imgOk(dir, ['bench', '-w', '-c', '2000', '-d', '16', '--pattern=165', '--flush-interval=500', 'a.qcow2']);
    expect(w.stdout).toMatch(
      /^Sending 2000 write requests, 4096 bytes each, 16 in parallel \(starting at offset 0, step size 4096\)\nSending flush every 500 requests\nRun completed in \d+\.\d{3} seconds\.\n$/,
    );
    qioCmds(dir, 'a.qcow2', ['read -P 165 0 8000k']);
    expect(qOk(dir, ['check', 'a.qcow2']).stdout).toMatch(/No errors were found/);
    const r = imgOk(dir, ['bench', '-c', '100', '-s', '8k', '-S', '16k', '-o', '64k', '-t', 'none', '-i', 'threads', '-n', 'a.qcow2']);
    expect(r.stdout).toMatch(/^Sending 100 read requests, 8192 bytes each, 64 in parallel \(starting at offset 65536, step size 16384\)\n/);
    // Requests wrap around at the end of the image.
    imgOk(dir, ['bench', '-c', '40', '-s', '4M', 'a.qcow2']);
    expect(imgOk(dir, ['bench', '-q', '-c', '10', 'a.qcow2']).stdout).toBe('');
    expectErrorLine(img(dir, ['bench', '-w', '--flush-interval=4', 'a.qcow2']), 1, /flush interval/);
    expectErrorLine(img(dir, ['bench', '--no-drain', 'a.qcow2']), 1, /--no-drain/);
    expectErrorLine(img(dir, ['bench', '-c', 'x', 'a.qcow2']), 1, /request count/);
  });
});
