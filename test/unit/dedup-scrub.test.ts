/**
 * Scrub of a dedup pool (src/store/dedup/scrub.ts) over real sealed qcow2 layers (qemu-img and
 * qemu-io make them, a ChunkedLayerStore seals them into the real DedupChunkRepository), with its
 * stores in memory and on disk (LocalChunkStore + LevelCatalogStore). Each kind of damage is made
 * on purpose, reported with a clear message, repaired where it can be, and the next scrub is
 * clean; after repair and GC every kept layer reads back through its ChunkedFile byte for byte.
 */
import { randomBytes } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PACK_TRAILER_BYTES, PackBuilder, newPackId, packKey } from '../../src/store/dedup/pack-format.js';
import type { ScrubProblem, ScrubProgress, ScrubReport } from '../../src/store/dedup/scrub-report.js';
import { LAYER_MANIFEST_PREFIX } from '../../src/store/chunked/chunked-layer-store.js';
import { chunkLocation, damageChunk, packKeys } from '../support/dedup.js';
import { CLUSTER_BYTES, GRACE_MS, LEAK_CONFIRM_MS, POOL, POOL_HASHER, ScrubPool, type StoreKind } from '../support/dedup-scrub-pool.js';
import { expectCode } from '../support/expect-error.js';
import { requireTool } from '../support/tools.js';

const sum = (counts: Map<string, number>) => [...counts.values()].reduce((a, b) => a + b, 0);
const only = (report: ScrubReport, kind: ScrubProblem['kind']) => report.problems.filter((p) => p.kind === kind);

/** Sets a chunk's count in the catalog behind the repository's back (damage, as a bug would make it). */
async function setCount(pool: ScrubPool, hash: string, refs: number): Promise<void> {
  const key = `chunk/${hash}`;
  const entry = (await pool.catalog.get(key))!;
  const value = { ...(entry.value as Record<string, number | string | null>), refs, zeroSinceMs: refs === 0 ? pool.clock.nowMs : null };
  expect((await pool.catalog.txn([{ key, modRevision: entry.modRevision }], [{ type: 'put', key, value }])).succeeded).toBe(true);
}

/** A pack nothing indexes holding `chunks` (what a call interrupted before its commit leaves). */
async function putUnindexedPack(pool: ScrubPool, chunks: readonly Uint8Array[]): Promise<string> {
  const builder = new PackBuilder(POOL_HASHER.algorithm, POOL_HASHER.digestBytes);
  for (const data of chunks) builder.add(pool.repo.hash(data), data);
  const id = newPackId(pool.clock.nowMs);
  await pool.chunkStore.put(packKey(id), builder.finish());
  return id;
}

/** The hashes the index points into `pack`. */
async function chunksInPack(pool: ScrubPool, pack: string): Promise<string[]> {
  const hashes: string[] = [];
  for (const hash of (await pool.indexedCounts()).keys()) if ((await chunkLocation(pool.catalog, hash)).pack === pack) hashes.push(hash);
  return hashes;
}

