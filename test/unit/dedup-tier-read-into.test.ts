/**
 * The evicted sequential read path end to end below the sealed layer: a DedupChunkRepository over
 * a TieredChunkStore whose packs are all cold, read chunk after chunk with readInto as a sealed
 * layer's pread does (several chunks of one request in flight). The reads stream: the tier reads
 * the packs ahead in parts and lends the repository views of them (borrowResult), and the
 * repository checks each 4 KiB block's CRC as it copies into the request's buffer. A cold copy
 * damaged in place (a flipped data bit, or a flipped checksum bit with the data intact) makes that
 * chunk's read CORRUPT, never wrong bytes, and every other chunk still reads right. Memory
 * stores: the real server's path to the same code is test/e2e/tiered-dedup-pool.test.ts.
 */
import { describe, expect, it } from 'vitest';
import type { ChunkStoreCallOptions } from '../../src/core/chunk-store.js';
import { PACK_BLOCK_BYTES } from '../../src/store/dedup/pack-blocks.js';
import { MemoryChunkStore } from '../../src/store/memory-chunk-store.js';
import { expectSameBytes } from '../support/bytes.js';
import { evictedRepository, flipStoredBlockBit, streamChunksInto } from '../support/dedup.js';
import { expectCode } from '../support/expect-error.js';

const KiB = 1024;
const CHUNK_BYTES = 64 * KiB;
const CHUNK_COUNT = 48;
/** Chunks one request reads together (a 256 KiB pread of 64 KiB chunks). */
const IN_FLIGHT = 4;

/** Counts its ranged reads. */
class CountingChunkStore extends MemoryChunkStore {
  rangeReads = 0;
  override getRange(key: string, offsetBytes: number, lengthBytes: number, options?: ChunkStoreCallOptions): Promise<Uint8Array | undefined> {
    this.rangeReads++;
    return super.getRange(key, offsetBytes, lengthBytes, options);
  }
}

function openEvicted() {
  const cold = new CountingChunkStore();
  return evictedRepository(cold, { chunkCount: CHUNK_COUNT, chunkBytes: CHUNK_BYTES, partBytes: 512 * KiB, aheadBytes: 1024 * KiB, seed: 12 }).then((opened) => ({ ...opened, cold }));
}

describe('readInto over an evicted tier', () => {
  it('streams every chunk right, from parts read ahead, into the request buffer', async () => {
    const { tier, cold, repository, chunks, hashes } = await openEvicted();
    cold.rangeReads = 0;
    const outcomes = await streamChunksInto(repository, hashes, CHUNK_BYTES, IN_FLIGHT);
    outcomes.forEach((outcome, i) => expectSameBytes(outcome as Uint8Array, chunks[i]!));
    expect(tier.readAheadStats().failedParts).toBe(0);
    // Streamed: far fewer cold reads than chunks (a part serves several; each pack's header is
    // read once, not once per chunk read in flight), and no pack promoted (a stream is no reason to).
    expect(cold.rangeReads).toBeLessThan(CHUNK_COUNT / 3);
    expect(tier.stats().promotions).toBe(0);
    await tier.close();
  });

  it("a damaged block of a tier part (data or checksum) is that chunk's CORRUPT; the others read right", async () => {
    const { tier, cold, catalog, repository, chunks, hashes } = await openEvicted();
    const dataRot = 5;
    const checksumRot = 17;
    await flipStoredBlockBit(cold, catalog, hashes[dataRot]!, 3, 100);
    await flipStoredBlockBit(cold, catalog, hashes[checksumRot]!, 15, PACK_BLOCK_BYTES + 1); // the last block's CRC; its bytes intact
    const outcomes = await streamChunksInto(repository, hashes, CHUNK_BYTES, IN_FLIGHT);
    outcomes.forEach((outcome, i) => {
      if (i === dataRot || i === checksumRot) {
        expect(outcome).toMatchObject({ code: 'CORRUPT' });
        expect(String((outcome as Error).message)).toContain(hashes[i]!);
      } else {
        expectSameBytes(outcome as Uint8Array, chunks[i]!);
      }
    });
    // Read again on its own (not streamed): still CORRUPT.
    await expectCode(repository.readInto(hashes[dataRot]!, new Uint8Array(CHUNK_BYTES)), 'CORRUPT', new RegExp(hashes[dataRot]!));
    await tier.close();
  });
});
