/**
 * The object-model crash test's child: an ObjectModel over a LevelDB catalog and a LocalChunkStore
 * (the stores a daemon uses), putting the workload's objects of one round until the parent kills
 * it with SIGKILL. It prints `begin <key>`, `piece <key> <n>` as the body streams, `refs` each time
 * an addReferences call of the repository resolved (a step's references are durable), and
 * `ack <key> <etag>` once putObject resolved (acknowledged: it must survive). Even rounds journal
 * recorded steps, odd rounds marked ones (put-journal.ts).
 *
 *   spawnTsChild('test/support/objects-crash/child.ts', [<catalog dir>, <chunk dir>, <round>])
 */
import { StorageError } from '../../../src/core/errors.js';
import { LevelCatalogStore } from '../../../src/meta/level-catalog.js';
import { isObjectError } from '../../../src/objects/errors.js';
import { ObjectModel } from '../../../src/objects/model.js';
import { DedupChunkRepository } from '../../../src/store/dedup/dedup-repository.js';
import type { ChunkRepository } from '../../../src/store/dedup/repository.js';
import { LocalChunkStore } from '../../../src/store/local-chunk-store.js';
import { bodyOf, CRASH_BUCKET, CRASH_POOL, objectSpec } from './workload.js';

const [catalogDir, chunkDir, roundText] = process.argv.slice(2);
const round = Number(roundText);
const catalog = await LevelCatalogStore.open(catalogDir!);
const chunkStore = new LocalChunkStore(chunkDir!);
await chunkStore.removeInterruptedPuts();
const dedup = await DedupChunkRepository.open({ chunkStore, catalog, pool: CRASH_POOL, packTargetBytes: 1024 * 1024 });
const repository: ChunkRepository = {
  hash: (data) => dedup.hash(data),
  addReferences: async (chunks, options) => {
    const hashes = await dedup.addReferences(chunks, options);
    process.stdout.write('refs\n');
    return hashes;
  },
  hashChunk: (data) => dedup.hashChunk(data),
  addHashedReferences: async (chunks, options) => {
    const hashes = await dedup.addHashedReferences(chunks, options);
    process.stdout.write('refs\n');
    return hashes;
  },
  addReferencesByHash: (hashes, options) => dedup.addReferencesByHash(hashes, options),
  dropReferences: (hashes, options) => dedup.dropReferences(hashes, options),
  read: (hash, options) => dedup.read(hash, options),
  readRange: (hash, offsetBytes, lengthBytes, options) => dedup.readRange(hash, offsetBytes, lengthBytes, options),
  referenceCount: (hash) => dedup.referenceCount(hash),
  // Even rounds: the counts share the catalog, so the put's steps are recorded (no marker) and the
  // install deletes the journal; odd rounds: marked steps and a settling after the install.
  ...(round % 2 === 0 ? { sharesCatalog: (other: Parameters<typeof dedup.sharesCatalog>[0]) => dedup.sharesCatalog(other) } : {}),
};
const model = new ObjectModel({
  catalog,
  manifestStore: chunkStore,
  repositoryOf: async (pool) => {
    if (pool !== CRASH_POOL) throw new StorageError('NOT_FOUND', `no pool ${pool}`);
    return repository;
  },
});
await model.recover();
try {
  await model.createBucket({ name: CRASH_BUCKET, owner: 'crash', pool: CRASH_POOL });
} catch (err) {
  if (!isObjectError(err, 'BucketAlreadyOwnedByYou')) throw err;
}
process.stdout.write('ready\n');
for (let index = 0; ; index++) {
  const spec = objectSpec(round, index);
  process.stdout.write(`begin ${spec.key}\n`);
  const result = await model.putObject({
    bucket: CRASH_BUCKET,
    key: spec.key,
    owner: 'crash',
    body: bodyOf(spec, (piece) => process.stdout.write(`piece ${spec.key} ${piece}\n`)),
    claims: { sizeBytes: spec.sizeBytes },
  });
  process.stdout.write(`ack ${spec.key} ${result.etag}\n`);
}
