import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { StorageError } from '../../src/core/errors.js';
import { beginObjectWrite, concurrentOffloadsForTests, CONCURRENT_OFFLOAD_BYTES_MIN, deferredDigests, hashWorkersForTests, laneBodiesForTests, HASH_BATCH_BYTES, HASH_QUEUED_BYTES_MAX, OFFLOAD_BYTES_MIN } from '../../src/objects/hash-workers.js';
import { PayloadVerifier, type PayloadExpectations } from '../../src/api/s3/payload.js';
import { S3Error } from '../../src/api/s3/errors.js';

/** Feeds `data` in pieces of `pieceBytes`, waiting whenever the session asks to drain; `interleaved`: a turn of the event loop after each piece, as bodies arriving together have. */
async function digestsOf(data: Buffer, pieceBytes: number, declaredBytes?: number, interleaved = false): Promise<Buffer[]> {
  const running = deferredDigests(['md5', 'sha256', 'sha1'], declaredBytes);
  for (let at = 0; at < data.length; at += pieceBytes) {
    running.update(data.subarray(at, at + pieceBytes));
    const draining = running.whenDrained();
    if (draining !== undefined) await draining;
    if (interleaved) await new Promise((resolve) => setImmediate(resolve));
  }
  return running.digests();
}

function expected(data: Buffer): string[] {
  return ['md5', 'sha256', 'sha1'].map((a) => createHash(a).update(data).digest('hex'));
}

describe('hashing worker threads', () => {
  it('give node:crypto digests for bodies in one batch, on a batch boundary and over many batches', async () => {
    for (const sizeBytes of [0, 1, 4096, HASH_BATCH_BYTES, HASH_BATCH_BYTES + 1, 3 * HASH_BATCH_BYTES + 12345, HASH_QUEUED_BYTES_MAX + 3 * HASH_BATCH_BYTES]) {
      const data = randomBytes(sizeBytes);
      for (const pieceBytes of [65_536, 1000 + (sizeBytes % 7)]) {
        // Undeclared (a worker past the first batch), and declared (in-process up to OFFLOAD_BYTES_MIN).
        for (const declared of [undefined, sizeBytes]) {
          const digests = await digestsOf(data, pieceBytes, declared);
          expect(digests.map((d) => d.toString('hex'))).toEqual(expected(data));
        }
      }
    }
  });

  it('hash concurrent bodies apart (each session its own running digests), MD5 in shared lanes', async () => {
    const lanesBefore = laneBodiesForTests();
    // 12 bodies: more than a pass's 8 lanes, of lengths that end mid-block and mid-batch.
    const bodies = Array.from({ length: 12 }, (_, i) => randomBytes(2 * HASH_BATCH_BYTES + i * 1000 + (i % 3) * 13));
    const results = await Promise.all(bodies.map((b, i) => digestsOf(b, 60_000 + i, undefined, true)));
    results.forEach((digests, i) => expect(digests.map((d) => d.toString('hex'))).toEqual(expected(bodies[i]!)));
    // Every body that started beside another ran its MD5 in a lane (the first may have started alone).
    expect(laneBodiesForTests() - lanesBefore).toBeGreaterThanOrEqual(bodies.length - 1);
  });

  it('send a declared small body that begins beside a live one to a worker whole, and keep a lone one here', async () => {
    const offloads = concurrentOffloadsForTests();
    const oneMiB = randomBytes(1024 * 1024);
    // Alone, one after another: no worker.
    for (let i = 0; i < 3; i++) expect((await digestsOf(oneMiB, 65_536, oneMiB.length)).map((d) => d.toString('hex'))).toEqual(expected(oneMiB));
    expect(concurrentOffloadsForTests()).toBe(offloads);
    // Under CONCURRENT_OFFLOAD_BYTES_MIN beside a live body: here too.
    const small = randomBytes(CONCURRENT_OFFLOAD_BYTES_MIN - 1);
    const live = deferredDigests(['md5'], oneMiB.length);
    live.update(oneMiB.subarray(0, 1000));
    expect((await digestsOf(small, 10_000, small.length)).map((d) => d.toString('hex'))).toEqual(expected(small));
    expect(concurrentOffloadsForTests()).toBe(offloads);
    // 8 bodies of every shape beside the live one: each to a worker, each hashed right.
    const bodies = [CONCURRENT_OFFLOAD_BYTES_MIN, 1024 * 1024, HASH_BATCH_BYTES, HASH_BATCH_BYTES + 1, OFFLOAD_BYTES_MIN, 4 * 65_536 + 4097, 700_001, 2_500_000].map((n) => randomBytes(n));
    const results = await Promise.all(bodies.map((b, i) => digestsOf(b, 60_000 + i, b.length, true)));
    results.forEach((digests, i) => expect(digests.map((d) => d.toString('hex'))).toEqual(expected(bodies[i]!)));
    expect(concurrentOffloadsForTests() - offloads).toBe(bodies.length);
    live.update(oneMiB.subarray(1000));
    expect((await live.digests())[0]!.toString('hex')).toBe(createHash('md5').update(oneMiB).digest('hex'));
    // Nothing live any more (the live body's digests were asked for; an abandoned body leaves too): alone again.
    const abandoned = deferredDigests(['md5'], oneMiB.length);
    abandoned.update(oneMiB.subarray(0, 5000));
    abandoned.abandon();
    expect((await digestsOf(oneMiB, 65_536, oneMiB.length)).map((d) => d.toString('hex'))).toEqual(expected(oneMiB));
    expect(concurrentOffloadsForTests() - offloads).toBe(bodies.length);
  });

  it('send a body that begins alone to a worker while another object write is in progress', async () => {
    // At 16 concurrent 1 MiB PUTs a body is hashed as it arrives, in one turn of the loop: the
    // other writes are in their commits, not streaming, when the next body begins.
    const offloads = concurrentOffloadsForTests();
    const oneMiB = randomBytes(1024 * 1024);
    const endOther = beginObjectWrite();
    const endOwn = beginObjectWrite();
    expect((await digestsOf(oneMiB, 65_536, oneMiB.length)).map((d) => d.toString('hex'))).toEqual(expected(oneMiB));
    expect(concurrentOffloadsForTests() - offloads).toBe(1);
    // Ended twice counts once: the body's own write is the only one left, and it stays here.
    endOther();
    endOther();
    expect((await digestsOf(oneMiB, 65_536, oneMiB.length)).map((d) => d.toString('hex'))).toEqual(expected(oneMiB));
    expect(concurrentOffloadsForTests() - offloads).toBe(1);
    endOwn();
  });

  it('a body abandoned mid-way beside others leaves their lanes right', async () => {
    const bodies = Array.from({ length: 5 }, (_, i) => randomBytes(3 * HASH_BATCH_BYTES + i * 777));
    const abandoned = deferredDigests(['md5']);
    const abandoning = (async () => {
      for (let at = 0; at < 3 * HASH_BATCH_BYTES; at += 50_000) {
        abandoned.update(bodies[0]!.subarray(at, at + 50_000));
        await abandoned.whenDrained();
        await new Promise((resolve) => setImmediate(resolve));
      }
      abandoned.abandon();
    })();
    const results = await Promise.all(bodies.slice(1).map((b) => digestsOf(b, 70_000, undefined, true)));
    await abandoning;
    results.forEach((digests, i) => expect(digests.map((d) => d.toString('hex'))).toEqual(expected(bodies[i + 1]!)));
  });

  it('a worker that dies mid-body fails that body with a clear StorageError, and the next bodies are hashed', async () => {
    const running = deferredDigests(['md5']);
    running.update(randomBytes(2 * HASH_BATCH_BYTES)); // past the first batch: a worker holds the session
    await Promise.all(hashWorkersForTests().map((w) => w.terminate()));
    running.update(randomBytes(HASH_BATCH_BYTES));
    const failure = await running.digests().then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(failure).toBeInstanceOf(StorageError);
    expect((failure as StorageError).message).toMatch(/hashing worker thread stopped.*send it again/);
    const data = randomBytes(5 * HASH_BATCH_BYTES);
    expect((await digestsOf(data, 65_536))[0]!.toString('hex')).toBe(expected(data)[0]);
  });

  it('an abandoned body leaves its worker serving others', async () => {
    const abandoned = deferredDigests(['sha256']);
    abandoned.update(randomBytes(3 * HASH_BATCH_BYTES));
    abandoned.abandon();
    const data = randomBytes(3 * HASH_BATCH_BYTES);
    expect((await digestsOf(data, 65_536))[1]!.toString('hex')).toBe(expected(data)[1]);
  });
});

