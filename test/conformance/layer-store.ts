/** The LayerStore conformance suite: every implementation runs it (layer-store.test.ts). */
import { expectCode } from '../support/expect-error.js';
import { describe, expect, it } from 'vitest';
import type { LayerStore } from '../../src/core/layer-store.js';

/**
 * addStray: puts an entry that is not a pool in the store's root (a plain file in a local root),
 * for a store that can hold one; a store that holds nothing but pools leaves it out.
 */
export function layerStoreConformance(name: string, open: () => Promise<LayerStore>, addStray?: (store: LayerStore, name: string) => Promise<void>): void {
  describe(`LayerStore conformance: ${name}`, () => {
    it('creates, reopens with the bytes kept, lists, measures and removes layer files', async () => {
      const store = await open();
      await store.createPool('p');
      await store.createPool('p');
      const ref = { pool: 'p', fileName: '00000000000000a1.qcow2' };
      const file = await store.create(ref);
      const data = new Uint8Array(256 * 1024).fill(7);
      await file.pwrite(data, 0);
      await file.flush();
      await file.close();
      await store.syncPool('p');
      expect(await store.allocatedBytes(ref)).toBeGreaterThanOrEqual(data.length);
      const again = await store.open(ref, { readOnly: true });
      const back = new Uint8Array(data.length);
      expect(await again.pread(back, 0)).toBe(data.length);
      expect(back).toEqual(data);
      await expectCode(again.pwrite(new Uint8Array(1), 0), 'READ_ONLY');
      await again.close();
      await store.create({ pool: 'p', fileName: '00000000000000a0.qcow2' }).then((f) => f.close());
      expect(await store.list('p')).toEqual(['00000000000000a0.qcow2', '00000000000000a1.qcow2']);
      expect(await store.remove(ref)).toBe(true);
      expect(await store.remove(ref)).toBe(false);
      expect(await store.allocatedBytes(ref)).toBe(0);
      expect(await store.list('p')).toEqual(['00000000000000a0.qcow2']);
      expect(await store.list('nothing-here')).toEqual([]);
    });

    it('lists the pools that have a namespace, sorted', async () => {
      const store = await open();
      expect(await store.listPools()).toEqual([]);
      await store.createPool('zeta');
      await store.createPool('alpha');
      expect(await store.listPools()).toEqual(['alpha', 'zeta']);
      await store.removePool('zeta');
      expect(await store.listPools()).toEqual(['alpha']);
    });

    it('reports no strays when its root holds pools only', async () => {
      const store = await open();
      await store.prepare();
      expect(await store.listStrays()).toEqual([]);
      await store.createPool('p');
      expect(await store.listStrays()).toEqual([]);
    });

    if (addStray !== undefined) it('lists what its root holds beside the pools as strays, sorted, and never as pools', async () => {
      const store = await open();
      await store.prepare();
      await store.createPool('p');
      await addStray(store, 'zz-notes.txt');
      await addStray(store, 'a-stray');
      expect(await store.listPools()).toEqual(['p']);
      const strays = await store.listStrays();
      expect(strays.map((s) => s.name)).toEqual(['a-stray', 'zz-notes.txt']);
      for (const stray of strays) {
        // A location, where the store has them, names the entry itself.
        if (stray.location !== undefined) expect(stray.location.endsWith(stray.name)).toBe(true);
      }
    });

    it('refuses to create over a file, to open a missing one, and to remove a pool that holds files', async () => {
      const store = await open();
      await store.createPool('q');
      const ref = { pool: 'q', fileName: 'x.qcow2' };
      await (await store.create(ref)).close();
      await expectCode(store.create(ref), 'ALREADY_EXISTS');
      await expectCode(store.open({ pool: 'q', fileName: 'y.qcow2' }, { readOnly: true }), 'NOT_FOUND');
      await expectCode(store.removePool('q'), 'BUSY');
      await store.remove(ref);
      await store.removePool('q');
      await store.removePool('q');
      expect(await store.list('q')).toEqual([]);
    });

    it('prepares its namespace idempotently, and creates owner-only files that read and write like any other', async () => {
      const store = await open();
      await store.prepare();
      await store.prepare();
      expect(await store.listPools()).toEqual([]);
      await store.createPool('s');
      const spool = { pool: 's', fileName: '.tmp-import-1.qcow2' };
      const file = await store.create(spool, { ownerOnly: true });
      await file.pwrite(new Uint8Array([1, 2, 3]), 4096);
      await file.truncate(8192);
      await file.close();
      await expectCode(store.create(spool, { ownerOnly: true }), 'ALREADY_EXISTS');
      const back = await store.open(spool, { readOnly: true });
      expect(await back.sizeBytes()).toBe(8192);
      const bytes = new Uint8Array(3);
      await back.pread(bytes, 4096);
      expect([...bytes]).toEqual([1, 2, 3]);
      await back.close();
      expect(await store.list('s')).toEqual(['.tmp-import-1.qcow2']);
      expect(await store.remove(spool)).toBe(true);
    });

    it('gives locations for files and pools both or neither, one inside the other', async () => {
      const store = await open();
      const ref = { pool: 'p', fileName: '00000000000000a1.qcow2' };
      const file = store.location(ref);
      const pool = store.poolLocation('p');
      expect(file === undefined).toBe(pool === undefined);
      if (file !== undefined && pool !== undefined) {
        expect(file.startsWith(pool)).toBe(true);
        expect(file.endsWith(ref.fileName)).toBe(true);
      }
    });

    it('names backing files relative to the child: the file name in one pool, ../pool/file across pools', async () => {
      const store = await open();
      const base = { pool: 'a', fileName: '1.qcow2' };
      expect(store.backingName({ pool: 'a', fileName: '2.qcow2' }, base)).toBe('1.qcow2');
      expect(store.backingName({ pool: 'b', fileName: '2.qcow2' }, base)).toBe('../a/1.qcow2');
    });
  });
}
