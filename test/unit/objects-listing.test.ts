/**
 * ListObjectsV2, ListObjects (V1), ListObjectVersions and ListMultipartUploads: prefixes,
 * delimiters and common prefixes, max-keys, continuation, start-after and markers, checked
 * against a model of S3's answer (sorted keys, rolled up by hand), page by page.
 */
import { describe, expect, it } from 'vitest';
import type { CatalogListOptions, CatalogPage, CatalogStore } from '../../src/core/catalog-store.js';
import { MemoryCatalogStore } from '../../src/meta/memory-catalog.js';
import { isObjectError } from '../../src/objects/errors.js';
import { createTestObjectModel, streamOf } from '../support/object-model.js';

const OWNER = 'user-1';
const KEYS = ['a', 'a/1', 'a/2', 'a/b/1', 'a0', 'b', 'b/x/y', 'c/', 'c/d', 'photos/2024/jan.jpg', 'photos/2024/feb.jpg', 'photos/2025/mar.jpg', 'z\u00e9', 'z\u{1F600}'];

/** S3's answer: keys under the prefix after `after`, rolled up at the delimiter. */
function expected(keys: string[], prefix: string, delimiter: string | undefined, after?: string): string[] {
  const out: string[] = [];
  for (const key of [...keys].sort()) {
    if (!key.startsWith(prefix) || (after !== undefined && key <= after)) continue;
    const at = delimiter === undefined ? -1 : key.indexOf(delimiter, prefix.length);
    const item = at < 0 ? key : `${key.slice(0, at + delimiter!.length)}/CP`;
    if (out.at(-1) !== item) out.push(item);
  }
  return out;
}

/** A catalog that counts the entries its list calls return (to show the walk stays bounded). */
class CountingCatalog extends MemoryCatalogStore {
  listed = 0;
  override async list(prefix: string, options?: CatalogListOptions): Promise<CatalogPage> {
    const page = await super.list(prefix, options);
    this.listed += page.entries.length;
    return page;
  }
}

async function setup(keys = KEYS) {
  const catalog = new CountingCatalog();
  const test = await createTestObjectModel({ catalog: catalog as CatalogStore });
  await test.model.createBucket({ name: 'list', owner: OWNER, pool: 'pool-a' });
  for (const key of keys) await test.model.putObject({ bucket: 'list', key, owner: OWNER, body: streamOf(Buffer.from(key)) });
  return { ...test, catalog };
}

describe('ListObjectsV2', () => {
  it.each([
    ['', undefined],
    ['', '/'],
    ['a', '/'],
    ['a/', '/'],
    ['photos/', '/'],
    ['photos/20', '/'],
    ['', 'a'],
    ['nothing', '/'],
  ])('prefix %j delimiter %j, page by page at every max-keys', async (prefix, delimiter) => {
    const { model } = await setup();
    const want = expected(KEYS, prefix, delimiter);
    for (const maxKeys of [1, 2, 3, 1000]) {
      const got: string[] = [];
      let token: string | undefined;
      for (let pages = 0; pages < 50; pages++) {
        const page = await model.listObjectsV2({ bucket: 'list', prefix, maxKeys, ...(delimiter === undefined ? {} : { delimiter }), ...(token === undefined ? {} : { continuationToken: token }) });
        expect(page.keyCount).toBeLessThanOrEqual(maxKeys);
        const items = [...page.objects.map((o) => o.key), ...page.commonPrefixes.map((p) => `${p}/CP`)].sort();
        got.push(...items);
        if (!page.isTruncated) break;
        expect(page.nextContinuationToken).toBeDefined();
        token = page.nextContinuationToken;
      }
      expect(got.sort(), `max-keys ${maxKeys}`).toEqual([...want].sort());
    }
  });

  it('start-after skips keys up to and including it', async () => {
    const { model } = await setup();
    const page = await model.listObjectsV2({ bucket: 'list', startAfter: 'a0' });
    expect(page.objects.map((o) => o.key)).toEqual(expected(KEYS, '', undefined, 'a0'));
  });

  it('a delete marker hides a key; a token not from this store is refused', async () => {
    const { model } = await setup(['x', 'y']);
    await model.putBucketVersioning('list', 'enabled');
    await model.deleteObject({ bucket: 'list', key: 'x', owner: OWNER });
    expect((await model.listObjectsV2({ bucket: 'list' })).objects.map((o) => o.key)).toEqual(['y']);
    await expect(model.listObjectsV2({ bucket: 'list', continuationToken: 'garbage!' })).rejects.toSatisfy((err) => isObjectError(err, 'InvalidArgument'));
  });

  it('a page reads about max-keys entries, not the bucket: common prefixes are jumped over', async () => {
    const keys = Array.from({ length: 300 }, (_, i) => `deep/${String(i).padStart(3, '0')}`).concat(['top']);
    const { model, catalog } = await setup(keys);
    catalog.listed = 0;
    const page = await model.listObjectsV2({ bucket: 'list', delimiter: '/' });
    expect(page.commonPrefixes).toEqual(['deep/']);
    expect(page.objects.map((o) => o.key)).toEqual(['top']);
    expect(catalog.listed).toBeLessThan(40);
    catalog.listed = 0;
    const first = await model.listObjectsV2({ bucket: 'list', maxKeys: 5 });
    expect(first.objects).toHaveLength(5);
    expect(catalog.listed).toBeLessThanOrEqual(6);
  });
});

