/**
 * The dedup crash test's child: opens a DedupChunkRepository over a LocalChunkStore and a LevelDB catalog
 * and runs the workload until the parent kills it (SIGKILL).
 *
 *   node dist/test/support/dedup-crash/child.js <folder> <catalog> <seed> <blake3|xxh128> <counts.json>
 *
 * counts.json: the references the child holds per content id when it starts (from the parent, who
 * judged the previous round), so drops never take more than it holds.
 */
import { readFileSync } from 'node:fs';
import { LevelCatalogStore } from '../../../src/meta/level-catalog.js';
import { chunkHasher, type ChunkHashAlgorithm } from '../../../src/store/dedup/chunk-hasher.js';
import { DedupChunkRepository } from '../../../src/store/dedup/dedup-repository.js';
import type { ChunkStoreCallOptions } from '../../../src/core/chunk-store.js';
import { LocalChunkStore } from '../../../src/store/local-chunk-store.js';
import { PACK_TARGET_BYTES, contentOf, formatBegin, steps } from './workload.js';

const [folder, catalogPath, seed, algorithm, countsPath] = process.argv.slice(2);
const held = new Map<number, number>(Object.entries(JSON.parse(readFileSync(countsPath!, 'utf8')) as Record<string, number>).map(([id, n]) => [Number(id), n]));
/** The daemon's local chunk store, announcing each key once its put is durable (the parent may kill on it). */
class AnnouncingChunkStore extends LocalChunkStore {
  override async put(key: string, data: Uint8Array, options?: ChunkStoreCallOptions): Promise<void> {
    await super.put(key, data, options);
    process.stdout.write(`put ${key}\n`);
  }
}
const chunkStore = new AnnouncingChunkStore(folder!);
await chunkStore.removeInterruptedPuts();
const repo = await DedupChunkRepository.open({
  chunkStore,
  catalog: await LevelCatalogStore.open(catalogPath!),
  hasher: chunkHasher(algorithm as ChunkHashAlgorithm),
  packTargetBytes: PACK_TARGET_BYTES,
});
process.stdout.write('ready\n');
for (const step of steps(Number(seed), held)) {
  process.stdout.write(formatBegin(step));
  if (step.kind === 'add') {
    await repo.addReferences(step.ids.map(contentOf));
    for (const id of step.ids) held.set(id, (held.get(id) ?? 0) + 1);
  } else {
    await repo.dropReferences(step.ids.map((id) => repo.hash(contentOf(id))));
    for (const id of step.ids) held.set(id, held.get(id)! - 1);
  }
  process.stdout.write(`ack ${step.step}\n`);
}
