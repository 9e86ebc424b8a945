/**
 * Sealed layers as holders of chunk references, for a scrub's reference audit
 * (src/store/dedup/scrub.ts): every manifest a ChunkedLayerStore keeps under
 * `layer-manifests/<pool>/<file>` in its manifest ChunkStore, read a page of keys at a time and
 * decoded one at a time (a manifest is at most a few MiB per TiB of layer). A manifest that does
 * not decode is an UnreadableHolder naming the layer and the damage, never a failed scrub.
 */
import type { ChunkStore } from '../../core/chunk-store.js';
import { isStorageError } from '../../core/errors.js';
import type { ReferenceHolder, ReferenceSource, UnreadableHolder } from '../dedup/scrub.js';
import { decodeManifest } from './manifest-format.js';

/** The ChunkStore key prefix of sealed layers' manifests (`<prefix><pool>/<file>`). */
export const LAYER_MANIFEST_PREFIX = 'layer-manifests/';

/**
 * The sealed layers of `pools` (every pool under the prefix when absent) in `manifests`, each
 * named "layer <pool>/<file>". Pass it as a scrub's `references`; join other holders (S3
 * objects) with concatReferenceSources.
 */
export function sealedLayerReferences(manifests: ChunkStore, pools?: readonly string[]): ReferenceSource {
  const prefixes = pools === undefined ? [LAYER_MANIFEST_PREFIX] : pools.map((pool) => `${LAYER_MANIFEST_PREFIX}${pool}/`);
  return async function* (signal?: AbortSignal): AsyncGenerator<ReferenceHolder | UnreadableHolder> {
    for (const prefix of prefixes) {
      let after: string | undefined;
      do {
        const page = await manifests.list(prefix, after === undefined ? { signal } : { after, signal });
        for (const key of page.keys) {
          const name = `layer ${key.slice(LAYER_MANIFEST_PREFIX.length)}`;
          const bytes = await manifests.get(key, { signal });
          if (bytes === undefined) continue; // removed since the listing: it holds nothing now
          try {
            yield { name, hashes: decodeManifest(bytes, name).storedHashes() };
          } catch (err) {
            if (!isStorageError(err, 'CORRUPT') && !isStorageError(err, 'UNSUPPORTED')) throw err;
            yield { name, unreadable: err.message };
          }
        }
        after = page.nextAfter;
      } while (after !== undefined);
    }
  };
}
