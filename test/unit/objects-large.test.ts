/**
 * A 1 GiB object streamed in and out through the object model, its packs in a LocalChunkStore (on
 * tmpfs: the test measures memory, not the disk) and its records in a MemoryCatalogStore (a few MiB
 * for 16,384 chunks; the crash test runs the model on LevelDB): the process's resident memory
 * grows by a bounded amount however large the body, the bytes come back exact (MD5), and the
 * counts show every chunk stored once.
 */
import { createHash } from 'node:crypto';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { MemoryCatalogStore } from '../../src/meta/memory-catalog.js';
import { LocalChunkStore } from '../../src/store/local-chunk-store.js';
import { createTestObjectModel, totalReferences } from '../support/object-model.js';
import { shmTempDir } from '../support/tmp.js';

const MiB = 1024 * 1024;
const CHUNK = 64 * 1024;
const OBJECT_BYTES = 1024 * MiB;
/** Resident memory the put or the get may add (the writer holds ~20 MiB of steps; packs and GC slack add some). */
const RSS_GROWTH_BYTES_MAX = 200 * MiB;

/** 1 GiB in 1 MiB pieces, every 64 KiB chunk different (its index stamped in), made as it is read. */
async function* uniqueBody(sizeBytes: number, sampleRss: () => void): AsyncGenerator<Uint8Array> {
  const base = Buffer.alloc(CHUNK);
  for (let i = 0; i < CHUNK; i += 4) base.writeUInt32LE((i * 2654435761) >>> 0, i);
  for (let at = 0; at < sizeBytes; at += MiB) {
    const piece = Buffer.alloc(MiB);
    for (let offset = 0; offset < MiB; offset += CHUNK) {
      base.copy(piece, offset);
      piece.writeDoubleLE((at + offset) / CHUNK, offset);
    }
    sampleRss();
    yield piece;
  }
}

describe('a 1 GiB object', () => {
  it('streams in and out with bounded memory, exact bytes, each chunk stored once', { timeout: 300_000 }, async () => {
    const dir = shmTempDir();
    const catalog = new MemoryCatalogStore();
    try {
      const chunkStore = new LocalChunkStore(path.join(dir, 'chunks'));
      const { model } = await createTestObjectModel({ catalog, chunkStore, packTargetBytes: 4 * MiB, readCacheBytes: 0 });
      await model.createBucket({ name: 'large', owner: 'u', pool: 'pool-a' });
      // A warm-up put past the hashing workers' size gate starts their threads (each its own heap,
      // ~10 MiB, once per process): the bound below is on what a put holds, not on a thread start.
      await model.putObject({ bucket: 'large', key: 'warm-up', owner: 'u', body: uniqueBody(8 * MiB, () => undefined), claims: { sizeBytes: 8 * MiB } });
      await model.deleteObject({ bucket: 'large', key: 'warm-up', owner: 'u' });
      global.gc?.();
      const rssBefore = process.memoryUsage.rss();
      let rssPeak = rssBefore;
      const sampleRss = () => {
        rssPeak = Math.max(rssPeak, process.memoryUsage.rss());
      };
      const put = await model.putObject({ bucket: 'large', key: 'disk.img', owner: 'u', body: uniqueBody(OBJECT_BYTES, sampleRss), claims: { sizeBytes: OBJECT_BYTES } });
      const putGrowth = rssPeak - rssBefore;
      expect(await totalReferences(catalog, 'pool-a')).toBe(OBJECT_BYTES / CHUNK);

      rssPeak = process.memoryUsage.rss();
      const getBefore = rssPeak;
      const got = await model.getObject({ bucket: 'large', key: 'disk.img' });
      if (got.outcome !== 'ok') throw new Error('unexpected');
      const received = createHash('md5');
      let receivedBytes = 0;
      let pieces = 0;
      for await (const piece of got.body()) {
        received.update(piece);
        receivedBytes += piece.length;
        if (++pieces % 256 === 0) sampleRss();
      }
      const getGrowth = rssPeak - getBefore;
      expect(receivedBytes).toBe(OBJECT_BYTES);
      // The model's MD5 of what it was sent (the ETag) is the MD5 of what it gives back.
      expect(received.digest('hex')).toBe(put.etag);
      process.stdout.write(`1 GiB object: RSS growth put ${(putGrowth / MiB).toFixed(0)} MiB, get ${(getGrowth / MiB).toFixed(0)} MiB\n`);
      expect(putGrowth).toBeLessThan(RSS_GROWTH_BYTES_MAX);
      expect(getGrowth).toBeLessThan(RSS_GROWTH_BYTES_MAX);
      // Its 512 KiB manifest is a ChunkStore object (too large for the catalog); deleting the
      // object gives back every reference and removes the manifest.
      expect((await chunkStore.list('object-manifests/')).keys).toHaveLength(1);
      await model.deleteObject({ bucket: 'large', key: 'disk.img', owner: 'u' });
      expect(await totalReferences(catalog, 'pool-a')).toBe(0);
      expect((await chunkStore.list('object-manifests/')).keys).toHaveLength(0);
    } finally {
      await catalog.close();
    }
  });
});
