/**
 * An operator's bucket delete and chown in the object model (src/objects/bucket-removal.ts,
 * buckets.ts setBucketOwner), over the real DedupChunkRepository: an empty bucket goes, one that
 * holds anything is refused naming what it holds; a purge deletes every version, delete marker and
 * upload through the releases S3's deletes use, so the pool's reference counts drop to what other
 * buckets hold; a PUT racing a delete never lands in a deleted bucket; a purge cut short leaves
 * the bucket being deleted until a purge finishes it (and marked as a purge, which a restart
 * resumes; a delete without purge left marked is finished when empty, else un-marked); chown moves the bucket to an existing user
 * and a user delete racing it fails instead of leaving the bucket to nobody.
 */
import { describe, expect, it } from 'vitest';
import type { CatalogOp, CatalogStore } from '../../src/core/catalog-store.js';
import { isStorageError } from '../../src/core/errors.js';
import { PURGE_RECORDS_PER_TXN } from '../../src/objects/bucket-removal.js';
import type { ObjectModel } from '../../src/objects/model.js';
import { SecretBox } from '../../src/objects/users/secret-box.js';
import { UserStore } from '../../src/objects/users/user-store.js';
import { expectCode } from '../support/expect-error.js';
import { collect, countingCatalog, createTestObjectModel, patternBytes, streamOf, totalReferences } from '../support/object-model.js';

const KiB = 1024;

/** Every catalog key under `prefix`. */
async function keysUnder(catalog: CatalogStore, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  let after: string | undefined;
  for (;;) {
    const page = await catalog.list(prefix, after === undefined ? {} : { after });
    keys.push(...page.entries.map((e) => e.key));
    if (page.nextAfter === undefined) return keys;
    after = page.nextAfter;
  }
}

/** The records the model keeps for the bucket with this id (versions, current copies, uploads), and releases still to run. */
async function leftovers(catalog: CatalogStore, bucketId: string): Promise<string[]> {
  return [
    ...(await keysUnder(catalog, `s3-version/${bucketId}/`)),
    ...(await keysUnder(catalog, `s3-current/${bucketId}/`)),
    ...(await keysUnder(catalog, `s3-upload.key/${bucketId}/`)),
    ...(await keysUnder(catalog, 's3-part/')),
    ...(await keysUnder(catalog, 's3-release/')),
  ];
}

/** A bucket with versioning on: two versions of one key, a delete marker over another, an upload with two parts. */
async function fill(model: ObjectModel, bucket: string): Promise<{ versionBytes: number; partBytes: number }> {
  await model.createBucket({ name: bucket, owner: 'alice', pool: 'pool-a' });
  await model.putBucketVersioning(bucket, 'enabled');
  await model.putObject({ bucket, key: 'doc', owner: 'alice', body: streamOf(patternBytes(300 * KiB, 1)) });
  await model.putObject({ bucket, key: 'doc', owner: 'alice', body: streamOf(patternBytes(200 * KiB, 2)) });
  await model.putObject({ bucket, key: 'gone', owner: 'alice', body: streamOf(patternBytes(100 * KiB, 3)) });
  await model.deleteObject({ bucket, key: 'gone', owner: 'alice' });
  const upload = await model.createMultipartUpload({ bucket, key: 'big', owner: 'alice' });
  for (const partNumber of [1, 2]) {
    await model.uploadPart({ bucket, key: 'big', uploadId: upload.uploadId, partNumber, body: streamOf(patternBytes(128 * KiB, 10 + partNumber)) });
  }
  return { versionBytes: 600 * KiB, partBytes: 256 * KiB };
}

/** A body that stops before its last piece until `release` is called. */
function heldBody(data: Uint8Array): { body: AsyncGenerator<Uint8Array>; release: () => void } {
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  async function* body(): AsyncGenerator<Uint8Array> {
    yield data.subarray(0, data.length - 1);
    await gate;
    yield data.subarray(data.length - 1);
  }
  return { body: body(), release };
}

const deletesBucket = (name: string) => (ops: readonly CatalogOp[]) => ops.some((op) => op.type === 'delete' && op.key === `s3-bucket/${name}`);

