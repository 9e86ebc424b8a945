/**
 * LocalChunkStore beyond the conformance suite: its layout on disk, hostile keys, keys that would
 * nest, aborted puts, range reads of an object too large to read whole, and the clean-up of
 * interrupted puts. (test/crash/local-chunk-store-kill.test.ts kills a putting process.)
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { LOCAL_CHUNK_TEMP_FOLDER, LocalChunkStore } from '../../src/store/local-chunk-store.js';
import { expectCode } from '../support/expect-error.js';
import { tempDir } from '../support/tmp.js';

const MiB = 1024 * 1024;

/** Every file and folder under dir, relative, sorted. */
function tree(dir: string): string[] {
  return (fs.readdirSync(dir, { recursive: true }) as string[]).sort();
}

function storeIn(): { store: LocalChunkStore; outside: string; root: string } {
  const outside = tempDir();
  const root = path.join(outside, 'store');
  return { store: new LocalChunkStore(root), outside, root };
}

describe('LocalChunkStore', () => {
  it('stores one file per object, a key\'s parts as sub-folders, and removes folders a delete empties', async () => {
    const { store, root } = storeIn();
    await store.put('packs/00/0001', Uint8Array.from([1, 2, 3]));
    await store.put('top', Uint8Array.from([4]));
    expect(fs.readFileSync(path.join(root, 'packs', '00', '0001'))).toEqual(Buffer.from([1, 2, 3]));
    expect(store.objectPath('packs/00/0001')).toBe(path.join(root, 'packs', '00', '0001'));
    expect(tree(root)).toEqual([LOCAL_CHUNK_TEMP_FOLDER, 'packs', path.join('packs', '00'), path.join('packs', '00', '0001'), 'top']);
    await store.delete('packs/00/0001');
    expect(tree(root)).toEqual([LOCAL_CHUNK_TEMP_FOLDER, 'top']);
    // The emptied folder is gone, so its name is free for an object again.
    await store.put('packs', Uint8Array.from([5]));
    expect(await store.get('packs')).toEqual(Uint8Array.from([5]));
  });

  // The race (a delete's folder sync after another delete removed the emptied folder) showed up
  // under load in test/e2e/tiered-dedup-pool.test.ts (migrations delete packs two at a time);
  // this loop reaches it only sometimes: a guard, not a reproduction.
  it('concurrent deletes of the last keys of a folder all succeed (one of them removes the folder)', async () => {
    const root = tempDir();
    const store = new LocalChunkStore(root);
    for (let round = 0; round < 50; round++) {
      const keys = Array.from({ length: 8 }, (_, i) => `packs/p-${round}-${i}`);
      for (const key of keys) await store.put(key, new Uint8Array([round]));
      await Promise.all(keys.map((key) => store.delete(key)));
      expect(fs.existsSync(path.join(root, 'packs'))).toBe(false);
    }
  });

  it('refuses hostile keys with INVALID_ARGUMENT in every call, and writes nothing outside its root', async () => {
    const { store, outside } = storeIn();
    await store.put('inside', Uint8Array.from([1]));
    const before = tree(outside);
    const hostile = [
      '../escape',
      'a/../../escape',
      '/etc/passwd',
      'a//b',
      'a/',
      '.',
      'a/./b',
      '..',
      `${LOCAL_CHUNK_TEMP_FOLDER}/x`,
      'nul\0byte',
      '',
      'x'.repeat(1025),
      `${'y'.repeat(256)}/z`,
    ];
    for (const key of hostile) {
      for (const call of [
        store.put(key, Uint8Array.from([9])),
        store.putIfAbsent(key, Uint8Array.from([9])),
        store.get(key),
        store.getRange(key, 0, 1),
        store.delete(key),
      ]) {
        // The message says what a key may be.
        await expectCode(call, 'INVALID_ARGUMENT', /chunk key/);
      }
    }
    expect(tree(outside)).toEqual(before);
    // A prefix that no key can have lists nothing (and climbs nowhere).
    expect((await store.list('../')).keys).toEqual([]);
    expect((await store.list(`${LOCAL_CHUNK_TEMP_FOLDER}/`)).keys).toEqual([]);
    expect((await store.list('')).keys).toEqual(['inside']);
  });

  it('refuses a key that would be the folder of another key, or inside another key, naming the clash', async () => {
    const { store } = storeIn();
    await store.put('a', Uint8Array.from([1]));
    await expectCode(store.put('a/b', Uint8Array.from([2])), 'INVALID_ARGUMENT', /cannot also be the folder/);
    await store.put('c/d', Uint8Array.from([3]));
    await expectCode(store.put('c', Uint8Array.from([4])), 'INVALID_ARGUMENT', /cannot also be the folder/);
    await expectCode(store.putIfAbsent('c', Uint8Array.from([4])), 'INVALID_ARGUMENT', /cannot also be the folder/);
    expect(await store.get('c')).toBeUndefined();
    expect(await store.getRange('c', 0, 1)).toBeUndefined();
    await store.delete('c'); // a folder of other keys is no object: nothing to delete
    expect(await store.get('c/d')).toEqual(Uint8Array.from([3]));
    expect(await store.get('a/b')).toBeUndefined();
    expect((await store.list('')).keys).toEqual(['a', 'c/d']);
  });

  it('an aborted put is CANCELLED and leaves the old object and no temporary file', async () => {
    const { store, root } = storeIn();
    await store.put('obj', new Uint8Array(MiB).fill(1));
    const controller = new AbortController();
    // put has checked the signal and is writing its temporary file when the abort comes.
    const put = store.put('obj', new Uint8Array(8 * MiB).fill(2), { signal: controller.signal });
    controller.abort();
    await expectCode(put, 'CANCELLED');
    const ifAbsent = new AbortController();
    const second = store.putIfAbsent('other', new Uint8Array(4 * MiB).fill(3), { signal: ifAbsent.signal });
    ifAbsent.abort();
    await expectCode(second, 'CANCELLED');
    const kept = await store.get('obj');
    // Compared as a Buffer: toEqual walks a MiB element by element, slowly.
    expect(kept !== undefined && Buffer.from(kept.buffer, kept.byteOffset, kept.byteLength).equals(Buffer.alloc(MiB, 1))).toBe(true);
    expect(await store.get('other')).toBeUndefined();
    expect(fs.readdirSync(path.join(root, LOCAL_CHUNK_TEMP_FOLDER))).toEqual([]);
    const get = new AbortController();
    get.abort();
    await expectCode(store.getRange('obj', 0, 1, { signal: get.signal }), 'CANCELLED');
    await expectCode(store.list('', { signal: get.signal }), 'CANCELLED');
  });

  it('getRange reads only the range: 4 KiB at the end of a 64 GiB (sparse) object', async () => {
    const { store } = storeIn();
    await store.put('huge', Uint8Array.from([7]));
    const sizeBytes = 64 * 1024 * MiB;
    fs.truncateSync(store.objectPath('huge'), sizeBytes); // sparse: nothing is allocated
    const fd = fs.openSync(store.objectPath('huge'), 'r+');
    fs.writeSync(fd, Buffer.alloc(4096, 0xab), 0, 4096, sizeBytes - 4096);
    fs.closeSync(fd);
    expect(await store.getRange('huge', sizeBytes - 4096, 4096)).toEqual(new Uint8Array(4096).fill(0xab));
    expect(await store.getRange('huge', sizeBytes - 2, 100)).toEqual(new Uint8Array(2).fill(0xab));
    expect(await store.getRange('huge', sizeBytes + 10, 100)).toEqual(new Uint8Array(0));
    expect(await store.getRange('huge', 0, 2)).toEqual(Uint8Array.from([7, 0]));
  });

  it('removeInterruptedPuts deletes what crashed puts left in its temporary folder, and nothing else', async () => {
    const { store, root } = storeIn();
    await store.put('keep/me', Uint8Array.from([1]));
    fs.writeFileSync(path.join(root, LOCAL_CHUNK_TEMP_FOLDER, '123-deadbeef'), 'torn');
    fs.writeFileSync(path.join(root, LOCAL_CHUNK_TEMP_FOLDER, '124-cafe'), '');
    expect((await store.list('')).keys).toEqual(['keep/me']);
    expect(await store.removeInterruptedPuts()).toEqual(['123-deadbeef', '124-cafe']);
    expect(await store.removeInterruptedPuts()).toEqual([]);
    expect(fs.readdirSync(path.join(root, LOCAL_CHUNK_TEMP_FOLDER))).toEqual([]);
    expect(await store.get('keep/me')).toEqual(Uint8Array.from([1]));
    expect(await new LocalChunkStore(path.join(root, 'never-made')).removeInterruptedPuts()).toEqual([]);
  });

  it('putIfAbsent: of many concurrent callers on a fresh folder exactly one stores, and it is durable for the losers too', async () => {
    const { store } = storeIn();
    const results = await Promise.all(Array.from({ length: 16 }, (_, i) => store.putIfAbsent('deep/er/k', Uint8Array.from([i]))));
    expect(results.filter(Boolean)).toHaveLength(1);
    expect(await store.get('deep/er/k')).toEqual(Uint8Array.from([results.indexOf(true)]));
  });

  it('getRange reads into the array offered (options.into) when it is large enough, cut short at the end; a smaller one is ignored', async () => {
    for (const openFilesMax of [0, 4]) {
      const root = path.join(tempDir(), 'store');
      const store = new LocalChunkStore(root, { openFilesMax });
      const data = Uint8Array.from({ length: 10_000 }, (_, i) => i % 251);
      await store.put('k', data);
      const into = new Uint8Array(8192);
      const got = (await store.getRange('k', 100, 5000, { into }))!;
      expect(got.buffer).toBe(into.buffer);
      expect(got.byteOffset).toBe(0);
      expect(Buffer.from(got)).toEqual(Buffer.from(data.subarray(100, 5100)));
      const tail = (await store.getRange('k', 9000, 5000, { into }))!;
      expect(tail.buffer).toBe(into.buffer);
      expect(Buffer.from(tail)).toEqual(Buffer.from(data.subarray(9000)));
      const small = new Uint8Array(10);
      const own = (await store.getRange('k', 0, 5000, { into: small }))!;
      expect(own.buffer).not.toBe(small.buffer);
      expect(Buffer.from(own)).toEqual(Buffer.from(data.subarray(0, 5000)));
      await store.delete('k'); // closes a handle the store held open
      await store.close();
    }
  });
});
