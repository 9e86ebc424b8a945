/** Unit tests of the CLI's argument parser and of the number formats it copies from qemu-img/qemu-io. */
import { describe, expect, it } from 'vitest';
import { parseArgs, wantsHelp } from '../../src/cli/args.js';
import { UsageError, formatErrorLine } from '../../src/cli/errors.js';
import { combineBackingPath } from '../../src/cli/img/open-image.js';
import { splitOptionList } from '../../src/cli/img/create-options.js';
import { hexAlt, hexDump, qemuIoSizeString, qemuIoTimeString, qemuSizeString, toFixedC } from '../../src/cli/output.js';
import { StorageError } from '../../src/core/errors.js';

const SPECS = [
  { short: 'f', value: true },
  { short: 'q' },
  { short: 'p' },
  { short: 'o', value: true },
  { long: 'output', value: true },
  { long: 'shrink' },
  { short: 'U', long: 'force-share', name: 'U' },
];

describe('parseArgs', () => {
  it('takes short option values attached or separate', () => {
    const a = parseArgs(['-fqcow2', 'x'], SPECS, 'img t');
    expect(a.value('f')).toBe('qcow2');
    const b = parseArgs(['-f', 'raw', 'x'], SPECS, 'img t');
    expect(b.value('f')).toBe('raw');
    expect(b.positionals).toEqual(['x']);
  });

  it('splits combined short flags, the last one may take a value', () => {
    const a = parseArgs(['-qpf', 'qcow2', 'file'], SPECS, 'img t');
    expect(a.has('q')).toBe(true);
    expect(a.has('p')).toBe(true);
    expect(a.value('f')).toBe('qcow2');
    expect(a.positionals).toEqual(['file']);
  });

  it('takes long options with = or a separate value, and long aliases of short ones', () => {
    const a = parseArgs(['--output=json', 'a', '--force-share'], SPECS, 'img t');
    expect(a.value('output')).toBe('json');
    expect(a.has('U')).toBe(true);
    const b = parseArgs(['--output', 'human', 'a'], SPECS, 'img t');
    expect(b.value('output')).toBe('human');
    expect(b.positionals).toEqual(['a']);
  });

  it('permutes options and positionals, and stops at --', () => {
    const a = parseArgs(['a', '-q', 'b', '--', '-p', '--shrink'], SPECS, 'img t');
    expect(a.positionals).toEqual(['a', 'b', '-p', '--shrink']);
    expect(a.has('p')).toBe(false);
    expect(a.has('q')).toBe(true);
  });

  it('keeps every value of repeated options, in order', () => {
    const a = parseArgs(['-o', 'a=1', '-o', 'b=2'], SPECS, 'img t');
    expect(a.values('o')).toEqual(['a=1', 'b=2']);
    expect(a.value('o')).toBe('b=2');
    expect(a.sequence.map((s) => s.name)).toEqual(['o', 'o']);
  });

  it('stops at the first positional when asked', () => {
    const a = parseArgs(['-q', 'read', '-P', '1'], SPECS, 'img t', { stopAtPositional: true });
    expect(a.positionals).toEqual(['read', '-P', '1']);
  });

  it('reports unknown options, missing values and values given to flags', () => {
    expect(() => parseArgs(['-x'], SPECS, 'img t')).toThrow(/unknown option '-x'/);
    expect(() => parseArgs(['--bogus'], SPECS, 'img t')).toThrow(/unknown option '--bogus'/);
    expect(() => parseArgs(['-f'], SPECS, 'img t')).toThrow(/option '-f' needs a value/);
    expect(() => parseArgs(['--output'], SPECS, 'img t')).toThrow(/needs a value/);
    expect(() => parseArgs(['--shrink=yes'], SPECS, 'img t')).toThrow(/does not take a value/);
    try {
      parseArgs(['-x'], SPECS, 'img t');
    } catch (err) {
      expect(err).toBeInstanceOf(UsageError);
      expect(formatErrorLine(err)).toBe("strata: img t: unknown option '-x' (see 'strata img t --help')");
    }
  });

  it('treats a lone - as a positional', () => {
    expect(parseArgs(['-'], SPECS, 'img t').positionals).toEqual(['-']);
  });

  it('finds --help and -h before --', () => {
    expect(wantsHelp(['a', '--help'])).toBe(true);
    expect(wantsHelp(['-h'])).toBe(true);
    expect(wantsHelp(['--', '--help'])).toBe(false);
  });
});

