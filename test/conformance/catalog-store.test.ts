import { LevelCatalogStore } from '../../src/meta/level-catalog.js';
import { MemoryCatalogStore } from '../../src/meta/memory-catalog.js';
import { tempDir } from '../support/tmp.js';
import { catalogStoreConformance } from './catalog-store.js';

catalogStoreConformance('memory', async () => ({ store: new MemoryCatalogStore() }));

catalogStoreConformance('LevelDB', async () => {
  const location = `${tempDir()}/catalog`;
  const store = await LevelCatalogStore.open(location);
  return {
    store,
    reopen: async () => {
      await store.close();
      return LevelCatalogStore.open(location);
    },
  };
});
