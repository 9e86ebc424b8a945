/**
 * FolderSyncs (group fsync of folders) and LocalChunkStore's use of it: concurrent callers share
 * fsyncs but never one begun before their call, failures reach every caller served, and a held
 * folder descriptor never outlives the folder's removal.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { FolderSyncs, HELD_FOLDERS_MAX } from '../../src/store/folder-syncs.js';
import { LocalChunkStore } from '../../src/store/local-chunk-store.js';
import { tempDir } from '../support/tmp.js';

/** The folders this process holds open, as /proc/self/fd names them (" (deleted)" once removed). */
function openFolders(under: string): string[] {
  const names: string[] = [];
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    let target: string;
    try {
      target = fs.readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      continue; // the descriptor readdir used, closed since
    }
    if (target.startsWith(under)) names.push(target);
  }
  return names.sort();
}

describe('FolderSyncs', () => {
  it('callers arriving while an fsync runs share the next one; each waits for an fsync begun after its call', async () => {
    const dir = tempDir();
    const syncs = new FolderSyncs(false);
    const first = syncs.sync(dir);
    // Not begun yet (it begins once what is queued before it has ended): it covers this caller too.
    expect(syncs.sync(dir)).toBe(first);
    while (syncs.syncsBegun === 0) await Promise.resolve(); // begins within a few microtasks
    // The first is running (its fsync cannot complete before the event loop's next poll): these
    // three may have made names after it began, so they need another.
    const joined = [syncs.sync(dir), syncs.sync(dir), syncs.sync(dir)];
    expect(new Set(joined).size).toBe(1);
    expect(joined[0]).not.toBe(first);
    await first;
    await Promise.all(joined);
    expect(syncs.syncsBegun).toBe(2);
    // Nothing running now: a new caller begins its own.
    await syncs.sync(dir);
    expect(syncs.syncsBegun).toBe(3);
  });

  it('a failed fsync fails every caller it served, and the folder is tried afresh next time', async () => {
    const dir = path.join(tempDir(), 'missing');
    const syncs = new FolderSyncs(true);
    const first = syncs.sync(dir);
    const joined = [syncs.sync(dir), syncs.sync(dir)];
    await expect(first).rejects.toMatchObject({ code: 'ENOENT' });
    for (const call of joined) await expect(call).rejects.toMatchObject({ code: 'ENOENT' });
    fs.mkdirSync(dir);
    await syncs.sync(dir);
  });

  it('syncNow fsyncs a held, idle folder on the calling thread and leaves every other case to sync()', async () => {
    const dir = tempDir();
    const syncs = new FolderSyncs(true);
    expect(syncs.syncNow(dir)).toBe(false); // not held open yet
    // sync() counts its fsync done a few microtasks after its caller resumes: a turn later, it has.
    const settled = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
    await syncs.sync(dir);
    await settled();
    expect(syncs.syncsBegun).toBe(1);
    expect(syncs.syncNow(dir)).toBe(true);
    expect(syncs.syncsBegun).toBe(2);
    const running = syncs.sync(dir);
    expect(syncs.syncNow(dir)).toBe(false); // an fsync is queued: its order is sync()'s to keep
    await running;
    await settled();
    expect(syncs.syncNow(dir)).toBe(true);
    expect(syncs.syncsBegun).toBe(4);
    // An fsync that fails (the disk's EIO): thrown, and the held descriptor let go (closed on the
    // pool: a few turns); the next sync() opens the folder afresh.
    const failing = vi.spyOn(fs, 'fsyncSync').mockImplementationOnce(() => {
      throw Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' });
    });
    expect(() => syncs.syncNow(dir)).toThrow(expect.objectContaining({ code: 'EIO' }));
    failing.mockRestore();
    for (let turn = 0; turn < 50 && openFolders(dir).length > 0; turn++) await settled();
    expect(openFolders(dir)).toEqual([]);
    expect(syncs.syncNow(dir)).toBe(false);
    await syncs.sync(dir);
    await settled();
    expect(syncs.syncNow(dir)).toBe(true);
    // A FolderSyncs that holds nothing open never fsyncs on the calling thread.
    const unheld = new FolderSyncs(false);
    await unheld.sync(dir);
    expect(unheld.syncNow(dir)).toBe(false);
  });

  it(`holds at most ${HELD_FOLDERS_MAX} folders open, the ones fsynced last, and lets go of a folder it removes`, async () => {
    const root = tempDir();
    const syncs = new FolderSyncs(true);
    const dirs = Array.from({ length: HELD_FOLDERS_MAX + 2 }, (_, i) => path.join(root, `f${i}`));
    for (const dir of dirs) fs.mkdirSync(dir);
    const held = (): Promise<string[]> => new Promise((resolve) => setImmediate(() => resolve(openFolders(root)))); // after closes let go of
    for (const dir of dirs) await syncs.sync(dir);
    // The last ones fsynced are held; the least recently fsynced were let go.
    expect(await held()).toEqual(dirs.slice(2));
    await syncs.sync(dirs[2]!);
    await syncs.sync(dirs[0]!);
    expect(await held()).toEqual([dirs[0]!, dirs[2]!, dirs[4]!, dirs[5]!]);
    await syncs.remove(dirs[0]!, () => fs.promises.rmdir(dirs[0]!));
    expect(await held()).toEqual([dirs[2]!, dirs[4]!, dirs[5]!]);
    // A removal that fails (the folder is not empty) keeps the folder held.
    fs.writeFileSync(path.join(dirs[2]!, 'x'), 'x');
    await expect(syncs.remove(dirs[2]!, () => fs.promises.rmdir(dirs[2]!))).rejects.toMatchObject({ code: 'ENOTEMPTY' });
    expect(await held()).toEqual([dirs[2]!, dirs[4]!, dirs[5]!]);
  });
});

