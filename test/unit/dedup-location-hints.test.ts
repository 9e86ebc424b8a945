/**
 * ChunkLocationHints' shared pack-header reads: the readers of one pack share one header read, and
 * one reader giving up (its signal aborted: its NBD client left, its request timed out) ends only
 * its own wait, never the read the others wait on. Real ChunkLocationHints and PackBuilder over a
 * memory store whose header reads wait for the test to let them go (the only way to hold a read
 * in flight while a caller aborts) and that, like the S3 store, fail a read whose signal aborts.
 */
import { describe, expect, it } from 'vitest';
import type { ChunkStoreCallOptions } from '../../src/core/chunk-store.js';
import { StorageError } from '../../src/core/errors.js';
import { XXH128_HASHER } from '../../src/store/dedup/chunk-hasher.js';
import { ChunkLocationHints } from '../../src/store/dedup/location-hints.js';
import { PACK_VERSION, PackBuilder, newPackId, packKey } from '../../src/store/dedup/pack-format.js';
import { MemoryChunkStore } from '../../src/store/memory-chunk-store.js';
import { expectCode } from '../support/expect-error.js';

/** Range reads wait until release(); an aborted signal fails the read at once (as S3's does). */
class HeldRangeStore extends MemoryChunkStore {
  rangeReads = 0;
  private held: (() => void)[] = [];

  release(): void {
    for (const go of this.held.splice(0)) go();
  }

  override async getRange(key: string, offsetBytes: number, lengthBytes: number, options?: ChunkStoreCallOptions): Promise<Uint8Array | undefined> {
    this.rangeReads += 1;
    await new Promise<void>((resolve, reject) => {
      this.held.push(resolve);
      options?.signal?.addEventListener('abort', () => reject(new StorageError('CANCELLED', `get ${key} was cancelled`)), { once: true });
    });
    return super.getRange(key, offsetBytes, lengthBytes, options);
  }
}

async function storedPack(store: MemoryChunkStore): Promise<string> {
  const builder = new PackBuilder(XXH128_HASHER.algorithm, XXH128_HASHER.digestBytes);
  const data = new Uint8Array(5000).fill(7);
  builder.add(XXH128_HASHER.hash(data), data);
  const id = newPackId(1_700_000_000_000);
  await store.put(packKey(id), builder.finish());
  return id;
}

describe('ChunkLocationHints pack versions', () => {
  it('one header read serves every reader of a pack, and a reader that aborts fails alone', async () => {
    const store = new HeldRangeStore();
    const pack = await storedPack(store);
    const hints = new ChunkLocationHints();
    const leaving = new AbortController();

    const first = hints.packVersion(store, pack, { signal: leaving.signal });
    const second = hints.packVersion(store, pack, undefined);
    const third = hints.packVersion(store, pack, { signal: new AbortController().signal });
    expect(store.rangeReads).toBe(1);

    leaving.abort();
    await expectCode(first, 'CANCELLED', /header of pack/);
    store.release();
    expect(await second).toBe(PACK_VERSION);
    expect(await third).toBe(PACK_VERSION);
    expect(hints.knownPackVersion(pack)).toBe(PACK_VERSION);
    // Remembered: later readers read no header.
    expect(await hints.packVersion(store, pack, { signal: leaving.signal })).toBe(PACK_VERSION);
    expect(store.rangeReads).toBe(1);
  });

  it('a reader whose signal aborted before it asked is CANCELLED without starting a read', async () => {
    const store = new HeldRangeStore();
    const pack = await storedPack(store);
    const hints = new ChunkLocationHints();
    const gone = new AbortController();
    gone.abort();
    const pending = hints.packVersion(store, pack, { signal: gone.signal });
    await expectCode(pending, 'CANCELLED');
    // The read it would have shared still runs for the next reader.
    store.release();
    const next = hints.packVersion(store, pack, undefined);
    store.release();
    expect(await next).toBe(PACK_VERSION);
  });

  it('a missing pack is undefined for every reader, and is asked again next time', async () => {
    const store = new HeldRangeStore();
    const hints = new ChunkLocationHints();
    const id = newPackId(1_700_000_000_000);
    const both = [hints.packVersion(store, id, undefined), hints.packVersion(store, id, undefined)];
    store.release();
    expect(await Promise.all(both)).toEqual([undefined, undefined]);
    const again = hints.packVersion(store, id, undefined);
    store.release();
    expect(await again).toBeUndefined();
    expect(store.rangeReads).toBe(2);
  });
});

describe('ChunkLocationHints pack versions from the index record', () => {
  it('a recorded version is used with no header read; none, an unreadable record or a version this code lacks reads the header', async () => {
    const store = new HeldRangeStore();
    const pack = await storedPack(store);
    const answers = new Map<string, () => Promise<number | undefined>>();
    const hints = new ChunkLocationHints(16, (id) => answers.get(id)!());
    answers.set(pack, async () => PACK_VERSION);
    expect(await hints.packVersion(store, pack, undefined)).toBe(PACK_VERSION);
    expect(store.rangeReads).toBe(0);
    for (const answer of [async () => undefined, async () => Promise.reject(new Error('catalog down')), async () => 99]) {
      const fresh = new ChunkLocationHints(16, () => answer());
      const pending = fresh.packVersion(store, pack, undefined);
      while (store.rangeReads === 0) await new Promise((resolve) => setImmediate(resolve));
      store.release();
      expect(await pending).toBe(PACK_VERSION);
      expect(store.rangeReads).toBe(1);
      store.rangeReads = 0;
    }
  });
});
