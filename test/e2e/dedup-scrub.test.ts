/**
 * `strata pool scrub` end to end: a dedup pool holding a qcow2 image made by qemu-img and qemu-io
 * (imported, its base sealed by the seal job, then snapshotted) scrubs clean; then, with the
 * daemon running, one pack gets a byte flipped in a chunk (no other copy: unrecoverable) and
 * another a byte flipped in its footer index (its good chunks can be moved out): the scrub exits
 * EXIT_SCRUB_PROBLEMS naming both packs and the volume that needs the lost chunk, and --repair
 * fixes the footer and leaves the lost chunk reported. (A deleted index entry is not reachable
 * from outside a running daemon: the index is in its catalog; test/unit/dedup-scrub.test.ts
 * covers that repair.)
 */
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, readdirSync, readSync, statSync, writeFileSync, writeSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import type { JobJson } from '../../src/api/rest/schemas.js';
import type { PoolScrubJson } from '../../src/api/rest/scrub-schemas.js';
import { EXIT_SCRUB_PROBLEMS } from '../../src/cli/pool-scrub.js';
import { PACK_HEADER_BYTES, PACK_TRAILER_BYTES } from '../../src/store/dedup/pack-format.js';
import { qemuImg, qemuIo, requireTool } from '../support/tools.js';
import { assertBuilt, useDaemon, waitForSeals, type Daemon } from './harness.js';

assertBuilt();

const MiB = 1 << 20;
const SIZE = 32 * MiB;
/** Random (so unique) data: about three packs of chunks. */
const RANDOM_BYTES = 10 * MiB;

/** Flips every bit of one byte of a file in place (the daemon keeps running). */
function flipByte(file: string, offset: number): void {
  const fd = openSync(file, 'r+');
  try {
    const byte = Buffer.alloc(1);
    readSync(fd, byte, 0, 1, offset);
    byte[0] = byte[0]! ^ 0xff;
    writeSync(fd, byte, 0, 1, offset);
  } finally {
    closeSync(fd);
  }
}

/** The pack files of a pool, oldest id first (ids start with their creation time). */
function packFiles(d: Daemon, pool: string): string[] {
  const dir = path.join(d.dataDir, 'chunks', pool, 'packs');
  return readdirSync(dir)
    .filter((name) => !name.startsWith('.'))
    .sort()
    .map((name) => path.join(dir, name));
}

function scrub(d: Daemon, args: readonly string[]): { code: number | null; report: PoolScrubJson } {
  const r = d.cli(['pool', 'scrub', ...args, '--json']);
  return { code: r.code, report: JSON.parse(r.stdout) as PoolScrubJson };
}

