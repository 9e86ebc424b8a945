/**
 * Where an object's manifest is kept. A manifest costs 40 bytes + 1 bit per chunk + 32 bytes per
 * stored 64 KiB chunk: 16 KiB for a 32 MiB object, 512 KiB for 1 GiB, 80 MiB for 5 TiB. Small
 * ones (up to MANIFEST_CATALOG_BYTES_MAX encoded, objects up to about 128 MiB) are a catalog value
 * of their own, written in the same transaction as the version that names them; larger ones are a
 * ChunkStore object, put (durably) before that transaction. Never inside the version record: a
 * listing reads a thousand records a page and must not read their manifests.
 */
import type { CatalogOp } from '../core/catalog-store.js';
import { StorageError } from '../core/errors.js';
import type { ChunkManifest } from '../store/chunked/manifest.js';
import { decodeManifest, encodeManifest } from '../store/chunked/manifest-format.js';
import type { ObjectContext } from './context.js';
import type { ManifestRef } from './records.js';

/** The largest encoded manifest kept in the catalog (etcd's default value limit is 1.5 MiB). */
export const MANIFEST_CATALOG_BYTES_MAX = 64 * 1024;
export const MANIFEST_CATALOG_PREFIX = 's3-manifest/';
export const MANIFEST_OBJECT_PREFIX = 'object-manifests/';

export function manifestCatalogKey(id: string): string {
  return `${MANIFEST_CATALOG_PREFIX}${id}`;
}

export function manifestObjectKey(id: string): string {
  return `${MANIFEST_OBJECT_PREFIX}${id}`;
}

/**
 * Stores `manifest` as manifest `id`: a large one is put into the ChunkStore now; a small one is
 * returned as the catalog op the caller's transaction must carry.
 */
export async function saveManifest(
  context: ObjectContext,
  id: string,
  manifest: ChunkManifest,
  signal?: AbortSignal,
): Promise<{ ref: ManifestRef; ops: CatalogOp[] }> {
  const encoded = encodeManifest(manifest);
  if (encoded.length <= MANIFEST_CATALOG_BYTES_MAX) {
    return { ref: { id, place: 'catalog' }, ops: [{ type: 'put', key: manifestCatalogKey(id), value: encoded.toString('base64') }] };
  }
  await context.manifestStore.put(manifestObjectKey(id), encoded, signal === undefined ? {} : { signal });
  return { ref: { id, place: 'chunk-store' }, ops: [] };
}

/** The manifest, or undefined when it is gone (a release finished). */
export async function loadManifest(context: ObjectContext, ref: ManifestRef): Promise<ChunkManifest | undefined> {
  if (ref.place === 'catalog') {
    const entry = await context.catalog.get(manifestCatalogKey(ref.id));
    if (entry === undefined) return undefined;
    if (typeof entry.value !== 'string') throw new StorageError('CORRUPT', `catalog manifest ${ref.id} is not a base64 string`);
    return decodeManifest(Buffer.from(entry.value, 'base64'), `object manifest ${ref.id}`);
  }
  const bytes = await context.manifestStore.get(manifestObjectKey(ref.id));
  return bytes === undefined ? undefined : decodeManifest(bytes, `object manifest ${ref.id}`);
}

/** The manifest of a record that exists: CORRUPT when it is missing. */
export async function requireManifest(context: ObjectContext, ref: ManifestRef): Promise<ChunkManifest> {
  const manifest = await loadManifest(context, ref);
  if (manifest === undefined) throw new StorageError('CORRUPT', `object manifest ${ref.id} (${ref.place}) is missing though a record names it`);
  return manifest;
}

/** Removes a ChunkStore manifest now; returns the catalog op that removes a catalog one. */
export async function removeManifest(context: ObjectContext, ref: ManifestRef): Promise<CatalogOp[]> {
  if (ref.place === 'catalog') return [{ type: 'delete', key: manifestCatalogKey(ref.id) }];
  await context.manifestStore.delete(manifestObjectKey(ref.id));
  return [];
}
