/**
 * Oracle: qcow2 layers made by qemu-img and written by qemu-io (a base and an overlay on it),
 * sealed into a ChunkRepository, then opened by Strata's qcow2 engine through ChunkedFiles must
 * read the guest exactly as `qemu-img convert -O raw` reads the original files. Data clusters of
 * different layers with the same bytes become the same chunk; zero chunks are stored nowhere.
 *
 * The repository comes from createTestChunkRepository() (the real DedupChunkRepository over
 * memory stores); only the ChunkRepository interface is used.
 */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Image } from '../../src/core/image.js';
import { ChunkedFile } from '../../src/store/chunked/chunked-file.js';
import type { ChunkManifest } from '../../src/store/chunked/manifest.js';
import { decodeManifest, encodeManifest } from '../../src/store/chunked/manifest-format.js';
import { releaseManifest, sealFile } from '../../src/store/chunked/seal.js';
import type { ChunkRepository } from '../../src/store/dedup/repository.js';
import { LocalHostFile } from '../../src/store/local-file.js';
import { Qcow2Image } from '../../formats/qcow2/index.js';
import { createTestChunkRepository } from '../support/test-chunk-repository.js';
import { shmTempDir } from '../support/tmp.js';
import { requireTool } from '../support/tools.js';
import { KiB, MiB, expectSameBytes, makePatternFiles, oddSize, qemuImgOk, qemuIoOk, qemuRaw, workload } from './support.js';

const CLUSTER = 64 * KiB;

async function sealPath(file: string, repository: ChunkRepository, chunkSizeBytes = CLUSTER): Promise<ChunkManifest> {
  const source = await LocalHostFile.open(file, { readOnly: true });
  try {
    const manifest = await sealFile(source, repository, { chunkSizeBytes });
    // What a layer store keeps is the encoding: read back what it would read.
    return decodeManifest(encodeManifest(manifest), path.basename(file));
  } finally {
    await source.close();
  }
}

/** The guest of `image`, read in 1 MiB pieces. */
async function readGuest(image: Image): Promise<Buffer> {
  const out = Buffer.alloc(image.sizeBytes, 0xa5);
  for (let at = 0; at < image.sizeBytes; at += MiB) await image.read(at, out.subarray(at, Math.min(image.sizeBytes, at + MiB)));
  return out;
}

/** The hashes of the guest's non-zero cluster-aligned pieces (each is a data cluster of some layer). */
function guestClusterHashes(repository: ChunkRepository, guest: Uint8Array): Set<string> {
  const hashes = new Set<string>();
  for (let at = 0; at + CLUSTER <= guest.length; at += CLUSTER) {
    const piece = guest.subarray(at, at + CLUSTER);
    if (!piece.every((b) => b === 0)) hashes.add(repository.hash(piece));
  }
  return hashes;
}

