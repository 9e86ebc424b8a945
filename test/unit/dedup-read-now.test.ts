/**
 * Sealed-layer reads without waiting, over real pack files on disk: LocalChunkStore.getRangeNow
 * (preadv2 RWF_NOWAIT from a pack kept open), DedupChunkRepository.readRangeNow (block checksums
 * checked), OpenFileCache.peek and readNoWait. Bit rot is made the way it happens, in place in a
 * pack file the store holds open, so the synchronous check meets it: it must refuse (false), and
 * readRange then reports CORRUPT; the blocks around it still read right.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, readSync, writeFileSync, writeSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { MemoryCatalogStore } from '../../src/meta/memory-catalog.js';
import { DedupChunkRepository } from '../../src/store/dedup/dedup-repository.js';
import { LocalChunkStore } from '../../src/store/local-chunk-store.js';
import { NOWAIT_READ_MAX_BYTES, readNoWait } from '../../src/sys/nowait-read.js';
import { expectSameBytes } from '../support/bytes.js';
import { chunkLocation } from '../support/dedup.js';
import { expectCode } from '../support/expect-error.js';
import { shmTempDir, tempDir } from '../support/tmp.js';
import { packKey } from '../../src/store/dedup/pack-format.js';

const CHUNK_BYTES = 64 * 1024;
/** A v2 pack stores each 4 KiB block followed by its 4-byte CRC. */
const STORED_BLOCK_BYTES = 4096 + 4;

async function repositoryOnDisk(): Promise<{ store: LocalChunkStore; catalog: MemoryCatalogStore; repo: DedupChunkRepository }> {
  const store = new LocalChunkStore(tempDir(), { openFilesMax: 4 });
  onTestFinished(() => store.close());
  const catalog = new MemoryCatalogStore();
  const repo = await DedupChunkRepository.open({ chunkStore: store, catalog, readCacheBytes: 0 });
  return { store, catalog, repo };
}

describe('readNoWait', () => {
  it('reads cached bytes into the target; refuses what it cannot do at once, whole', () => {
    const file = path.join(tempDir(), 'f');
    const data = randomBytes(3 * 4096);
    writeFileSync(file, data); // just written: in the page cache
    const fd = openSync(file, 'r');
    try {
      const target = new Uint8Array(4096);
      expect(readNoWait(fd, 4096, target)).toBe('read');
      expectSameBytes(target, data.subarray(4096, 8192));
      expect(readNoWait(fd, 2 * 4096 + 1, target)).toBe('later'); // short: the file ends first
      expect(readNoWait(fd, 0, new Uint8Array(0))).toBe('later');
      expect(readNoWait(fd, 0, new Uint8Array(NOWAIT_READ_MAX_BYTES + 1))).toBe('later');
    } finally {
      closeSync(fd);
    }
    expect(readNoWait(fd, 0, new Uint8Array(16))).toBe('later'); // a closed descriptor: EBADF, not "unsupported"
  });

  it('on tmpfs (no RWF_NOWAIT there on this kernel) answers unsupported or reads; a LocalChunkStore there stays correct', async () => {
    const file = path.join(shmTempDir(), 'f');
    const data = randomBytes(8192);
    writeFileSync(file, data);
    const fd = openSync(file, 'r');
    try {
      const target = new Uint8Array(4096);
      const outcome = readNoWait(fd, 4096, target);
      expect(['read', 'unsupported']).toContain(outcome);
      if (outcome === 'read') expectSameBytes(target, data.subarray(4096));
    } finally {
      closeSync(fd);
    }
    const store = new LocalChunkStore(shmTempDir(), { openFilesMax: 4 });
    onTestFinished(() => store.close());
    await store.put('k', Uint8Array.from([1, 2, 3]));
    await store.getRange('k', 0, 1);
    const target = new Uint8Array(2);
    for (let i = 0; i < 2; i++) if (store.getRangeNow('k', 1, target)) expect(target).toEqual(Uint8Array.from([2, 3]));
    expect(await store.getRange('k', 1, 2)).toEqual(Uint8Array.from([2, 3]));
  });
});