describe('LocalChunkStore folders', () => {
  it('fsyncs a folder made again after a delete removed it through the new folder, not a descriptor of the old one', async () => {
    const root = tempDir();
    const store = new LocalChunkStore(root, { holdFolders: true });
    for (let round = 0; round < 3; round++) {
      await store.put('packs/a', Uint8Array.from([round]));
      expect(openFolders(root)).toContain(path.join(root, 'packs'));
      await store.delete('packs/a');
      expect(fs.existsSync(path.join(root, 'packs'))).toBe(false);
      // The removed folder's descriptor is closed: nothing held names a deleted folder.
      expect(openFolders(root).filter((name) => name.endsWith('(deleted)'))).toEqual([]);
    }
    await store.put('packs/b', Uint8Array.from([9]));
    expect(await store.get('packs/b')).toEqual(Uint8Array.from([9]));
  });

  it('puts racing the deletes that empty their folder all land, and no held descriptor names a removed folder', async () => {
    const root = tempDir();
    const store = new LocalChunkStore(root, { holdFolders: true });
    for (let round = 0; round < 30; round++) {
      const old = Array.from({ length: 4 }, (_, i) => `packs/old-${round}-${i}`);
      const fresh = Array.from({ length: 4 }, (_, i) => `packs/new-${round}-${i}`);
      for (const key of old) await store.put(key, Uint8Array.from([round]));
      await Promise.all([...old.map((key) => store.delete(key)), ...fresh.map((key, i) => store.put(key, Uint8Array.from([round, i])))]);
      for (const [i, key] of fresh.entries()) expect(await store.get(key)).toEqual(Uint8Array.from([round, i]));
      expect(openFolders(root).filter((name) => name.endsWith('(deleted)'))).toEqual([]);
      await Promise.all(fresh.map((key) => store.delete(key)));
      expect(fs.existsSync(path.join(root, 'packs'))).toBe(false);
    }
  });

  it('puts into a folder a delete removed behind the store\'s back make it again', async () => {
    const root = tempDir();
    const store = new LocalChunkStore(root);
    await store.put('packs/a', Uint8Array.from([1]));
    // Removed outside the store: its remembered folder is gone, the next put's rename fails and it makes the folder again.
    fs.rmSync(path.join(root, 'packs'), { recursive: true });
    await store.put('packs/b', Uint8Array.from([2]));
    expect(await store.get('packs/b')).toEqual(Uint8Array.from([2]));
    expect(await store.get('packs/a')).toBeUndefined();
  });

  it('concurrent puts into one folder share folder fsyncs and all land', async () => {
    const root = tempDir();
    const store = new LocalChunkStore(root, { holdFolders: true });
    await store.put('packs/first', Uint8Array.from([0]));
    const keys = Array.from({ length: 32 }, (_, i) => `packs/p${i}`);
    await Promise.all(keys.map((key, i) => store.put(key, Uint8Array.from([i, i]))));
    for (const [i, key] of keys.entries()) expect(await store.get(key)).toEqual(Uint8Array.from([i, i]));
    expect(fs.readdirSync(path.join(root, 'packs')).length).toBe(33);
  });
});
