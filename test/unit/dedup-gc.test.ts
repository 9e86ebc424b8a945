/**
 * DedupChunkRepository beyond the conformance suite: garbage collection (grace period, rewriting
 * mostly dead and small packs, orphans), bit rot, the byte compare of a hash that needs one, and
 * two repositories over the same stores (as two processes would be) racing on the same content.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { CatalogCompare, CatalogOp, CatalogTxnResult } from '../../src/core/catalog-store.js';
import { MemoryCatalogStore } from '../../src/meta/memory-catalog.js';
import { BLAKE3_HASHER, XXH128_HASHER, type ChunkHasher } from '../../src/store/dedup/chunk-hasher.js';
import { DedupChunkRepository, type DedupChunkRepositoryOptions } from '../../src/store/dedup/dedup-repository.js';
import type { GcProgress } from '../../src/store/dedup/gc.js';
import { PackBuilder, newPackId, packKey } from '../../src/store/dedup/pack-format.js';
import { ChunkReadCache } from '../../src/store/dedup/read-cache.js';
import { MemoryChunkStore } from '../../src/store/memory-chunk-store.js';
import { isBlake3Available } from '../../src/sys/blake3.js';
import { expectSameBytes } from '../support/bytes.js';
import { chunkLocation, damageChunk, packKeys, storedCopies } from '../support/dedup.js';
import { expectCode } from '../support/expect-error.js';

const KIB = 1024;
const MIB = 1024 * KIB;
const GRACE_MS = 60_000;
const hasher = isBlake3Available() ? BLAKE3_HASHER : XXH128_HASHER;
const chunk = (sizeBytes = 64 * KIB) => new Uint8Array(randomBytes(sizeBytes));

async function setup(options: Partial<DedupChunkRepositoryOptions> = {}) {
  const clock = { nowMs: 1_000_000_000 };
  const chunkStore = options.chunkStore instanceof MemoryChunkStore ? options.chunkStore : new MemoryChunkStore();
  const catalog = options.catalog ?? new MemoryCatalogStore();
  const open = () => DedupChunkRepository.open({ chunkStore, catalog, hasher, readCacheBytes: 0, nowMs: () => clock.nowMs, ...options });
  return { clock, chunkStore, catalog, repo: await open(), open };
}

/** A memory catalog whose next transaction waits until the test releases it. */
class HeldCatalog extends MemoryCatalogStore {
  private hold: ((release: () => void) => void) | undefined;

  /** Resolves, once the next transaction has arrived, to the function that lets it run. */
  holdNextTxn(): Promise<() => void> {
    return new Promise((resolve) => (this.hold = resolve));
  }

  override async txn(compares: readonly CatalogCompare[], ops: readonly CatalogOp[]): Promise<CatalogTxnResult> {
    const hold = this.hold;
    this.hold = undefined;
    if (hold !== undefined) await new Promise<void>((release) => hold(release));
    return super.txn(compares, ops);
  }
}

