/**
 * Decoded manifests of objects read lately, remembered per ObjectContext by their id, so a GET of
 * an object read before costs one catalog get (its version record) instead of two (then its
 * manifest) and no decode.
 *
 * Why a remembered manifest is safe: a manifest is written once, under the id of the put that made
 * it (a PUT, a copy, an uploaded part: each its own id), and never changed after; releasing it
 * deletes it. A read reaches a manifest only through the version record it has just read, so an
 * id it finds names exactly the manifest stored under it (or one being released right now, which
 * reads as the record's own race with a delete does without this map). ChunkManifest is immutable.
 */
import type { ChunkManifest } from '../store/chunked/manifest.js';
import type { ObjectContext } from './context.js';
import { requireManifest } from './manifest-storage.js';
import type { ManifestRef } from './records.js';

/** Bytes of hashes remembered per context: 8 MiB name 262,144 chunks of 32-byte hashes (16 GiB of 64 KiB chunks). */
export const READ_MANIFESTS_BYTES_MAX = 8 * 1024 * 1024;

interface Remembered {
  /** Map order is use order: the first key is the least recently used. */
  readonly manifests: Map<string, ChunkManifest>;
  sizeBytes: number;
}

const remembered = new WeakMap<ObjectContext, Remembered>();

function sizeOf(manifest: ChunkManifest): number {
  return manifest.hashes.length + manifest.bitmap.length;
}

/** requireManifest for a read (GET): from memory when it is there, see above. Not for an inline object. */
export async function manifestForRead(context: ObjectContext, ref: ManifestRef): Promise<ChunkManifest> {
  let held = remembered.get(context);
  if (held === undefined) {
    held = { manifests: new Map(), sizeBytes: 0 };
    remembered.set(context, held);
  }
  const known = held.manifests.get(ref.id);
  if (known !== undefined) {
    held.manifests.delete(ref.id);
    held.manifests.set(ref.id, known);
    return known;
  }
  const manifest = await requireManifest(context, ref);
  const sizeBytes = sizeOf(manifest);
  if (sizeBytes > READ_MANIFESTS_BYTES_MAX / 4 || held.manifests.has(ref.id)) return manifest;
  held.manifests.set(ref.id, manifest);
  held.sizeBytes += sizeBytes;
  for (const [id, old] of held.manifests) {
    if (held.sizeBytes <= READ_MANIFESTS_BYTES_MAX) break;
    held.manifests.delete(id);
    held.sizeBytes -= sizeOf(old);
  }
  return manifest;
}