describe.skipIf(!requireTool('qemu-img', 'qemu-io'))('pool scrub through the daemon', () => {
  const suite = useDaemon();
  let d: Daemon;
  beforeAll(() => {
    d = suite.d;
  });

  it('scrubs clean, reports damaged packs with the volume that needs them, repairs what it can', async () => {
    d.cliOk(['pool', 'create', 'ds', '--dedup']);
    const raw = suite.file('source.raw');
    const image = Buffer.alloc(SIZE);
    randomBytes(RANDOM_BYTES).copy(image, 4 * MiB);
    writeFileSync(raw, image);
    const qcow2 = suite.file('source.qcow2');
    expect(qemuImg(['convert', '-f', 'raw', '-O', 'qcow2', raw, qcow2]).code).toBe(0);
    expect(qemuIo(['-f', 'qcow2', '-c', 'write -P 0x5a 20M 1M', '-c', 'flush', qcow2]).code).toBe(0);
    d.cliOk(['volume', 'import', qcow2, 'ds/vm']);
    d.cliOk(['snap', 'create', 'ds/vm@s1']);
    expect(waitForSeals(d, 'ds').every((j) => j.state === 'succeeded')).toBe(true);

    const clean = scrub(d, ['ds']);
    expect(clean.code).toBe(0);
    expect(clean.report.report).toMatchObject({ repair: false, clean: true, problemCount: 0, holders: 2 });
    expect(clean.report.report.chunks).toBeGreaterThan(RANDOM_BYTES / (64 * 1024));
    expect(clean.report.report.packs).toBeGreaterThanOrEqual(3);
    expect(clean.report.layers).toEqual([]);
    expect(d.cliOk(['pool', 'scrub', 'ds']).stdout).toMatch(/result\s+clean/);
    d.cliFails(['pool', 'scrub', 'default'], 1, /local pool/, /qemu-img check/);
    // REST: no body means no repair; the job is listed as a scrub of the pool.
    const viaRest = await d.apiJson<PoolScrubJson>('POST', '/v1/pools/ds/scrub', undefined, 200);
    expect(viaRest).toMatchObject({ pool: 'ds', report: { repair: false, clean: true } });
    expect(d.json<JobJson>(['job', 'info', viaRest.jobId])).toMatchObject({ kind: 'scrub', target: 'ds', state: 'succeeded' });
    d.cliFails(['pool', 'scrub', 'nothing'], 3, /does not exist/);
    d.cliFails(['pool', 'scrub'], 2, /NAME/);

    // Damage while the daemon runs: a chunk's bytes in one pack, the footer index of another.
    const [rotten, broken] = packFiles(d, 'ds') as [string, string];
    flipByte(rotten, PACK_HEADER_BYTES + 100);
    flipByte(broken, statSync(broken).size - PACK_TRAILER_BYTES - 3);
    const rottenId = path.basename(rotten);
    const brokenId = path.basename(broken);

    const found = d.cli(['pool', 'scrub', 'ds']);
    expect(found.code, found.stderr).toBe(EXIT_SCRUB_PROBLEMS);
    expect(found.stdout).toMatch(/result\s+\d+ problems remain/);
    expect(found.stdout).toContain(`chunk-lost (unrecoverable)`);
    expect(found.stdout).toContain(`in pack ${rottenId} do not match its hash`);
    expect(found.stdout).toMatch(new RegExp(`pack-damaged \\(not repaired\\): .*${brokenId}`));
    expect(found.stdout).toMatch(/affected: layer ds\/\S+: volume ds\/vm \(base layer\)/);
    expect(found.stdout).toMatch(/restore the affected volumes/);
    // The progress bar (asked for: stderr is no terminal here) ends at the pack bytes read.
    const withBar = d.cli(['pool', 'scrub', 'ds', '-p']);
    expect(withBar.code).toBe(EXIT_SCRUB_PROBLEMS);
    expect(withBar.stderr).toMatch(/scrubbing \[#+\] 100%/);

    const repaired = scrub(d, ['ds', '--repair']);
    expect(repaired.code).toBe(EXIT_SCRUB_PROBLEMS);
    expect(repaired.report.report).toMatchObject({ repair: true, clean: false, unrecoverable: 1, problemsByKind: { 'chunk-lost': 1, 'pack-damaged': 1 } });
    const damaged = repaired.report.report.problems.find((p) => p.kind === 'pack-damaged');
    expect(damaged).toMatchObject({ subject: brokenId, repaired: true });
    const lost = repaired.report.report.problems.find((p) => p.kind === 'chunk-lost');
    expect(lost).toMatchObject({ repaired: false, holders: [expect.stringMatching(/^layer ds\//)] });
    expect(repaired.report.layers).toEqual([{ holder: lost!.holders![0], layer: expect.any(String), volume: 'vm', snapshot: null, role: 'base' }]);
    expect(packFiles(d, 'ds').map((f) => path.basename(f))).not.toContain(brokenId);

    // What remains is the chunk no pack holds a good copy of.
    const after = scrub(d, ['ds']);
    expect(after.code).toBe(EXIT_SCRUB_PROBLEMS);
    expect(after.report.report.problemsByKind).toEqual({ 'chunk-lost': 1 });
    expect(after.report.report.problems[0]!.message).toContain(rottenId);
  });
});
