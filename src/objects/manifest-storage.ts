/**
 * Where an object's manifest is kept. A manifest costs 40 bytes + 1 bit per chunk + 32 bytes per
 * stored 64 KiB chunk: 16 KiB for a 32 MiB object, 512 KiB for 1 GiB, 80 MiB for 5 TiB. Small
 * ones (up to MANIFEST_CATALOG_BYTES_MAX encoded, objects up to about 128 MiB) are a catalog value
 * of their own, written in the same transaction as the version that names them; larger ones are a
 * ChunkStore object, put (durably) before that transaction. Never inside the version record: a
 * listing reads a thousand records a page and must not read their manifests.
 *
 * A small single-PUT object (up to INLINE_OBJECT_BYTES_MAX) has no manifest: its bytes are a
 * catalog value of their own (`s3-inline/<id>`, base64), written in the one transaction that
 * installs its version (ref place 'inline'). Such a put writes no pack, adds no chunk reference
 * and needs no journal: one synced catalog batch makes it durable and visible. Its bytes are not
 * shared with other objects or volumes; a body smaller than one 64 KiB chunk could only share
 * with an identical small object, since volumes' chunks are whole 64 KiB chunks.
 */
import type { CatalogOp } from '../core/catalog-store.js';
import { assert, StorageError } from '../core/errors.js';
import type { ChunkManifest } from '../store/chunked/manifest.js';
import { decodeManifest, encodeManifest } from '../store/chunked/manifest-format.js';
import type { ObjectContext } from './context.js';
import type { ManifestRef } from './records.js';

/** The largest encoded manifest kept in the catalog (etcd's default value limit is 1.5 MiB). */
export const MANIFEST_CATALOG_BYTES_MAX = 64 * 1024;
export const MANIFEST_CATALOG_PREFIX = 's3-manifest/';
/** Single-PUT bodies up to this size are kept in the catalog, not in the pool (see above). */
export const INLINE_OBJECT_BYTES_MAX = 16 * 1024;
export const INLINE_OBJECT_PREFIX = 's3-inline/';
export const MANIFEST_OBJECT_PREFIX = 'object-manifests/';

export function manifestCatalogKey(id: string): string {
  return `${MANIFEST_CATALOG_PREFIX}${id}`;
}

export function manifestObjectKey(id: string): string {
  return `${MANIFEST_OBJECT_PREFIX}${id}`;
}

export function inlineObjectKey(id: string): string {
  return `${INLINE_OBJECT_PREFIX}${id}`;
}

/** What a put's journal offers manifest storage: its id, and writing its record before anything leaves the catalog. */
export interface ManifestOwner {
  readonly putId: string;
  record(): Promise<void>;
}

/**
 * Stores the owner's data (a manifest, or a small object's bytes) under the owner's put id: a
 * large manifest is put into the ChunkStore now (after the put's journal record, so a crash
 * before the commit leaves it to recovery); anything else is returned as the catalog op the
 * caller's transaction must carry.
 */
export async function saveManifest(
  context: ObjectContext,
  owner: ManifestOwner,
  content: ChunkManifest | Uint8Array,
  signal?: AbortSignal,
): Promise<{ ref: ManifestRef; ops: CatalogOp[] }> {
  const id = owner.putId;
  if (content instanceof Uint8Array) {
    assert(content.length <= INLINE_OBJECT_BYTES_MAX, `an inline object holds at most ${INLINE_OBJECT_BYTES_MAX} bytes`);
    return { ref: { id, place: 'inline' }, ops: [{ type: 'put', key: inlineObjectKey(id), value: Buffer.from(content.buffer, content.byteOffset, content.length).toString('base64') }] };
  }
  const encoded = encodeManifest(content);
  if (encoded.length <= MANIFEST_CATALOG_BYTES_MAX) {
    return { ref: { id, place: 'catalog' }, ops: [{ type: 'put', key: manifestCatalogKey(id), value: encoded.toString('base64') }] };
  }
  await owner.record();
  await context.manifestStore.put(manifestObjectKey(id), encoded, signal === undefined ? {} : { signal });
  return { ref: { id, place: 'chunk-store' }, ops: [] };
}

/** A small object's bytes (ref place 'inline'), or undefined when they are gone (a release finished). */
export async function loadInlineObject(context: ObjectContext, ref: ManifestRef): Promise<Uint8Array | undefined> {
  assert(ref.place === 'inline', 'only an inline object has its bytes in the catalog');
  const entry = await context.catalog.get(inlineObjectKey(ref.id));
  if (entry === undefined) return undefined;
  if (typeof entry.value !== 'string') throw new StorageError('CORRUPT', `catalog object bytes ${ref.id} are not a base64 string`);
  return Buffer.from(entry.value, 'base64');
}

/** The bytes of an inline object a record names: CORRUPT when they are missing. */
export async function requireInlineObject(context: ObjectContext, ref: ManifestRef): Promise<Uint8Array> {
  const bytes = await loadInlineObject(context, ref);
  if (bytes === undefined) throw new StorageError('CORRUPT', `object bytes ${ref.id} (inline) are missing though a record names them`);
  return bytes;
}

/** The manifest, or undefined when it is gone (a release finished). Not for an inline object (it has none). */
export async function loadManifest(context: ObjectContext, ref: ManifestRef): Promise<ChunkManifest | undefined> {
  assert(ref.place !== 'inline', `object data ${ref.id} is inline: it has bytes, not a manifest`);
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
  if (ref.place === 'inline') return [{ type: 'delete', key: inlineObjectKey(ref.id) }];
  await context.manifestStore.delete(manifestObjectKey(ref.id));
  return [];
}
