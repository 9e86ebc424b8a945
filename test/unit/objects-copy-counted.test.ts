import { describe, expect, it } from 'vitest';
import { objectWritesInFlightForTests } from '../../src/objects/hash-workers.js';
import { createTestObjectModel, patternBytes, streamOf } from '../support/object-model.js';

const OWNER = 'user-1';
const KiB = 1024;

// A body that begins beside another object write is hashed on a worker (hash-workers.ts,
// deferredDigests): copies are object writes too, from the request to their commit.
describe('copies count as object writes in progress', () => {
  it('CopyObject and UploadPartCopy, from the request to the commit, and when they fail', async () => {
    const { model } = await createTestObjectModel();
    await model.createBucket({ name: 'bkt', owner: OWNER, pool: 'pool-a' });
    await model.createBucket({ name: 'other', owner: OWNER, pool: 'pool-b' });
    await model.putObject({ bucket: 'bkt', key: 'src', owner: OWNER, body: streamOf(patternBytes(300 * KiB, 3)) });
    const before = objectWritesInFlightForTests();

    // Across pools: the bytes are written again through the writer.
    const copy = model.copyObject({ bucket: 'other', key: 'dst', owner: OWNER, source: { bucket: 'bkt', key: 'src' } });
    expect(objectWritesInFlightForTests()).toBe(before + 1);
    await copy;
    expect(objectWritesInFlightForTests()).toBe(before);

    const { uploadId } = await model.createMultipartUpload({ bucket: 'bkt', key: 'mpu', owner: OWNER });
    const part = model.uploadPartCopy({ bucket: 'bkt', key: 'mpu', uploadId, partNumber: 1, source: { bucket: 'bkt', key: 'src' }, range: { first: 100, last: 200 * KiB } });
    expect(objectWritesInFlightForTests()).toBe(before + 1);
    await part;
    expect(objectWritesInFlightForTests()).toBe(before);

    const missing = model.copyObject({ bucket: 'bkt', key: 'dst2', owner: OWNER, source: { bucket: 'bkt', key: 'no-such-key' } });
    expect(objectWritesInFlightForTests()).toBe(before + 1);
    await expect(missing).rejects.toThrow();
    expect(objectWritesInFlightForTests()).toBe(before);
  });
});