describe('DedupChunkRepository GC', () => {
  it('keeps a chunk at zero references for the grace period, then forgets it and deletes its pack', async () => {
    const { clock, chunkStore, repo } = await setup();
    const data = chunk();
    const [name] = await repo.addReferences([data]);
    await repo.dropReferences([name!]);
    const droppedAtMs = clock.nowMs;
    clock.nowMs += 10;
    const early = await repo.gc({ graceMs: GRACE_MS, nowMs: droppedAtMs + GRACE_MS - 1 });
    expect(early).toMatchObject({ chunksForgotten: 0, packsDeleted: 0, packsRewritten: 0, orphanPacksDeleted: 0 });
    expectSameBytes(await repo.read(name!), data);
    const late = await repo.gc({ graceMs: GRACE_MS, nowMs: droppedAtMs + GRACE_MS });
    expect(late).toMatchObject({ chunksForgotten: 1, packsDeleted: 1, packsRewritten: 0, chunksMoved: 0 });
    expect(late.bytesDeleted).toBeGreaterThan(64 * KIB);
    await expectCode(repo.read(name!), 'NOT_FOUND');
    expect(await packKeys(chunkStore)).toEqual([]);
  });

  it('a chunk referenced again within the grace period stays', async () => {
    const { clock, repo } = await setup();
    const data = chunk();
    const [name] = await repo.addReferences([data]);
    await repo.dropReferences([name!]);
    await repo.addReferences([data]);
    const report = await repo.gc({ graceMs: GRACE_MS, nowMs: clock.nowMs + 10 * GRACE_MS });
    expect(report.chunksForgotten).toBe(0);
    expect(await repo.referenceCount(name!)).toBe(1);
    expectSameBytes(await repo.read(name!), data);
  });

  it('rewrites a pack mostly dead: live chunks move, still read, counts kept; full packs stay', async () => {
    const { clock, chunkStore, repo } = await setup({ packTargetBytes: 2 * MIB });
    const first = Array.from({ length: 16 }, () => chunk());
    const second = Array.from({ length: 16 }, () => chunk());
    const firstNames = await repo.addReferences(first);
    const secondNames = await repo.addReferences(second);
    expect(await packKeys(chunkStore)).toHaveLength(2);
    await repo.dropReferences(firstNames.slice(4));
    await repo.addReferencesByHash([firstNames[0]!]);
    const progress: GcProgress[] = [];
    const report = await repo.gc({ graceMs: GRACE_MS, nowMs: clock.nowMs + GRACE_MS, onProgress: (p) => progress.push(p) });
    expect(report).toMatchObject({ chunksForgotten: 12, packsRewritten: 1, packsDeleted: 0, packsWritten: 1, chunksMoved: 4, bytesMoved: 4 * 64 * KIB });
    expect(report.damaged).toEqual([]);
    expect(new Set(progress.map((p) => p.phase))).toEqual(new Set(['index', 'packs', 'orphans']));
    expect(await packKeys(chunkStore)).toHaveLength(2);
    for (const [i, name] of firstNames.slice(0, 4).entries()) expectSameBytes(await repo.read(name), first[i]);
    for (const [i, name] of secondNames.entries()) expectSameBytes(await repo.read(name), second[i]);
    expect(await repo.referenceCount(firstNames[0]!)).toBe(2);
    expect(await repo.referenceCount(firstNames[1]!)).toBe(1);
    for (const name of firstNames.slice(4)) await expectCode(repo.read(name), 'NOT_FOUND');
    // Nothing left to do on a second pass.
    expect(await repo.gc({ graceMs: GRACE_MS, nowMs: clock.nowMs + 2 * GRACE_MS })).toMatchObject({ packsRewritten: 0, packsDeleted: 0, chunksMoved: 0 });
  });

  it('merges small packs into one', async () => {
    const { clock, chunkStore, repo } = await setup();
    const chunks = [chunk(), chunk(), chunk(4 * KIB)];
    const names: string[] = [];
    for (const data of chunks) names.push(...(await repo.addReferences([data])));
    expect(await packKeys(chunkStore)).toHaveLength(3);
    const report = await repo.gc({ graceMs: GRACE_MS, nowMs: clock.nowMs + GRACE_MS });
    expect(report).toMatchObject({ packsRewritten: 3, packsWritten: 1, chunksMoved: 3 });
    expect(await packKeys(chunkStore)).toHaveLength(1);
    for (const [i, name] of names.entries()) expectSameBytes(await repo.read(name), chunks[i]);
  });

  it('deletes orphan packs (written, never indexed) after the grace period only, and leaves foreign keys alone', async () => {
    const { clock, chunkStore, repo } = await setup();
    const builder = new PackBuilder(hasher.algorithm, hasher.digestBytes);
    builder.add(hasher.hash(chunk()), chunk());
    const orphan = packKey(newPackId(clock.nowMs));
    await chunkStore.put(orphan, builder.finish());
    await chunkStore.put('packs/not-ours', new Uint8Array(3));
    expect(await repo.gc({ graceMs: GRACE_MS, nowMs: clock.nowMs + GRACE_MS - 1 })).toMatchObject({ orphanPacksDeleted: 0 });
    expect(await repo.gc({ graceMs: GRACE_MS, nowMs: clock.nowMs + GRACE_MS })).toMatchObject({ orphanPacksDeleted: 1 });
    expect(await packKeys(chunkStore)).toEqual(['packs/not-ours']);
  });

  it('leaves alone a pack a call here has put and not yet committed, whatever its age', async () => {
    const catalog = new HeldCatalog();
    const { clock, chunkStore, open } = await setup({ catalog });
    const repo = await open();
    const held = catalog.holdNextTxn();
    const data = chunk();
    const adding = repo.addReferences([data]);
    const release = await held;
    expect(await packKeys(chunkStore)).toHaveLength(1);
    expect(await repo.gc({ graceMs: 0, nowMs: clock.nowMs + 10 * GRACE_MS })).toMatchObject({ orphanPacksDeleted: 0 });
    release();
    const [name] = await adding;
    expectSameBytes(await repo.read(name!), data);
  });

  it('an aborted GC is CANCELLED; bad options are INVALID_ARGUMENT', async () => {
    const { repo } = await setup();
    await repo.addReferences([chunk()]);
    const controller = new AbortController();
    controller.abort();
    await expectCode(repo.gc({ graceMs: 0, nowMs: 0, signal: controller.signal }), 'CANCELLED');
    await expectCode(repo.gc({ graceMs: -1, nowMs: 0 }), 'INVALID_ARGUMENT');
  });
});

