// The crash test's stand-in ChunkStore (test/support/dedup-crash) is held to the same contract.
import { FolderChunkStore } from '../support/dedup-crash/folder-chunk-store.js';
import { shmTempDir } from '../support/tmp.js';
import { chunkStoreConformance } from './chunk-store.js';

chunkStoreConformance('folder (test support)', () => FolderChunkStore.open(shmTempDir()));
