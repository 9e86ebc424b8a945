import { MemoryChunkStore } from '../../src/store/memory-chunk-store.js';
import { chunkStoreConformance } from './chunk-store.js';

chunkStoreConformance('memory', async () => new MemoryChunkStore());