describe("an operator's bucket delete", () => {
  it('deletes an empty bucket at once; refuses one that holds anything, naming what and --purge, and leaves it serving', async () => {
    const { model } = await createTestObjectModel();
    await model.createBucket({ name: 'empty', owner: 'bob', pool: 'pool-a' });
    expect(await model.removeBucket('empty')).toMatchObject({ bucket: { name: 'empty', owner: 'bob' }, versionCount: 0, deleteMarkerCount: 0, uploadCount: 0 });
    await expectCode(model.headBucket('empty'), 'NOT_FOUND');

    await fill(model, 'full');
    let refusal: unknown;
    await model.removeBucket('full').catch((err: unknown) => (refusal = err));
    expect(isStorageError(refusal, 'BUSY')).toBe(true);
    expect((refusal as Error).message).toBe("bucket 'full' is not empty: it holds 1 object (3 stored versions), 1 delete marker, 1 multipart upload in progress");
    expect((refusal as { fix: unknown }).fix).toEqual({ option: 'purge', text: 'pass {} to delete all of it with the bucket' });
    // S3's DeleteBucket refuses it as before; the bucket was never marked and keeps serving.
    await expect(model.deleteBucket('full')).rejects.toMatchObject({ s3Code: 'BucketNotEmpty' });
    await model.putObject({ bucket: 'full', key: 'still', owner: 'alice', body: streamOf(new Uint8Array([1])) });
    expect((await model.bucketRecord('full')).deleting).toBeUndefined();
  });

  it("--purge deletes every version, delete marker and upload through the releases: the pool keeps only other buckets' references", async () => {
    const { model, catalog } = await createTestObjectModel();
    // Another bucket in the same pool shares a chunk-aligned object with the one purged.
    await model.createBucket({ name: 'keep', owner: 'bob', pool: 'pool-a' });
    await model.putObject({ bucket: 'keep', key: 'same', owner: 'bob', body: streamOf(patternBytes(300 * KiB, 1)) });
    const keptReferences = await totalReferences(catalog, 'pool-a');
    const { versionBytes, partBytes } = await fill(model, 'doomed');
    const id = (await model.headBucket('doomed')).id;
    expect(await totalReferences(catalog, 'pool-a')).toBeGreaterThan(keptReferences);

    let total = -1;
    let done = 0;
    const removal = await model.removeBucket('doomed', { purge: true, progress: { setTotal: (bytes) => (total = bytes), addDone: (bytes) => (done += bytes) } });
    expect(removal).toMatchObject({ versionCount: 3, versionBytes, deleteMarkerCount: 1, uploadCount: 1, partCount: 2, partBytes });
    expect([total, done]).toEqual([versionBytes + partBytes, versionBytes + partBytes]);
    await expectCode(model.headBucket('doomed'), 'NOT_FOUND');
    await expectCode(model.bucketRecord('doomed'), 'NOT_FOUND');
    expect(await leftovers(catalog, id)).toEqual([]);
    expect(await totalReferences(catalog, 'pool-a')).toBe(keptReferences);
    const kept = await model.getObject({ bucket: 'keep', key: 'same' });
    expect(kept.outcome === 'ok' ? await collect(kept.body()) : undefined).toEqual(patternBytes(300 * KiB, 1));
  });

  for (const purge of [false, true]) {
    it(`a PUT that commits after the delete${purge ? ' --purge' : ''} began is refused, and the bucket goes with nothing under it`, async () => {
      let racer: { release: () => void; put: Promise<unknown> } | undefined;
      const { catalog } = countingCatalog(undefined, async (_store, ops) => {
        // Just before the bucket record goes: the racing PUT (which read the bucket before the delete began) tries to commit.
        if (racer !== undefined && deletesBucket('race')(ops)) {
          racer.release();
          await racer.put.catch(() => undefined);
        }
      });
      const { model } = await createTestObjectModel({ catalog });
      await model.createBucket({ name: 'race', owner: 'alice', pool: 'pool-a' });
      if (purge) await model.putObject({ bucket: 'race', key: 'old', owner: 'alice', body: streamOf(patternBytes(100 * KiB, 7)) });
      const id = (await model.headBucket('race')).id;
      const held = heldBody(patternBytes(200 * KiB, 8));
      const put = model.putObject({ bucket: 'race', key: 'late', owner: 'alice', body: held.body });
      racer = { release: held.release, put };
      await model.removeBucket('race', { purge });
      // Refused at its commit (the bucket record changed when the delete began), its chunks given back.
      await expect(put).rejects.toMatchObject({ s3Code: 'NoSuchBucket' });
      await model.idle();
      expect(await leftovers(catalog, id)).toEqual([]);
      expect(await totalReferences(catalog, 'pool-a')).toBe(0);
      await expectCode(model.headBucket('race'), 'NOT_FOUND');
    });
  }

  it('a purge cut short leaves the bucket being deleted (NoSuchBucket to S3, unlisted) until a purge finishes it', async () => {
    const { model, catalog } = await createTestObjectModel();
    await model.createBucket({ name: 'many', owner: 'alice', pool: 'pool-a' });
    const keys = PURGE_RECORDS_PER_TXN + 20;
    for (let i = 0; i < keys; i++) await model.putObject({ bucket: 'many', key: `k${String(i).padStart(4, '0')}`, owner: 'alice', body: streamOf(patternBytes(70 * KiB, i + 1)) });
    const stop = new AbortController();
    await expectCode(model.removeBucket('many', { purge: true, signal: stop.signal, progress: { setTotal: () => undefined, addDone: () => stop.abort() } }), 'CANCELLED');
    expect((await model.bucketRecord('many')).deleting).toBe(true);
    await expect(model.headBucket('many')).rejects.toMatchObject({ s3Code: 'NoSuchBucket', message: 'bucket many is being deleted' });
    await expect(model.putObject({ bucket: 'many', key: 'new', owner: 'alice', body: streamOf(new Uint8Array([1])) })).rejects.toMatchObject({ s3Code: 'NoSuchBucket' });
    expect((await model.listBuckets('alice')).buckets).toEqual([]);
    await expect(model.deleteBucket('many')).rejects.toMatchObject({ s3Code: 'NoSuchBucket' });
    const refusal = (await model.removeBucket('many').catch((err: unknown) => err)) as { message: string; fix: { text: string } };
    expect(refusal.message).toMatch(/^bucket 'many' is not empty: it holds 20 objects/);
    expect(refusal.fix.text).toBe('an earlier delete of it stopped half way: pass {} to finish it');
    expect(await model.removeBucket('many', { purge: true })).toMatchObject({ versionCount: 20 });
    expect(await totalReferences(catalog, 'pool-a')).toBe(0);
  });
});