describe('DedupChunkRepository GC racing other calls', () => {
  it('a chunk referenced again between GC reading it and deleting it stays', async () => {
    const catalog = new HeldCatalog();
    const { clock, open } = await setup({ catalog });
    const repo = await open();
    const data = chunk();
    const [name] = await repo.addReferences([data]);
    await repo.dropReferences([name!]);
    const held = catalog.holdNextTxn();
    const collecting = repo.gc({ graceMs: 0, nowMs: clock.nowMs + 1 });
    const release = await held; // GC's delete of the expired entry, compared against what it read
    await repo.addReferences([data]);
    release();
    expect(await collecting).toMatchObject({ chunksForgotten: 0, packsDeleted: 0 });
    expect(await repo.referenceCount(name!)).toBe(1);
    expectSameBytes(await repo.read(name!), data);
  });

  it('a call aborted after its pack is durable changes no count; its pack is an orphan for GC', async () => {
    const chunkStore = new MemoryChunkStore();
    const { clock, repo } = await setup({ chunkStore });
    const controller = new AbortController();
    const put = chunkStore.put.bind(chunkStore);
    chunkStore.put = async (...args) => {
      await put(...args);
      controller.abort(); // after the pack is stored, before the call commits
    };
    const data = chunk();
    await expectCode(repo.addReferences([data], { signal: controller.signal }), 'CANCELLED');
    chunkStore.put = put;
    expect(await repo.referenceCount(repo.hash(data))).toBe(0);
    await expectCode(repo.read(repo.hash(data)), 'NOT_FOUND');
    expect(await packKeys(chunkStore)).toHaveLength(1);
    expect(await repo.gc({ graceMs: GRACE_MS, nowMs: clock.nowMs + GRACE_MS })).toMatchObject({ orphanPacksDeleted: 1 });
    expect(await packKeys(chunkStore)).toEqual([]);
  });

  it('a read whose pack GC rewrites and deletes under it follows the chunk to its new pack', async () => {
    const chunkStore = new MemoryChunkStore();
    const { clock, open } = await setup({ chunkStore });
    const repo = await open();
    const chunks = [chunk(), chunk(), chunk()];
    const names = await repo.addReferences(chunks);
    await repo.dropReferences(names.slice(1));
    // The read's first pack access runs a GC first (the pack is two thirds dead: rewritten).
    const getRange = chunkStore.getRange.bind(chunkStore);
    let reports = 0;
    chunkStore.getRange = async (...args) => {
      chunkStore.getRange = getRange;
      reports += (await repo.gc({ graceMs: 0, nowMs: clock.nowMs + 1 })).packsRewritten;
      return getRange(...args);
    };
    expectSameBytes(await repo.read(names[0]!), chunks[0]);
    expect(reports).toBe(1);
  });
});

