/**
 * A put's journal records commit with the counts they journal (put-journal.ts, catalogChanges in
 * the repository): one commit per step, no marker chunk, and the install's commit deletes the
 * journal. A put of one step makes 1 commit: its references go in with the version, no journal
 * record at all (data-writer.ts holdSingleStep, versions.ts commitWithReferences). A step whose
 * commit fails leaves neither its references nor its records; a repository that does not share
 * the catalog still gets the journal written first, a marker per step and a settling after the
 * install (5 commits). Real DedupChunkRepository over a counting catalog.
 */
import { describe, expect, it } from 'vitest';
import type { CatalogStore } from '../../src/core/catalog-store.js';
import { MemoryCatalogStore } from '../../src/meta/memory-catalog.js';
import { TxnBuilder } from '../../src/meta/table.js';
import type { ChunkRepository } from '../../src/store/dedup/repository.js';
import { collect, countingCatalog, createTestObjectModel, patternBytes, streamOf, totalReferences } from '../support/object-model.js';

const OWNER = 'user-1';
const CHUNK_BYTES = 64 * 1024;

/** The repository without sharesCatalog: as one whose counts live in another catalog. */
function withoutSharedCatalog(repository: ChunkRepository): ChunkRepository {
  return new Proxy(repository, {
    get(target, name, receiver) {
      if (name === 'sharesCatalog') return undefined;
      const value: unknown = Reflect.get(target, name, receiver);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

async function journalKeys(catalog: CatalogStore): Promise<string[]> {
  return [...(await catalog.list('s3-put/')).entries, ...(await catalog.list('s3-put-step/')).entries].map((entry) => entry.key);
}

describe('a put commits its journal with its counts', () => {
  // Shared catalog: the references and the version in one commit. Else the journal is written on
  // its own first, the references with a marker, the version, the marker dropped, and the journal
  // deleted on its own after the drop.
  for (const { shared, txns } of [
    { shared: true, txns: 1 },
    { shared: false, txns: 5 },
  ]) {
    it(`a one-step put commits ${txns} times when the repository ${shared ? 'shares' : 'does not share'} the catalog`, async () => {
      const counted = countingCatalog();
      const { model, catalog, deferredErrors } = await createTestObjectModel({ catalog: counted.catalog, ...(shared ? {} : { wrapRepository: withoutSharedCatalog }) });
      await model.createBucket({ name: 'photos', owner: OWNER, pool: 'pool-a' });
      const data = patternBytes(3 * CHUNK_BYTES, 3);
      const before = counted.txns();
      await model.putObject({ bucket: 'photos', key: 'k', owner: OWNER, body: streamOf(data), claims: { sizeBytes: data.length } });
      await model.idle();
      expect(counted.txns() - before).toBe(txns);
      expect(await totalReferences(catalog, 'pool-a')).toBe(3);
      expect(await journalKeys(catalog)).toEqual([]);
      expect(deferredErrors).toEqual([]);
      const got = await model.getObject({ bucket: 'photos', key: 'k' });
      expect(got.outcome === 'ok' && Buffer.from(await collect(got.body())).equals(data)).toBe(true);
    });
  }

  it('a copy by reference and a part each commit twice when the repository shares the catalog', async () => {
    const counted = countingCatalog();
    const { model, catalog, deferredErrors } = await createTestObjectModel({ catalog: counted.catalog });
    await model.createBucket({ name: 'photos', owner: OWNER, pool: 'pool-a' });
    const data = patternBytes(3 * CHUNK_BYTES, 8);
    await model.putObject({ bucket: 'photos', key: 'src', owner: OWNER, body: streamOf(data), claims: { sizeBytes: data.length } });
    let before = counted.txns();
    // The by-hash step with its put record, then the version with the journal deleted.
    await model.copyObject({ source: { bucket: 'photos', key: 'src' }, bucket: 'photos', key: 'dst', owner: OWNER });
    await model.idle();
    expect(counted.txns() - before).toBe(2);
    expect(await totalReferences(catalog, 'pool-a')).toBe(6);
    const upload = await model.createMultipartUpload({ bucket: 'photos', key: 'mp', owner: OWNER });
    before = counted.txns();
    await model.uploadPart({ bucket: 'photos', key: 'mp', uploadId: upload.uploadId, partNumber: 1, body: streamOf(data), claims: { sizeBytes: data.length } });
    await model.idle();
    expect(counted.txns() - before).toBe(2);
    expect(await totalReferences(catalog, 'pool-a')).toBe(9);
    expect(await journalKeys(catalog)).toEqual([]);
    expect(deferredErrors).toEqual([]);
  });

  it('a failed first step of a three-step put leaves no reference and no journal record', async () => {
    // The first commit that writes a put record carries the first step's counts: it fails, so the
    // later steps (which wait for it) must change nothing either.
    const counted = countingCatalog((ops) => ops.some((op) => op.type === 'put' && op.key.startsWith('s3-put/')));
    const { model, catalog, deferredErrors } = await createTestObjectModel({ catalog: counted.catalog });
    await model.createBucket({ name: 'photos', owner: OWNER, pool: 'pool-a' });
    const data = patternBytes(9 * 1024 * 1024, 5); // 144 chunks: three steps of 64
    await expect(model.putObject({ bucket: 'photos', key: 'k', owner: OWNER, body: streamOf(data, 256 * 1024), claims: { sizeBytes: data.length } })).rejects.toThrow(/injected/);
    await model.idle();
    expect(await totalReferences(catalog, 'pool-a')).toBe(0);
    expect(await journalKeys(catalog)).toEqual([]);
    expect((await catalog.list('s3-current/')).entries).toEqual([]);
    expect(deferredErrors).toEqual([]);
  });

  it('a one-step put that loses the race for its key commits again, its references counted once', async () => {
    // The first merged commit fails on the key's current-version record (another writer rewrote it
    // between the install's read and its commit): the put reads again and commits again.
    let armed = false;
    let raced = false;
    let installs = 0;
    const racing = countingCatalog(undefined, async (store, ops) => {
      if (!armed || !ops.some((op) => op.key.startsWith('s3-current/'))) return;
      installs++;
      if (raced) return;
      raced = true;
      const current = (await store.list('s3-current/')).entries[0]!;
      await store.txn([{ key: current.key, modRevision: current.modRevision }], [{ type: 'put', key: current.key, value: current.value }]);
    });
    const { model, catalog, deferredErrors } = await createTestObjectModel({ catalog: racing.catalog });
    await model.createBucket({ name: 'photos', owner: OWNER, pool: 'pool-a' });
    await model.putObject({ bucket: 'photos', key: 'k', owner: OWNER, body: streamOf(patternBytes(2 * CHUNK_BYTES, 7)), claims: { sizeBytes: 2 * CHUNK_BYTES } });
    armed = true;
    const data = patternBytes(3 * CHUNK_BYTES, 9);
    await model.putObject({ bucket: 'photos', key: 'k', owner: OWNER, body: streamOf(data), claims: { sizeBytes: data.length } });
    await model.idle();
    expect(raced).toBe(true);
    // Two tries: the one that lost goes back to the install at once (the repository does not retry
    // a race lost on the caller's records), which reads the key again and wins.
    expect(installs).toBe(2);
    // The replaced version's 2 references went with it; the new one holds its 3, once.
    expect(await totalReferences(catalog, 'pool-a')).toBe(3);
    expect(await journalKeys(catalog)).toEqual([]);
    expect(deferredErrors).toEqual([]);
    const got = await model.getObject({ bucket: 'photos', key: 'k' });
    expect(got.outcome === 'ok' && Buffer.from(await collect(got.body())).equals(data)).toBe(true);
  });

  it('a one-step put whose one commit fails leaves no reference, no version and no journal record', async () => {
    const counted = countingCatalog((ops) => ops.some((op) => op.key.startsWith('s3-current/')));
    const { model, catalog, deferredErrors } = await createTestObjectModel({ catalog: counted.catalog });
    await model.createBucket({ name: 'photos', owner: OWNER, pool: 'pool-a' });
    const data = patternBytes(3 * CHUNK_BYTES, 10);
    await expect(model.putObject({ bucket: 'photos', key: 'k', owner: OWNER, body: streamOf(data), claims: { sizeBytes: data.length } })).rejects.toThrow(/injected/);
    await model.idle();
    expect(await totalReferences(catalog, 'pool-a')).toBe(0);
    expect(await journalKeys(catalog)).toEqual([]);
    expect((await catalog.list('s3-current/')).entries).toEqual([]);
    expect(deferredErrors).toEqual([]);
  });

  it('the repository refuses changes meant for another catalog and changes nothing', async () => {
    const { repositories, catalog } = await createTestObjectModel();
    const repository = repositories.get('pool-a')!;
    const other = new MemoryCatalogStore();
    expect(repository.sharesCatalog(catalog)).toBe(true);
    expect(repository.sharesCatalog(other)).toBe(false);
    const chunk = repository.hashChunk(patternBytes(CHUNK_BYTES, 6));
    const catalogChanges = { catalog: other, add: (txn: TxnBuilder) => void txn.ops.push({ type: 'put', key: 'x/y', value: 1 }), committedAt: () => undefined };
    await expect(repository.addHashedReferences([chunk], { catalogChanges })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    expect(await repository.referenceCount(chunk.hash)).toBe(0);
    expect(await catalog.get('x/y')).toBeUndefined();
  });
});
