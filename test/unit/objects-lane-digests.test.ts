import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { StorageError } from '../../src/core/errors.js';
import { inProcessDigests, laneCountsForTests, LANE_BODY_BYTES_MIN } from '../../src/objects/lane-digests.js';
import type { DeferredAlgorithm } from '../../src/objects/hash-workers.js';
import { MD5_LANE_BYTES_MAX, MD5_LANES_MAX } from '../../src/objects/md5-lanes.js';

const digestOf = (algorithm: string, data: Uint8Array): string => createHash(algorithm).update(data).digest('hex');

interface Feed {
  readonly data: Buffer;
  readonly algorithms: readonly DeferredAlgorithm[];
}

/**
 * Starts every body, then feeds them piece by piece in turn (pieces of varied sizes, through one
 * reused buffer that is overwritten after each update), then asks for their digests in `endOrder`.
 */
async function hashInterleaved(feeds: readonly Feed[], endOrder: readonly number[] = feeds.map((_, i) => i)): Promise<string[][]> {
  const sessions = feeds.map((feed) => inProcessDigests(feed.algorithms, feed.data.length));
  const offsets = feeds.map(() => 0);
  const scratch = Buffer.alloc(70_000);
  let round = 0;
  for (let active = true; active; round++) {
    active = false;
    feeds.forEach((feed, i) => {
      if (offsets[i]! >= feed.data.length) return;
      active = true;
      const length = Math.min(feed.data.length - offsets[i]!, 1 + ((round * 7919 + i * 104_729) % scratch.length));
      feed.data.copy(scratch, 0, offsets[i]!, offsets[i]! + length);
      sessions[i]!.update(scratch.subarray(0, length));
      scratch.fill(0xa5, 0, length); // the caller reuses its buffer at once
      offsets[i]! += length;
    });
  }
  const results: string[][] = new Array(feeds.length);
  for (const i of endOrder) results[i] = (await sessions[i]!.digests()).map((digest) => digest.toString('hex'));
  return results;
}

describe('in-process digests with MD5 in SIMD lanes', () => {
  it('give node:crypto digests for concurrent bodies of every shape, and run them in shared lanes', async () => {
    const before = laneCountsForTests();
    const sizes = [LANE_BODY_BYTES_MIN, 1024 * 1024, 1024 * 1024 + 77, LANE_BODY_BYTES_MIN + 63, 5 * MD5_LANE_BYTES_MAX + 1, 2 * 1024 * 1024 + 64];
    const feeds: Feed[] = Array.from({ length: 2 * MD5_LANES_MAX + 3 }, (_, i) => ({
      data: randomBytes(sizes[i % sizes.length]!),
      algorithms: i % 3 === 0 ? ['md5', 'sha256'] : i % 3 === 1 ? ['sha1', 'md5'] : ['md5'],
    }));
    // Ends in an order other than the start order: passes take whichever bodies are ready.
    const endOrder = feeds.map((_, i) => (i * 5) % feeds.length);
    expect(new Set(endOrder).size).toBe(feeds.length);
    const results = await hashInterleaved(feeds, endOrder);
    feeds.forEach((feed, i) => expect(results[i]).toEqual(feed.algorithms.map((algorithm) => digestOf(algorithm, feed.data))));
    const after = laneCountsForTests();
    // Every body but the first started with company.
    expect(after.bodies - before.bodies).toBe(feeds.length - 1);
    // Passes shared their lanes: well over 4 bodies a pass on average.
    expect((after.lanesInPasses - before.lanesInPasses) / (after.passes - before.passes)).toBeGreaterThan(4);
  });

  it('keep OpenSSL for a body alone, for small bodies and for bodies without MD5', async () => {
    const before = laneCountsForTests();
    const alone = randomBytes(1024 * 1024 + 5);
    expect(await hashInterleaved([{ data: alone, algorithms: ['md5'] }])).toEqual([[digestOf('md5', alone)]]);
    const small = [randomBytes(LANE_BODY_BYTES_MIN - 1), randomBytes(4096), randomBytes(0)];
    const unsigned = randomBytes(LANE_BODY_BYTES_MIN * 2);
    const feeds: Feed[] = [...small.map((data) => ({ data, algorithms: ['md5'] as const })), { data: unsigned, algorithms: ['sha256'] }];
    const results = await hashInterleaved(feeds);
    feeds.forEach((feed, i) => expect(results[i]).toEqual(feed.algorithms.map((algorithm) => digestOf(algorithm, feed.data))));
    expect(laneCountsForTests().bodies).toBe(before.bodies);
  });

  it('a body not yet fed is no company: the next body alone keeps OpenSSL, and the unfed one hashes as empty', async () => {
    const before = laneCountsForTests();
    const unfed = inProcessDigests(['md5'], LANE_BODY_BYTES_MIN * 2);
    const alone = randomBytes(LANE_BODY_BYTES_MIN * 2);
    expect(await hashInterleaved([{ data: alone, algorithms: ['md5'] }])).toEqual([[digestOf('md5', alone)]]);
    expect(laneCountsForTests().bodies).toBe(before.bodies);
    expect((await unfed.digests())[0]!.toString('hex')).toBe(digestOf('md5', new Uint8Array(0)));
  });

  it('a body abandoned mid-way leaves the others right and its staging given back', async () => {
    const bodies = Array.from({ length: MD5_LANES_MAX + 1 }, () => randomBytes(1024 * 1024 + 123));
    const sessions = bodies.map((body) => inProcessDigests(['md5'], body.length));
    const half = 512 * 1024;
    bodies.forEach((body, i) => sessions[i]!.update(body.subarray(0, half)));
    sessions[3]!.abandon();
    sessions[3]!.abandon(); // twice: no effect
    bodies.forEach((body, i) => {
      if (i !== 3) sessions[i]!.update(body.subarray(half));
    });
    for (const [i, body] of bodies.entries()) {
      if (i !== 3) expect((await sessions[i]!.digests())[0]!.toString('hex')).toBe(digestOf('md5', body));
    }
    // The lanes serve new bodies as before.
    const next = [randomBytes(LANE_BODY_BYTES_MIN + 1), randomBytes(LANE_BODY_BYTES_MIN * 3)];
    expect(await hashInterleaved(next.map((data) => ({ data, algorithms: ['md5'] })))).toEqual(next.map((data) => [digestOf('md5', data)]));
  });

  it('refuses a second call for the digests with a StorageError', async () => {
    const bodies = [randomBytes(LANE_BODY_BYTES_MIN), randomBytes(LANE_BODY_BYTES_MIN)];
    const sessions = bodies.map((body) => inProcessDigests(['md5'], body.length));
    bodies.forEach((body, i) => sessions[i]!.update(body));
    for (const session of sessions) await session.digests();
    await expect(sessions[1]!.digests()).rejects.toBeInstanceOf(StorageError);
  });
});
