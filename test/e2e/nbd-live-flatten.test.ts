/**
 * Flatten and snapshot delete of a volume exported over NBD while qemu-io writes to it (the
 * windowed copy of src/volume/live-copy.ts, through the daemon and a real client): the job runs,
 * qemu-io batches of writes go on until it has ended, the same writes go into a local raw file, and
 * at the end `qemu-img compare` over NBD finds the volume equal to that file.
 */
import { copyFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { JobJson } from '../../src/api/rest/schemas.js';
import { makeTempDir, shmBase } from '../support/tmp.js';
import { qemuImg, qemuIo, qemuIoAsync, requireTool } from '../support/tools.js';
import { assertBuilt, chainFiles, expectCleanCheck, startDaemon, type Daemon } from './harness.js';

assertBuilt();

const MiB = 1 << 20;
const SIZE = 256 * MiB;

describe.skipIf(!requireTool('qemu-img', 'qemu-io'))('flatten and snapshot delete under qemu-io writes over NBD', () => {
  let d: Daemon;
  let tmp: { path: string; cleanup: () => void };
  const f = (name: string) => path.join(tmp.path, name);
  const tcp = (name: string) => `nbd://${d.nbdAddress}/${name}`;

  beforeAll(async () => {
    tmp = makeTempDir(shmBase());
    d = await startDaemon(f('data'));
  });
  afterAll(async () => {
    await d?.stop();
    tmp?.cleanup();
  });

  /** A raw image with 3 MiB of pattern data in every 4 MiB (several windows of the copy). */
  function parentImage(file: string): void {
    expect(qemuImg(['create', '-f', 'raw', file, String(SIZE)]).code).toBe(0);
    const cmds: string[] = [];
    for (let off = 0; off < SIZE; off += 4 * MiB) cmds.push('-c', `write -P 0x${((off / (4 * MiB)) % 200 + 20).toString(16)} ${off} ${3 * MiB}`);
    expect(qemuIo(['-f', 'raw', ...cmds, file]).code).toBe(0);
  }

  /** Batch `n` of writes: 4-64 KiB at pseudo-random offsets, each its own pattern byte, a short sleep between. */
  function batch(n: number): string[] {
    const cmds: string[] = [];
    let seed = 1000 + n;
    const rnd = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    for (let i = 0; i < 30; i++) {
      const len = (1 + Math.floor(rnd() * 16)) * 4096;
      const off = Math.floor(rnd() * ((SIZE - len) / 4096)) * 4096;
      cmds.push('-c', `write -P 0x${(((n * 30 + i) % 250) + 1).toString(16)} ${off} ${len}`, '-c', 'sleep 2');
    }
    return [...cmds, '-c', 'flush'];
  }

  /** Writes batches over NBD (and the same into `expected`) until the job has ended; its end state. */
  async function writeUntilDone(exportName: string, expected: string, jobId: string): Promise<{ state: string; batches: number }> {
    for (let n = 0; ; n++) {
      const cmds = batch(n);
      const r = await qemuIoAsync(['-f', 'raw', ...cmds, tcp(exportName)]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout + r.stderr).not.toMatch(/error|failed/i);
      expect(qemuIo(['-f', 'raw', ...cmds, expected]).code).toBe(0);
      const job = d.json<JobJson>(['job', 'info', jobId]);
      if (job.state !== 'running' || n >= 200) return { state: job.state, batches: n + 1 };
    }
  }

  function expectSame(exportName: string, expected: string): void {
    const cmp = qemuImg(['compare', '-f', 'raw', '-F', 'raw', tcp(exportName), expected]);
    expect(cmp.code, cmp.stdout + cmp.stderr).toBe(0);
  }

  it('flattens a clone while qemu-io writes to it; it reads the parent data and every write', async () => {
    const parent = f('parent.raw');
    parentImage(parent);
    d.cliOk(['volume', 'import', parent, 'base']);
    d.cliOk(['snap', 'create', 'base@gold']);
    d.cliOk(['snap', 'protect', 'base@gold']);
    d.cliOk(['snap', 'clone', 'base@gold', 'c']);
    d.cliOk(['volume', 'export-nbd', 'c']);
    const expected = f('expected-c.raw');
    copyFileSync(parent, expected);

    const job = d.json<JobJson>(['volume', 'flatten', 'c', '--no-wait']);
    const ended = await writeUntilDone('default/c', expected, job.id);
    expect(ended.state).toBe('succeeded');
    expectSame('default/c', expected);
    // Standalone now: no parent, one layer without a backing file, a clean image.
    const info = d.json<{ parent?: unknown; location: string }>(['volume', 'info', 'c']);
    expect(info.parent ?? undefined).toBeUndefined();
    expect(chainFiles(info.location)).toHaveLength(1);
    expectCleanCheck(info.location);
    // More writes after the flatten land on the standalone layer.
    const after = batch(999);
    expect(qemuIo(['-f', 'raw', ...after, tcp('default/c')]).code).toBe(0);
    expect(qemuIo(['-f', 'raw', ...after, expected]).code).toBe(0);
    expectSame('default/c', expected);
    d.cliOk(['volume', 'export-nbd', 'base@gold']);
    expectSame('default/base@gold', parent);
  });

  it('deletes the newest snapshot of a volume while qemu-io writes to it; it reads every write', async () => {
    const parent = f('parent.raw');
    d.cliOk(['volume', 'import', parent, 'vm']);
    d.cliOk(['snap', 'create', 'vm@s1']);
    d.cliOk(['volume', 'export-nbd', 'vm']);
    const expected = f('expected-vm.raw');
    copyFileSync(parent, expected);
    // The snapshot delete is a request the CLI awaits: run it through the API, poll its job.
    const deleting = d.api('DELETE', '/v1/pools/default/volumes/vm/snapshots/s1');
    let jobId: string | undefined;
    for (let i = 0; i < 500 && jobId === undefined; i++) {
      jobId = d.json<JobJson[]>(['job', 'list']).find((j) => j.kind === 'snapshot-delete' && j.target === 'default/vm@s1')?.id;
      if (jobId === undefined) await new Promise((resolve) => setTimeout(resolve, 5));
    }
    expect(jobId).toBeDefined();
    await writeUntilDone('default/vm', expected, jobId!);
    expect((await deleting).status).toBeLessThan(300);
    expect(d.json<unknown[]>(['snap', 'list', 'vm'])).toEqual([]);
    expectSame('default/vm', expected);
    const info = d.json<{ location: string }>(['volume', 'info', 'vm']);
    expect(chainFiles(info.location)).toHaveLength(1);
    expectCleanCheck(info.location);
  });
});
