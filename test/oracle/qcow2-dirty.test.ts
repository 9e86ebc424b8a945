/**
 * Oracle: lazy-refcount images left dirty by a qemu-io that died mid-run (`abort`, or kill -9).
 *
 *   - QEMU reads them read-only without repairing; Strata must read the same guest content.
 *   - Strata's check() on the dirty image (opened with dirtyPolicy 'ignore') must report what
 *     qemu-img check reports (the same corruptions and leaks), and must leave the image as it was.
 *   - Opening it writable with Strata (default dirtyPolicy 'repair') must repair it: qemu-img check
 *     clean, dirty flag clear, guest content unchanged.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Qcow2Image } from '../../formats/qcow2/index.js';
import { LocalHostFile } from '../../src/store/local-file.js';
import { shmTempDir } from '../support/tmp.js';
import { requireTool, run } from '../support/tools.js';
import {
  KiB,
  MiB,
  checkSummary,
  compareCheck,
  createOpts,
  expectSameBytes,
  makePatternFiles,
  qemuCheck,
  qemuImgOk,
  qemuInfo,
  qemuRaw,
  verifyImage,
} from './support.js';

interface DirtyCase {
  name: string;
  clusterSize: number;
  sizeBytes: number;
  refcountBits?: number;
  extendedL2?: boolean;
  /** qemu-io commands; the process dies after the last one. */
  commands: (patterns: string[]) => string[];
  /** 'abort': the last command is `abort`; 'kill': SIGKILL while qemu-io sleeps after them. */
  death: 'abort' | 'kill';
  /** What qemu-img check finds on the dirty image (checked so the case keeps testing something). */
  qemuFinds: 'corruptions' | 'leaks';
}

const cases: DirtyCase[] = [
  {
    // Lazy refcounts: L2 tables reach the disk on flush, refcount blocks do not, so clusters
    // written before the flush are referenced with refcount 0 (qemu-img check: corruptions).
    name: 'abort after flush and more writes, 64k clusters',
    clusterSize: 64 * KiB,
    sizeBytes: 16 * MiB + 33 * 512,
    commands: (p) => [
      `write -q -s ${p[2]} 0 1M`,
      `write -q -P 17 3000000 70001`,
      'flush',
      `write -q -s ${p[0]} 5M 200k`,
      `write -q -z 8M 128k`,
      `write -q -P 99 ${16 * MiB + 33 * 512 - 4096} 4096`,
      'abort',
    ],
    death: 'abort',
    qemuFinds: 'corruptions',
  },
  {
    // 512-byte clusters with 16-bit refcounts: a refcount block covers only 256 clusters, and
    // allocating refcount blocks writes the refcount cache out; after a discard and a flush the
    // L2 tables no longer reference clusters whose refcounts still say 1 (qemu-img check: leaks).
    name: 'abort after discard and flush, 512-byte clusters',
    clusterSize: 512,
    sizeBytes: 8 * MiB,
    commands: (p) => [`write -q -s ${p[1]} 0 1M`, 'flush', 'discard -q 0 512k', 'flush', 'abort'],
    death: 'abort',
    qemuFinds: 'leaks',
  },
  {
    name: 'kill -9 mid-run, extended_l2 64k clusters, 64-bit refcounts',
    clusterSize: 64 * KiB,
    sizeBytes: 24 * MiB + 1536,
    refcountBits: 64,
    extendedL2: true,
    commands: (p) => [
      `write -q -s ${p[2]} 1M 2M`,
      `write -q -P 3 100000 9000`,
      'flush',
      `write -q -P 4 7M 4k`,
      `write -q -z -u 1M 256k`,
      `write -q -s ${p[0]} 20M 333333`,
    ],
    death: 'kill',
    qemuFinds: 'corruptions',
  },
];

/** Runs qemu-io so that it dies after the commands: by abort(), or by SIGKILL while it sleeps. */
async function runAndDie(image: string, c: DirtyCase, patterns: string[], cwd: string): Promise<void> {
  const commands = c.commands(patterns);
  if (c.death === 'abort') {
    // No core file: `ulimit -c 0` in a shell that then becomes qemu-io.
    const args = ['-f', 'qcow2', ...commands.flatMap((cmd) => ['-c', cmd]), image];
    const result = run('sh', ['-c', 'ulimit -c 0; exec qemu-io "$@"', 'qemu-io', ...args], { cwd });
    expect(result.signal ?? result.code, `qemu-io should abort: ${result.stdout}${result.stderr}`).toSatisfy(
      (s: unknown) => s === 'SIGABRT' || s === 134,
    );
    return;
  }
  // kill -9: the commands (all quiet), then `length`, whose output says they are done, then a
  // sleep that never ends. stdbuf makes qemu-io's stdout line-buffered (it is a pipe here); stdbuf
  // execs qemu-io, so the child's pid is qemu-io's.
  const args = ['-f', 'qcow2', ...[...commands, 'length', 'sleep 60000'].flatMap((cmd) => ['-c', cmd]), image];
  const { spawn } = await import('node:child_process');
  const child = spawn('stdbuf', ['-oL', 'qemu-io', ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, signal) => resolve(signal)));
  let out = '';
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`qemu-io never got past its writes: ${out}`)), 30_000);
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (/\d/.test(out)) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.stderr.on('data', (d: Buffer) => (out += d.toString()));
      child.on('exit', (code) => reject(new Error(`qemu-io exited early (${code}): ${out}`)));
    });
  } finally {
    child.kill('SIGKILL');
  }
  expect(await exited).toBe('SIGKILL');
}

