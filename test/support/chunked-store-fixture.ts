/**
 * A ChunkedLayerStore for the chunked-store tests: a LocalLayerStore in a temporary folder (pool
 * `p`), the test repository (test-chunk-repository.ts) and manifests in a MemoryChunkStore.
 */
import path from 'node:path';
import { ChunkedLayerStore } from '../../src/store/chunked/chunked-layer-store.js';
import { decodeManifest } from '../../src/store/chunked/manifest-format.js';
import { LAYER_MANIFEST_PREFIX } from '../../src/store/chunked/manifest-references.js';
import { LocalLayerStore } from '../../src/store/local-layer-store.js';
import { MemoryChunkStore } from '../../src/store/memory-chunk-store.js';
import { createTestChunkRepository } from './test-chunk-repository.js';
import { tempDir } from './tmp.js';

export async function chunkedStoreFixture() {
  const root = tempDir();
  const local = new LocalLayerStore(root);
  const manifests = new MemoryChunkStore();
  const repository = await createTestChunkRepository();
  const store = new ChunkedLayerStore({ local, repository, manifests });
  await store.prepare();
  await store.createPool('p');
  /** A file of pool `p` in the local store's folder. */
  const file = (name: string) => path.join(root, 'p', name);
  const manifestOf = async (name: string) => decodeManifest((await manifests.get(`${LAYER_MANIFEST_PREFIX}p/${name}`))!, name);
  return { store, file, manifestOf, repository };
}
