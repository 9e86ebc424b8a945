/**
 * recover() on what a dead process left, in process: the first model's repository calls stop
 * forever at a chosen point (after the call took effect, as a SIGKILL right then would leave it),
 * and a second model over the same catalog and chunks recovers. Covers what the crash test does
 * not reach: a copy's by-hash step, a put that committed but never dropped its markers, a release
 * cut off part-way.
 */
import { describe, expect, it } from 'vitest';
import type { ChunkRepository } from '../../src/store/dedup/repository.js';
import { ObjectModel } from '../../src/objects/model.js';
import { StorageError } from '../../src/core/errors.js';
import { createTestObjectModel, patternBytes, streamOf, totalReferences, type TestObjectModel } from '../support/object-model.js';

const OWNER = 'u';
const KiB = 1024;

type Call = 'addReferences' | 'addReferencesByHash' | 'dropReferences';

/**
 * The pool's repository, except that the `nth` call of `call` never returns: it takes effect first
 * (`when` 'after') or not at all ('before'); `stopped` resolves then.
 */
function stopAt(repository: ChunkRepository, call: Call, nth: number, when: 'before' | 'after'): { repository: ChunkRepository; stopped: Promise<void> } {
  let seen = 0;
  let stop!: () => void;
  const stopped = new Promise<void>((resolve) => (stop = resolve));
  const never = new Promise<never>(() => undefined);
  const wrap = async <T>(name: Call, run: () => Promise<T>): Promise<T> => {
    const stopping = name === call && ++seen === nth;
    if (stopping && when === 'before') {
      stop();
      return never;
    }
    const result = await run();
    if (stopping) {
      stop();
      return never;
    }
    return result;
  };
  const stopping: ChunkRepository = {
    hash: (data) => repository.hash(data),
    addReferences: (chunks, options) => wrap('addReferences', () => repository.addReferences(chunks, options)),
    hashChunk: (data) => repository.hashChunk(data),
    // A put adds its chunks by the names it hashed: the same call, counted as addReferences.
    addHashedReferences: (chunks, options) => wrap('addReferences', () => repository.addHashedReferences(chunks, options)),
    addReferencesByHash: (hashes, options) => wrap('addReferencesByHash', () => repository.addReferencesByHash(hashes, options)),
    dropReferences: (hashes, options) => wrap('dropReferences', () => repository.dropReferences(hashes, options)),
    read: (hash, options) => repository.read(hash, options),
    readRange: (hash, offsetBytes, lengthBytes, options) => repository.readRange(hash, offsetBytes, lengthBytes, options),
    referenceCount: (hash) => repository.referenceCount(hash),
  };
  return { repository: stopping, stopped };
}

/** A model over the same storage whose pool-a repository stops as `stopAt` says. */
function dyingModel(test: TestObjectModel, call: Call, nth: number, when: 'before' | 'after' = 'after'): { model: ObjectModel; stopped: Promise<void> } {
  const { repository: stopping, stopped } = stopAt(test.repositories.get('pool-a')!, call, nth, when);
  const model = new ObjectModel({
    catalog: test.catalog,
    manifestStore: test.chunkStore,
    repositoryOf: async (pool) => {
      if (pool !== 'pool-a') throw new StorageError('NOT_FOUND', pool);
      return stopping;
    },
  });
  return { model, stopped };
}

async function setup() {
  const test = await createTestObjectModel();
  await test.model.createBucket({ name: 'rec', owner: OWNER, pool: 'pool-a' });
  return test;
}

async function journalIsEmpty(test: TestObjectModel): Promise<void> {
  expect((await test.catalog.list('s3-put')).entries).toEqual([]);
  expect((await test.catalog.list('s3-release/')).entries).toEqual([]);
}