describe('LocalChunkStore.getRangeNow', () => {
  it('answers only from a pack it holds open; a replaced or deleted object is never read', async () => {
    const store = new LocalChunkStore(tempDir(), { openFilesMax: 4 });
    onTestFinished(() => store.close());
    const target = new Uint8Array(3);
    await store.put('packs/a', Uint8Array.from([1, 2, 3, 4, 5]));
    expect(store.getRangeNow('packs/a', 0, target)).toBe(false); // not open yet
    await store.getRange('packs/a', 0, 1);
    expect(store.getRangeNow('packs/a', 2, target)).toBe(true);
    expect(target).toEqual(Uint8Array.from([3, 4, 5]));
    await store.put('packs/a', Uint8Array.from([7, 8, 9]));
    expect(store.getRangeNow('packs/a', 0, target)).toBe(false); // the old handle was forgotten
    await store.getRange('packs/a', 0, 1);
    expect(store.getRangeNow('packs/a', 0, target)).toBe(true);
    expect(target).toEqual(Uint8Array.from([7, 8, 9]));
    await store.delete('packs/a');
    expect(store.getRangeNow('packs/a', 0, target)).toBe(false);
    // A store that keeps nothing open never answers at once.
    const plain = new LocalChunkStore(tempDir());
    onTestFinished(() => plain.close());
    await plain.put('k', Uint8Array.from([1, 2, 3]));
    await plain.getRange('k', 0, 3);
    expect(plain.getRangeNow('k', 0, target)).toBe(false);
  });
});

describe('DedupChunkRepository.readRangeNow over packs on disk', () => {
  it('reads a remembered chunk at once, checked, into the caller\'s buffer', async () => {
    const { repo } = await repositoryOnDisk();
    const a = new Uint8Array(randomBytes(CHUNK_BYTES));
    const [name] = await repo.addReferences([a]);
    await repo.readRange(name!, 0, 1); // opens the pack
    for (const [offset, length] of [[0, 4096], [4096 * 7 + 13, 9000], [CHUNK_BYTES - 4096, 4096]] as const) {
      const target = new Uint8Array(length);
      expect(repo.readRangeNow(name!, offset, target)).toBe(true);
      expectSameBytes(target, a.subarray(offset, offset + length));
    }
  });

  it('bit rot in place in an open pack: the damaged block is refused, readRange reports CORRUPT, the others read right', async () => {
    const { store, catalog, repo } = await repositoryOnDisk();
    const a = new Uint8Array(randomBytes(CHUNK_BYTES));
    const [name] = await repo.addReferences([a]);
    await repo.readRange(name!, 0, 1);
    const at = await chunkLocation(catalog, name!);
    const damagedBlock = 5;
    // Flip a bit of block 5 in the pack file itself, under the store's open handle.
    const fd = openSync(store.objectPath(packKey(at.pack)), 'r+');
    try {
      const position = at.offsetBytes + damagedBlock * STORED_BLOCK_BYTES + 100;
      const byte = Buffer.alloc(1);
      readSync(fd, byte, 0, 1, position);
      byte[0]! ^= 0x04;
      writeSync(fd, byte, 0, 1, position);
    } finally {
      closeSync(fd);
    }
    const blocks = Array.from({ length: CHUNK_BYTES / 4096 }, (_, i) => i).filter((block) => block !== damagedBlock);
    for (const block of blocks) {
      const target = new Uint8Array(4096);
      expect(repo.readRangeNow(name!, block * 4096, target)).toBe(true);
      expectSameBytes(target, a.subarray(block * 4096, (block + 1) * 4096));
    }
    expect(repo.readRangeNow(name!, damagedBlock * 4096, new Uint8Array(4096))).toBe(false);
    await expectCode(repo.readRange(name!, damagedBlock * 4096, 4096), 'CORRUPT', new RegExp(`block ${damagedBlock}`));
    expect(repo.readRangeNow(name!, damagedBlock * 4096, new Uint8Array(4096))).toBe(false);
    // The damaged block made the repository forget the location; a good read learns it again.
    expectSameBytes(await repo.readRange(name!, 0, 4096), a.subarray(0, 4096));
    const target = new Uint8Array(4096);
    expect(repo.readRangeNow(name!, 4096, target)).toBe(true);
    expectSameBytes(target, a.subarray(4096, 8192));
  });
});