describe.skipIf(!requireTool('qemu-img', 'qemu-io')).each<StoreKind>(['memory', 'disk'])('scrub of a dedup pool (%s stores)', (kind) => {
  let pool: ScrubPool;
  beforeEach(async () => {
    pool = await ScrubPool.create(kind);
    await pool.sealAll();
  });
  afterEach(async () => pool.close());

  it('a clean pool gives a clean report with its totals, as JSON', async () => {
    const progress: ScrubProgress[] = [];
    const report = await pool.scrub({ repair: true, onProgress: (p) => progress.push(p) });
    const held = pool.heldReferences();
    expect(report).toMatchObject({ clean: true, problemCount: 0, problems: [], repaired: 0, unrecoverable: 0, holders: 3, references: sum(held), chunks: held.size });
    expect(report.packs).toBe((await packKeys(pool.chunkStore)).length);
    expect(report.packs).toBeGreaterThan(1);
    expect(report.chunkBytes).toBeLessThanOrEqual(held.size * CLUSTER_BYTES);
    expect(report.packBytes).toBeGreaterThan(report.chunkBytes);
    expect(new Set(progress.map((p) => p.phase))).toEqual(new Set(['index', 'references', 'packs', 'repair']));
    expect(JSON.parse(JSON.stringify(report))).toEqual(report);
  });

  it("scrub and GC read packs as maintenance (a tiering store does not count them as reads)", async () => {
    const purposes: (string | undefined)[] = [];
    const store = pool.chunkStore;
    const get = store.get.bind(store);
    const getRange = store.getRange.bind(store);
    store.get = (key, options) => (purposes.push(options?.readPurpose), get(key, options));
    store.getRange = (key, offset, length, options) => (purposes.push(options?.readPurpose), getRange(key, offset, length, options));
    try {
      await pool.scrub({ repair: true });
      const scrubReads = purposes.length;
      expect(scrubReads).toBeGreaterThan(1);
      await putUnindexedPack(pool, [randomBytes(1024)]); // an orphan: GC reads its size, then deletes it
      pool.clock.nowMs += GRACE_MS;
      expect((await pool.repo.gc({ graceMs: GRACE_MS, nowMs: pool.clock.nowMs })).orphanPacksDeleted).toBe(1);
      expect(purposes.length).toBeGreaterThan(scrubReads);
      expect(new Set(purposes)).toEqual(new Set(['maintenance']));
    } finally {
      store.get = get;
      store.getRange = getRange;
    }
  });

  it('a flipped byte: chunk-lost naming the layers while no good copy exists; repaired from a spare copy once one does', async () => {
    const shared = pool.patternHash(0x22); // in a and c
    const good = await pool.repo.read(shared);
    await damageChunk(pool.chunkStore, pool.catalog, shared);
    const report = await pool.scrub({ repair: true });
    expect(report).toMatchObject({ clean: false, unrecoverable: 1, repaired: 0, problemsByKind: { 'chunk-lost': 1 } });
    const [lost] = only(report, 'chunk-lost');
    expect(lost).toMatchObject({ subject: shared, holders: [`layer ${POOL}/a.qcow2`, `layer ${POOL}/c.qcow2`], repaired: false });
    expect(lost!.message).toMatch(/do not match its hash \(bit rot\), and no pack holds a good copy \(\d+ references?\); needed by layer p\/a\.qcow2, layer p\/c\.qcow2/);
    await expectCode(pool.repo.read(shared), 'CORRUPT');

    const spare = await putUnindexedPack(pool, [good]);
    const repaired = await pool.scrub({ repair: true });
    expect(repaired).toMatchObject({ problemsByKind: { 'chunk-corrupt': 1 }, repaired: 1, unrecoverable: 0 });
    expect(repaired.problems[0]!.message).toMatch(new RegExp(`repaired: the index points at the good copy in pack ${spare}`));
    // The damaged copy is unused now: a notice until GC rewrites its pack.
    const after = await pool.scrub();
    expect(after).toMatchObject({ clean: true, problemsByKind: { 'spare-copy-corrupt': 1 } });
    await pool.repo.gc({ graceMs: GRACE_MS, nowMs: pool.clock.nowMs + GRACE_MS, liveShareMin: 1.01 });
    expect(await pool.scrub()).toMatchObject({ clean: true, problemCount: 0 });
    await pool.expectLayersReadBack();
  });

  it('a flipped byte in a pack\'s footer: pack-damaged; repair moves its chunks to a new pack and deletes it', async () => {
    const { pack } = await chunkLocation(pool.catalog, pool.patternHash(0x44));
    const inPack = await chunksInPack(pool, pack);
    const bytes = (await pool.chunkStore.get(packKey(pack)))!;
    bytes[bytes.length - PACK_TRAILER_BYTES - 5]! ^= 0x01;
    await pool.chunkStore.put(packKey(pack), bytes);
    const seen = await pool.scrub();
    expect(seen).toMatchObject({ clean: false, problemsByKind: { 'pack-damaged': 1 } });
    expect(seen.problems[0]!.message).toMatch(
      new RegExp(`pack ${pack} is damaged: the header, index or trailer fails its checksum; a scrub with repair moves the good chunks the index points into it \\(${inPack.length}\\) to a new pack`),
    );
    const report = await pool.scrub({ repair: true });
    expect(report).toMatchObject({ repaired: 1, problemsByKind: { 'pack-damaged': 1 } });
    expect(report.problems[0]!.message).toMatch(new RegExp(`repaired: ${inPack.length} chunks moved to a new pack, and the pack is deleted`));
    expect(await pool.chunkStore.get(packKey(pack))).toBeUndefined();
    expect(await pool.scrub()).toMatchObject({ clean: true, problemCount: 0 });
    await pool.repo.gc({ graceMs: GRACE_MS, nowMs: pool.clock.nowMs + GRACE_MS });
    expect(await pool.scrub()).toMatchObject({ clean: true, problemCount: 0 });
    await pool.expectLayersReadBack();
  });

  it('a deleted pack: pack-missing and chunk-lost for what only it held; once those layers are removed, GC and a repair leave a clean pool', async () => {
    const own = pool.patternHash(0x55); // c's alone
    const { pack } = await chunkLocation(pool.catalog, own);
    const inPack = await chunksInPack(pool, pack);
    await pool.chunkStore.delete(packKey(pack));
    const report = await pool.scrub({ repair: true });
    expect(report.problemsByKind).toEqual({ 'pack-missing': 1, 'chunk-lost': inPack.length });
    expect(report).toMatchObject({ repaired: 0, unrecoverable: inPack.length });
    expect(only(report, 'pack-missing')[0]!.message).toMatch(
      new RegExp(`pack ${pack} is in the index but missing from the chunk store; ${inPack.length} chunks pointed into it, ${inPack.length} of them with no good copy`),
    );
    const lostOwn = only(report, 'chunk-lost').find((p) => p.subject === own)!;
    expect(lostOwn.holders).toEqual([`layer ${POOL}/c.qcow2`]);
    expect(lostOwn.message).toMatch(new RegExp(`its pack ${pack} is missing from the chunk store`));

    // The operator removes the layers that cannot be read whole; their references drop.
    const damaged = new Set(only(report, 'chunk-lost').flatMap((p) => p.holders!.map((name) => name.slice(`layer ${POOL}/`.length))));
    for (const fileName of damaged) {
      await pool.store.remove(pool.ref(fileName));
      pool.manifestsByLayer.delete(fileName);
    }
    await pool.repo.gc({ graceMs: GRACE_MS, nowMs: pool.clock.nowMs + GRACE_MS });
    const cleanup = await pool.scrub({ repair: true });
    expect(cleanup.problemsByKind).toEqual({ 'pack-missing': 1 });
    expect(cleanup.problems[0]!.message).toMatch(/no chunk points into it; repaired: its record is deleted/);
    expect(await pool.scrub()).toMatchObject({ clean: true, problemCount: 0 });
    await pool.expectLayersReadBack();
  });

  it('deleted index entries and a deleted pack record are rebuilt from the packs\' footers with the counts the manifests hold', async () => {
    const victims = [pool.patternHash(0x33), pool.patternHash(0x11)];
    const unrecorded = (await chunkLocation(pool.catalog, pool.patternHash(0x44))).pack;
    const ops = [...victims.map((hash) => ({ type: 'delete' as const, key: `chunk/${hash}` })), { type: 'delete' as const, key: `pack/${unrecorded}` }];
    expect((await pool.catalog.txn([], ops)).succeeded).toBe(true);
    const report = await pool.scrub({ repair: true });
    expect(report.problemsByKind).toEqual({ 'chunk-unindexed': 2, 'pack-unrecorded': 1 });
    expect(report.repaired).toBe(3);
    const held = pool.heldReferences();
    const rebuilt = only(report, 'chunk-unindexed').find((p) => p.subject === victims[1])!;
    expect(rebuilt.message).toMatch(new RegExp(`holders hold ${held.get(victims[1]!)} references to it, but the index has no entry; repaired: an entry with ${held.get(victims[1]!)} references is rebuilt`));
    expect(only(report, 'pack-unrecorded')[0]!.message).toMatch(/has no pack record \(GC would delete it as an orphan\); repaired: its record is added/);
    expect(await pool.indexedCounts()).toEqual(held);
    expect(await pool.scrub()).toMatchObject({ clean: true, problemCount: 0 });
    await pool.repo.gc({ graceMs: GRACE_MS, nowMs: pool.clock.nowMs + GRACE_MS });
    expect(await pool.scrub()).toMatchObject({ clean: true, problemCount: 0 });
    await pool.expectLayersReadBack();
  });

  it('a leaked reference (a manifest deleted, its references never dropped) is suspected, lowered by a later scrub, and GC then leaves no leaked chunk', async () => {
    const own = pool.patternHash(0x55);
    await pool.manifests.delete(`${LAYER_MANIFEST_PREFIX}${POOL}/c.qcow2`);
    pool.manifestsByLayer.delete('c.qcow2');
    const held = pool.heldReferences();
    const leaked = [...(await pool.indexedCounts())].filter(([hash, refs]) => refs > (held.get(hash) ?? 0)).map(([hash]) => hash);
    expect(leaked).toContain(own);

    const first = await pool.scrub({ repair: true });
    expect(first).toMatchObject({ clean: false, repaired: 0, holders: 2, references: sum(held), problemsByKind: { 'refs-leak-suspected': leaked.length } });
    expect(only(first, 'refs-leak-suspected').find((p) => p.subject === own)!.message).toMatch(
      new RegExp(`chunk ${own} has 1 reference but holders hold 0: a leak if it stays so; a scrub with repair lowers it once it has stayed unchanged for ${LEAK_CONFIRM_MS} ms`),
    );
    pool.clock.nowMs += LEAK_CONFIRM_MS - 1;
    expect((await pool.scrub({ repair: true })).problemsByKind).toEqual({ 'refs-leak-suspected': leaked.length });
    pool.clock.nowMs += 1;
    const confirmed = await pool.scrub({ repair: true });
    expect(confirmed).toMatchObject({ repaired: leaked.length, problemsByKind: { 'refs-leaked': leaked.length } });
    expect(only(confirmed, 'refs-leaked').find((p) => p.subject === own)!.message).toMatch(/leaked .*; repaired: its count is set to 0, and GC collects it after its grace period/);
    expect(await pool.scrub()).toMatchObject({ clean: true, problemCount: 0 });

    const gc = await pool.repo.gc({ graceMs: GRACE_MS, nowMs: pool.clock.nowMs + GRACE_MS });
    expect(gc.chunksForgotten).toBe(leaked.filter((hash) => !held.has(hash)).length);
    expect(await pool.indexedCounts()).toEqual(held);
    await expectCode(pool.repo.read(own), 'NOT_FOUND');
    expect(await pool.scrub()).toMatchObject({ clean: true, problemCount: 0 });
    await pool.expectLayersReadBack();
  });

  it('a count below what the manifests hold is raised (a zero one too) and GC keeps the chunk', async () => {
    const shared = pool.patternHash(0x11);
    const own = pool.patternHash(0x33);
    const held = pool.heldReferences();
    await setCount(pool, shared, 3);
    await setCount(pool, own, 0);
    const report = await pool.scrub({ repair: true });
    expect(report).toMatchObject({ repaired: 2, problemsByKind: { 'refs-low': 2 } });
    expect(only(report, 'refs-low').find((p) => p.subject === shared)!.message).toMatch(
      new RegExp(`has 3 references but holders hold ${held.get(shared)}: GC could collect it while in use; repaired: its count is raised to ${held.get(shared)}`),
    );
    expect(await pool.indexedCounts()).toEqual(held);
    expect(await pool.scrub()).toMatchObject({ clean: true, problemCount: 0 });
    expect((await pool.repo.gc({ graceMs: GRACE_MS, nowMs: pool.clock.nowMs + 10 * GRACE_MS })).chunksForgotten).toBe(0);
    await pool.expectLayersReadBack();
  });

  it('an orphan pack is a notice, left for GC, which deletes it after its grace period', async () => {
    const orphan = await putUnindexedPack(pool, [new Uint8Array(randomBytes(4096))]);
    const report = await pool.scrub({ repair: true });
    expect(report).toMatchObject({ clean: true, repaired: 0, problemsByKind: { 'pack-orphan': 1 } });
    expect(report.problems[0]!.message).toMatch(new RegExp(`pack ${orphan} \\(\\d+ bytes, 1 chunks\\) is in the chunk store but not in the index.*GC deletes it once it is older than its grace period`));
    expect(await pool.chunkStore.get(packKey(orphan))).toBeDefined();
    expect((await pool.repo.gc({ graceMs: GRACE_MS, nowMs: pool.clock.nowMs + GRACE_MS })).orphanPacksDeleted).toBe(1);
    expect(await pool.scrub()).toMatchObject({ clean: true, problemCount: 0 });
    await pool.expectLayersReadBack();
  });

  it('an unreadable manifest is reported, and while it is, no count is lowered', async () => {
    await pool.manifests.put(`${LAYER_MANIFEST_PREFIX}${POOL}/z.qcow2`, new Uint8Array(64));
    await pool.manifests.delete(`${LAYER_MANIFEST_PREFIX}${POOL}/c.qcow2`);
    const before = await pool.indexedCounts();
    await pool.scrub({ repair: true });
    pool.clock.nowMs += LEAK_CONFIRM_MS;
    const report = await pool.scrub({ repair: true });
    expect(report.problemsByKind['holder-unreadable']).toBe(1);
    expect(report.problemsByKind['refs-leaked']).toBeUndefined();
    expect(report.problemsByKind['refs-leak-suspected']).toBeGreaterThan(0);
    expect(only(report, 'holder-unreadable')[0]!.message).toMatch(/layer p\/z\.qcow2 cannot be read \(chunk manifest of layer p\/z\.qcow2 is damaged: .*\): its references are not counted, so this scrub lowers no count/);
    expect(await pool.indexedCounts()).toEqual(before);
  });
});

