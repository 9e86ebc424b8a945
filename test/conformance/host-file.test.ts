import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { ChunkedFile } from '../../src/store/chunked/chunked-file.js';
import { sealFile } from '../../src/store/chunked/seal.js';
import { FaultInjectingFile } from '../../src/store/fault-injecting-file.js';
import { LocalHostFile } from '../../src/store/local-file.js';
import { MemoryHostFile } from '../../src/store/memory-file.js';
import { shmTempDir, tempDir } from '../support/tmp.js';
import { createTestChunkRepository } from '../support/test-chunk-repository.js';
import { hostFileConformance, readOnlyHostFileConformance } from './host-file.js';

let counter = 0;

for (const [label, dir] of [
  ['local file (disk, thread pool)', tempDir],
  ['local file (tmpfs, synchronous I/O)', shmTempDir],
] as const) {
  hostFileConformance(label, {
    create: () => LocalHostFile.open(path.join(dir(), `f${counter++}`), { exclusive: true }),
    reopenReadOnly: (file) => LocalHostFile.open(file.name, { readOnly: true }),
  });
}

hostFileConformance('memory', {
  create: async () => new MemoryHostFile(),
  reopenReadOnly: async (file) => (file as MemoryHostFile).readOnlyView(),
});

hostFileConformance('fault-injecting', {
  create: async () => new FaultInjectingFile(),
});

readOnlyHostFileConformance('local file opened read-only', {
  open: async (contents) => {
    const file = path.join(tempDir(), 'read-only');
    writeFileSync(file, contents);
    return LocalHostFile.open(file, { readOnly: true });
  },
});

readOnlyHostFileConformance('memory, read-only view', {
  open: async (contents) => MemoryHostFile.fromBytes(contents).readOnlyView(),
});

readOnlyHostFileConformance('chunked file (sealed over the stand-in chunk repository)', {
  open: async (contents) => {
    const repository = await createTestChunkRepository();
    const manifest = await sealFile(MemoryHostFile.fromBytes(contents), repository);
    return new ChunkedFile(manifest, repository, { name: 'sealed' });
  },
});
