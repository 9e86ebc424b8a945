/** The ChunkStore conformance suite: every implementation runs it (chunk-store.test.ts). */
import { expectCode } from '../support/expect-error.js';
import { describe, expect, it, onTestFinished } from 'vitest';
import { CHUNK_LIST_PAGE_MAX, type ChunkStore } from '../../src/core/chunk-store.js';

const bytes = (...values: number[]) => Uint8Array.from(values);

export function chunkStoreConformance(name: string, openStore: () => Promise<ChunkStore>): void {
  /** A store closed when the test ends (a dropped store would leave its open files to the GC). */
  const open = async (): Promise<ChunkStore> => {
    const store = await openStore();
    onTestFinished(() => store.close());
    return store;
  };
  describe(`ChunkStore conformance: ${name}`, () => {
    it('put, get, getRange, replace, delete', async () => {
      const store = await open();
      expect(await store.get('a')).toBeUndefined();
      expect(await store.getRange('a', 0, 1)).toBeUndefined();
      const data = bytes(1, 2, 3, 4, 5);
      await store.put('a', data);
      data[0] = 99; // the store kept its own copy
      expect(await store.get('a')).toEqual(bytes(1, 2, 3, 4, 5));
      const buffer = Buffer.from([6, 7]); // Buffer.slice() is a view, not a copy: the store must copy anyway
      await store.put('buffer', buffer);
      buffer[0] = 99;
      expect(Buffer.from((await store.get('buffer'))!)).toEqual(Buffer.from([6, 7]));
      await store.delete('buffer');
      expect(await store.getRange('a', 1, 3)).toEqual(bytes(2, 3, 4));
      expect(await store.getRange('a', 3, 10)).toEqual(bytes(4, 5));
      expect(await store.getRange('a', 5, 1)).toEqual(bytes());
      // A maintenance read (scrub, GC) reads the same bytes; only stores that rank reads treat it differently.
      expect(await store.get('a', { readPurpose: 'maintenance' })).toEqual(bytes(1, 2, 3, 4, 5));
      expect(await store.getRange('a', 1, 3, { readPurpose: 'maintenance' })).toEqual(bytes(2, 3, 4));
      await store.put('a', bytes(7));
      expect(await store.get('a')).toEqual(bytes(7));
      // A range read after a replace or delete sees the new object, or none (no stale open file).
      expect(await store.getRange('a', 0, 5)).toEqual(bytes(7));
      await store.delete('a');
      await store.delete('a');
      expect(await store.get('a')).toBeUndefined();
      expect(await store.getRange('a', 0, 5)).toBeUndefined();
      await store.put('empty', bytes());
      expect(await store.get('empty')).toEqual(bytes());
    });

    it('getRange into a caller\'s array: the bytes getRange gives without one, whatever the array\'s size', async () => {
      const store = await open();
      const data = Uint8Array.from({ length: 300_000 }, (_, i) => (i * 13 + 5) & 0xff);
      await store.put('big', data);
      const into = new Uint8Array(200_000).fill(0xee);
      expect(await store.getRange('missing', 0, 10, { into })).toBeUndefined();
      // Over and over into the same array (what a reader reusing its buffers does): each answer is right.
      for (const [offset, length] of [[0, 200_000], [100_001, 150_000], [1, 1], [250_000, 200_000], [299_999, 5]] as const) {
        const got = await store.getRange('big', offset, length, { into });
        expect(Buffer.from(got!)).toEqual(Buffer.from(data.subarray(offset, offset + length)));
      }
      expect(await store.getRange('big', 300_000, 10, { into })).toEqual(bytes());
      // An array too small for the range: the store answers in its own array.
      const small = new Uint8Array(10);
      expect(Buffer.from((await store.getRange('big', 5, 20_000, { into: small }))!)).toEqual(Buffer.from(data.subarray(5, 20_005)));
      // Many at once, each into its own array.
      const arrays = Array.from({ length: 12 }, () => new Uint8Array(25_000));
      const all = await Promise.all(arrays.map((array, i) => store.getRange('big', i * 25_000, 25_000, { into: array })));
      all.forEach((got, i) => expect(Buffer.from(got!)).toEqual(Buffer.from(data.subarray(i * 25_000, (i + 1) * 25_000))));
    });

    it('getRangeNow, where offered: the bytes getRange gives, or false; never a replaced or deleted object\'s bytes', async (context) => {
      const store = await open();
      if (store.getRangeNow === undefined) return context.skip();
      const target = new Uint8Array(3);
      expect(store.getRangeNow('a', 0, target)).toBe(false); // no object
      await store.put('a', bytes(1, 2, 3, 4, 5));
      await store.getRange('a', 0, 1); // a store may need a first read to have the object at hand
      if (store.getRangeNow('a', 1, target)) expect(target).toEqual(bytes(2, 3, 4));
      expect(store.getRangeNow('a', 3, target)).toBe(false); // runs past the end
      expect(store.getRangeNow('a', -1, target)).toBe(false);
      await store.put('a', bytes(7, 8, 9));
      const after = new Uint8Array(3);
      if (store.getRangeNow('a', 0, after)) expect(after).toEqual(bytes(7, 8, 9));
      await store.getRange('a', 0, 1);
      if (store.getRangeNow('a', 0, after)) expect(after).toEqual(bytes(7, 8, 9));
      await store.delete('a');
      expect(store.getRangeNow('a', 0, after)).toBe(false);
    });

    it('putIfAbsent stores once; concurrent callers: exactly one stores', async () => {
      const store = await open();
      expect(await store.putIfAbsent('k', bytes(1))).toBe(true);
      expect(await store.putIfAbsent('k', bytes(2))).toBe(false);
      expect(await store.get('k')).toEqual(bytes(1));
      const results = await Promise.all(Array.from({ length: 6 }, (_, i) => store.putIfAbsent('race', bytes(i))));
      expect(results.filter(Boolean).length).toBe(1);
      const winner = results.indexOf(true);
      expect(await store.get('race')).toEqual(bytes(winner));
    });

    it('lists a prefix in key order, a bounded page at a time', async () => {
      const store = await open();
      const keys = Array.from({ length: CHUNK_LIST_PAGE_MAX + 7 }, (_, i) => `chunks/${String(i).padStart(5, '0')}`);
      for (const key of keys) await store.put(key, bytes(1));
      await store.put('chunk', bytes(1));
      await store.put('packs/1', bytes(1));
      const first = await store.list('chunks/');
      expect(first.keys).toEqual(keys.slice(0, CHUNK_LIST_PAGE_MAX));
      const second = await store.list('chunks/', { after: first.nextAfter! });
      expect(second).toEqual({ keys: keys.slice(CHUNK_LIST_PAGE_MAX) });
      expect((await store.list('chunks/', { limit: 2, after: keys[3] })).keys).toEqual(keys.slice(4, 6));
      expect((await store.list('packs/')).keys).toEqual(['packs/1']);
    });

    it('lists keys with folders in plain key order: "a-c" < "a/b" < "a0", pages split inside a folder, after a folder name', async () => {
      const store = await open();
      // None of these keys is a prefix folder of another (a local store cannot nest "a" and "a/b").
      const keys = ['a-c', 'a.d', 'a/b', 'a/c/x', 'a/c/y', 'a/d', 'a0', 'b0', 'b/c-1/z'].sort();
      for (const key of [...keys].reverse()) await store.put(key, bytes(key.length));
      expect((await store.list('')).keys).toEqual(keys);
      expect((await store.list('a/')).keys).toEqual(['a/b', 'a/c/x', 'a/c/y', 'a/d']);
      expect((await store.list('a/c')).keys).toEqual(['a/c/x', 'a/c/y']);
      expect((await store.list('b/c-')).keys).toEqual(['b/c-1/z']);
      expect((await store.list('a', { after: 'a/c' })).keys).toEqual(['a/c/x', 'a/c/y', 'a/d', 'a0']);
      expect((await store.list('', { after: 'a/c/x', limit: 2 })).keys).toEqual(['a/c/y', 'a/d']);
      let after: string | undefined;
      const paged: string[] = [];
      for (;;) {
        const page = await store.list('', { limit: 2, ...(after === undefined ? {} : { after }) });
        paged.push(...page.keys);
        if (page.nextAfter === undefined) break;
        after = page.nextAfter;
      }
      expect(paged).toEqual(keys);
      expect((await store.list('zz')).keys).toEqual([]);
      await store.delete('a/c/x');
      await store.delete('a/c/y');
      expect((await store.list('a/')).keys).toEqual(['a/b', 'a/d']);
      expect(await store.get('a/b')).toEqual(bytes(3));
    });

    it('close: idempotent; every call after it fails saying the store is closed, getRangeNow answers false', async () => {
      const store = await open();
      await store.put('a', bytes(1, 2, 3));
      expect(await store.getRange('a', 0, 2)).toEqual(bytes(1, 2)); // a store may keep the object open now
      await store.close();
      await store.close();
      const calls: [string, () => Promise<unknown>][] = [
        ['get', () => store.get('a')],
        ['getRange', () => store.getRange('a', 0, 1)],
        ['put', () => store.put('b', bytes(1))],
        ['putIfAbsent', () => store.putIfAbsent('b', bytes(1))],
        ['delete', () => store.delete('a')],
        ['list', () => store.list('')],
      ];
      for (const [what, call] of calls) {
        const err = await call().then(
          () => new Error(`${what} succeeded on a closed store`),
          (e: unknown) => e,
        );
        expect(err, what).toMatchObject({ code: 'IO_ERROR', message: expect.stringMatching(/the chunk store .* is closed$/) });
      }
      expect(store.getRangeNow?.('a', 0, new Uint8Array(1)) ?? false).toBe(false);
    });

    it('close while calls run: each finishes or fails, none hangs; a read that answers has the right bytes', async () => {
      const store = await open();
      const data = Uint8Array.from({ length: 100_000 }, (_, i) => i & 0xff);
      for (let i = 0; i < 8; i++) await store.put(`k${i}`, data);
      const running = Array.from({ length: 8 }, (_, i) => store.getRange(`k${i}`, 1000, 50_000));
      const puts = Array.from({ length: 4 }, (_, i) => store.put(`p${i}`, data));
      await store.close();
      for (const outcome of await Promise.allSettled(running)) {
        if (outcome.status === 'fulfilled') expect(Buffer.from(outcome.value!)).toEqual(Buffer.from(data.subarray(1000, 51_000)));
      }
      await Promise.allSettled(puts);
    });

    it('an aborted call rejects with CANCELLED and has no effect; bad arguments are INVALID_ARGUMENT', async () => {
      const store = await open();
      const controller = new AbortController();
      controller.abort();
      const signal = controller.signal;
      await expectCode(store.put('x', bytes(1), { signal }), 'CANCELLED');
      await expectCode(store.putIfAbsent('x', bytes(1), { signal }), 'CANCELLED');
      expect(await store.get('x')).toBeUndefined();
      await store.put('y', bytes(1));
      await expectCode(store.delete('y', { signal }), 'CANCELLED');
      await expectCode(store.get('y', { signal }), 'CANCELLED');
      expect(await store.get('y')).toEqual(bytes(1));
      await expectCode(store.put('', bytes(1)), 'INVALID_ARGUMENT');
      await expectCode(store.getRange('y', -1, 1), 'INVALID_ARGUMENT');
    });
  });
}
