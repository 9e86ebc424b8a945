/**
 * The dedup crash test's child: opens a DedupChunkRepository over a folder and a LevelDB catalog
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
import { FolderChunkStore } from './folder-chunk-store.js';
import { PACK_TARGET_BYTES, contentOf, formatBegin, steps } from './workload.js';

const [folder, catalogPath, seed, algorithm, countsPath] = process.argv.slice(2);
const held = new Map<number, number>(Object.entries(JSON.parse(readFileSync(countsPath!, 'utf8')) as Record<string, number>).map(([id, n]) => [Number(id), n]));
const repo = await DedupChunkRepository.open({
  chunkStore: await FolderChunkStore.open(folder!, (key) => process.stdout.write(`put ${key}\n`)),
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