describe('recover()', () => {
  it('gives back a copy\'s references added by hash, and its marker', async () => {
    const test = await setup();
    const data = patternBytes(300 * KiB, 1);
    await test.model.putObject({ bucket: 'rec', key: 'src', owner: OWNER, body: streamOf(data) });
    // The copy's by-hash call (with its marker) takes effect; then the process "dies".
    const dying = dyingModel(test, 'addReferencesByHash', 1);
    void dying.model.copyObject({ source: { bucket: 'rec', key: 'src' }, bucket: 'rec', key: 'dst', owner: OWNER });
    await dying.stopped;
    expect(await totalReferences(test.catalog, 'pool-a')).toBe(2 * 5 + 2); // the source, the copy, its marker twice
    const report = await test.model.recover();
    expect(report).toMatchObject({ putsAbandoned: 1, stepsUndone: 1 });
    expect(await totalReferences(test.catalog, 'pool-a')).toBe(5);
    await expect(test.model.getObject({ bucket: 'rec', key: 'dst' })).rejects.toMatchObject({ s3Code: 'NoSuchKey' });
    await journalIsEmpty(test);
  });

  it('a copy that died between its marker and its by-hash call: only the marker goes', async () => {
    const test = await setup();
    await test.model.putObject({ bucket: 'rec', key: 'src', owner: OWNER, body: streamOf(patternBytes(200 * KiB, 2)) });
    // addReferences #1 is the copy's marker (the put above went through the healthy model).
    const dying = dyingModel(test, 'addReferences', 1);
    void dying.model.copyObject({ source: { bucket: 'rec', key: 'src' }, bucket: 'rec', key: 'dst', owner: OWNER });
    await dying.stopped;
    expect(await totalReferences(test.catalog, 'pool-a')).toBe(4 + 1); // the source and the copy's marker
    expect(await test.model.recover()).toMatchObject({ putsAbandoned: 1, stepsUndone: 0 });
    expect(await totalReferences(test.catalog, 'pool-a')).toBe(4);
    await journalIsEmpty(test);
  });

  it('a put that committed but died before dropping its markers keeps its object', async () => {
    const test = await setup();
    const data = patternBytes(5 * 64 * KiB, 3);
    // dropReferences #1 is the settle of the put's markers, after its commit: it never happens.
    const dying = dyingModel(test, 'dropReferences', 1, 'before');
    void dying.model.putObject({ bucket: 'rec', key: 'k', owner: OWNER, body: streamOf(data) });
    await dying.stopped;
    expect((await test.catalog.list('s3-current/')).entries).toHaveLength(1); // committed
    expect(await totalReferences(test.catalog, 'pool-a')).toBe(5 + 1); // its chunks and its marker
    const report = await test.model.recover();
    expect(report).toMatchObject({ putsAbandoned: 0, putsSettled: 1 });
    expect(await totalReferences(test.catalog, 'pool-a')).toBe(5);
    const got = await test.model.getObject({ bucket: 'rec', key: 'k' });
    expect(got.version.data?.sizeBytes).toBe(data.length);
    await journalIsEmpty(test);
  });

  it('a failed put whose clean-up fails too reports the first failure; recover() cleans up later', async () => {
    const test = await setup();
    const healthy = test.repositories.get('pool-a')!;
    const deferred: unknown[] = [];
    const failingDrops: ChunkRepository = {
      hash: (data) => healthy.hash(data),
      addReferences: (chunks, options) => healthy.addReferences(chunks, options),
      hashChunk: (data) => healthy.hashChunk(data),
      addHashedReferences: (chunks, options) => healthy.addHashedReferences(chunks, options),
      addReferencesByHash: (hashes, options) => healthy.addReferencesByHash(hashes, options),
      dropReferences: async () => {
        throw new StorageError('IO_ERROR', 'the disk went away');
      },
      read: (hash, options) => healthy.read(hash, options),
      readRange: (hash, offsetBytes, lengthBytes, options) => healthy.readRange(hash, offsetBytes, lengthBytes, options),
      referenceCount: (hash) => healthy.referenceCount(hash),
    };
    const model = new ObjectModel({ catalog: test.catalog, manifestStore: test.chunkStore, repositoryOf: async () => failingDrops, onDeferredError: (err) => deferred.push(err) });
    async function* failing(): AsyncGenerator<Uint8Array> {
      yield patternBytes(70 * 64 * KiB, 5); // more than one step
      throw new Error('the client went away');
    }
    await expect(model.putObject({ bucket: 'rec', key: 'k', owner: OWNER, body: failing() })).rejects.toThrow(/client went away/);
    expect(deferred).toHaveLength(1);
    expect(await totalReferences(test.catalog, 'pool-a')).toBeGreaterThan(0);
    expect(await test.model.recover()).toMatchObject({ putsAbandoned: 1 });
    expect(await totalReferences(test.catalog, 'pool-a')).toBe(0);
    await journalIsEmpty(test);
  });

  it('a delete cut off while giving references back: recovery ends the release, dropping nothing twice', async () => {
    const test = await setup();
    await test.model.putObject({ bucket: 'rec', key: 'k', owner: OWNER, body: streamOf(patternBytes(3 * 64 * KiB, 4)) });
    const dying = dyingModel(test, 'dropReferences', 1);
    void dying.model.deleteObject({ bucket: 'rec', key: 'k', owner: OWNER });
    await dying.stopped;
    expect(await totalReferences(test.catalog, 'pool-a')).toBe(0); // the one drop call took effect
    expect(await test.model.recover()).toMatchObject({ releasesRun: 1 });
    expect(await totalReferences(test.catalog, 'pool-a')).toBe(0);
    await journalIsEmpty(test);
  });
});

