import path from 'node:path';
import { FaultInjectingFile } from '../../src/store/fault-injecting-file.js';
import { LocalHostFile } from '../../src/store/local-file.js';
import { MemoryHostFile } from '../../src/store/memory-file.js';
import { shmTempDir, tempDir } from '../support/tmp.js';
import { hostFileConformance } from './host-file.js';

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
