/**
 * Small single-PUT objects (up to INLINE_OBJECT_BYTES_MAX) are kept in the catalog with their
 * version (manifest-storage.ts): no pack, no chunk reference, no journal record; the one
 * transaction that installs the version holds the bytes. They read back whole and by range, copy,
 * serve as an UploadPartCopy source, and their bytes go when the version goes. Real
 * DedupChunkRepository on memory stores; the catalog's own records are what is asserted.
 */
import { describe, expect, it } from 'vitest';
import type { CatalogStore } from '../../src/core/catalog-store.js';
import { INLINE_OBJECT_BYTES_MAX, INLINE_OBJECT_PREFIX } from '../../src/objects/manifest-storage.js';
import { expectSameBytes } from '../support/bytes.js';
import { collect, createTestObjectModel, patternBytes, streamOf, totalReferences } from '../support/object-model.js';

const OWNER = 'user-1';
const PART_SIZE_BYTES_MIN = 5 * 1024 * 1024;

async function setup() {
  const made = await createTestObjectModel();
  await made.model.createBucket({ name: 'small', owner: OWNER, pool: 'pool-a' });
  const put = (key: string, data: Uint8Array) =>
    made.model.putObject({ bucket: 'small', key, owner: OWNER, body: streamOf(data, 1000), claims: { sizeBytes: data.length, checksumAlgorithm: 'CRC32C' } });
  const read = async (key: string, range?: { first: number; last?: number }) => {
    const got = await made.model.getObject({ bucket: 'small', key, ...(range === undefined ? {} : { range }) });
    if (got.outcome !== 'ok') throw new Error('expected the object');
    return collect(got.body());
  };
  return { ...made, put, read };
}

async function inlineKeys(catalog: CatalogStore): Promise<number> {
  return (await catalog.list(INLINE_OBJECT_PREFIX)).entries.length;
}

describe('small objects kept in the catalog', () => {
  it('a small put stores no chunk and no journal; it reads back with its ETag and checksum; the bytes go with the version', async () => {
    const { model, catalog, chunkStore, put, read } = await setup();
    const data = patternBytes(4096, 1);
    const written = await put('k', data);
    expect(written.etag).toMatch(/^[0-9a-f]{32}$/);
    expect(written.checksum?.algorithm).toBe('CRC32C');
    expect(await totalReferences(catalog, 'pool-a')).toBe(0);
    expect((await chunkStore.list('packs/')).keys).toEqual([]);
    expect((await catalog.list('s3-put')).entries).toEqual([]);
    expect(await inlineKeys(catalog)).toBe(1);
    expectSameBytes(await read('k'), data);
    expectSameBytes(await read('k', { first: 1000, last: 1999 }), data.subarray(1000, 2000));
    const head = await model.getObject({ bucket: 'small', key: 'k' });
    expect(head.version.data).toMatchObject({ sizeBytes: 4096, etag: written.etag, checksum: written.checksum });

    // The largest inline body, and one byte more (which goes to the pool as one chunk).
    await put('edge', patternBytes(INLINE_OBJECT_BYTES_MAX, 2));
    expect(await totalReferences(catalog, 'pool-a')).toBe(0);
    await put('over', patternBytes(INLINE_OBJECT_BYTES_MAX + 1, 3));
    expect(await totalReferences(catalog, 'pool-a')).toBe(1);
    expectSameBytes(await read('edge'), patternBytes(INLINE_OBJECT_BYTES_MAX, 2));

    // An overwrite releases the old bytes; a delete removes the last.
    await put('k', patternBytes(100, 4));
    expectSameBytes(await read('k'), patternBytes(100, 4));
    expect(await inlineKeys(catalog)).toBe(2);
    await model.deleteObject({ bucket: 'small', key: 'k', owner: OWNER });
    await model.deleteObject({ bucket: 'small', key: 'edge', owner: OWNER });
    expect(await inlineKeys(catalog)).toBe(0);
  });

  it('copies, serves as an UploadPartCopy source, and counts as a holder of no reference in an audit', async () => {
    const { model, catalog, put, read } = await setup();
    const data = patternBytes(10_000, 5);
    await put('src', data);
    await model.copyObject({ source: { bucket: 'small', key: 'src' }, bucket: 'small', key: 'copy', owner: OWNER });
    expectSameBytes(await read('copy'), data);
    expect(await inlineKeys(catalog)).toBe(2);

    const { uploadId } = await model.createMultipartUpload({ bucket: 'small', key: 'mpu', owner: OWNER });
    const first = await model.uploadPart({ bucket: 'small', key: 'mpu', uploadId, partNumber: 1, body: streamOf(patternBytes(PART_SIZE_BYTES_MIN, 6)) });
    const second = await model.uploadPartCopy({ bucket: 'small', key: 'mpu', uploadId, partNumber: 2, source: { bucket: 'small', key: 'src' }, range: { first: 100, last: 5099 } });
    await model.completeMultipartUpload({ bucket: 'small', key: 'mpu', uploadId, owner: OWNER, parts: [{ partNumber: 1, etag: first.etag }, { partNumber: 2, etag: second.etag }] });
    expectSameBytes(await read('mpu'), Buffer.concat([patternBytes(PART_SIZE_BYTES_MIN, 6), data.subarray(100, 5100)]));

    const holders = [];
    for await (const holder of model.referenceHolders('pool-a')()) holders.push(holder);
    const named = holders.filter((h) => 'hashes' in h && h.name.includes('small/src'));
    expect(named).toEqual([expect.objectContaining({ hashes: [] })]);
  });
});