describe('error lines', () => {
  it('show the StorageError code and a hint', () => {
    const line = formatErrorLine(new StorageError('NOT_FOUND', "snapshot 'x' does not exist"));
    expect(line).toMatch(/^strata: snapshot 'x' does not exist \[NOT_FOUND\] \(.+\)$/);
  });
});

describe('qemu number formats', () => {
  it("formats sizes like qemu's size_to_str", () => {
    expect(qemuSizeString(0)).toBe('0 B');
    expect(qemuSizeString(512)).toBe('512 B');
    expect(qemuSizeString(86016)).toBe('84 KiB');
    expect(qemuSizeString(1331200)).toBe('1.27 MiB');
    expect(qemuSizeString(67108864)).toBe('64 MiB');
    expect(qemuSizeString(1024000)).toBe('0.977 MiB');
    expect(qemuSizeString(1073741824)).toBe('1 GiB');
  });

  it("formats sizes like qemu-io's cvtstr", () => {
    expect(qemuIoSizeString(40)).toBe('40 bytes');
    expect(qemuIoSizeString(1024)).toBe('1 KiB');
    expect(qemuIoSizeString(1536)).toBe('1.500 KiB');
    expect(qemuIoSizeString(1114112)).toBe('1.062 MiB');
    expect(qemuIoSizeString(65994752)).toBe('62.938 MiB');
  });

  it('rounds exact ties to even like glibc printf', () => {
    expect(toFixedC(1.0625, 3)).toBe('1.062');
    expect(toFixedC(1.0635, 3)).toBe((1.0635).toFixed(3));
    expect(toFixedC(0.125, 2)).toBe('0.12');
    expect(toFixedC(0.375, 2)).toBe('0.38');
    expect(toFixedC(2.5, 0)).toBe('2');
  });

  it("formats times like qemu-io's timestr", () => {
    expect(qemuIoTimeString(0.004)).toBe('00.00 sec');
    expect(qemuIoTimeString(0.5)).toBe('00.50 sec');
    expect(qemuIoTimeString(61.25)).toBe('0:01:01.25');
  });

  it('prints %#x and hex dumps like qemu-io', () => {
    expect(hexAlt(0)).toBe('0');
    expect(hexAlt(65536)).toBe('0x10000');
    const buf = new Uint8Array([0x20, 0x21, 0x7e, 0x61, 0x5a, 0x7f, 0x2e, 0x00]);
    expect(hexDump(buf, 0)).toBe('00000000:  20 21 7e 61 5a 7f 2e 00  ...aZ...\n');
    const long = new Uint8Array(20).fill(0x41);
    expect(hexDump(long, 0x1f4)).toBe(
      '000001f4:  41 41 41 41 41 41 41 41 41 41 41 41 41 41 41 41  AAAAAAAAAAAAAAAA\n' +
        '00000204:  41 41 41 41  AAAA\n',
    );
  });
});

describe('option lists and backing paths', () => {
  it('splits -o lists with ,, as a literal comma', () => {
    expect(splitOptionList('a=1,b=x,,y,help')).toEqual([
      ['a', '1'],
      ['b', 'x,y'],
      ['help', undefined],
    ]);
  });

  it("combines backing paths like QEMU's path_combine", () => {
    expect(combineBackingPath('top.qcow2', 'base.qcow2')).toBe('base.qcow2');
    expect(combineBackingPath('sub/c.qcow2', '../base.qcow2')).toBe('sub/../base.qcow2');
    expect(combineBackingPath('/tmp/q/top.qcow2', 'base.qcow2')).toBe('/tmp/q/base.qcow2');
    expect(combineBackingPath('sub/c.qcow2', '/abs/b.qcow2')).toBe('/abs/b.qcow2');
  });
});
