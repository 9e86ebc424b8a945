/**
 * `strata img check` on damaged images, with `qemu-img check` as the oracle: an image made by
 * qemu-img, damaged precisely (a table offset or entry pointing past the end of the file, the file
 * cut short in its data or in its L2 table), copied twice, and each tool run on its own copy under
 * the same relative name. The report (human and JSON) and the exit status must be the same; so
 * must `-r all`: its report, what it leaves (qemu-img check of both repaired copies) and the guest
 * content (qemu-img compare of the two). Damage qemu-img check -r all leaves in place (a reference
 * past the end of the file, reserved bits, an unaligned data cluster) Strata leaves too.
 */
import { copyFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { qemuImg, requireTool, strata, type RunResult } from '../support/tools.js';
import { makeTempDir, shmTempDir } from '../support/tmp.js';
import { assertBuilt } from '../cli/helpers.js';
import { DAMAGES, makeBaseImage, makeDamagedImage, type Damage } from './damaged-images.js';

const NAME = 'img.qcow2';

interface Pair {
  qemuDir: string;
  strataDir: string;
}

function runBoth(pair: Pair, args: readonly string[]): { qemu: RunResult; strata: RunResult } {
  return {
    qemu: qemuImg(args, { cwd: pair.qemuDir }),
    strata: strata(['img', ...args], { cwd: pair.strataDir }),
  };
}

/** Both tools answer alike: exit status and stdout (the report); stderr shown on a mismatch. */
function expectSame(what: string, r: { qemu: RunResult; strata: RunResult }): void {
  const detail = `${what}\n--- qemu-img stderr:\n${r.qemu.stderr.slice(0, 2000)}\n--- strata stderr:\n${r.strata.stderr.slice(0, 2000)}`;
  expect({ code: r.strata.code, stdout: r.strata.stdout }, detail).toEqual({ code: r.qemu.code, stdout: r.qemu.stdout });
}

function damagedPair(base: string, damage: Damage): Pair {
  const root = shmTempDir();
  const pair = { qemuDir: path.join(root, 'qemu'), strataDir: path.join(root, 'strata') };
  mkdirSync(pair.qemuDir);
  mkdirSync(pair.strataDir);
  makeDamagedImage(base, path.join(pair.qemuDir, NAME), damage);
  copyFileSync(path.join(pair.qemuDir, NAME), path.join(pair.strataDir, NAME));
  return pair;
}

const CASES: Damage[] = [
  DAMAGES.l1EntryPastEof,
  DAMAGES.l2EntryPastEof,
  DAMAGES.refcountEntryPastEof,
  DAMAGES.truncatedInData,
  DAMAGES.truncatedInL2,
  DAMAGES.l1TablePastEof,
  DAMAGES.refcountTablePastEof,
  DAMAGES.l2ReservedBits,
  DAMAGES.l2Unaligned,
];

describe.skipIf(!requireTool('qemu-img', 'qemu-io'))('oracle: check and repair of damaged images', () => {
  let base: string;

  beforeAll(() => {
    assertBuilt();
    const dir = makeTempDir();
    base = path.join(dir.path, 'base.qcow2');
    makeBaseImage(base);
    return dir.cleanup;
  });

  it.each(CASES.map((damage) => [damage.name, damage] as const))('%s: the same report and exit status as qemu-img check', (_name, damage) => {
    const pair = damagedPair(base, damage);
    const human = runBoth(pair, ['check', NAME]);
    // Every case is damage qemu-img finds (exit 2), not a failure to check (exit 1).
    expect(human.qemu.code, human.qemu.stderr).toBe(2);
    expectSame('check', human);
    expectSame('check --output=json', runBoth(pair, ['check', '--output=json', NAME]));
  });

  it.each(CASES.map((damage) => [damage.name, damage] as const))('%s: -r all repairs what qemu-img repairs', (_name, damage) => {
    const pair = damagedPair(base, damage);
    const repair = runBoth(pair, ['check', '-r', 'all', '--output=json', NAME]);
    if (damage === DAMAGES.refcountEntryPastEof) {
      // The one difference, in the count only: qemu-img grows the file to hold the block the
      // entry names (here to 256 MiB), then counts that new, empty block's own refcount as one
      // more corruption fixed; Strata rebuilds the structure without growing the file.
      const qemuReport = JSON.parse(repair.qemu.stdout) as Record<string, number>;
      const strataReport = JSON.parse(repair.strata.stdout) as Record<string, number>;
      expect(strataReport).toEqual({ ...qemuReport, 'corruptions-fixed': qemuReport['corruptions-fixed']! - 1 });
      expect(repair.strata.code).toBe(repair.qemu.code);
    } else {
      expectSame('check -r all --output=json', repair);
    }
    // What each repair left, judged by qemu-img on both copies.
    const after = {
      qemu: qemuImg(['check', '--output=json', NAME], { cwd: pair.qemuDir }),
      strata: qemuImg(['check', '--output=json', NAME], { cwd: pair.strataDir }),
    };
    expectSame('qemu-img check after the repair', after);
    // QEMU cannot read an unaligned data cluster either; the rest it reads (zeroes past the end).
    if (damage === DAMAGES.l2Unaligned) return;
    const compare = qemuImg(['compare', '-f', 'qcow2', '-F', 'qcow2', path.join(pair.qemuDir, NAME), path.join(pair.strataDir, NAME)]);
    expect(compare.code, `qemu-img compare of the repaired copies: ${compare.stdout}${compare.stderr}`).toBe(0);
  });

  it('bad magic: neither tool takes it for qcow2 (raw has nothing to check: exit 63)', () => {
    const pair = damagedPair(base, DAMAGES.badMagic);
    const r = runBoth(pair, ['check', NAME]);
    expect({ qemu: r.qemu.code, strata: r.strata.code }).toEqual({ qemu: 63, strata: 63 });
  });
});
