import { MemoryCatalogStore } from '../../src/meta/memory-catalog.js';
import { LocalChunkStore } from '../../src/store/local-chunk-store.js';
import { MemoryChunkStore } from '../../src/store/memory-chunk-store.js';
import { TieredChunkStore } from '../../src/store/tier/tiered-chunk-store.js';
import { shmTempDir, tempDir } from '../support/tmp.js';
import { chunkStoreConformance } from './chunk-store.js';

chunkStoreConformance('memory', async () => new MemoryChunkStore());
chunkStoreConformance('local folder (disk)', async () => new LocalChunkStore(tempDir()));
chunkStoreConformance('local folder (tmpfs)', async () => new LocalChunkStore(shmTempDir()));
chunkStoreConformance('local folder (disk) writing small puts on the calling thread', async () => new LocalChunkStore(tempDir(), { inlineSmallPuts: true }));
chunkStoreConformance('local folder (tmpfs) with every put on the pool', async () => new LocalChunkStore(shmTempDir(), { inlineSmallPuts: false }));
chunkStoreConformance('local folder keeping 2 files open', async () => new LocalChunkStore(tempDir(), { openFilesMax: 2 }));
chunkStoreConformance('local folder keeping its folders open', async () => new LocalChunkStore(tempDir(), { openFilesMax: 2, holdFolders: true }));
chunkStoreConformance('tiered over memory, with a catalog', async () =>
  TieredChunkStore.open({ hot: new MemoryChunkStore(), cold: new MemoryChunkStore(), catalog: new MemoryCatalogStore(), coolingMs: 1000, flushIntervalMs: 0 }),
);
chunkStoreConformance('tiered over two local folders, no catalog', async () => {
  const dir = tempDir();
  return TieredChunkStore.open({ hot: new LocalChunkStore(`${dir}/hot`), cold: new LocalChunkStore(`${dir}/cold`), coolingMs: 1000, flushIntervalMs: 0 });
});
