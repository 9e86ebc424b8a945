import { LocalChunkStore } from '../../src/store/local-chunk-store.js';
import { MemoryChunkStore } from '../../src/store/memory-chunk-store.js';
import { shmTempDir, tempDir } from '../support/tmp.js';
import { chunkStoreConformance } from './chunk-store.js';

chunkStoreConformance('memory', async () => new MemoryChunkStore());
chunkStoreConformance('local folder (disk)', async () => new LocalChunkStore(tempDir()));
chunkStoreConformance('local folder (tmpfs)', async () => new LocalChunkStore(shmTempDir()));