describe('ListObjects (V1)', () => {
  it('marker continues, NextMarker only with a delimiter', async () => {
    const { model } = await setup();
    const noDelimiter = await model.listObjects({ bucket: 'list', maxKeys: 2 });
    expect(noDelimiter.isTruncated).toBe(true);
    expect(noDelimiter.nextMarker).toBeUndefined();
    const got: string[] = [];
    let marker: string | undefined;
    for (let pages = 0; pages < 20; pages++) {
      const page = await model.listObjects({ bucket: 'list', delimiter: '/', maxKeys: 2, ...(marker === undefined ? {} : { marker }) });
      got.push(...page.objects.map((o) => o.key), ...page.commonPrefixes.map((p) => `${p}/CP`));
      if (!page.isTruncated) break;
      expect(page.nextMarker).toBeDefined();
      marker = page.nextMarker;
    }
    expect(got.sort()).toEqual(expected(KEYS, '', '/').sort());
  });
});

describe('ListObjectVersions', () => {
  it('lists every version newest first per key, pages with key and version markers', async () => {
    const { model } = await setup([]);
    await model.putBucketVersioning('list', 'enabled');
    const made: [string, string][] = [];
    for (const key of ['k1', 'k2', 'k3']) {
      for (let i = 0; i < 3; i++) made.push([key, (await model.putObject({ bucket: 'list', key, owner: OWNER, body: streamOf(Buffer.from(`${key}${i}`)) })).versionId]);
    }
    const want = ['k1', 'k2', 'k3'].flatMap((key) => made.filter(([k]) => k === key).reverse());
    const got: [string, string, boolean][] = [];
    let keyMarker: string | undefined;
    let versionIdMarker: string | undefined;
    for (let pages = 0; pages < 20; pages++) {
      const page = await model.listObjectVersions({ bucket: 'list', maxKeys: 2, ...(keyMarker === undefined ? {} : { keyMarker }), ...(versionIdMarker === undefined ? {} : { versionIdMarker }) });
      got.push(...page.versions.map((v) => [v.version.key, v.version.versionId, v.isLatest] as [string, string, boolean]));
      if (!page.isTruncated) break;
      keyMarker = page.nextKeyMarker;
      versionIdMarker = page.nextVersionIdMarker;
    }
    expect(got.map(([k, v]) => [k, v])).toEqual(want);
    expect(got.filter(([, , latest]) => latest).map(([k]) => k)).toEqual(['k1', 'k2', 'k3']);
    // key-marker alone skips every version of that key.
    const afterK1 = await model.listObjectVersions({ bucket: 'list', keyMarker: 'k1' });
    expect(afterK1.versions[0]!.version.key).toBe('k2');
  });

  it('rolls versions up into common prefixes', async () => {
    const { model } = await setup(['d/1', 'd/2', 'e']);
    const page = await model.listObjectVersions({ bucket: 'list', delimiter: '/' });
    expect(page.commonPrefixes).toEqual(['d/']);
    expect(page.versions.map((v) => v.version.key)).toEqual(['e']);
  });
});

describe('ListMultipartUploads', () => {
  it('lists uploads in key order with prefix, delimiter and markers', async () => {
    const { model } = await setup([]);
    const uploads: [string, string][] = [];
    for (const key of ['u/a', 'u/b', 'u/b', 'v/c', 'w']) uploads.push([key, (await model.createMultipartUpload({ bucket: 'list', key, owner: OWNER })).uploadId]);
    const all = await model.listMultipartUploads({ bucket: 'list' });
    expect(all.uploads.map((u) => u.key)).toEqual(['u/a', 'u/b', 'u/b', 'v/c', 'w']);
    const rolled = await model.listMultipartUploads({ bucket: 'list', delimiter: '/' });
    expect(rolled.commonPrefixes).toEqual(['u/', 'v/']);
    expect(rolled.uploads.map((u) => u.key)).toEqual(['w']);
    const first = await model.listMultipartUploads({ bucket: 'list', maxKeys: 2 });
    expect(first.isTruncated).toBe(true);
    const rest = await model.listMultipartUploads({ bucket: 'list', keyMarker: first.nextKeyMarker!, uploadIdMarker: first.nextUploadIdMarker! });
    expect([...first.uploads, ...rest.uploads].map((u) => u.uploadId).sort()).toEqual(uploads.map(([, id]) => id).sort());
  });
});
