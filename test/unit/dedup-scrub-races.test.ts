/**
 * Scrub beside a daemon that adds and drops references (src/store/dedup/scrub.ts, "Running beside
 * a daemon"): the interleavings that would fool a naive audit are made to happen at a known
 * point (inside the scrub's read of the holders, or between two scrubs), and the scrub must
 * neither raise nor lower a count the daemon is in the middle of changing.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LAYER_MANIFEST_PREFIX } from '../../src/store/chunked/chunked-layer-store.js';
import { encodeManifest } from '../../src/store/chunked/manifest-format.js';
import type { ReferenceSource } from '../../src/store/dedup/scrub.js';
import type { ScrubProgress, ScrubReport } from '../../src/store/dedup/scrub-report.js';
import { LEAK_CONFIRM_MS, POOL, ScrubPool } from '../support/dedup-scrub-pool.js';
import { expectCode } from '../support/expect-error.js';
import { requireTool } from '../support/tools.js';

describe.skipIf(!requireTool('qemu-img', 'qemu-io'))('scrub beside calls that add and drop references', () => {
  let pool: ScrubPool;
  beforeEach(async () => {
    pool = await ScrubPool.create('memory');
    await pool.sealAll();
  });
  afterEach(async () => pool.close());

  /** The pool's holders, after running `meanwhile` once the scrub has read the index. */
  const holdersAfter = (meanwhile: () => Promise<void>): ReferenceSource =>
    async function* (signal?: AbortSignal) {
      await meanwhile();
      yield* pool.store.referenceHolders()(signal);
    };

  it('a copy whose references are added and whose manifest comes later is suspected, never lowered', async () => {
    const copied = pool.manifestsByLayer.get('c.qcow2')!;
    // What copying a sealed layer by reference does first: add its references...
    await pool.repo.addReferencesByHash([...copied.storedHashes()]);
    const first = await pool.scrub({ repair: true });
    expect(first.problemsByKind['refs-leak-suspected']).toBeGreaterThan(0);
    // ...and then store its manifest, after the first scrub.
    await pool.manifests.put(`${LAYER_MANIFEST_PREFIX}${POOL}/d.qcow2`, encodeManifest(copied));
    pool.manifestsByLayer.set('d.qcow2', copied);
    pool.clock.nowMs += LEAK_CONFIRM_MS;
    expect(await pool.scrub({ repair: true })).toMatchObject({ clean: true, problemCount: 0 });
    expect(await pool.indexedCounts()).toEqual(pool.heldReferences());
  });

  it('a count changed between two scrubs starts its wait again', async () => {
    const own = pool.patternHash(0x55);
    await pool.manifests.delete(`${LAYER_MANIFEST_PREFIX}${POOL}/c.qcow2`);
    pool.manifestsByLayer.delete('c.qcow2');
    const leaks = (await pool.scrub({ repair: true })).problemCount;
    await pool.repo.addReferencesByHash([own]);
    await pool.repo.dropReferences([own]);
    pool.clock.nowMs += LEAK_CONFIRM_MS;
    const second = await pool.scrub({ repair: true });
    expect(second.problemsByKind).toEqual({ 'refs-leaked': leaks - 1, 'refs-leak-suspected': 1 });
    expect(second.problems.find((p) => p.kind === 'refs-leak-suspected')!.subject).toBe(own);
    expect(await pool.repo.referenceCount(own)).toBe(1);
    pool.clock.nowMs += LEAK_CONFIRM_MS;
    expect((await pool.scrub({ repair: true })).problemsByKind).toEqual({ 'refs-leaked': 1 });
    expect(await pool.repo.referenceCount(own)).toBe(0);
  });

  it('a seal while the holders are read: its new chunks and raised counts are not taken for damage', async () => {
    const references = holdersAfter(async () => {
      await pool.makeAndSeal('e.qcow2', ['write -P 0x11 0 128k', 'write -P 0x66 1M 64k']);
    });
    const report = await pool.scrub({ repair: true, references });
    expect(report).toMatchObject({ clean: true, problemCount: 0, holders: 4 });
    expect(report.changedDuringScrub).toBeGreaterThan(0);
    expect(await pool.indexedCounts()).toEqual(pool.heldReferences());
    expect(await pool.scrub({ repair: true })).toMatchObject({ clean: true, problemCount: 0 });
    await pool.expectLayersReadBack();
  });

  it('a remove while the holders are read: its dropped counts are not taken for leaks', async () => {
    const references = holdersAfter(async () => {
      await pool.store.remove(pool.ref('b.qcow2'));
      pool.manifestsByLayer.delete('b.qcow2');
    });
    const report = await pool.scrub({ repair: true, references });
    expect(report).toMatchObject({ clean: true, problemCount: 0, holders: 2 });
    expect(report.changedDuringScrub).toBeGreaterThan(0);
    pool.clock.nowMs += LEAK_CONFIRM_MS;
    expect(await pool.scrub({ repair: true })).toMatchObject({ clean: true, problemCount: 0 });
    // b's own chunks wait at zero for GC; every other count is what a and c hold.
    const held = pool.heldReferences();
    for (const [hash, refs] of await pool.indexedCounts()) expect(refs).toBe(held.get(hash) ?? 0);
    await pool.expectLayersReadBack();
  });

  it('repairing scrubs run back to back beside seals and removes report no damage and leave every count as the manifests hold it', async () => {
    // On disk, so the scrub's reads are real I/O that interleaves with the seals' (memory stores
    // answer in microtasks, and back-to-back scrubs over them would never let a seal's file I/O run).
    await pool.close();
    pool = await ScrubPool.create('disk');
    await pool.sealAll();
    let finished = false;
    const work = (async () => {
      for (let i = 0; i < 4; i++) {
        await pool.makeAndSeal(`s${i}.qcow2`, ['write -P 0x11 0 128k', `write -P 0x${(0x70 + i).toString(16)} 1M 64k`]);
        if (i % 2 === 1) {
          await pool.store.remove(pool.ref(`s${i - 1}.qcow2`));
          pool.manifestsByLayer.delete(`s${i - 1}.qcow2`);
        }
      }
    })().finally(() => (finished = true));
    const reports: ScrubReport[] = [];
    while (!finished) {
      reports.push(await pool.scrub({ repair: true }));
      if (reports.length > 1000) throw new Error('1000 scrubs ran and the seals and removes beside them did not finish');
    }
    await work;
    expect(reports.length).toBeGreaterThan(0);
    for (const report of reports) {
      // Nothing is damaged, and one scrub never lowers a count: at most suspected leaks (calls in flight).
      expect(Object.keys(report.problemsByKind).filter((kind) => kind !== 'refs-leak-suspected')).toEqual([]);
      expect(report.repaired).toBe(0);
    }
    const held = pool.heldReferences();
    for (const [hash, refs] of await pool.indexedCounts()) expect(refs).toBe(held.get(hash) ?? 0);
    expect(await pool.scrub({ repair: true })).toMatchObject({ clean: true, problemCount: 0 });
    await pool.expectLayersReadBack();
  });

  it('an abort while the scrub runs is CANCELLED and changes nothing', async () => {
    await pool.manifests.delete(`${LAYER_MANIFEST_PREFIX}${POOL}/c.qcow2`);
    const before = await pool.indexedCounts();
    const controller = new AbortController();
    const progress: ScrubProgress[] = [];
    const scrub = pool.scrub({
      repair: true,
      signal: controller.signal,
      onProgress: (p) => {
        progress.push(p);
        if (p.phase === 'packs') controller.abort();
      },
    });
    await expectCode(scrub, 'CANCELLED');
    expect(progress.map((p) => p.phase)).toContain('references');
    expect(await pool.indexedCounts()).toEqual(before);
  });
});
