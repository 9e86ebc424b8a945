/**
 * Data correctness through the daemon, with qemu-img as the oracle: import raw and qcow2 images,
 * snapshot, write through import-diff, roll back, clone, flatten, delete a snapshot, export raw
 * and qcow2 and compare with `qemu-img compare`; every layer file passes `qemu-img check`, and the
 * pool folder holds exactly the files the volumes' chains use.
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { qemuImg, requireTool } from '../support/tools.js';
import { makeTempDir, shmBase } from '../support/tmp.js';
import {
  applyToModel,
  assertBuilt,
  chainFiles,
  diffStream,
  expectCleanCheck,
  patternBytes,
  poolFiles,
  qemuCompare,
  startDaemon,
  writeRawImage,
  type Daemon,
  type DiffRecord,
} from './harness.js';

assertBuilt();

const MiB = 1 << 20;
const SIZE = 32 * MiB;

describe.skipIf(!requireTool('qemu-img'))('data through the daemon, checked with qemu-img', () => {
  let d: Daemon;
  let tmp: { path: string; cleanup: () => void };
  const f = (name: string) => path.join(tmp.path, name);

  beforeAll(async () => {
    tmp = makeTempDir(shmBase());
    d = await startDaemon(f('data'));
  });
  afterAll(async () => {
    if (d) expect((await d.stop()).code).toBe(0);
    tmp?.cleanup();
  });

  /** Exports vol (or vol@snap) raw and has qemu-img compare it with the model. */
  function expectContents(name: string, model: Buffer): void {
    const modelFile = f(`${name.replace(/[/@]/g, '_')}.model`);
    const out = f(`${name.replace(/[/@]/g, '_')}.out`);
    writeFileSync(modelFile, model);
    d.cliOk(['volume', 'export', name, out, '--force']);
    const r = qemuCompare(modelFile, out);
    if (r.code !== 0) throw new Error(`${name} differs from its model: ${r.stdout}${r.stderr}`);
  }

  function importDiff(volume: string, from: string | null, to: string | null, records: DiffRecord[]): void {
    d.cliOk(['volume', 'import-diff', '-', volume], { input: diffStream(SIZE, from, to, records) });
  }

  /** Catalog and files agree: every file in the pool is in some chain, every chain file checks clean. */
  function expectConsistentPool(pool: string): void {
    const referenced = new Set<string>();
    for (const v of d.json(['volume', 'list', pool])) {
      for (const file of chainFiles(v.location)) referenced.add(file);
      for (const s of d.json(['snap', 'list', `${pool}/${v.name}`])) for (const file of chainFiles(s.location)) referenced.add(file);
    }
    expect(new Set(poolFiles(d.dataDir, pool))).toEqual(new Set([...referenced].filter((p) => path.dirname(p) === path.join(d.dataDir, 'pools', pool))));
    for (const file of referenced) expectCleanCheck(file);
  }

  it('import, snapshot, write, rollback, clone, flatten, delete: every export matches its model', () => {
    // A raw image with data at unaligned places and holes.
    const a = writeRawImage(f('a.raw'), SIZE, [
      { offset: 0, data: patternBytes(3 * MiB, 1) },
      { offset: 5 * MiB + 4096, data: patternBytes(700 * 1024, 2) },
      { offset: 20 * MiB - 8192, data: patternBytes(2 * MiB + 512, 3) },
      { offset: SIZE - 65536, data: patternBytes(65536, 4) },
    ]);
    d.cliOk(['volume', 'import', f('a.raw'), 'vol']);
    expectContents('vol', a);
    expectConsistentPool('default');

    // Import the same contents as a (compressed) qcow2 made by qemu-img.
    expect(qemuImg(['convert', '-c', '-f', 'raw', '-O', 'qcow2', '-o', 'cluster_size=32768', f('a.raw'), f('a.qcow2')]).code).toBe(0);
    d.cliOk(['volume', 'import', f('a.qcow2'), 'volq']);
    expectContents('volq', a);

    // Snapshot, then write through a diff stream (data, and zeroes over existing data).
    d.cliOk(['snap', 'create', 'vol@s1']);
    const d1: DiffRecord[] = [
      { kind: 'd', offset: 1 * MiB + 512, data: patternBytes(300 * 1024, 10) },
      { kind: 'z', offset: 5 * MiB, length: 256 * 1024 },
      { kind: 'd', offset: 12 * MiB, data: patternBytes(2 * MiB, 11) },
      { kind: 'd', offset: SIZE - 4096, data: patternBytes(4096, 12) },
    ];
    importDiff('vol', 's1', 's2', d1);
    const m2 = Buffer.from(a);
    applyToModel(m2, d1);
    expectContents('vol', m2);
    expectContents('vol@s1', a);
    expectContents('vol@s2', m2);

    // The diff s1..s2 covers every range written, with the right kind.
    const extents = d.json(['volume', 'diff', 'vol', '--from', 's1', '--to', 's2']) as Array<{ offset: number; length: number; kind: string }>;
    for (const r of d1) {
      const start = r.offset;
      const end = r.offset + (r.kind === 'd' ? r.data.length : r.length);
      const covered = extents.filter((e) => e.offset < end && e.offset + e.length > start).reduce((n, e) => n + Math.min(end, e.offset + e.length) - Math.max(start, e.offset), 0);
      expect(covered, `${r.kind} at ${r.offset}`).toBe(end - start);
    }
    expect(extents.some((e) => e.kind === 'zero' && e.offset <= 5 * MiB && e.offset + e.length >= 5 * MiB + 256 * 1024)).toBe(true);

    // Ship s1..s2 to a copy that has s1 (import-diff checks and creates the snapshots).
    d.cliOk(['volume', 'import', f('a.raw'), 'replica']);
    d.cliOk(['snap', 'create', 'replica@s1']);
    d.cliOk(['volume', 'export-diff', 'vol', '--from', 's1', '--to', 's2', f('s1-s2.diff')]);
    d.cliOk(['volume', 'import-diff', f('s1-s2.diff'), 'replica']);
    expectContents('replica', m2);
    expectContents('replica@s2', m2);

    // More writes, then roll back: to s2, then to s1.
    const d2: DiffRecord[] = [{ kind: 'd', offset: 0, data: patternBytes(MiB, 20) }];
    importDiff('vol', null, null, d2);
    const m3 = Buffer.from(m2);
    applyToModel(m3, d2);
    expectContents('vol', m3);
    d.cliOk(['snap', 'rollback', 'vol@s2']);
    expectContents('vol', m2);
    d.cliOk(['snap', 'rollback', 'vol@s1']);
    expectContents('vol', a);
    expectContents('vol@s2', m2);

    // Clone s2, write to the clone, flatten it: the clone reads its own data, the parent is untouched.
    d.cliOk(['snap', 'protect', 'vol@s2']);
    d.cliOk(['snap', 'clone', 'vol@s2', 'clone1']);
    expectContents('clone1', m2);
    expect(chainFiles(d.json(['volume', 'info', 'clone1']).location).length).toBeGreaterThan(1);
    const dc: DiffRecord[] = [
      { kind: 'd', offset: 7 * MiB, data: patternBytes(MiB, 30) },
      { kind: 'z', offset: 0, length: 64 * 1024 },
    ];
    importDiff('clone1', null, null, dc);
    const mc = Buffer.from(m2);
    applyToModel(mc, dc);
    expectContents('clone1', mc);
    expectContents('vol@s2', m2);
    d.cliOk(['volume', 'flatten', 'clone1']);
    const flat = d.json(['volume', 'info', 'clone1']);
    expect(flat).toMatchObject({ parent: null, chainDepth: 1 });
    expect(chainFiles(flat.location)).toEqual([flat.location]);
    expectContents('clone1', mc);
    d.cliOk(['snap', 'unprotect', 'vol@s2']);

    // Delete snapshot s1, which both the volume (after the rollback) and s2 sit on.
    d.cliOk(['snap', 'delete', 'vol@s1']);
    expectContents('vol', a);
    expectContents('vol@s2', m2);
    expectContents('replica@s1', a);

    // A qcow2 export is a standalone image qemu-img reads and checks clean.
    d.cliOk(['volume', 'export', 'vol@s2', f('s2.qcow2'), '--format', 'qcow2']);
    writeFileSync(f('m2.raw'), m2);
    expect(qemuImg(['check', f('s2.qcow2')]).code).toBe(0);
    expect(qemuCompare(f('s2.qcow2'), f('m2.raw'), 'qcow2', 'raw').code).toBe(0);
    const qinfo = JSON.parse(qemuImg(['info', '--output=json', f('s2.qcow2')]).stdout) as Record<string, unknown>;
    expect(qinfo['backing-filename']).toBeUndefined();

    // Resize grows with zeroes.
    d.cliOk(['volume', 'resize', 'clone1', '+1M']);
    expectContents('clone1', Buffer.concat([mc, Buffer.alloc(MiB)]));

    expectConsistentPool('default');
  });
});
