import { expectCode } from '../support/expect-error.js';
import { describe, expect, it } from 'vitest';
import { CATALOG_GET_MANY_MAX, type CatalogStore, type CatalogValue } from '../../src/core/catalog-store.js';
import { isStorageError } from '../../src/core/errors.js';
import { LevelCatalogStore } from '../../src/meta/level-catalog.js';
import { MemoryCatalogStore } from '../../src/meta/memory-catalog.js';
import { Table, TxnBuilder, type TableSchema } from '../../src/meta/table.js';
import { tempDir } from '../support/tmp.js';

interface Volume {
  id: string;
  poolId: string;
  name: string;
  sizeBytes: number;
  serial?: string;
}

const volumes: TableSchema<Volume> = {
  name: 'volume',
  id: (v) => v.id,
  parse: (value: CatalogValue) => {
    const v = value as unknown as Volume;
    if (typeof v?.id !== 'string' || typeof v.name !== 'string' || !Number.isSafeInteger(v.sizeBytes)) throw new Error('not a volume');
    return v;
  },
  indexes: { name: (v) => `${v.poolId}/${v.name}`, serial: (v) => v.serial },
};

for (const [label, open] of [
  ['memory', async (): Promise<CatalogStore> => new MemoryCatalogStore()],
  ['LevelDB', async (): Promise<CatalogStore> => LevelCatalogStore.open(`${tempDir()}/catalog`)],
] as const) {
  describe(`Table over ${label}`, () => {
    it('finds a record by its unique name index, follows renames, frees names on delete', async () => {
      const store = await open();
      const table = new Table(store, volumes);
      const create = new TxnBuilder();
      table.put(create, { id: 'v1', poolId: 'p1', name: 'vm1', sizeBytes: 1 });
      table.put(create, { id: 'v2', poolId: 'p1', name: 'vm2', sizeBytes: 2, serial: 'S2' });
      await create.commit(store);
      expect((await table.lookup('name', 'p1/vm2'))?.record.id).toBe('v2');
      expect((await table.lookup('serial', 'S2'))?.record.id).toBe('v2');
      expect(await table.lookup('name', 'p2/vm1')).toBeUndefined();

      const v1 = (await table.get('v1'))!;
      const rename = new TxnBuilder();
      table.put(rename, { ...v1.record, name: 'web' }, v1);
      await rename.commit(store);
      expect(await table.lookup('name', 'p1/vm1')).toBeUndefined();
      expect((await table.lookup('name', 'p1/web'))?.record.name).toBe('web');

      const taken = new TxnBuilder();
      table.put(taken, { id: 'v3', poolId: 'p1', name: 'web', sizeBytes: 3 });
      expect(await expectCode(taken.commit(store), 'ALREADY_EXISTS')).toContain('volume name "p1/web"');
      expect(await table.get('v3')).toBeUndefined();

      const removal = new TxnBuilder();
      table.delete(removal, (await table.get('v1'))!);
      await removal.commit(store);
      const reuse = new TxnBuilder();
      table.put(reuse, { id: 'v4', poolId: 'p1', name: 'web', sizeBytes: 4 });
      await reuse.commit(store);
      expect((await table.lookup('name', 'p1/web'))?.record.id).toBe('v4');
      await store.close();
    });

    it('an update from a stale read is refused (BUSY), and racing creators of one name: one wins', async () => {
      const store = await open();
      const table = new Table(store, volumes);
      const first = new TxnBuilder();
      table.put(first, { id: 'v1', poolId: 'p', name: 'a', sizeBytes: 1 });
      await first.commit(store);
      const stale = (await table.get('v1'))!;
      const update = new TxnBuilder();
      table.put(update, { ...stale.record, sizeBytes: 2 }, stale);
      await update.commit(store);
      const late = new TxnBuilder();
      table.put(late, { ...stale.record, sizeBytes: 3 }, stale);
      await expectCode(late.commit(store), 'BUSY');
      expect((await table.get('v1'))?.record.sizeBytes).toBe(2);

      const racers = Array.from({ length: 5 }, (_, i) => {
        const txn = new TxnBuilder();
        table.put(txn, { id: `r${i}`, poolId: 'p', name: 'same', sizeBytes: i });
        return txn.commit(store).then(
          () => 'won',
          (err: unknown) => (isStorageError(err, 'ALREADY_EXISTS') ? 'lost' : String(err)),
        );
      });
      expect((await Promise.all(racers)).sort()).toEqual(['lost', 'lost', 'lost', 'lost', 'won']);
      await store.close();
    });

    it('pages records in id order, and reports a damaged record as CORRUPT', async () => {
      const store = await open();
      const table = new Table(store, volumes);
      const txn = new TxnBuilder();
      for (let i = 0; i < 7; i++) table.put(txn, { id: `v${i}`, poolId: 'p', name: `n${i}`, sizeBytes: i });
      await txn.commit(store);
      const page = await table.page({ limit: 4 });
      expect(page.records.map((v) => v.record.id)).toEqual(['v0', 'v1', 'v2', 'v3']);
      expect((await table.page({ after: page.nextAfter! })).records.map((v) => v.record.id)).toEqual(['v4', 'v5', 'v6']);
      await store.txn([], [{ type: 'put', key: 'volume/v9', value: { id: 'v9' } }]);
      await expectCode(table.get('v9'), 'CORRUPT');
      await store.close();
    });

    it('getMany: records in the order asked, any number of ids (batched under the store bound), damage is CORRUPT', async () => {
      const store = await open();
      const table = new Table(store, volumes);
      const count = CATALOG_GET_MANY_MAX + 5;
      const txn = new TxnBuilder();
      for (let i = 0; i < count; i += 2) table.put(txn, { id: `v${i}`, poolId: 'p', name: `n${i}`, sizeBytes: i });
      await txn.commit(store);
      const ids = Array.from({ length: count }, (_, i) => `v${count - 1 - i}`);
      const many = await table.getMany([...ids, 'v0']);
      expect(many).toEqual(await Promise.all([...ids, 'v0'].map((id) => table.get(id))));
      expect(many.filter((v) => v !== undefined).length).toBe(Math.ceil(count / 2) + 1);
      expect(many.at(-1)?.record.id).toBe('v0');
      await store.txn([], [{ type: 'put', key: 'volume/v1', value: { id: 'v1' } }]);
      await expectCode(table.getMany(['v0', 'v1']), 'CORRUPT');
      await store.close();
    });

    it('pages the records under an index prefix (the volumes of one pool), bounded, without reading other pools', async () => {
      const store = await open();
      const table = new Table(store, volumes);
      const txn = new TxnBuilder();
      for (let i = 0; i < 5; i++) table.put(txn, { id: `a${i}`, poolId: 'p', name: `n${i}`, sizeBytes: i });
      table.put(txn, { id: 'b0', poolId: 'pp', name: 'n0', sizeBytes: 9 });
      table.put(txn, { id: 'b1', poolId: 'q', name: 'n0', sizeBytes: 9 });
      await txn.commit(store);
      const first = await table.indexPage('name', 'p/', { limit: 3 });
      expect(first.records.map((v) => v.record.id)).toEqual(['a0', 'a1', 'a2']);
      expect(first.nextAfter).toBe('p/n2');
      const rest = await table.indexPage('name', 'p/', { after: first.nextAfter! });
      expect(rest.records.map((v) => v.record.id)).toEqual(['a3', 'a4']);
      expect(rest.nextAfter).toBeUndefined();
      const all: string[] = [];
      for await (const v of table.indexScan('name', 'p/')) all.push(v.record.id);
      expect(all).toEqual(['a0', 'a1', 'a2', 'a3', 'a4']);
      await store.close();
    });

    it('an index entry whose value is not a record id is CORRUPT', async () => {
      const store = await open();
      const table = new Table(store, volumes);
      await store.txn([], [{ type: 'put', key: 'volume.name/p/x', value: 7 }]);
      await expectCode(table.indexPage('name', 'p/'), 'CORRUPT');
      await store.close();
    });
  });
}