describe.skipIf(!requireTool('qemu-img', 'qemu-io'))('scrub: bounds, abort, exclusion', () => {
  let pool: ScrubPool;
  beforeEach(async () => {
    pool = await ScrubPool.create('memory');
    await pool.sealAll();
  });
  afterEach(async () => pool.close());

  it('lists at most problemsMax problems and counts the rest', async () => {
    await pool.manifests.delete(`${LAYER_MANIFEST_PREFIX}${POOL}/c.qcow2`);
    const report = await pool.scrub({ problemsMax: 1 });
    expect(report.problems).toHaveLength(1);
    expect(report.problemCount).toBeGreaterThan(1);
    expect(report.problemsOmitted).toBe(report.problemCount - 1);
  });

  it('an aborted scrub is CANCELLED; bad options are INVALID_ARGUMENT; a scrub during a GC is BUSY', async () => {
    const controller = new AbortController();
    controller.abort();
    await expectCode(pool.scrub({ signal: controller.signal }), 'CANCELLED');
    await expectCode(pool.scrub({ nowMs: -1 }), 'INVALID_ARGUMENT');
    const gc = pool.repo.gc({ graceMs: GRACE_MS, nowMs: pool.clock.nowMs });
    await expectCode(pool.scrub(), 'BUSY', /a garbage collection of this repository is already running/);
    await gc;
    expect((await pool.scrub()).clean).toBe(true);
  });
});