describe.skipIf(!requireTool('qemu-img', 'qemu-io'))('oracle: sealed qcow2 layers read through chunk manifests', () => {
  it('a base and its overlay, each sealed, read as qemu-img reads the originals; equal clusters share chunks', async () => {
    const dir = shmTempDir();
    const patterns = makePatternFiles(dir, 1201);
    const base = path.join(dir, 'base.qcow2');
    const overlay = path.join(dir, 'overlay.qcow2');
    const copy = path.join(dir, 'copy.qcow2');
    const size = oddSize(24 * MiB, CLUSTER);
    qemuImgOk(['create', '-q', '-f', 'qcow2', '-o', `cluster_size=${CLUSTER}`, base, String(size)]);
    qemuIoOk(base, workload({ sizeBytes: size, clusterSizeBytes: CLUSTER, seed: 12010, patterns, ops: 40, zeroes: true, discards: true }));
    qemuImgOk(['create', '-q', '-f', 'qcow2', '-o', `cluster_size=${CLUSTER}`, '-b', 'base.qcow2', '-F', 'qcow2', overlay]);
    qemuIoOk(overlay, workload({ sizeBytes: size, clusterSizeBytes: CLUSTER, seed: 12011, patterns, ops: 30, zeroes: true, discards: true }));
    // The same guest as base, laid out afresh by qemu-img: different host offsets, same clusters.
    qemuImgOk(['convert', '-q', '-f', 'qcow2', '-O', 'qcow2', '-o', `cluster_size=${CLUSTER}`, base, copy]);
    const expectedBase = qemuRaw(base, path.join(dir, 'base.raw'));
    const expectedOverlay = qemuRaw(overlay, path.join(dir, 'overlay.raw'));

    expect(expectedOverlay.equals(expectedBase), 'the overlay changes the guest').toBe(false);
    const repository = await createTestChunkRepository();
    const baseManifest = await sealPath(base, repository);
    const overlayManifest = await sealPath(overlay, repository);
    const copyManifest = await sealPath(copy, repository);

    const openSealed = (manifest: ChunkManifest, name: string, backing?: { manifest: ChunkManifest; name: string }, depth = 0): Promise<Qcow2Image> =>
      Qcow2Image.open(new ChunkedFile(manifest, repository, { name }), {
        readOnly: true,
        depth,
        openBacking:
          backing === undefined
            ? undefined
            : async (ref, backingDepth) => {
                expect(ref.fileName).toBe(backing.name);
                return openSealed(backing.manifest, backing.name, undefined, backingDepth);
              },
      });
    const chain = await openSealed(overlayManifest, 'overlay.qcow2', { manifest: baseManifest, name: 'base.qcow2' });
    expectSameBytes(await readGuest(chain), expectedOverlay, 'overlay over base, sealed');
    await chain.close();
    const alone = await openSealed(baseManifest, 'base.qcow2');
    expectSameBytes(await readGuest(alone), expectedBase, 'base, sealed');
    await alone.close();
    const copyImage = await openSealed(copyManifest, 'copy.qcow2');
    expectSameBytes(await readGuest(copyImage), expectedBase, 'copy of base, sealed');
    await copyImage.close();

    // Zero chunks are stored nowhere (the overlay's file has holes and zero clusters).
    expect(overlayManifest.storedCount).toBeGreaterThan(10);
    expect(overlayManifest.storedCount).toBeLessThan(overlayManifest.entryCount);
    expect(await repository.referenceCount(repository.hash(new Uint8Array(CLUSTER)))).toBe(0);
    // Every non-zero guest cluster of base is a data cluster of base and of its copy: one chunk
    // with (at least) a reference from each.
    const baseClusters = guestClusterHashes(repository, expectedBase);
    expect(baseClusters.size).toBeGreaterThan(20);
    const copyHashes = new Set(copyManifest.storedHashes());
    const baseHashes = new Set(baseManifest.storedHashes());
    for (const hash of baseClusters) {
      expect(baseHashes.has(hash) && copyHashes.has(hash), `guest cluster ${hash} in both layers`).toBe(true);
      expect(await repository.referenceCount(hash)).toBeGreaterThanOrEqual(2);
    }
    // Releasing every layer gives back every reference.
    const everyHash = new Set([...baseHashes, ...copyHashes, ...overlayManifest.storedHashes()]);
    for (const manifest of [baseManifest, overlayManifest, copyManifest]) await releaseManifest(manifest, repository);
    for (const hash of everyHash) expect(await repository.referenceCount(hash)).toBe(0);
  });

  it('chunks need not match clusters: 4 KiB clusters with compressed writes and 2 MiB clusters, sealed at 16 KiB', async () => {
    const dir = shmTempDir();
    const patterns = makePatternFiles(dir, 1202);
    const base = path.join(dir, 'base.qcow2');
    const overlay = path.join(dir, 'overlay.qcow2');
    const size = oddSize(16 * MiB, 4 * KiB);
    qemuImgOk(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', base, String(size)]);
    qemuIoOk(base, workload({ sizeBytes: size, clusterSizeBytes: 4 * KiB, seed: 12020, patterns, ops: 40, zeroes: true, compressed: true }));
    qemuImgOk(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=2097152', '-b', 'base.qcow2', '-F', 'qcow2', overlay]);
    qemuIoOk(overlay, workload({ sizeBytes: size, clusterSizeBytes: 2 * MiB, seed: 12021, patterns, ops: 20, zeroes: true, discards: true }));
    const expected = qemuRaw(overlay, path.join(dir, 'overlay.raw'));
    const repository = await createTestChunkRepository();
    const baseManifest = await sealPath(base, repository, 16 * KiB);
    const overlayManifest = await sealPath(overlay, repository, 16 * KiB);
    const chain = await Qcow2Image.open(new ChunkedFile(overlayManifest, repository, { name: 'overlay.qcow2' }), {
      readOnly: true,
      openBacking: async (_ref, depth) =>
        Qcow2Image.open(new ChunkedFile(baseManifest, repository, { name: 'base.qcow2' }), { readOnly: true, depth }),
    });
    expectSameBytes(await readGuest(chain), expected, 'overlay (2 MiB clusters) over base (4 KiB, compressed), sealed at 16 KiB');
    await chain.close();
  });
});