async function open(image: string, options: { readOnly?: boolean; dirtyPolicy?: 'repair' | 'ignore' }) {
  const file = await LocalHostFile.open(image, { readOnly: options.readOnly === true });
  return Qcow2Image.open(file, options);
}

describe.skipIf(!requireTool('qemu-img', 'qemu-io', 'stdbuf'))('oracle: dirty lazy-refcount images', () => {
  it('a writable open with dirtyPolicy ignore, then close, keeps the dirty bit (minimal)', async () => {
    // Regression: close() used to clear the lazy-refcounts dirty bit whenever the image was
    // writable, so an image whose stale refcounts were never repaired was marked clean, and the
    // next opener (QEMU or Strata) would allocate over clusters that still hold live data.
    const dir = shmTempDir();
    const image = path.join(dir, 'minimal.qcow2');
    qemuImgOk(['create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', image, '1M']);
    const died = run('sh', ['-c', 'ulimit -c 0; exec qemu-io "$@"', 'qemu-io', '-c', 'write -q 0 64k', '-c', 'abort', image], {
      cwd: dir,
    });
    expect(died.signal ?? died.code).toSatisfy((s: unknown) => s === 'SIGABRT' || s === 134);
    expect(qemuInfo(image)['dirty-flag']).toBe(true);
    const q = await open(image, { dirtyPolicy: 'ignore' });
    await q.close();
    expect(qemuInfo(image)['dirty-flag']).toBe(true);
    expect(checkSummary(qemuCheck(image)).corruptions).toBeGreaterThan(0);
  });

  it.each(cases)('$name', async (c) => {
    const dir = shmTempDir();
    const image = path.join(dir, 'dirty.qcow2');
    const options = createOpts({
      lazy_refcounts: true,
      cluster_size: c.clusterSize,
      refcount_bits: c.refcountBits,
      extended_l2: c.extendedL2,
    });
    qemuImgOk(['create', '-q', '-f', 'qcow2', '-o', options, image, String(c.sizeBytes)]);
    await runAndDie(image, c, makePatternFiles(dir, 3001), dir);

    // The dirty image as QEMU sees it.
    expect(qemuInfo(image)['dirty-flag'], 'qemu-img info dirty-flag').toBe(true);
    const qemuDirtyCheck = qemuCheck(image);
    expect(checkSummary(qemuDirtyCheck)[c.qemuFinds], `qemu-img check finds ${c.qemuFinds}`).toBeGreaterThan(0);
    const content = qemuRaw(image, path.join(dir, 'dirty.raw'));
    const pristine = fs.readFileSync(image);

    // Strata reads it (read-only: no repair) like QEMU; map, info and check agree on it.
    await verifyImage(image, { dir, expectClean: false, irregularSeed: 3002 });

    // check() on a writable open with dirtyPolicy 'ignore' reports the same findings...
    const ignoring = await open(image, { dirtyPolicy: 'ignore' });
    try {
      expect(ignoring.info().dirty, 'opened with dirtyPolicy ignore: still dirty').toBe(true);
      compareCheck(await ignoring.check(), qemuDirtyCheck, 'check() with dirtyPolicy ignore');
    } finally {
      await ignoring.close();
    }
    // ...and leaves the image as it found it: still dirty, same findings.
    expect(qemuInfo(image)['dirty-flag'], 'dirty-flag after check() with dirtyPolicy ignore and close()').toBe(true);
    expect(checkSummary(qemuCheck(image)), 'qemu-img check after the dirtyPolicy ignore open').toEqual(
      checkSummary(qemuDirtyCheck),
    );
    fs.writeFileSync(image, pristine); // whatever happened above, the repair below starts from the dirty image

    // Opening writable (the default policy: repair) makes it clean for QEMU, content unchanged.
    const repairing = await open(image, {});
    try {
      expect(repairing.info().dirty, 'dirty bit after the repairing open').toBe(false);
    } finally {
      await repairing.close();
    }
    expect(qemuInfo(image)['dirty-flag'], 'dirty-flag after the repairing open').toBe(false);
    expect(checkSummary(qemuCheck(image)), 'qemu-img check after the repairing open').toMatchObject({
      corruptions: 0,
      leaks: 0,
    });
    const repaired = await verifyImage(image, { dir, irregularSeed: 3003 });
    expectSameBytes(repaired.content, content, 'content after the repair');

    // QEMU's own repair of the same dirty image reaches the same content.
    const byQemu = path.join(dir, 'qemu-repaired.qcow2');
    fs.writeFileSync(byQemu, pristine);
    qemuImgOk(['check', '-q', '-r', 'all', byQemu]);
    expectSameBytes((await verifyImage(byQemu, { dir })).content, content, 'content after qemu-img check -r all');
  });
});
