/**
 * DeferredDigests.updateOwned: a large body's chunks go to the hashing worker as the caller's own
 * memory (moved there and back), zero chunks as counts, interleaved with copied bytes; the digests
 * are node:crypto's of the whole body, alone and in MD5 lanes beside other bodies; the memory comes
 * back with its bytes; memory that cannot be moved is copied; a dead worker or an abandoned body
 * leaves nothing waiting forever.
 */
import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { StorageError } from '../../src/core/errors.js';
import { deferredDigests, hashWorkersForTests, laneBodiesForTests, OFFLOAD_BYTES_MIN } from '../../src/objects/hash-workers.js';

const CHUNK_BYTES = 64 * 1024;
const ALGORITHMS = ['md5', 'sha256'] as const;

/** A body as the S3 writer cuts it: chunks in memory of their own, every `zeroEvery`th a zero chunk (sent as its length). */
function chunkedBody(chunkCount: number, seed: number, zeroEvery = 5): { pieces: (Uint8Array | number)[]; bytes: Buffer } {
  const pieces: (Uint8Array | number)[] = [];
  const parts: Buffer[] = [];
  for (let i = 0; i < chunkCount; i++) {
    const length = i === chunkCount - 1 ? 1000 + seed : CHUNK_BYTES;
    if (i % zeroEvery === zeroEvery - 1) {
      pieces.push(length);
      parts.push(Buffer.alloc(length));
      continue;
    }
    const memory = new Uint8Array(CHUNK_BYTES);
    memory.set(randomBytes(CHUNK_BYTES));
    const chunk = memory.subarray(0, length);
    pieces.push(chunk);
    parts.push(Buffer.from(chunk));
  }
  return { pieces, bytes: Buffer.concat(parts) };
}

const expected = (bytes: Buffer) => ALGORITHMS.map((algorithm) => createHash(algorithm).update(bytes).digest('hex'));

/** Feeds the body a step (`stepChunks`) at a time through updateOwned, a few copied bytes first; checks each step comes back intact. */
async function ownedDigests(body: { pieces: (Uint8Array | number)[]; bytes: Buffer }, head: Buffer, stepChunks = 16): Promise<string[]> {
  const running = deferredDigests(ALGORITHMS, OFFLOAD_BYTES_MIN + 1);
  expect(running.updateOwned).toBeDefined();
  running.update(head);
  const steps: Promise<void>[] = [];
  for (let at = 0; at < body.pieces.length; at += stepChunks) {
    const step = body.pieces.slice(at, at + stepChunks);
    const copies = step.map((piece) => (typeof piece === 'number' ? piece : Buffer.from(piece)));
    const returned = running.updateOwned!(step);
    // Moved: the caller's views are detached until the memory comes back.
    expect(step.every((piece) => typeof piece === 'number' || piece.length === 0)).toBe(true);
    steps.push(
      returned.then((pieces) => {
        expect(pieces.map((piece) => (typeof piece === 'number' ? piece : Buffer.from(piece).toString('hex')))).toEqual(copies.map((copy) => (typeof copy === 'number' ? copy : copy.toString('hex'))));
      }),
    );
  }
  await Promise.all(steps);
  return (await running.digests()).map((digest) => digest.toString('hex'));
}

describe('digests of owned chunks (updateOwned)', () => {
  it('are the digests of the whole body, its zero chunks and copied bytes in order, and give the memory back unchanged', async () => {
    const head = randomBytes(12345);
    const body = chunkedBody(100, 1);
    expect(await ownedDigests(body, head)).toEqual(expected(Buffer.concat([head, body.bytes])));
  });

  it('are right for bodies hashed side by side in MD5 lanes', async () => {
    const lanes = laneBodiesForTests();
    const bodies = Array.from({ length: 5 }, (_, i) => chunkedBody(70 + i, i + 2, 3 + i));
    const heads = bodies.map((_, i) => randomBytes(100 * i));
    const results = await Promise.all(bodies.map((body, i) => ownedDigests(body, heads[i]!)));
    results.forEach((digests, i) => expect(digests).toEqual(expected(Buffer.concat([heads[i]!, bodies[i]!.bytes]))));
    expect(laneBodiesForTests() - lanes).toBeGreaterThanOrEqual(bodies.length - 1);
  });

  it('copies memory it cannot move (shared memory, two pieces in one memory) and answers it as it was', async () => {
    const shared = new Uint8Array(new SharedArrayBuffer(CHUNK_BYTES));
    shared.set(randomBytes(CHUNK_BYTES));
    const together = new Uint8Array(2 * CHUNK_BYTES);
    together.set(randomBytes(together.length));
    const pieces = [shared, together.subarray(0, CHUNK_BYTES), together.subarray(CHUNK_BYTES), 777];
    const running = deferredDigests(ALGORITHMS, OFFLOAD_BYTES_MIN + 1);
    for (const step of [[pieces[0]!], pieces.slice(1)]) {
      const returned = await running.updateOwned!(step);
      returned.forEach((piece, i) => expect(piece).toBe(step[i]));
    }
    const digests = (await running.digests()).map((digest) => digest.toString('hex'));
    expect(digests).toEqual(expected(Buffer.concat([shared, together, Buffer.alloc(777)])));
  });

  it('an abandoned body still gets its memory back, and a dead worker fails the pieces it held with a StorageError', async () => {
    const abandoned = deferredDigests(ALGORITHMS, OFFLOAD_BYTES_MIN + 1);
    const body = chunkedBody(20, 9);
    const copies = body.pieces.map((piece) => (typeof piece === 'number' ? piece : Buffer.from(piece)));
    const returned = abandoned.updateOwned!(body.pieces);
    abandoned.abandon();
    const back = await returned;
    back.forEach((piece, i) => expect(typeof piece === 'number' ? piece : Buffer.from(piece).equals(copies[i] as Buffer)).toBe(typeof piece === 'number' ? copies[i] : true));

    const dying = deferredDigests(ALGORITHMS, OFFLOAD_BYTES_MIN + 1);
    await dying.updateOwned!(chunkedBody(4, 3).pieces); // its session is on a worker now
    const pending = dying.updateOwned!(chunkedBody(40, 4).pieces);
    await Promise.all(hashWorkersForTests().map((worker) => worker.terminate()));
    const failure = await Promise.allSettled([pending, dying.digests()]);
    for (const outcome of failure) {
      expect(outcome.status).toBe('rejected');
      expect((outcome as PromiseRejectedResult).reason).toBeInstanceOf(StorageError);
    }
    // The next body gets a new worker.
    const head = randomBytes(10);
    const next = chunkedBody(30, 5);
    expect(await ownedDigests(next, head)).toEqual(expected(Buffer.concat([head, next.bytes])));
  });
});
