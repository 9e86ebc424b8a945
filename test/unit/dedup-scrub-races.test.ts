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
import { LEAK_CONFIRM_MS, POOL, ScrubPool } from '../support/dedup-scrub-pool.js';
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
});
