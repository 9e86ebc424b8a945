/**
 * The object model as a holder of references in a dedup scrub's audit: versions, copies, parts of
 * an upload in progress and a put's journal hold exactly what the pool counts (a clean audit); a
 * reference nobody holds is found (and, confirmed, repaired).
 */
import { describe, expect, it } from 'vitest';
import { createTestObjectModel, patternBytes, streamOf, totalReferences } from '../support/object-model.js';

const OWNER = 'u';
const KiB = 1024;

describe('objectReferenceHolders', () => {
  it('accounts for every reference the model holds, and shows a leak', async () => {
    const { model, repositories, catalog } = await createTestObjectModel();
    await model.createBucket({ name: 'audit', owner: OWNER, pool: 'pool-a' });
    await model.putBucketVersioning('audit', 'enabled');
    await model.putObject({ bucket: 'audit', key: 'a', owner: OWNER, body: streamOf(patternBytes(200 * KiB, 1)) });
    await model.putObject({ bucket: 'audit', key: 'a', owner: OWNER, body: streamOf(patternBytes(100 * KiB, 2)) });
    await model.copyObject({ source: { bucket: 'audit', key: 'a' }, bucket: 'audit', key: 'b', owner: OWNER });
    await model.deleteObject({ bucket: 'audit', key: 'b', owner: OWNER }); // a marker: b's data stays as a version
    const upload = await model.createMultipartUpload({ bucket: 'audit', key: 'm', owner: OWNER });
    await model.uploadPart({ bucket: 'audit', key: 'm', uploadId: upload.uploadId, partNumber: 1, body: streamOf(patternBytes(130 * KiB, 3)) });
    // Another pool's bucket is not this pool's holder.
    await model.createBucket({ name: 'other', owner: OWNER, pool: 'pool-b' });
    await model.putObject({ bucket: 'other', key: 'x', owner: OWNER, body: streamOf(patternBytes(64 * KiB, 4)) });

    const repository = repositories.get('pool-a')!;
    const references = model.referenceHolders('pool-a');
    let held = 0;
    for await (const holder of references()) if ('hashes' in holder) held += [...holder.hashes].length;
    expect(held).toBe(await totalReferences(catalog, 'pool-a'));
    expect(held).toBe(4 + 2 + 2 + 3);

    const clean = await repository.scrub({ references, nowMs: Date.now() });
    expect(clean.problems).toEqual([]);
    expect(clean.references).toBe(held);

    // A reference no record holds (what a release cut off by a crash leaves).
    await repository.addReferencesByHash([repository.hash(patternBytes(200 * KiB, 1).subarray(0, 64 * KiB))]);
    const seen = await repository.scrub({ references, nowMs: Date.now() });
    expect(seen.problemsByKind['refs-leak-suspected']).toBe(1);
    const repaired = await repository.scrub({ references, nowMs: Date.now() + 2 * 60 * 60 * 1000, repair: true });
    expect(repaired.problemsByKind['refs-leaked']).toBe(1);
    expect(await totalReferences(catalog, 'pool-a')).toBe(held);
  });
});
