/**
 * recover() of puts whose steps are recorded (put-journal.ts: the repository's counts share the
 * catalog, so each step's record commits with its references and no marker chunk exists), cut
 * at each stage. The first model's catalog dies at a chosen transaction: that transaction is
 * applied first ('after') or never ('before'), and from then on no transaction of the dead model
 * is applied, as after a SIGKILL. A second model (its own repository objects) over the same
 * stored catalog and chunks recovers: every acknowledged object reads back with its ETag,
 * nothing half-written is listed, the references are exactly what the objects hold (nothing
 * leaked, nothing dropped twice), and the journal is empty.
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { CatalogOp, CatalogStore } from '../../src/core/catalog-store.js';
import { MemoryCatalogStore } from '../../src/meta/memory-catalog.js';
import { MemoryChunkStore } from '../../src/store/memory-chunk-store.js';
import { collect, createTestObjectModel, patternBytes, streamOf, totalReferences, type TestObjectModel } from '../support/object-model.js';

const OWNER = 'u';
const KiB = 1024;
const MiB = 1024 * KiB;
const CHUNK_BYTES = 64 * KiB;

type Pick = (ops: readonly CatalogOp[]) => boolean;

/** A view of `inner` that dies at the first transaction `pick` chooses (see the file comment). */
function dyingCatalog(inner: CatalogStore, pick: Pick, when: 'before' | 'after'): { catalog: CatalogStore; died: Promise<void> } {
  let dead = false;
  let die!: () => void;
  const died = new Promise<void>((resolve) => (die = resolve));
  const never = new Promise<never>(() => undefined);
  const catalog = new Proxy(inner, {
    get(target, name, receiver) {
      const value: unknown = Reflect.get(target, name, receiver);
      if (name !== 'txn') return typeof value === 'function' ? value.bind(target) : value;
      return async (compares: Parameters<CatalogStore['txn']>[0], ops: readonly CatalogOp[]) => {
        if (dead) return never;
        if (!pick(ops)) return target.txn(compares, ops);
        dead = true;
        if (when === 'after') await target.txn(compares, ops);
        die();
        return never;
      };
    },
  });
  return { catalog, died };
}

const puts = (prefix: string): Pick => (ops) => ops.some((op) => op.type === 'put' && op.key.startsWith(prefix));
const deletes = (prefix: string): Pick => (ops) => ops.some((op) => op.type === 'delete' && op.key.startsWith(prefix));
/** The n-th transaction `pick` chooses. */
function nth(pick: Pick, n: number): Pick {
  let seen = 0;
  return (ops) => pick(ops) && ++seen === n;
}

interface Stores {
  readonly catalog: MemoryCatalogStore;
  readonly chunkStore: MemoryChunkStore;
}

/** A healthy model over the stores (a process started after the crash), with bucket 'rec' made once. */
async function modelOver(stores: Stores, catalog: CatalogStore = stores.catalog): Promise<TestObjectModel> {
  const test = await createTestObjectModel({ catalog, chunkStore: stores.chunkStore });
  if ((await stores.catalog.get('s3-bucket/rec')) === undefined) await test.model.createBucket({ name: 'rec', owner: OWNER, pool: 'pool-a' });
  return test;
}

/** A model over the stores whose catalog dies as `dyingCatalog` says. */
async function dyingModel(stores: Stores, pick: Pick, when: 'before' | 'after'): Promise<{ test: TestObjectModel; died: Promise<void> }> {
  const dying = dyingCatalog(stores.catalog, pick, when);
  return { test: await modelOver(stores, dying.catalog), died: dying.died };
}

function newStores(): Stores {
  return { catalog: new MemoryCatalogStore(), chunkStore: new MemoryChunkStore() };
}

async function stepRecords(catalog: CatalogStore): Promise<Record<string, unknown>[]> {
  return (await catalog.list('s3-put-step/')).entries.map((entry) => entry.value as Record<string, unknown>);
}

async function expectJournalEmpty(catalog: CatalogStore): Promise<void> {
  expect((await catalog.list('s3-put')).entries).toEqual([]);
  expect((await catalog.list('s3-release/')).entries).toEqual([]);
}

async function bodyOf(test: TestObjectModel, key: string): Promise<{ etag: string; bytes: Buffer }> {
  const got = await test.model.getObject({ bucket: 'rec', key });
  if (got.outcome !== 'ok') throw new Error('expected the object');
  return { etag: got.version.data!.etag, bytes: await collect(got.body()) };
}

const md5 = (data: Uint8Array): string => createHash('md5').update(data).digest('hex');
const chunksOf = (data: Uint8Array): number => Math.ceil(data.length / CHUNK_BYTES);

