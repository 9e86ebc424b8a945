import { expect } from 'vitest';
import { LevelCatalogStore } from '../../src/meta/level-catalog.js';
import { MemoryCatalogStore } from '../../src/meta/memory-catalog.js';
import { tempDir } from '../support/tmp.js';
import { catalogStoreConformance } from './catalog-store.js';

catalogStoreConformance('memory', async () => ({ store: new MemoryCatalogStore() }));

// Reads through libuv's pool (a catalog on a disk) and on the calling thread (on tmpfs), each
// forced so that both run whatever the temporary folder is on.
for (const syncReads of [false, true]) {
  catalogStoreConformance(`LevelDB, reads ${syncReads ? 'on the calling thread' : 'through the thread pool'}`, async () => {
    const location = `${tempDir()}/catalog`;
    const store = await LevelCatalogStore.open(location, { syncReads });
    expect(store.syncReads).toBe(syncReads);
    return {
      store,
      reopen: async () => {
        await store.close();
        return LevelCatalogStore.open(location, { syncReads });
      },
    };
  });
}