describe('DedupChunkRepository read cache', () => {
  it('serves copies, holds at most its size, and forgets what GC removes', async () => {
    const cache = new ChunkReadCache(256 * KIB);
    const chunks = Array.from({ length: 5 }, () => chunk());
    chunks.forEach((data, i) => cache.set(`c${i}`, Uint8Array.from(data)));
    expect(cache.get('c0')).toBeUndefined(); // least recently used, out first
    const copy = cache.get('c4')!;
    copy.fill(0);
    expectSameBytes(cache.get('c4')!, chunks[4]);

    const { clock, repo } = await setup({ readCacheBytes: MIB });
    const [name] = await repo.addReferences([chunks[0]!]);
    expectSameBytes(await repo.read(name!), chunks[0]); // now cached
    await repo.dropReferences([name!]);
    expect((await repo.gc({ graceMs: 0, nowMs: clock.nowMs + 1 })).chunksForgotten).toBe(1);
    await expectCode(repo.read(name!), 'NOT_FOUND');
  });
});

describe('DedupChunkRepository integrity', () => {
  it('bit rot in a pack: that chunk is CORRUPT naming chunk and pack, its neighbours read, GC keeps the pack', async () => {
    const { clock, chunkStore, catalog, repo } = await setup();
    const chunks = [chunk(), chunk(), chunk()];
    const names = await repo.addReferences(chunks);
    await damageChunk(chunkStore, catalog, names[1]!);
    const { pack } = await chunkLocation(catalog, names[1]!);
    await expectCode(repo.read(names[1]!), 'CORRUPT', new RegExp(`chunk ${names[1]} in pack ${pack}`));
    expectSameBytes(await repo.read(names[0]!), chunks[0]);
    expectSameBytes(await repo.read(names[2]!), chunks[2]);
    await repo.dropReferences([names[0]!, names[2]!]);
    const report = await repo.gc({ graceMs: 0, nowMs: clock.nowMs + 1 });
    expect(report.damaged).toEqual([`chunk ${names[1]} in pack ${pack}`]);
    expect(report.packsDeleted + report.packsRewritten).toBe(0);
    await expectCode(repo.read(names[1]!), 'CORRUPT');
  });

  it('a missing pack is CORRUPT naming it', async () => {
    const { chunkStore, catalog, repo } = await setup();
    const [name] = await repo.addReferences([chunk()]);
    const { pack } = await chunkLocation(catalog, name!);
    await chunkStore.delete(packKey(pack));
    await expectCode(repo.read(name!), 'CORRUPT', new RegExp(`pack ${pack} is missing`));
  });

  it('a hash that needs a byte compare shares equal bytes only; a collision is refused and changes nothing', async () => {
    // Every chunk "collides": what a crafted xxh128 collision would look like.
    const colliding: ChunkHasher = { ...XXH128_HASHER, hash: () => 'ab'.repeat(16) };
    const { repo } = await setup({ hasher: colliding });
    const a = chunk();
    const [name] = await repo.addReferences([a]);
    expect(await repo.addReferences([Uint8Array.from(a)])).toEqual([name]);
    await expectCode(repo.addReferences([chunk()]), 'UNSUPPORTED', /two different chunks have the xxh128 hash/);
    expect(await repo.referenceCount(name!)).toBe(2);
    expectSameBytes(await repo.read(name!), a);
  });

  it('a pool keeps the hash it was created with', async () => {
    const { chunkStore, catalog } = await setup();
    const other: ChunkHasher = { ...hasher, algorithm: hasher.algorithm === 'blake3' ? 'xxh128' : 'blake3' };
    await expectCode(DedupChunkRepository.open({ chunkStore, catalog, hasher: other }), 'INVALID_ARGUMENT', new RegExp(`names its chunks by ${hasher.algorithm}`));
    // Another pool in the same catalog chooses its own.
    await DedupChunkRepository.open({ chunkStore, catalog, hasher: other, pool: 'second' });
  });

  it('two repositories over the same stores (two processes) racing on the same new content keep every count', async () => {
    const { clock, chunkStore, repo, open } = await setup();
    const other = await open();
    const shared = [chunk(), chunk()];
    const results = await Promise.all(Array.from({ length: 6 }, (_, i) => (i % 2 === 0 ? repo : other).addReferences(shared)));
    for (const name of results[0]!) expect(await repo.referenceCount(name)).toBe(6);
    // Losers of the race may have put packs the index never took: GC removes them after the grace period.
    await repo.gc({ graceMs: GRACE_MS, nowMs: clock.nowMs + GRACE_MS });
    for (const [i, name] of results[0]!.entries()) {
      expect(await storedCopies(chunkStore, name)).toBe(1);
      expectSameBytes(await other.read(name), shared[i]);
    }
  });
});
