/**
 * The benches' pure pieces (bench/ is not run by the suite): argument parsing, CPU accounting from
 * a /proc/<pid>/stat line, the median / ratio and CPU tables, the guest bench's fio plumbing and the
 * sides' creation and run order, and stopping a side's server.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { argNumber, argValue, benchUsage, loadArg, median } from '../../bench/args.js';
import { cpuCost, parseProcStat, sumSamples } from '../../bench/cpu.js';
import { blockBytes, lddLibraries, parseGuestFioLine } from '../../bench/guest-fio.js';
import { guestPlan, mappingError } from '../../bench/guest-plan.js';
import { cpuTable, formatValue, medianTable, pairedTable, roundsInOrder } from '../../bench/report.js';
import { warmMemory } from '../../bench/warm-memory.js';
import { creationOrder, removeServer, runOrder, stopServer } from '../../bench/side-by-side.js';
import { tempDir } from '../support/tmp.js';

const GiB = 1024 ** 3;

describe('bench arguments', () => {
  const argv = ['node', 'bench.js', '--runs', '5', '--load', '2', '--only', 'strata,qsd', '--runtime', '1.5'];

  it('reads values and numbers after their flags, and falls back when a flag is absent', () => {
    expect(argValue('--only', 'all', argv)).toBe('strata,qsd');
    expect(argValue('--rows', '', argv)).toBe('');
    expect(argNumber('--runs', 3, argv)).toBe(5);
    expect(argNumber('--runtime', 3, argv)).toBe(1.5);
    expect(argNumber('--reps', 3, argv)).toBe(3);
    expect(loadArg(argv)).toBe(2);
    expect(loadArg(['node', 'bench.js'])).toBe(0);
  });

  it('refuses a value that is not a number, naming the flag', () => {
    expect(() => argNumber('--runs', 3, ['--runs', 'five'])).toThrow(/--runs wants a number >= 0, not 'five'/);
    expect(() => argNumber('--runs', 3, ['--runs', '-1'])).toThrow(/--runs/);
    expect(() => loadArg(['--load', '1.5'])).toThrow(/--load wants a whole number/);
  });
});

describe('CPU accounting from /proc/<pid>/stat', () => {
  it('reads utime, stime, cutime and cstime (fields 14-17) past a command name holding spaces and parentheses', () => {
    // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime ...
    const line = '4242 (a) b (c) S 1 4242 4242 0 -1 4194560 900 0 0 0 1234 56 7 8 20 0 3 0 100 1000 50 18446744073709551615\n';
    expect(parseProcStat(line)).toEqual({ utime: 1234, stime: 56, cutime: 7, cstime: 8 });
  });

  it('parses this process\'s own stat line', () => {
    const t = parseProcStat(readFileSync('/proc/self/stat', 'utf8'));
    for (const v of Object.values(t)) expect(Number.isInteger(v) && v >= 0).toBe(true);
  });

  it('refuses a line that is not a stat line', () => {
    expect(() => parseProcStat('no parentheses here')).toThrow(/not a \/proc\/<pid>\/stat line/);
    expect(() => parseProcStat('1 (x) S 1 2')).toThrow(/field 14/);
  });

  it('gives CPU seconds per GiB and per 100k requests, summed over runs', () => {
    const total = sumSamples([
      { cpuSeconds: 1, bytes: GiB, requests: 262_144 },
      { cpuSeconds: 2, bytes: 2 * GiB, requests: 524_288 },
    ]);
    expect(total).toEqual({ cpuSeconds: 3, bytes: 3 * GiB, requests: 786_432 });
    const cost = cpuCost(total);
    expect(cost.perGiB).toBe(1);
    expect(cost.per100kRequests).toBeCloseTo(3 / 7.86432, 12);
    expect(cpuCost({ cpuSeconds: 1, bytes: 0, requests: 0 }).perGiB).toBeNaN();
  });
});

describe('bench tables', () => {
  const sides = [
    { name: 'strata', label: 'Strata' },
    { name: 'qsd', label: 'qsd' },
  ];
  const rows = [
    {
      name: 'row A',
      runs: new Map([
        ['strata', [300, 100, 200]],
        ['qsd', [100, 100, 400, 50]],
      ]),
      cpu: new Map([
        ['strata', [{ cpuSeconds: 0.5, bytes: GiB / 2, requests: 50_000 }, { cpuSeconds: 0.5, bytes: GiB / 2, requests: 50_000 }]],
        ['qsd', [{ cpuSeconds: 4, bytes: 2 * GiB, requests: 100_000 }]],
      ]),
    },
    { name: 'row B', runs: new Map([['strata', [5]]]) },
  ];

  it('median is the middle value, the upper middle for an even count', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([100, 100, 400, 50])).toBe(100);
  });

  it('prints each side\'s median and the subject over each peer', () => {
    expect(medianTable('title', sides, 'strata', rows, 'IOPS')).toEqual([
      '| title | Strata (IOPS) | qsd (IOPS) | Strata / qsd |',
      '|---|---:|---:|---:|',
      '| row A | 200 | 100 | 2.00 |',
      '| row B | 5.00 | - | - |',
    ]);
  });

  it('prints CPU per GiB and per 100k requests over all runs, and the subject\'s per-GiB cost over each peer\'s', () => {
    expect(cpuTable('cpu', sides, 'strata', rows)).toEqual([
      '| cpu | Strata CPU s/GiB | qsd CPU s/GiB | Strata CPU s/100k req | qsd CPU s/100k req | CPU Strata / qsd |',
      '|---|---:|---:|---:|---:|---:|',
      '| row A | 1.000 | 2.000 | 1.00 | 4.00 | 0.50 |',
      '| row B | - | - | - | - | - |',
    ]);
  });

  it('pairs the runs of one round: the median of the subject\'s ratios and in how many rounds it was ahead', () => {
    // The medians call it even (300 and 300); round by round Strata is ahead in 3 of 4.
    const drifting = [
      {
        name: 'row A',
        runs: new Map([
          ['strata', [100, 200, 300, 400]],
          ['qsd', [90, 180, 500, 300]],
        ]),
        rounds: new Map([
          ['strata', [0, 1, 2, 3]],
          ['qsd', [0, 1, 2, 3]],
        ]),
      },
      // A round a side ran twice, or not at all, pairs nothing: round 7 alone is paired.
      { name: 'row B', runs: new Map([['strata', [10, 20, 30]], ['qsd', [10, 40]]]), rounds: new Map([['strata', [5, 5, 7]], ['qsd', [5, 7]]]) },
      { name: 'row C', runs: new Map([['strata', [1]]]) },
    ];
    expect(pairedTable('paired', sides, 'strata', drifting)).toEqual([
      '| paired | Strata / qsd: median, ahead in |',
      '|---|---:|',
      '| row A | 1.11, 3 of 4 |',
      '| row B | 0.75, 0 of 1 |',
      '| row C | - |',
    ]);
    expect(roundsInOrder(new Map([['strata', [5, 6]]]))).toEqual(new Map([['strata', [0, 1]]]));
  });

  it('formats values: whole from 100 up, two decimals below, a dash for no number', () => {
    expect([formatValue(1234.6), formatValue(99.456), formatValue(NaN)]).toEqual(['1235', '99.46', '-']);
  });
});

describe('guest bench plumbing', () => {
  it('reads the guest\'s fio fields (read KiB; read IOPS; write KiB; write IOPS) into IOPS, bytes and requests', () => {
    expect(parseGuestFioLine('0;0;98248;24537', '4k')).toEqual({ iops: 24537, bytes: 98248 * 1024, requests: 24562 });
    expect(parseGuestFioLine('2097152;1024;0;0', '1M')).toEqual({ iops: 1024, bytes: 2 * GiB, requests: 2048 });
    expect(() => parseGuestFioLine('fio: something went wrong', '4k')).toThrow(/not a fio result line/);
  });

  it('reads fio block sizes', () => {
    expect([blockBytes('4k'), blockBytes('1M'), blockBytes('512')]).toEqual([4096, 1 << 20, 512]);
    expect(() => blockBytes('4 KiB')).toThrow(/block size/);
  });

  it('lists the libraries ldd names, the loader included, by the name the loader looks for', () => {
    const out = [
      '\tlinux-vdso.so.1 (0x00007ffd)',
      '\tlibaio.so.1 => /lib/x86_64-linux-gnu/libaio.so.1 (0x00007f1f)',
      '\tlibceph-common.so.2 => /usr/lib/x86_64-linux-gnu/ceph/libceph-common.so.2 (0x00007f1e)',
      '\t/lib64/ld-linux-x86-64.so.2 (0x00007f1f916e8000)',
    ].join('\n');
    expect(lddLibraries(out)).toEqual([
      { soname: 'libaio.so.1', path: '/lib/x86_64-linux-gnu/libaio.so.1' },
      { soname: 'libceph-common.so.2', path: '/usr/lib/x86_64-linux-gnu/ceph/libceph-common.so.2' },
      { soname: 'ld-linux-x86-64.so.2', path: '/lib64/ld-linux-x86-64.so.2' },
    ]);
  });
});

describe('interleaved guest runs', () => {
  it('runs every row on every disk once per round, each disk in every place of a row equally often across rounds', () => {
    const plan = guestPlan(2, 3, 3, 0);
    expect(plan).toHaveLength(2 * 3 * 3);
    for (const row of [0, 1]) {
      const cells = plan.filter((s) => s.row === row);
      for (const disk of [0, 1, 2]) expect(cells.filter((s) => s.disk === disk)).toHaveLength(3);
      // Place p of the row in each round: over three rounds, three different disks.
      for (const place of [0, 1, 2]) expect(new Set([0, 1, 2].map((round) => cells[round * 3 + place]!.disk)).size).toBe(3);
    }
    // Rounds go outermost: a cell's samples spread over the whole boot.
    expect(plan.slice(0, 6).map((s) => s.row)).toEqual([0, 0, 0, 1, 1, 1]);
    // The rotation continues across runs: run 2 (firstRep 3) does not repeat run 1's first round.
    const disksOf = (plan: readonly { disk: number }[]): number[] => plan.map((s) => s.disk);
    expect(disksOf(guestPlan(1, 2, 1, 1))).toEqual(disksOf(guestPlan(1, 2, 1, 0)).reverse());
    expect(guestPlan(1, 2, 2, 3).map((s) => s.round)).toEqual([3, 3, 4, 4]);
  });

  it('accepts a warm-up served by its own disk\'s server and names the sides when another server did the work', () => {
    const sides = [
      { name: 'strata', label: 'Strata' },
      { name: 'qsd-wt', label: 'qsd writethrough=on' },
    ];
    expect(mappingError(sides, 0, [0.4, 0.01])).toBeUndefined();
    expect(mappingError(sides, 1, [0.01, 0.3])).toBeUndefined();
    expect(mappingError(sides, 0, [0.01, 0.38])?.message).toMatch(/disk 0 of the guest was expected to be Strata's.*qsd writethrough=on 0\.38 s/);
    // Nobody busy: the warm-up did not reach any server we started.
    expect(mappingError(sides, 0, [0, 0])).toBeInstanceOf(Error);
  });
});

describe('side creation order', () => {
  it('rotates by one side per rep, so every side is created first once per rotation', () => {
    const sides = ['strata', 'base', 'qsd-wt'];
    expect([0, 1, 2, 3].map((rep) => creationOrder(sides, rep))).toEqual([
      ['strata', 'base', 'qsd-wt'],
      ['base', 'qsd-wt', 'strata'],
      ['qsd-wt', 'strata', 'base'],
      ['strata', 'base', 'qsd-wt'],
    ]);
    expect(creationOrder(['strata', 'qsd'], 1)).toEqual(['qsd', 'strata']);
    expect(sides).toEqual(['strata', 'base', 'qsd-wt']);
  });
});

describe('side run order', () => {
  it('over two rotations puts each side first in creation and first in the run in every combination', () => {
    const sides = ['strata', 'qsd'];
    const pairs = [0, 1, 2, 3].map((rep) => `${creationOrder(sides, rep)[0]} created first, ${runOrder(sides, rep, 0)[0]} run first`);
    expect(new Set(pairs).size).toBe(4);
    // The next cell (row) of the same rep runs the other way round.
    expect([0, 1, 2, 3].map((rep) => runOrder(sides, rep, 1))).toEqual([0, 1, 2, 3].map((rep) => [...runOrder(sides, rep, 0)].reverse()));
  });

  it('over as many reps as sides puts each of three sides in every place of the run once, in every row', () => {
    const sides = ['strata', 'qsd-wt', 'qsd'];
    for (const row of [0, 1, 2]) {
      for (const [place] of sides.entries()) {
        const atPlace = [0, 1, 2].map((rep) => runOrder(sides, rep, row)[place]);
        expect(new Set(atPlace).size).toBe(3);
      }
    }
    expect(sides).toEqual(['strata', 'qsd-wt', 'qsd']);
  });

  it('stops a real server process and waits for its exit; a server already gone is left alone', async () => {
    const child = spawn('sleep', ['30'], { stdio: 'ignore' });
    await stopServer(child);
    expect(child.signalCode).toBe('SIGTERM');
    await stopServer(child, 'SIGKILL');
    expect(child.signalCode).toBe('SIGTERM');
  });

  it('removes a side: its server stopped, its image copy and data folder gone', async () => {
    const dir = tempDir();
    const image = join(dir, 'side.qcow2');
    const dataDir = join(dir, 'data');
    writeFileSync(image, 'x');
    mkdirSync(join(dataDir, 'volumes'), { recursive: true });
    const child = spawn('sleep', ['30'], { stdio: 'ignore' });
    await removeServer({ child, files: [image, dataDir] });
    expect(child.signalCode).toBe('SIGTERM');
    expect([existsSync(image), existsSync(dataDir)]).toEqual([false, false]);
  });
});

describe('warming the machine\'s memory', () => {
  it('writes the bytes asked for into a file of the folder and removes it', () => {
    const dir = tempDir();
    const warmed = warmMemory(dir, 40 * 1024 * 1024 + 5);
    expect(warmed.bytes).toBe(40 * 1024 * 1024 + 5);
    expect(readdirSync(dir)).toEqual([]);
  });
});

describe('bench --help', () => {
  it('takes the usage from the leading doc comment without its comment marks', () => {
    expect(benchUsage('/**\n * The bench.\n *\n *   node x.js [--runs 3]\n */\nimport x;')).toBe('The bench.\n\n  node x.js [--runs 3]');
    expect(benchUsage('import x;')).toMatch(/no usage/);
  });

  it('every bench answers --help with its usage and runs nothing', () => {
    const benches = readdirSync('bench').filter((name) => name.endsWith('-bench.ts'));
    expect(benches.length).toBeGreaterThan(5);
    for (const name of benches) {
      // The built bench (dist/, as `npm run bench:*` runs it): exits 0 at once, printing its header comment.
      const out = execFileSync(process.execPath, [join('dist', 'bench', name.replace(/\.ts$/, '.js')), '--help'], { encoding: 'utf8', timeout: 30_000 });
      expect(out, name).toContain(benchUsage(readFileSync(join('bench', name), 'utf8')).split('\n')[0]!);
    }
  });
});
