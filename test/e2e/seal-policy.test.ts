/**
 * Policy sealing and compaction end to end through the daemon (docs/dedup.md, "Policy sealing and
 * compaction"): a dedup pool with a short --seal-after freezes the active layer of a volume that
 * qemu-io stopped writing over NBD, seals it in the background and merges it with the internal
 * layer under it, cycle after cycle; the chain stays short (at most one internal layer between
 * user snapshots) and qemu-img compare reads the volume (and a snapshot taken between cycles) back
 * over NBD against a reference raw file. `volume seal` and `volume compact` do the same by hand.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { beforeAll, describe, expect, it } from 'vitest';
import type { JobJson, PoolJson, VolumeJson } from '../../src/api/rest/schemas.js';
import type { VolumeCompactJson, VolumeSealJson } from '../../src/api/rest/compact-schemas.js';
import { qemuImg, qemuIo, requireTool } from '../support/tools.js';
import { assertBuilt, qemuCompare, useDaemon, type Daemon } from './harness.js';

assertBuilt();

const MiB = 1 << 20;
const SIZE = 16 * MiB;
const CYCLES = 5;
/** How long a test waits for the policy's next freeze before it fails (the daemon checks every 100 ms). */
const FREEZE_WAIT_MS = 60_000;

/** Waits (polling the job list: the seal job is the event) for a seal job of `target` not in `seen`, then for it and the compactions after it to end. */
async function awaitPolicySeal(d: Daemon, target: string, seen: Set<string>): Promise<JobJson> {
  const deadline = Date.now() + FREEZE_WAIT_MS;
  for (;;) {
    const job = d.json<JobJson[]>(['job', 'list']).find((j) => j.kind === 'seal' && j.target === target && !seen.has(j.id));
    if (job !== undefined) {
      seen.add(job.id);
      d.cliOk(['job', 'watch', job.id]);
      awaitJobs(d, 'compact', target);
      return d.json<JobJson>(['job', 'info', job.id]);
    }
    if (Date.now() > deadline) throw new Error(`no seal job for ${target} within ${FREEZE_WAIT_MS} ms`);
    await sleep(100);
  }
}

function awaitJobs(d: Daemon, kind: string, target: string): void {
  for (const job of d.json<JobJson[]>(['job', 'list'])) {
    if (job.kind === kind && job.target === target && (job.state === 'queued' || job.state === 'running')) d.cliOk(['job', 'watch', job.id]);
  }
}

