/**
 * The evicted sequential read path against real S3 servers (moto_server and radosgw, started once
 * for the file): a DedupChunkRepository over a TieredChunkStore whose cold tier is an
 * S3ChunkStore, every pack evicted, streamed with readInto as a sealed layer's preads do. The
 * parts come from ranged GETs written into reused arrays and are lent to the repository as views;
 * every chunk reads back right, and a pack damaged in the bucket (a data bit, and a checksum bit
 * with the data intact) makes just those chunks CORRUPT.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PACK_BLOCK_BYTES } from '../../src/store/dedup/pack-blocks.js';
import { S3ChunkStore } from '../../src/store/s3/s3-chunk-store.js';
import { expectSameBytes } from '../support/bytes.js';
import { evictedRepository, flipStoredBlockBit, streamChunksInto } from '../support/dedup.js';
import { createTestBucket, s3ServerAvailable, startMoto, startRadosgw, useCredentialsProfiles, type S3ServerKind, type S3TestServer } from '../support/s3-servers.js';

const KiB = 1024;
const CHUNK_BYTES = 64 * KiB;
const CHUNK_COUNT = 64;
const starters: Record<S3ServerKind, () => Promise<S3TestServer>> = { moto: () => startMoto(), radosgw: startRadosgw };

for (const kind of ['moto', 'radosgw'] as const) {
  describe.skipIf(!s3ServerAvailable(kind))(`readInto over packs evicted to ${kind}`, () => {
    let server: S3TestServer;
    beforeAll(async () => {
      server = await starters[kind]();
      useCredentialsProfiles(server, { [kind]: server });
    });
    afterAll(async () => {
      await server?.stop();
    });

    it('streams every chunk right; damaged blocks in the bucket are those chunks\' CORRUPT', async () => {
      const bucket = await createTestBucket(server);
      const cold = await S3ChunkStore.open({ endpoint: server.endpoint, region: server.region, bucket, prefix: 'tier/', forcePathStyle: true, profile: kind });
      // Parts smaller than a pack: chunks across two parts are read too.
      const { tier, catalog, repository, chunks, hashes } = await evictedRepository(cold, {
        chunkCount: CHUNK_COUNT, chunkBytes: CHUNK_BYTES, partBytes: 384 * KiB, aheadBytes: 2048 * KiB, seed: 14,
      });
      try {
        const [dataRot, checksumRot] = [9, 40];
        await flipStoredBlockBit(cold, catalog, hashes[dataRot]!, 0, 7);
        await flipStoredBlockBit(cold, catalog, hashes[checksumRot]!, 8, PACK_BLOCK_BYTES);
        const outcomes = await streamChunksInto(repository, hashes, CHUNK_BYTES, 16);
        outcomes.forEach((outcome, i) => {
          if (i === dataRot || i === checksumRot) expect(outcome).toMatchObject({ code: 'CORRUPT' });
          else expectSameBytes(outcome as Uint8Array, chunks[i]!, `chunk ${i}`);
        });
        expect(tier.stats().promotions).toBe(0);
      } finally {
        await tier.close();
        cold.close();
      }
    });
  });
}