describe('PayloadVerifier on the worker path', () => {
  // Past OFFLOAD_BYTES_MIN: the digests come from a worker.
  const body = randomBytes(OFFLOAD_BYTES_MIN + 4 * HASH_BATCH_BYTES + 99);
  const expectations = (overrides: Partial<PayloadExpectations>): PayloadExpectations => ({
    sha256Hex: undefined,
    contentMd5: undefined,
    headerChecksum: undefined,
    trailerChecksum: undefined,
    lengthBytes: body.length,
    ...overrides,
  });
  const verdict = async (expect: PayloadExpectations, options: { checksumByConsumer?: boolean } = {}): Promise<unknown> => {
    const verifier = new PayloadVerifier(expect, options);
    for await (const piece of Readable.from([body.subarray(0, 70_000), body.subarray(70_000)])) verifier.update(piece as Buffer);
    return verifier.finish(new Map()).then(
      () => 'accepted',
      (err: unknown) => err,
    );
  };

  it('accepts the right x-amz-content-sha256 and Content-MD5 and refuses a wrong one', async () => {
    const sha256Hex = createHash('sha256').update(body).digest('hex');
    const contentMd5 = createHash('md5').update(body).digest('base64');
    expect(await verdict(expectations({ sha256Hex, contentMd5 }))).toBe('accepted');
    const badHash = await verdict(expectations({ sha256Hex: createHash('sha256').update('other').digest('hex'), contentMd5 }));
    expect(badHash).toBeInstanceOf(S3Error);
    expect((badHash as S3Error).code).toBe('XAmzContentSHA256Mismatch');
    const badMd5 = await verdict(expectations({ sha256Hex, contentMd5: createHash('md5').update('other').digest('base64') }));
    expect((badMd5 as S3Error).code).toBe('BadDigest');
  });

  it('leaves x-amz-content-sha256 and Content-MD5 to a consumer that checks them (the object model, in one pass with its MD5)', async () => {
    const other = createHash('sha256').update('other').digest('hex');
    expect(await verdict(expectations({ sha256Hex: other, contentMd5: createHash('md5').update('other').digest('base64') }), { checksumByConsumer: true })).toBe('accepted');
  });
});
