/**
 * The CatalogStore conformance suite: every implementation runs it (catalog-store.test.ts), so
 * the volume layer can rely on the same semantics from LevelDB, memory and, later, etcd.
 */
import { expectCode } from '../support/expect-error.js';
import { describe, expect, it } from 'vitest';
import { CATALOG_GET_MANY_MAX, CATALOG_PAGE_MAX, listAll, type CatalogEvent, type CatalogStore } from '../../src/core/catalog-store.js';

export interface CatalogStoreSubject {
  store: CatalogStore;
  /** Closes and opens the same store again (durable implementations only). */
  reopen?: () => Promise<CatalogStore>;
}

const put = (key: string, value: unknown) => ({ type: 'put' as const, key, value: value as never });
const del = (key: string) => ({ type: 'delete' as const, key });

function nextEvents(store: CatalogStore, prefix: string, count: number): Promise<CatalogEvent[]> {
  return new Promise((resolve) => {
    const events: CatalogEvent[] = [];
    const watch = store.watch(prefix, (event) => {
      events.push(event);
      if (events.length === count) {
        watch.cancel();
        resolve(events);
      }
    });
  });
}

export function catalogStoreConformance(name: string, open: () => Promise<CatalogStoreSubject>): void {
  describe(`CatalogStore conformance: ${name}`, () => {
    const withStore = (body: (subject: CatalogStoreSubject) => Promise<void>) => async () => {
      const subject = await open();
      try {
        await body(subject);
      } finally {
        await subject.store.close();
      }
    };

    it('an empty store: no key, revision 0', withStore(async ({ store }) => {
      expect(await store.get('a')).toBeUndefined();
      expect(await store.revision()).toBe(0);
      expect((await store.list('')).entries).toEqual([]);
    }));

    it('a transaction writes all its ops at one new revision', withStore(async ({ store }) => {
      const result = await store.txn([], [put('vol/1', { name: 'a' }), put('vol/2', { name: 'b' })]);
      expect(result).toEqual({ succeeded: true, revision: 1, failedKeys: [] });
      expect(await store.get('vol/1')).toEqual({ key: 'vol/1', value: { name: 'a' }, modRevision: 1 });
      expect((await store.get('vol/2'))?.modRevision).toBe(1);
      const second = await store.txn([], [put('vol/1', { name: 'c' }), del('vol/2')]);
      expect(second.revision).toBe(2);
      expect(await store.get('vol/1')).toEqual({ key: 'vol/1', value: { name: 'c' }, modRevision: 2 });
      expect(await store.get('vol/2')).toBeUndefined();
      expect(await store.revision()).toBe(2);
    }));

    it('compare-and-set: modRevision 0 means absent; a stale revision fails the whole transaction', withStore(async ({ store }) => {
      expect((await store.txn([{ key: 'k', modRevision: 0 }], [put('k', 1)])).succeeded).toBe(true);
      const again = await store.txn([{ key: 'k', modRevision: 0 }], [put('k', 2), put('other', 3)]);
      expect(again).toEqual({ succeeded: false, revision: 1, failedKeys: ['k'] });
      expect(await store.get('other')).toBeUndefined();
      expect((await store.get('k'))?.value).toBe(1);
      expect((await store.txn([{ key: 'k', modRevision: 1 }], [put('k', 4)])).succeeded).toBe(true);
      expect((await store.txn([{ key: 'k', modRevision: 1 }], [put('k', 5)])).succeeded).toBe(false);
      expect((await store.txn([{ key: 'missing', modRevision: 7 }], [put('k', 6)])).failedKeys).toEqual(['missing']);
      expect((await store.get('k'))?.value).toBe(4);
    }));

    it('concurrent read-modify-write with compare-and-set loses no update', withStore(async ({ store }) => {
      await store.txn([], [put('counter', 0)]);
      const increment = async (): Promise<void> => {
        for (;;) {
          const entry = await store.get('counter');
          const result = await store.txn([{ key: 'counter', modRevision: entry!.modRevision }], [put('counter', (entry!.value as number) + 1)]);
          if (result.succeeded) return;
        }
      };
      await Promise.all(Array.from({ length: 20 }, increment));
      expect((await store.get('counter'))?.value).toBe(20);
    }));

    it('transactions called at once apply in call order, each at its own revision, each seeing the ones before it', withStore(async ({ store }) => {
      await store.txn([], [put('old', 0)]);
      // Called in one turn: a store that commits them as a group must still apply them one by one.
      const results = await Promise.all([
        store.txn([{ key: 'k', modRevision: 0 }], [put('k', 'first')]),
        store.txn([{ key: 'k', modRevision: 0 }], [put('k', 'second')]),
        store.txn([{ key: 'k', modRevision: 2 }], [put('k', 'third'), del('old')]),
        store.txn([{ key: 'old', modRevision: 1 }], [put('gone', 1)]),
        store.txn([], [del('old'), put('x', 1)]),
        store.txn([{ key: 'x', modRevision: 4 }], []),
      ]);
      expect(results).toEqual([
        { succeeded: true, revision: 2, failedKeys: [] },
        { succeeded: false, revision: 2, failedKeys: ['k'] },
        { succeeded: true, revision: 3, failedKeys: [] },
        { succeeded: false, revision: 3, failedKeys: ['old'] },
        { succeeded: true, revision: 4, failedKeys: [] },
        { succeeded: true, revision: 4, failedKeys: [] },
      ]);
      expect(await store.get('k')).toEqual({ key: 'k', value: 'third', modRevision: 3 });
      expect(await store.get('old')).toBeUndefined();
      expect(await store.get('gone')).toBeUndefined();
      expect(await store.get('x')).toEqual({ key: 'x', value: 1, modRevision: 4 });
      expect(await store.revision()).toBe(4);
    }));

    it('refuses malformed transactions without writing anything', withStore(async ({ store }) => {
      for (const bad of [
        () => store.txn([], [put('k', 1), put('k', 2)]),
        () => store.txn([], [put('', 1)]),
        () => store.txn([], [put('a\0b', 1)]),
        () => store.txn([{ key: 'k', modRevision: -1 }], []),
        () => store.txn([], [put('k', undefined)]),
      ]) {
        await expectCode(bad(), 'INVALID_ARGUMENT');
      }
      expect(await store.revision()).toBe(0);
    }));

    it('lists a prefix in key order, a bounded page at a time, and nothing outside it', withStore(async ({ store }) => {
      const keys = Array.from({ length: 2500 }, (_, i) => `vol/${String(i).padStart(5, '0')}`);
      for (let i = 0; i < keys.length; i += 500) await store.txn([], keys.slice(i, i + 500).map((k) => put(k, k)));
      await store.txn([], [put('vol', 'no slash'), put('vol0', 'sibling'), put('vom/1', 'after'), put('vok/1', 'before')]);
      const first = await store.list('vol/');
      expect(first.entries.length).toBe(CATALOG_PAGE_MAX);
      expect(first.nextAfter).toBe(keys[CATALOG_PAGE_MAX - 1]);
      const all: string[] = [];
      for await (const entry of listAll(store, 'vol/')) all.push(entry.key);
      expect(all).toEqual(keys);
      const small = await store.list('vol/', { limit: 3, after: keys[10] });
      expect(small.entries.map((e) => e.key)).toEqual(keys.slice(11, 14));
      expect(small.nextAfter).toBe(keys[13]);
      const tail = await store.list('vol/', { after: keys[2498] });
      expect(tail).toEqual({ entries: [{ key: keys[2499], value: keys[2499], modRevision: 5 }] });
      expect((await store.list('vol/', { limit: CATALOG_PAGE_MAX * 10 })).entries.length).toBe(CATALOG_PAGE_MAX);
      expect((await store.list('vom/')).entries.map((e) => e.key)).toEqual(['vom/1']);
    }));

    it('getMany answers each key in order, as get does: missing keys, duplicates, revisions', withStore(async ({ store }) => {
      expect(await store.getMany([])).toEqual([]);
      await store.txn([], [put('c/1', { n: 1 }), put('c/2', 'two')]);
      await store.txn([], [put('c/2', 'two again'), put('c/3', null)]);
      await store.txn([], [del('c/1')]);
      const keys = ['c/3', 'c/missing', 'c/2', 'c/1', 'c/3', 'c/2'];
      const many = await store.getMany(keys);
      expect(many).toEqual(await Promise.all(keys.map((key) => store.get(key))));
      expect(many).toEqual([
        { key: 'c/3', value: null, modRevision: 2 },
        undefined,
        { key: 'c/2', value: 'two again', modRevision: 2 },
        undefined,
        { key: 'c/3', value: null, modRevision: 2 },
        { key: 'c/2', value: 'two again', modRevision: 2 },
      ]);
      // Each answer is its own copy, like get's.
      (many[2] as { value: unknown }).value = 'changed';
      expect((await store.getMany(['c/2', 'c/2']))[1]?.value).toBe('two again');
    }));

    it('getMany reads a full batch and refuses a larger one or a bad key', withStore(async ({ store }) => {
      const keys = Array.from({ length: CATALOG_GET_MANY_MAX }, (_, i) => `b/${String(i).padStart(5, '0')}`);
      await store.txn([], keys.filter((_, i) => i % 2 === 0).map((k) => put(k, k)));
      const many = await store.getMany(keys);
      expect(many.map((entry) => entry?.value)).toEqual(keys.map((k, i) => (i % 2 === 0 ? k : undefined)));
      await expectCode(store.getMany([...keys, 'b/one-too-many']), 'INVALID_ARGUMENT');
      await expectCode(store.getMany(['b/1', '']), 'INVALID_ARGUMENT');
    }));

    it('getMany reads every key as of one moment while transactions commit', withStore(async ({ store }) => {
      const keys = Array.from({ length: 8 }, (_, i) => `m/${i}`);
      await store.txn([], keys.map((k) => put(k, 0)));
      const lastValue = 200;
      let committed = false;
      const writer = (async () => {
        for (let n = 1; n <= lastValue; n++) await store.txn([], keys.map((k) => put(k, n)));
        committed = true;
      })();
      const seenValues = new Set<unknown>();
      let reads = 0;
      while (!committed) {
        // Many reads a turn, so that some overlap a batch being written on another thread.
        for (let i = 0; i < 50; i++) {
          const many = await store.getMany(keys);
          reads++;
          const values = new Set(many.map((entry) => entry?.value));
          expect(values.size, `getMany ${reads} saw ${[...values].join(', ')}`).toBe(1);
          seenValues.add(many[0]?.value);
        }
        await new Promise((resolve) => setImmediate(resolve));
      }
      await writer;
      expect((await store.getMany(keys)).map((entry) => entry?.value)).toEqual(keys.map(() => lastValue));
      expect(seenValues.size).toBeGreaterThan(1); // the reads did run between commits
    }));

    it('values are copies: changing what was read or written does not change the store', withStore(async ({ store }) => {
      const value = { list: [1, 2], nested: { a: 'x' } };
      await store.txn([], [put('k', value)]);
      value.list.push(3);
      const read = await store.get('k');
      (read!.value as { list: number[] }).list.push(4);
      expect((await store.get('k'))?.value).toEqual({ list: [1, 2], nested: { a: 'x' } });
    }));

    it('watchers see the changes under their prefix, in commit order, after the commit', withStore(async ({ store }) => {
      const seen = nextEvents(store, 'vol/', 3);
      const other: CatalogEvent[] = [];
      const otherWatch = store.watch('pool/', (e) => other.push(e));
      let committed = false;
      const cancelled = store.watch('vol/', () => {
        expect(committed).toBe(true);
      });
      await store.txn([], [put('vol/a', 1), put('snap/x', 0)]);
      committed = true;
      await store.txn([], [put('vol/b', 2)]);
      await store.txn([], [del('vol/a')]);
      cancelled.cancel();
      const events = await seen;
      expect(events).toEqual([
        { type: 'put', entry: { key: 'vol/a', value: 1, modRevision: 1 } },
        { type: 'put', entry: { key: 'vol/b', value: 2, modRevision: 2 } },
        { type: 'delete', key: 'vol/a', modRevision: 3 },
      ]);
      otherWatch.cancel();
      expect(other).toEqual([]);
    }));

    it('a cancelled watch hears nothing more', withStore(async ({ store }) => {
      const heard: CatalogEvent[] = [];
      const watch = store.watch('', (e) => heard.push(e));
      watch.cancel();
      await store.txn([], [put('k', 1)]);
      await new Promise((resolve) => setImmediate(resolve));
      expect(heard).toEqual([]);
    }));

    it('what a transaction wrote is there after a reopen (durable stores)', async () => {
      const subject = await open();
      if (subject.reopen === undefined) {
        await subject.store.close();
        return;
      }
      await subject.store.txn([], [put('a', { x: 1 }), put('b', 2)]);
      await subject.store.txn([], [del('b')]);
      const again = await subject.reopen();
      try {
        expect(await again.revision()).toBe(2);
        expect(await again.get('a')).toEqual({ key: 'a', value: { x: 1 }, modRevision: 1 });
        expect(await again.get('b')).toBeUndefined();
        expect((await again.txn([{ key: 'a', modRevision: 1 }], [put('a', 3)])).revision).toBe(3);
      } finally {
        await again.close();
      }
    });
  });
}