describe('settling at start-up the bucket deletes a stopped daemon left (settleInterruptedRemoval)', () => {
  it('a purge cut short is marked as one: settling says to resume it, and the resumed purge finishes the bucket', async () => {
    const { model, catalog } = await createTestObjectModel();
    await model.createBucket({ name: 'many', owner: 'alice', pool: 'pool-a' });
    for (let i = 0; i < PURGE_RECORDS_PER_TXN + 5; i++) await model.putObject({ bucket: 'many', key: `k${i}`, owner: 'alice', body: streamOf(patternBytes(8 * KiB, i + 1)) });
    await model.createBucket({ name: 'kept', owner: 'alice', pool: 'pool-a' });
    const stop = new AbortController();
    await expectCode(model.removeBucket('many', { purge: true, signal: stop.signal, progress: { setTotal: () => undefined, addDone: () => stop.abort() } }), 'CANCELLED');
    expect(await model.bucketRecord('many')).toMatchObject({ deleting: true, purging: true });
    expect(await model.markedBuckets()).toEqual(['many']);
    expect(await model.settleInterruptedRemoval('many')).toBe('purge');
    expect(await model.removeBucket('many', { purge: true })).toMatchObject({ versionCount: 5 });
    expect(await model.markedBuckets()).toEqual([]);
    expect(await totalReferences(catalog, 'pool-a')).toBe(0);
    // The purge flag never reaches what the delete returns or the next bucket of that name.
    await model.createBucket({ name: 'many', owner: 'alice', pool: 'pool-a' });
    expect((await model.bucketRecord('many')).purging).toBeUndefined();
  });

  it("a purge of a bucket an earlier delete left marked without purge marks it as a purge", async () => {
    const { model, catalog } = await createTestObjectModel();
    await model.createBucket({ name: 'bbb', owner: 'alice', pool: 'pool-a' });
    for (let i = 0; i < PURGE_RECORDS_PER_TXN + 5; i++) await model.putObject({ bucket: 'bbb', key: `k${i}`, owner: 'alice', body: streamOf(patternBytes(KiB, i + 1)) });
    const record = await model.bucketRecord('bbb');
    await catalog.txn([], [{ type: 'put', key: 's3-bucket/bbb', value: { ...record, deleting: true } }]);
    const stop = new AbortController();
    await expectCode(model.removeBucket('bbb', { purge: true, signal: stop.signal, progress: { setTotal: () => undefined, addDone: () => stop.abort() } }), 'CANCELLED');
    expect(await model.bucketRecord('bbb')).toMatchObject({ deleting: true, purging: true });
  });

  it("S3's DeleteBucket stopped after its mark: the empty bucket's delete is finished", async () => {
    const { catalog } = countingCatalog(deletesBucket('gone'));
    const { model } = await createTestObjectModel({ catalog });
    await model.createBucket({ name: 'gone', owner: 'alice', pool: 'pool-a' });
    await model.createBucket({ name: 'other', owner: 'alice', pool: 'pool-a' });
    await expectCode(model.deleteBucket('gone'), 'IO_ERROR');
    expect(await model.bucketRecord('gone')).toMatchObject({ deleting: true });
    expect((await model.bucketRecord('gone')).purging).toBeUndefined();
    expect(await model.markedBuckets()).toEqual(['gone']);
    expect(await model.settleInterruptedRemoval('gone')).toBe('finished');
    await expectCode(model.bucketRecord('gone'), 'NOT_FOUND');
    expect(await model.markedBuckets()).toEqual([]);
    expect((await model.bucketRecord('other')).deleting).toBeUndefined();
  });

  it('a delete without purge stopped with the bucket marked and holding an object (a PUT won the race): it serves again, the object kept', async () => {
    const { model, catalog } = await createTestObjectModel();
    await model.createBucket({ name: 'raced', owner: 'alice', pool: 'pool-a' });
    await model.putObject({ bucket: 'raced', key: 'late', owner: 'alice', body: streamOf(patternBytes(4 * KiB, 9)) });
    const record = await model.bucketRecord('raced');
    // What DeleteBucket's mark leaves when the process dies before it takes the mark back.
    await catalog.txn([], [{ type: 'put', key: 's3-bucket/raced', value: { ...record, deleting: true } }]);
    expect(await model.settleInterruptedRemoval('raced')).toBe('unmarked');
    expect((await model.bucketRecord('raced')).deleting).toBeUndefined();
    const got = await model.getObject({ bucket: 'raced', key: 'late' });
    expect(got.outcome === 'ok' && Buffer.from(await collect(got.body())).equals(patternBytes(4 * KiB, 9))).toBe(true);
  });
});

