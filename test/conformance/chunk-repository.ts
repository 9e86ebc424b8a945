/** The ChunkRepository conformance suite: every implementation runs it (chunk-repository.test.ts). */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { ChunkHash, ChunkRepository } from '../../src/store/dedup/repository.js';
import { expectSameBytes } from '../support/bytes.js';
import { expectCode } from '../support/expect-error.js';

export interface ChunkRepositoryUnderTest {
  readonly repository: ChunkRepository;
  /** The same repository opened again over the same storage (for implementations that persist). */
  reopen?(): Promise<ChunkRepository>;
  /** How many stored copies of the chunk exist (for implementations that can tell). */
  storedCopies?(hash: ChunkHash): Promise<number>;
  /** readRangeNow answers every range of a chunk read lately at once (not just true or false). */
  readsNow?: boolean;
  /** Changes one stored byte of the chunk, as bit rot would. */
  damage(hash: ChunkHash): Promise<void>;
}

const CHUNK_BYTES = 64 * 1024;
const chunk = () => new Uint8Array(randomBytes(CHUNK_BYTES));
const aborted = () => {
  const controller = new AbortController();
  controller.abort();
  return { signal: controller.signal };
};

export function chunkRepositoryConformance(name: string, open: () => Promise<ChunkRepositoryUnderTest>): void {
  describe(`ChunkRepository conformance: ${name}`, () => {
    it('stores a content once and counts every reference, across calls', async () => {
      const { repository: repo, storedCopies } = await open();
      const a = chunk();
      const b = chunk();
      const names = await repo.addReferences([a, b, a]);
      expect(names).toEqual([repo.hash(a), repo.hash(b), repo.hash(a)]);
      expect(names[0]).toMatch(/^[0-9a-f]+$/);
      expect(names[0]).not.toBe(names[1]);
      expect(await repo.referenceCount(names[0]!)).toBe(2);
      expect(await repo.referenceCount(names[1]!)).toBe(1);
      expect(await repo.addReferences([Uint8Array.from(a)])).toEqual([names[0]]);
      expect(await repo.referenceCount(names[0]!)).toBe(3);
      expectSameBytes(await repo.read(names[0]!), a);
      expectSameBytes(await repo.read(names[1]!), b);
      if (storedCopies) expect(await storedCopies(names[0]!)).toBe(1);
      // A short last chunk (a file's tail) is a chunk like any other.
      const tail = new Uint8Array(randomBytes(1000));
      const [tailName] = await repo.addReferences([tail]);
      expectSameBytes(await repo.read(tailName!), tail);
    });

    it('what read returns is the caller\'s: changing it changes nothing stored', async () => {
      const { repository: repo } = await open();
      const a = chunk();
      const [name] = await repo.addReferences([a]);
      a.fill(1); // the repository kept its own copy
      const first = await repo.read(name!);
      first.fill(2);
      expectSameBytes(await repo.read(name!), await repo.read(name!));
      expect(repo.hash(await repo.read(name!))).toBe(name);
    });

    it('addHashedReferences adds what addReferences would, by the names hashChunk gave (hashed once)', async () => {
      const { repository: repo, storedCopies } = await open();
      const a = chunk();
      const b = chunk();
      const [hashedA, hashedB] = [repo.hashChunk(a), repo.hashChunk(b)];
      expect(hashedA.hash).toBe(repo.hash(a));
      expect(hashedA.data).toBe(a);
      const names = await repo.addHashedReferences([hashedA, hashedB, hashedA]);
      expect(names).toEqual([repo.hash(a), repo.hash(b), repo.hash(a)]);
      expect(await repo.referenceCount(names[0]!)).toBe(2);
      expect(await repo.referenceCount(names[1]!)).toBe(1);
      // The same content by bytes is shared with what came by name, and the other way round.
      expect(await repo.addReferences([Uint8Array.from(a)])).toEqual([names[0]]);
      expect(await repo.addHashedReferences([repo.hashChunk(Uint8Array.from(b))])).toEqual([names[1]]);
      expect(await repo.referenceCount(names[0]!)).toBe(3);
      expect(await repo.referenceCount(names[1]!)).toBe(2);
      expectSameBytes(await repo.read(names[0]!), a);
      expectSameBytes(await repo.read(names[1]!), b);
      if (storedCopies) expect(await storedCopies(names[0]!)).toBe(1);
      expect(await repo.addHashedReferences([])).toEqual([]);
    });

    it('hashOwnedChunks (where offered) names each chunk as hashChunk would, with tokens addHashedReferences takes; the bytes read back whole', async (context) => {
      const { repository: repo, storedCopies } = await open();
      if (repo.hashOwnedChunks === undefined) return context.skip();
      // Enough chunks for an implementation to hand them to another thread, and a call of one.
      for (const count of [12, 1]) {
        const originals = Array.from({ length: count }, () => chunk());
        const copies = originals.map((c) => Uint8Array.from(c)); // the owned ones may move away
        const tokens = await repo.hashOwnedChunks(copies);
        expect(tokens.map((t) => t.hash)).toEqual(originals.map((c) => repo.hash(c)));
        tokens.forEach((t, i) => expectSameBytes(t.data, originals[i]!));
        const names = await repo.addHashedReferences(tokens);
        expect(names).toEqual(tokens.map((t) => t.hash));
        for (const [i, name] of names.entries()) {
          expect(await repo.referenceCount(name)).toBe(1);
          expectSameBytes(await repo.read(name), originals[i]!);
          if (storedCopies) expect(await storedCopies(name)).toBe(1);
        }
        // A look-alike of one of them is still refused.
        await expectCode(repo.addHashedReferences([{ ...tokens[0]! }]), 'INVALID_ARGUMENT');
      }
    });

    it('addHashedReferences takes no name it did not compute: a look-alike token is INVALID_ARGUMENT and changes nothing', async () => {
      const { repository: repo } = await open();
      const a = chunk();
      const b = chunk();
      const genuine = repo.hashChunk(a);
      // b's bytes under a's name would store the wrong bytes for a's hash.
      await expectCode(repo.addHashedReferences([genuine, { hash: repo.hash(a), data: b }]), 'INVALID_ARGUMENT');
      await expectCode(repo.addHashedReferences([{ ...genuine }]), 'INVALID_ARGUMENT');
      expect(() => Object.assign(genuine, { data: b })).toThrow(TypeError);
      expect(await repo.referenceCount(repo.hash(a))).toBe(0);
      expect(await repo.referenceCount(repo.hash(b))).toBe(0);
      await expectCode(repo.read(repo.hash(a)), 'NOT_FOUND');
      await expectCode(repo.addHashedReferences([genuine], aborted()), 'CANCELLED');
      expect(await repo.referenceCount(repo.hash(a))).toBe(0);
    });

    it('commitAfter: no count changes before it settles; when it rejects, the call rejects with its error and changes nothing', async () => {
      const { repository: repo } = await open();
      const a = chunk();
      let release!: () => void;
      const journalled = new Promise<void>((resolve) => (release = resolve));
      let settled = false;
      const adding = repo.addHashedReferences([repo.hashChunk(a)], { commitAfter: journalled }).finally(() => (settled = true));
      // Give the call every chance to run ahead: whatever it stores, it counts nothing yet.
      for (let i = 0; i < 20; i++) await new Promise<void>((resolve) => setImmediate(resolve));
      expect(settled).toBe(false);
      expect(await repo.referenceCount(repo.hash(a))).toBe(0);
      release();
      expect(await adding).toEqual([repo.hash(a)]);
      expect(await repo.referenceCount(repo.hash(a))).toBe(1);

      const b = chunk();
      const failure = new Error('the journal record could not be written');
      await expect(repo.addReferences([b], { commitAfter: Promise.reject(failure) })).rejects.toBe(failure);
      expect(await repo.referenceCount(repo.hash(b))).toBe(0);
      await expectCode(repo.read(repo.hash(b)), 'NOT_FOUND');
    });

    it('addReferencesByHash shares stored chunks; an unknown hash is NOT_FOUND and changes nothing', async () => {
      const { repository: repo } = await open();
      const a = chunk();
      const [name] = await repo.addReferences([a]);
      await repo.addReferencesByHash([name!, name!]);
      expect(await repo.referenceCount(name!)).toBe(3);
      const unknown = repo.hash(chunk());
      await expectCode(repo.addReferencesByHash([name!, unknown]), 'NOT_FOUND', new RegExp(unknown));
      expect(await repo.referenceCount(name!)).toBe(3);
      expect(await repo.referenceCount(unknown)).toBe(0);
      await expectCode(repo.read(unknown), 'NOT_FOUND');
      await expectCode(repo.read('not a hash'), 'INVALID_ARGUMENT');
      await expectCode(repo.addReferencesByHash(['XYZ']), 'INVALID_ARGUMENT');
    });

    it('dropReferences counts down to zero; dropping more than is held or an unknown chunk is refused whole', async () => {
      const { repository: repo } = await open();
      const first = chunk();
      const [a, b] = await repo.addReferences([first, chunk()]);
      await repo.addReferencesByHash([a!]);
      await repo.dropReferences([a!]);
      expect(await repo.referenceCount(a!)).toBe(1);
      await expectCode(repo.dropReferences([b!, b!]), 'INVALID_ARGUMENT');
      await expectCode(repo.dropReferences([a!, repo.hash(chunk())]), 'NOT_FOUND');
      expect(await repo.referenceCount(a!)).toBe(1);
      expect(await repo.referenceCount(b!)).toBe(1);
      await repo.dropReferences([a!, b!]);
      expect(await repo.referenceCount(a!)).toBe(0);
      expect(await repo.referenceCount(b!)).toBe(0);
      // A chunk at zero can be referenced again (within the grace period it is still stored).
      expect(await repo.addReferences([first])).toEqual([a]);
      expect(await repo.referenceCount(a!)).toBe(1);
      expectSameBytes(await repo.read(a!), first);
    });

    it('concurrent callers adding the same new content: one copy, every count kept', async () => {
      const { repository: repo, storedCopies } = await open();
      const shared = [chunk(), chunk(), chunk()];
      const callers = 8;
      const results = await Promise.all(
        Array.from({ length: callers }, (_, i) => repo.addReferences(i % 2 === 0 ? shared : [...shared].reverse())),
      );
      const names = results[0]!;
      for (const name of names) {
        expect(await repo.referenceCount(name)).toBe(callers);
        if (storedCopies) expect(await storedCopies(name)).toBe(1);
      }
      expectSameBytes(await repo.read(names[2]!), shared[2]);
      // Concurrent drops and adds of the same chunk lose no count either.
      await Promise.all([
        ...Array.from({ length: callers }, () => repo.dropReferences([names[0]!])),
        ...Array.from({ length: 3 }, () => repo.addReferencesByHash([names[0]!])),
      ]);
      expect(await repo.referenceCount(names[0]!)).toBe(3);
    });

    it('an aborted call rejects with CANCELLED and changes nothing', async () => {
      const { repository: repo } = await open();
      const [name] = await repo.addReferences([chunk()]);
      const fresh = chunk();
      await expectCode(repo.addReferences([fresh], aborted()), 'CANCELLED');
      expect(await repo.referenceCount(repo.hash(fresh))).toBe(0);
      await expectCode(repo.read(repo.hash(fresh)), 'NOT_FOUND');
      await expectCode(repo.addReferencesByHash([name!], aborted()), 'CANCELLED');
      await expectCode(repo.dropReferences([name!], aborted()), 'CANCELLED');
      await expectCode(repo.read(name!, aborted()), 'CANCELLED');
      expect(await repo.referenceCount(name!)).toBe(1);
    });

    it('a chunk whose stored bytes changed reads as CORRUPT, never as wrong data', async () => {
      const { repository: repo, damage } = await open();
      const [good, bad] = await repo.addReferences([chunk(), chunk()]);
      await damage(bad!);
      await expectCode(repo.read(bad!), 'CORRUPT', new RegExp(bad!));
      expect(repo.hash(await repo.read(good!))).toBe(good);
    });

    it('readRange gives any range of a chunk, the caller\'s to change; a range past its end or not whole numbers is INVALID_ARGUMENT', async () => {
      const { repository: repo } = await open();
      const a = chunk();
      const tail = new Uint8Array(randomBytes(1000));
      const [name, tailName] = await repo.addReferences([a, tail]);
      const ranges: [number, number][] = [[0, 4096], [8192, 4096], [3 * 4096 + 100, 5000], [CHUNK_BYTES - 1, 1], [0, CHUNK_BYTES], [61_440, 4096], [1, 2]];
      for (const [offset, length] of ranges) {
        const part = await repo.readRange(name!, offset, length);
        expectSameBytes(part, a.subarray(offset, offset + length));
        part.fill(0xee); // the caller's: the next read is unchanged
        expectSameBytes(await repo.readRange(name!, offset, length), a.subarray(offset, offset + length));
      }
      expectSameBytes(await repo.readRange(tailName!, 10, 990), tail.subarray(10));
      expect((await repo.readRange(name!, 100, 0)).length).toBe(0);
      // After a whole read (an implementation may cache it) ranges still read right.
      expectSameBytes(await repo.read(name!), a);
      expectSameBytes(await repo.readRange(name!, 4000, 200), a.subarray(4000, 4200));
      await expectCode(repo.readRange(name!, CHUNK_BYTES - 10, 11), 'INVALID_ARGUMENT', /past/);
      await expectCode(repo.readRange(tailName!, 0, 1001), 'INVALID_ARGUMENT', /past/);
      await expectCode(repo.readRange(name!, -1, 10), 'INVALID_ARGUMENT');
      await expectCode(repo.readRange(name!, 0.5, 10), 'INVALID_ARGUMENT');
      await expectCode(repo.readRange(repo.hash(chunk()), 0, 10), 'NOT_FOUND');
      await expectCode(repo.readRange('not a hash', 0, 10), 'INVALID_ARGUMENT');
      await expectCode(repo.readRange(name!, 0, 10, aborted()), 'CANCELLED');
    });

    it('readRange of a chunk whose stored bytes changed: each range reads right or is CORRUPT, never wrong data', async () => {
      const { repository: repo, damage } = await open();
      const a = chunk();
      const [good, bad] = await repo.addReferences([chunk(), a]);
      await damage(bad!);
      await expectCode(repo.readRange(bad!, 0, CHUNK_BYTES), 'CORRUPT', new RegExp(bad!));
      let corrupt = 0;
      for (let offset = 0; offset < CHUNK_BYTES; offset += 4096) {
        try {
          expectSameBytes(await repo.readRange(bad!, offset, 4096), a.subarray(offset, offset + 4096));
        } catch (err) {
          expect((err as { code?: string }).code, String(err)).toBe('CORRUPT');
          corrupt++;
        }
      }
      expect(corrupt).toBeGreaterThan(0);
      expect((await repo.readRange(good!, 0, 4096)).length).toBe(4096);
    });

    it('readRangeNow, where offered: the bytes readRange gives, or false; false for what readRange refuses', async (context) => {
      const { repository: repo, readsNow } = await open();
      if (repo.readRangeNow === undefined) return context.skip();
      const a = chunk();
      const tail = new Uint8Array(randomBytes(1000));
      const [name, tailName] = await repo.addReferences([a, tail]);
      await repo.readRange(name!, 0, 10); // a first read may be what makes the next ones possible
      const ranges: [string, Uint8Array, number, number][] = [
        [name!, a, 0, 4096], [name!, a, 8192, 4096], [name!, a, 3 * 4096 + 100, 5000], [name!, a, CHUNK_BYTES - 1, 1], [name!, a, 1, 2], [tailName!, tail, 10, 990],
      ];
      let done = 0;
      for (const [hash, bytes, offset, length] of ranges) {
        const target = new Uint8Array(length).fill(0xee);
        if (!repo.readRangeNow(hash, offset, target)) continue;
        expectSameBytes(target, bytes.subarray(offset, offset + length));
        done++;
      }
      if (readsNow === true) expect(done).toBe(ranges.length);
      const target = new Uint8Array(11);
      expect(repo.readRangeNow(name!, CHUNK_BYTES - 10, target)).toBe(false); // past the end
      expect(repo.readRangeNow(tailName!, 0, new Uint8Array(1001))).toBe(false);
      expect(repo.readRangeNow(name!, -1, target)).toBe(false);
      expect(repo.readRangeNow(name!, 0.5, target)).toBe(false);
      expect(repo.readRangeNow(repo.hash(chunk()), 0, target)).toBe(false); // unknown
      expect(repo.readRangeNow('not a hash', 0, target)).toBe(false);
      expect(repo.readRangeNow(name!, 0, new Uint8Array(0))).toBe(false);
      // The same after a whole read (an implementation may cache the chunk).
      expectSameBytes(await repo.read(name!), a);
      expect(repo.readRangeNow(name!, 0.5, target)).toBe(false);
      expect(repo.readRangeNow(name!, CHUNK_BYTES - 10, target)).toBe(false);
      const part = new Uint8Array(100);
      if (repo.readRangeNow(name!, 4000, part)) expectSameBytes(part, a.subarray(4000, 4100));
    });

    it('readRangeNow of a chunk whose stored bytes changed: right bytes or false, never wrong data; readRange then reports CORRUPT', async (context) => {
      const { repository: repo, damage } = await open();
      if (repo.readRangeNow === undefined) return context.skip();
      const a = chunk();
      const [bad] = await repo.addReferences([a]);
      await repo.readRange(bad!, 0, 10);
      await damage(bad!);
      let refused = 0;
      for (let offset = 0; offset < CHUNK_BYTES; offset += 4096) {
        const target = new Uint8Array(4096);
        if (repo.readRangeNow(bad!, offset, target)) expectSameBytes(target, a.subarray(offset, offset + 4096));
        else refused++;
      }
      expect(refused).toBeGreaterThan(0);
      await expectCode(repo.readRange(bad!, 0, CHUNK_BYTES), 'CORRUPT', new RegExp(bad!));
    });

    it('readChunks (where offered) gives chunks back to back, the caller\'s, each checked; unknown NOT_FOUND, damage CORRUPT', async (context) => {
      const { repository: repo, damage } = await open();
      if (repo.readChunks === undefined) return context.skip();
      const [a, b, c, d] = [chunk(), chunk(), chunk(), chunk()];
      const tail = new Uint8Array(randomBytes(1000));
      // One call's chunks lie together; a second call's elsewhere; a chunk may repeat in a run.
      const [na, nb, ntail] = await repo.addReferences([a, b, tail]);
      const [nc, nd] = await repo.addReferences([c, d]);
      const concat = (...parts: Uint8Array[]) => Uint8Array.from(parts.flatMap((part) => [...part]));
      expectSameBytes(await repo.readChunks([na!, nb!, ntail!]), concat(a, b, tail));
      const mixed = await repo.readChunks([nc!, na!, nb!, na!, nd!, ntail!]);
      expectSameBytes(mixed, concat(c, a, b, a, d, tail));
      mixed.fill(0xee); // the caller's: the next read is unchanged
      expectSameBytes(await repo.readChunks([na!, nb!]), concat(a, b));
      expect((await repo.readChunks([])).length).toBe(0);
      const unknown = repo.hash(chunk());
      await expectCode(repo.readChunks([na!, unknown]), 'NOT_FOUND', new RegExp(unknown));
      await expectCode(repo.readChunks([na!, 'not a hash']), 'INVALID_ARGUMENT');
      await expectCode(repo.readChunks([na!], aborted()), 'CANCELLED');
      await damage(nb!);
      await expectCode(repo.readChunks([na!, nb!, ntail!]), 'CORRUPT', new RegExp(nb!));
      expectSameBytes(await repo.readChunks([na!, ntail!, nc!]), concat(a, tail, c));
    });

    it('readInto (where offered) writes the whole chunk, checked, into the caller\'s buffer; wrong length INVALID_ARGUMENT, unknown NOT_FOUND, damage CORRUPT', async (context) => {
      const { repository: repo, damage } = await open();
      if (repo.readInto === undefined) return context.skip();
      const [a, b] = [chunk(), chunk()];
      const tail = new Uint8Array(randomBytes(1000));
      const [na, nb, ntail] = await repo.addReferences([a, b, tail]);
      // Into part of a larger buffer (a request's): the bytes around it stay as they were.
      const request = new Uint8Array(2 * CHUNK_BYTES + 1000).fill(0xee);
      await repo.readInto(nb!, request.subarray(CHUNK_BYTES, 2 * CHUNK_BYTES));
      await repo.readInto(ntail!, request.subarray(2 * CHUNK_BYTES));
      expect(request.subarray(0, CHUNK_BYTES).every((byte) => byte === 0xee)).toBe(true);
      expectSameBytes(request.subarray(CHUNK_BYTES), Uint8Array.from([...b, ...tail]));
      await repo.readInto(na!, request.subarray(0, CHUNK_BYTES)); // again: the same bytes (from any cache too)
      expectSameBytes(request.subarray(0, CHUNK_BYTES), a);
      await expectCode(repo.readInto(na!, new Uint8Array(CHUNK_BYTES - 1)), 'INVALID_ARGUMENT');
      await expectCode(repo.readInto(ntail!, new Uint8Array(1001)), 'INVALID_ARGUMENT');
      const unknown = repo.hash(chunk());
      await expectCode(repo.readInto(unknown, new Uint8Array(CHUNK_BYTES)), 'NOT_FOUND', new RegExp(unknown));
      await expectCode(repo.readInto('not a hash', new Uint8Array(CHUNK_BYTES)), 'INVALID_ARGUMENT');
      await expectCode(repo.readInto(na!, new Uint8Array(CHUNK_BYTES), aborted()), 'CANCELLED');
      await damage(nb!);
      await expectCode(repo.readInto(nb!, new Uint8Array(CHUNK_BYTES)), 'CORRUPT', new RegExp(nb!));
      const again = new Uint8Array(CHUNK_BYTES);
      await repo.readInto(na!, again);
      expectSameBytes(again, a);
    });

    it('chunks and counts survive reopening', async (context) => {
      const setup = await open();
      if (setup.reopen === undefined) return context.skip();
      const a = chunk();
      const [name] = await setup.repository.addReferences([a, a]);
      const repo = await setup.reopen();
      expect(await repo.referenceCount(name!)).toBe(2);
      expectSameBytes(await repo.read(name!), a);
      expectSameBytes(await repo.readRange(name!, 4096, 8192), a.subarray(4096, 12_288));
      if (repo.readChunks !== undefined) expectSameBytes(await repo.readChunks([name!, name!]), Uint8Array.from([...a, ...a]));
      if (repo.readInto !== undefined) {
        const target = new Uint8Array(a.length);
        await repo.readInto(name!, target);
        expectSameBytes(target, a);
      }
    });
  });
}