describe.skipIf(!requireTool('qemu-img', 'qemu-io'))('policy sealing and compaction through the daemon', () => {
  const suite = useDaemon({ env: { STRATA_SEAL_POLICY_INTERVAL_MS: '100' } });
  const f = (name: string) => suite.file(name);
  const tcp = (name: string) => `nbd://${suite.d.nbdAddress}/${name}`;
  let d: Daemon;
  beforeAll(() => {
    d = suite.d;
  });

  it('shows the policy and refuses bad settings naming the fix', () => {
    const pool = d.json<PoolJson>(['pool', 'create', 'pp', '--dedup', '--seal-after', '1s', '--seal-above', '64M']);
    expect(pool.dedup).toMatchObject({ sealAfterMs: 1000, sealAboveBytes: 64 * MiB });
    expect(d.cliOk(['pool', 'info', 'pp']).stdout).toMatch(/seal policy\s+after 1s without writes, above 64(\.0)? MiB/);
    d.cliFails(['pool', 'create', 'x1', '--seal-after', '1s'], 2, /: --seal-after applies to dedup pools only/, /--dedup/);
    d.cliFails(['pool', 'create', 'x1', '--dedup', '--seal-after', 'soon'], 2, /not a duration/);
    d.cliFails(['pool', 'create', 'x1', '--dedup', '--seal-after', '10ms'], 1, /at least 1 second/);
    d.cliFails(['pool', 'create', 'x1', '--dedup', '--seal-above', '4k'], 1, /at least 1 MiB/);
    d.cliOk(['volume', 'create', 'default/plain', '1M']);
    d.cliFails(['volume', 'seal', 'default/plain'], 1, /only dedup pools seal/, /--dedup/);
    d.cliFails(['volume', 'compact', 'default/plain'], 1, /only dedup pools/);
  });

  it('freezes, seals and compacts a cooled active layer cycle after cycle; the chain stays short and the data reads back', async () => {
    d.cliOk(['volume', 'create', 'pp/vm', String(SIZE)]);
    d.cliOk(['volume', 'export-nbd', 'pp/vm']);
    const reference = f('vm.raw');
    expect(qemuImg(['create', '-f', 'raw', reference, String(SIZE)]).code).toBe(0);
    const seen = new Set<string>();
    let snapshots = 0;
    for (let cycle = 0; cycle < CYCLES; cycle++) {
      // Each cycle overwrites part of the last one's data (upper clusters must win the merge),
      // writes zeroes over some, and adds new data.
      const cmds = [
        '-c', `write -P 0x${(0x21 + cycle).toString(16)} ${cycle * MiB} ${2 * MiB}`,
        '-c', `write -z ${cycle * MiB + 512 * 1024} 128k`,
        '-c', `write -P 0x5a ${12 * MiB + cycle * 4096} 4k`,
        '-c', 'flush',
      ];
      expect(qemuIo(['-f', 'raw', ...cmds, tcp('pp/vm')]).code).toBe(0);
      expect(qemuIo(['-f', 'raw', ...cmds, reference]).code).toBe(0);
      const seal = await awaitPolicySeal(d, 'pp/vm', seen);
      expect(seal.state).toBe('succeeded');
      const vol = d.json<VolumeJson>(['volume', 'info', 'pp/vm']);
      // The active layer, at most one internal layer above each snapshot, and the snapshots.
      expect(vol.chainDepth).toBeLessThanOrEqual(2 + 2 * snapshots);
      const compared = qemuCompare(tcp('pp/vm'), reference);
      expect(compared.code, compared.stdout + compared.stderr).toBe(0);
      if (cycle === 2) {
        d.cliOk(['snap', 'create', 'pp/vm@mid']);
        snapshots++;
        expect(qemuImg(['convert', '-f', 'raw', '-O', 'raw', reference, f('mid.raw')]).code).toBe(0);
      }
    }
    const compactions = d.json<JobJson[]>(['job', 'list']).filter((j) => j.kind === 'compact' && j.target === 'pp/vm');
    expect(compactions.filter((j) => j.state !== 'succeeded')).toEqual([]);
    // A compact job's doneBytes counts the pairs it merged: every policy seal but the first above each snapshot merged one.
    expect(compactions.reduce((sum, j) => sum + j.doneBytes, 0)).toBe(CYCLES - 2);
    d.cliOk(['volume', 'export-nbd', 'pp/vm@mid']);
    const mid = qemuCompare(tcp('pp/vm@mid'), f('mid.raw'));
    expect(mid.code, mid.stdout + mid.stderr).toBe(0);
    d.cliOk(['volume', 'unexport-nbd', 'pp/vm@mid']);
  });

  it('seals and compacts by hand; a rollback drops the internal layers above the snapshot', () => {
    // A pool without a policy: only the commands freeze.
    d.cliOk(['pool', 'create', 'ph', '--dedup']);
    d.cliOk(['volume', 'create', 'ph/hand', String(SIZE)]);
    d.cliOk(['volume', 'export-nbd', 'ph/hand']);
    const reference = f('hand.raw');
    expect(qemuImg(['create', '-f', 'raw', reference, String(SIZE)]).code).toBe(0);
    const seen = new Set<string>();
    for (let round = 0; round < 3; round++) {
      const cmds = ['-c', `write -P 0x${(0x61 + round).toString(16)} ${round * 3 * MiB} ${4 * MiB}`, '-c', 'flush'];
      expect(qemuIo(['-f', 'raw', ...cmds, tcp('ph/hand')]).code).toBe(0);
      expect(qemuIo(['-f', 'raw', ...cmds, reference]).code).toBe(0);
      const sealed = d.json<VolumeSealJson>(['volume', 'seal', 'ph/hand']);
      expect(sealed).toMatchObject({ pool: 'ph', volume: 'hand', sealJobId: expect.any(String) });
      seen.add(sealed.sealJobId!);
      d.cliOk(['job', 'watch', sealed.sealJobId!]);
      awaitJobs(d, 'compact', 'ph/hand');
    }
    const compacted = d.json<VolumeCompactJson>(['volume', 'compact', 'ph/hand']);
    expect(compacted).toMatchObject({ pool: 'ph', volume: 'hand', mergedPairs: 0, chainDepthAfter: 2 });
    expect(d.cliOk(['volume', 'compact', 'ph/hand']).stdout).toMatch(/merged 0 pairs of sealed layers; chain 2 -> 2 layers deep/);
    const compared = qemuCompare(tcp('ph/hand'), reference);
    expect(compared.code, compared.stdout + compared.stderr).toBe(0);
    d.cliOk(['volume', 'unexport-nbd', 'ph/hand']);
    // Rollback: the internal layers above the snapshot go with the old active layer.
    d.cliOk(['snap', 'create', 'ph/hand@base']);
    const more = ['-c', 'write -P 0x99 0 1M', '-c', 'flush'];
    d.cliOk(['volume', 'export-nbd', 'ph/hand']);
    expect(qemuIo(['-f', 'raw', ...more, tcp('ph/hand')]).code).toBe(0);
    const frozen = d.json<VolumeSealJson>(['volume', 'seal', 'ph/hand']);
    d.cliOk(['job', 'watch', frozen.sealJobId!]);
    d.cliOk(['volume', 'unexport-nbd', 'ph/hand']);
    d.cliOk(['snap', 'rollback', 'ph/hand@base']);
    expect(d.json<VolumeJson>(['volume', 'info', 'ph/hand']).chainDepth).toBe(3);
    d.cliOk(['volume', 'export-nbd', 'ph/hand']);
    expect(qemuCompare(tcp('ph/hand'), reference).code).toBe(0);
    d.cliOk(['volume', 'unexport-nbd', 'ph/hand']);
    d.cliOk(['volume', 'delete', 'ph/hand', '--now', '--force']);
  });
});