describe('bucket chown', () => {
  async function setUp(options: { catalog?: CatalogStore } = {}): Promise<{ model: ObjectModel; users: UserStore }> {
    const { model, catalog } = await createTestObjectModel(options);
    const users = new UserStore(catalog, SecretBox.withKey(Buffer.alloc(32, 1)));
    for (const name of ['alice', 'bob', 'dave']) await users.createUser(name);
    await model.createBucket({ name: 'photos', owner: 'alice', pool: 'pool-a' });
    return { model, users };
  }

  it('gives the bucket to an existing user; an unknown user is NOT_FOUND naming the user list', async () => {
    const { model, users } = await setUp();
    const unknown = await model.setBucketOwner('photos', 'carol', (txn) => users.holdUserInto(txn, 'carol')).catch((err: unknown) => err as { code: string; fix: unknown });
    expect(unknown).toMatchObject({ code: 'NOT_FOUND', fix: { operation: 'listUsers' } });
    expect((await model.headBucket('photos')).owner).toBe('alice');

    expect(await model.setBucketOwner('photos', 'bob', (txn) => users.holdUserInto(txn, 'bob'))).toMatchObject({ name: 'photos', owner: 'bob' });
    expect((await model.headBucket('photos')).owner).toBe('bob');
    expect((await model.listBuckets('bob')).buckets.map((b) => b.name)).toEqual(['photos']);
    expect((await model.listBuckets('alice')).buckets).toEqual([]);
    // alice owns nothing now: her delete goes through; bob's is refused, naming the ways out.
    await users.deleteUser('alice');
    const refusal = await users.deleteUser('bob').catch((err: unknown) => err as { code: string; fix: unknown });
    expect(refusal).toMatchObject({ code: 'BUSY', fix: { operation: 'removeBuckets', buckets: ['photos'] } });
  });

  it('a user delete racing the chown that gives the user a bucket fails instead of leaving the bucket to nobody', async () => {
    let chown: (() => Promise<unknown>) | undefined;
    const { catalog } = countingCatalog(undefined, async (_store, ops) => {
      // The user delete has read that dave owns nothing; the chown to dave commits first.
      if (chown !== undefined && ops.some((op) => op.type === 'delete' && op.key === 's3-user/dave')) {
        const run = chown;
        chown = undefined;
        await run();
      }
    });
    const { model, users } = await setUp({ catalog });
    chown = () => model.setBucketOwner('photos', 'dave', (txn) => users.holdUserInto(txn, 'dave'));
    await expectCode(users.deleteUser('dave'), 'BUSY');
    expect((await model.headBucket('photos')).owner).toBe('dave');
    expect((await users.user('dave')).name).toBe('dave');
  });
});