describe('recover() of a put of recorded steps, cut at each stage', () => {
  // 9 MiB: three steps (64, 64 and 16 chunks); the first carries the put record, the later ones wait for it.
  const data = patternBytes(9 * MiB, 1);
  const put = (test: TestObjectModel, key = 'k') => test.model.putObject({ bucket: 'rec', key, owner: OWNER, body: streamOf(data, 256 * KiB), claims: { sizeBytes: data.length } });

  for (const stage of [
    { name: 'after its first step (with the put record) committed', pick: puts('s3-put/'), when: 'after' as const, applied: 1 },
    { name: 'after its second step committed', pick: nth(puts('s3-put-step/'), 2), when: 'after' as const, applied: 2 },
    { name: 'before its install committed', pick: puts('s3-current/'), when: 'before' as const, applied: 3 },
  ]) {
    it(`a put cut ${stage.name}: its applied steps are given back, nothing is listed`, async () => {
      const stores = newStores();
      const dying = await dyingModel(stores, stage.pick, stage.when);
      void put(dying.test).catch(() => undefined);
      await dying.died;
      // The steps' records carry the flag and no marker; the pool holds the applied steps' chunks, no marker.
      const steps = await stepRecords(stores.catalog);
      expect(steps).toHaveLength(stage.applied);
      for (const step of steps) {
        expect(step.appliedWithRecord).toBe(true);
        expect('marker' in step).toBe(false);
      }
      expect(await totalReferences(stores.catalog, 'pool-a')).toBe(steps.reduce((sum, step) => sum + (step.hashes as string[]).length, 0));
      const recovering = await modelOver(stores);
      expect(await recovering.model.recover()).toMatchObject({ putsAbandoned: 1, putsSettled: 0, stepsUndone: stage.applied });
      expect(await totalReferences(stores.catalog, 'pool-a')).toBe(0);
      expect((await recovering.model.listObjectsV2({ bucket: 'rec' })).objects).toEqual([]);
      await expectJournalEmpty(stores.catalog);
    });
  }

  it('a put cut right after its install committed: the object reads back with its ETag, nothing is left to settle', async () => {
    const stores = newStores();
    const dying = await dyingModel(stores, puts('s3-current/'), 'after');
    void put(dying.test).catch(() => undefined);
    await dying.died;
    // The install deleted the journal in its own commit.
    await expectJournalEmpty(stores.catalog);
    const recovering = await modelOver(stores);
    expect(await recovering.model.recover()).toMatchObject({ putsAbandoned: 0, putsSettled: 0, stepsUndone: 0 });
    const got = await bodyOf(recovering, 'k');
    expect(got.etag).toBe(md5(data));
    expect(got.bytes.equals(data)).toBe(true);
    expect(await totalReferences(stores.catalog, 'pool-a')).toBe(chunksOf(data));
  });

  for (const when of ['before', 'after'] as const) {
    it(`a recovery cut ${when} its drop commits is finished by the next, dropping nothing twice`, async () => {
      const stores = newStores();
      // An acknowledged object with the same bytes: a second drop of the cut put's references would take its.
      const healthy = await modelOver(stores);
      await put(healthy, 'keep');
      const dying = await dyingModel(stores, puts('s3-current/'), 'before');
      void put(dying.test).catch(() => undefined);
      await dying.died;
      expect(await totalReferences(stores.catalog, 'pool-a')).toBe(2 * chunksOf(data));
      // The first recovery dies at its drop, whose commit deletes the steps' records.
      const dyingRecovery = await dyingModel(stores, deletes('s3-put-step/'), when);
      void dyingRecovery.test.model.recover().catch(() => undefined);
      await dyingRecovery.died;
      expect(await totalReferences(stores.catalog, 'pool-a')).toBe((when === 'after' ? 1 : 2) * chunksOf(data));
      const recovering = await modelOver(stores);
      expect(await recovering.model.recover()).toMatchObject({ putsAbandoned: 1, stepsUndone: when === 'after' ? 0 : 3 });
      expect(await totalReferences(stores.catalog, 'pool-a')).toBe(chunksOf(data));
      const kept = await bodyOf(recovering, 'keep');
      expect(kept.etag).toBe(md5(data));
      expect((await recovering.model.listObjectsV2({ bucket: 'rec' })).objects.map((o) => o.key)).toEqual(['keep']);
      await expectJournalEmpty(stores.catalog);
    });
  }

  it('a copy cut after its by-hash step committed: the copy\'s references are given back, the source kept', async () => {
    const stores = newStores();
    const source = patternBytes(300 * KiB, 2);
    await (await modelOver(stores)).model.putObject({ bucket: 'rec', key: 'src', owner: OWNER, body: streamOf(source) });
    const dying = await dyingModel(stores, puts('s3-put/'), 'after');
    void dying.test.model.copyObject({ source: { bucket: 'rec', key: 'src' }, bucket: 'rec', key: 'dst', owner: OWNER }).catch(() => undefined);
    await dying.died;
    expect(await stepRecords(stores.catalog)).toEqual([expect.objectContaining({ appliedWithRecord: true })]);
    expect(await totalReferences(stores.catalog, 'pool-a')).toBe(2 * chunksOf(source)); // no marker
    const recovering = await modelOver(stores);
    expect(await recovering.model.recover()).toMatchObject({ putsAbandoned: 1, stepsUndone: 1 });
    expect(await totalReferences(stores.catalog, 'pool-a')).toBe(chunksOf(source));
    expect((await bodyOf(recovering, 'src')).etag).toBe(md5(source));
    await expect(recovering.model.getObject({ bucket: 'rec', key: 'dst' })).rejects.toMatchObject({ s3Code: 'NoSuchKey' });
    await expectJournalEmpty(stores.catalog);
  });

  it('multipart: a part cut before it was recorded, and a re-chunking complete cut before its install, leave the upload whole', async () => {
    const stores = newStores();
    const healthy = await modelOver(stores);
    // Part 1 ends mid-chunk, so completing re-chunks: its whole chunks are shared by hash, the rest streamed.
    const part1 = patternBytes(5 * MiB + 100, 3);
    const part2 = patternBytes(200 * KiB, 4);
    const { uploadId } = await healthy.model.createMultipartUpload({ bucket: 'rec', key: 'mp', owner: OWNER });
    const partOf = (test: TestObjectModel, partNumber: number, bytes: Uint8Array) =>
      test.model.uploadPart({ bucket: 'rec', key: 'mp', uploadId, partNumber, body: streamOf(bytes, 256 * KiB), claims: { sizeBytes: bytes.length } });
    const uploaded1 = await partOf(healthy, 1, part1);
    const partRefs = chunksOf(part1) + chunksOf(part2);

    const cutPart = await dyingModel(stores, puts('s3-part/'), 'before');
    void partOf(cutPart.test, 2, part2).catch(() => undefined);
    await cutPart.died;
    let recovering = await modelOver(stores);
    expect(await recovering.model.recover()).toMatchObject({ putsAbandoned: 1, stepsUndone: 1 });
    expect(await totalReferences(stores.catalog, 'pool-a')).toBe(chunksOf(part1));
    const uploaded2 = await partOf(recovering, 2, part2);
    await recovering.model.idle();
    expect(await totalReferences(stores.catalog, 'pool-a')).toBe(partRefs);

    const parts = [
      { partNumber: 1, etag: uploaded1.etag },
      { partNumber: 2, etag: uploaded2.etag },
    ];
    const cutComplete = await dyingModel(stores, puts('s3-current/'), 'before');
    void cutComplete.test.model.completeMultipartUpload({ bucket: 'rec', key: 'mp', uploadId, owner: OWNER, parts }).catch(() => undefined);
    await cutComplete.died;
    expect(await totalReferences(stores.catalog, 'pool-a')).toBeGreaterThan(partRefs);
    recovering = await modelOver(stores);
    expect(await recovering.model.recover()).toMatchObject({ putsAbandoned: 1 });
    expect(await totalReferences(stores.catalog, 'pool-a')).toBe(partRefs);
    await expectJournalEmpty(stores.catalog);
    // The upload is whole: completing it now gives the object, and only its references are left.
    await recovering.model.completeMultipartUpload({ bucket: 'rec', key: 'mp', uploadId, owner: OWNER, parts });
    await recovering.model.idle();
    const whole = Buffer.concat([part1, part2]);
    expect((await bodyOf(recovering, 'mp')).bytes.equals(whole)).toBe(true);
    expect(await totalReferences(stores.catalog, 'pool-a')).toBe(chunksOf(whole));
    await expectJournalEmpty(stores.catalog);
  });

  it('a committed put whose recorded steps were not yet deleted (a body of more steps than one commit deletes) keeps every reference', async () => {
    const stores = newStores();
    const test = await modelOver(stores);
    const small = patternBytes(3 * CHUNK_BYTES, 5);
    await test.model.putObject({ bucket: 'rec', key: 'k', owner: OWNER, body: streamOf(small) });
    // The journal such a put leaves after its install: marked committed, its steps recorded.
    const hashes = (await stores.catalog.list('chunk-pool-a/')).entries.map((entry) => (entry.value as { hash: string }).hash);
    await stores.catalog.txn([], [
      { type: 'put', key: 's3-put/p1', value: { putId: 'p1', pool: 'pool-a', state: 'committed', startedAtMs: 1 } },
      { type: 'put', key: 's3-put-step/p1/00000000', value: { putId: 'p1', seq: 0, pool: 'pool-a', hashes, appliedWithRecord: true } },
    ]);
    expect(await test.model.recover()).toMatchObject({ putsAbandoned: 0, putsSettled: 1, stepsUndone: 0 });
    expect(await totalReferences(stores.catalog, 'pool-a')).toBe(3);
    expect((await bodyOf(test, 'k')).bytes.equals(small)).toBe(true);
    await expectJournalEmpty(stores.catalog);
  });
});
