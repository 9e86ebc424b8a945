/**
 * A layer sealed from a stream (src/store/chunked/seal-stream.ts, ChunkedLayerStore.writeSealed):
 * pieces of guest data (unaligned, with holes, zero clusters, repeated clusters, a partial last
 * sector run) become a sealed qcow2 layer that passes `qemu-img check` and reads back exactly as
 * the source (`qemu-img compare`), whose data chunks are the ones sealing a qemu-written layer of
 * the same data gives; a failure or an abort part-way drops every reference it added, and
 * pieces out of order are refused.
 */
import { writeFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { LayerRef } from '../../src/core/layer-store.js';
import { canSealStream, sealQcow2Stream } from '../../src/store/chunked/seal-stream.js';
import { SeededRandom } from '../../src/store/seeded-random.js';
import { expectCode } from '../support/expect-error.js';
import { chunkedStoreFixture } from '../support/chunked-store-fixture.js';
import { expectSuccess, qemuImg, requireTool } from '../support/tools.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const CLUSTER = 64 * KiB;
/** Not a whole number of clusters: the last cluster is partly past the end. */
const SIZE = 10 * MiB + 512 * 3;
const ref = (fileName: string): LayerRef => ({ pool: 'p', fileName });

function sourceBytes(): Buffer {
  const rng = new SeededRandom(7);
  const bytes = Buffer.alloc(SIZE);
  for (let offset = 0; offset < SIZE; offset += 4 * KiB) {
    const pick = rng.next();
    if (pick < 0.3) continue; // zeroes: whole zero clusters where runs of them meet
    const block = bytes.subarray(offset, Math.min(SIZE, offset + 4 * KiB));
    if (pick < 0.5) block.fill(0x5a);
    else for (let i = 0; i + 4 <= block.length; i += 4) block.writeUInt32LE(Math.floor(rng.next() * 0x1_0000_0000), i);
  }
  bytes.fill(0, 2 * MiB, 3 * MiB); // a megabyte of zeroes sent as data
  bytes.fill(0x11, SIZE - 700); // data in the last, partial cluster
  return bytes;
}

/** The source as pieces of uneven sizes; the ranges in `holes` are not sent (a sparse stream's). */
async function* piecesOf(bytes: Buffer, holes: readonly [number, number][], pieceBytes = 100_003): AsyncGenerator<{ offset: number; bytes: Uint8Array }> {
  for (let offset = 0; offset < bytes.length; ) {
    const hole = holes.find(([from, to]) => offset >= from && offset < to);
    if (hole !== undefined) {
      offset = hole[1];
      continue;
    }
    const nextHole = Math.min(...holes.map(([from]) => from).filter((from) => from > offset), bytes.length);
    const end = Math.min(offset + pieceBytes, nextHole);
    yield { offset, bytes: Uint8Array.from(bytes.subarray(offset, end)) };
    offset = end;
  }
}

const fixture = chunkedStoreFixture;

describe.skipIf(!requireTool('qemu-img'))('sealing a layer from a stream of guest data', () => {
  it('gives a valid qcow2 that reads as the source, with the data chunks a seal of the same data gives', async () => {
    const { store, file, manifestOf, repository } = await fixture();
    const bytes = sourceBytes();
    // Holes: one inside a cluster (the rest of it sent), one over whole clusters.
    const holes: [number, number][] = [[CLUSTER + 1000, CLUSTER + 9000], [5 * MiB, 6 * MiB]];
    for (const [from, to] of holes) bytes.fill(0, from, to);
    writeFileSync(file('source.raw'), bytes);
    await store.writeSealed(ref('streamed.qcow2'), { sizeBytes: SIZE, pieces: piecesOf(bytes, holes) });

    const host = await store.open(ref('streamed.qcow2'), { readOnly: true });
    const image = new Uint8Array(await host.sizeBytes());
    await host.pread(image, 0);
    await host.close();
    writeFileSync(file('streamed-copy.qcow2'), image);
    expectSuccess(qemuImg(['check', '-f', 'qcow2', file('streamed-copy.qcow2')]), 'qemu-img check of the streamed layer');
    const info = JSON.parse(expectSuccess(qemuImg(['info', '--output=json', file('streamed-copy.qcow2')])).stdout) as { 'virtual-size': number; 'cluster-size': number };
    expect(info).toMatchObject({ 'virtual-size': SIZE, 'cluster-size': CLUSTER });
    const compared = qemuImg(['compare', '-f', 'qcow2', '-F', 'raw', file('streamed-copy.qcow2'), file('source.raw')]);
    expect(compared.code, compared.stdout + compared.stderr).toBe(0);

    // The same data written by qemu-img and sealed: every data chunk of it is one the streamed
    // layer has (the two differ only in metadata clusters).
    expectSuccess(qemuImg(['convert', '-f', 'raw', '-O', 'qcow2', '-o', 'cluster_size=65536', file('source.raw'), file('converted.qcow2')]));
    await store.seal(ref('converted.qcow2'));
    const streamed = new Set((await manifestOf('streamed.qcow2')).storedHashes());
    const sealed = [...(await manifestOf('converted.qcow2')).storedHashes()];
    const notShared = sealed.filter((hash) => !streamed.has(hash));
    expect(notShared.length).toBeLessThanOrEqual(4); // the converted file's header, refcount, L1, L2 clusters
    for (const hash of streamed) expect(await repository.referenceCount(hash)).toBeGreaterThan(0);
  });

  it('drops every reference it added when the stream fails or is aborted part-way, and refuses pieces out of order', async () => {
    const { repository } = await fixture();
    const bytes = sourceBytes();
    async function* failing(): AsyncGenerator<{ offset: number; bytes: Uint8Array }> {
      for await (const piece of piecesOf(bytes, [])) {
        if (piece.offset > 6 * MiB) throw new Error('the client went away');
        yield piece;
      }
    }
    await expect(sealQcow2Stream({ sizeBytes: SIZE, pieces: failing() }, repository)).rejects.toThrow(/the client went away/);
    // Every data cluster of the first 6 MiB was added (in batches) and dropped again.
    const clusters = Array.from({ length: (6 * MiB) / CLUSTER }, (_, i) => bytes.subarray(i * CLUSTER, (i + 1) * CLUSTER)).filter((c) => c.some((b) => b !== 0));
    expect(clusters.length).toBeGreaterThan(64);
    for (const cluster of clusters) expect(await repository.referenceCount(repository.hash(cluster))).toBe(0);

    const controller = new AbortController();
    async function* aborting(): AsyncGenerator<{ offset: number; bytes: Uint8Array }> {
      for await (const piece of piecesOf(bytes, [])) {
        if (piece.offset > 8 * MiB) controller.abort();
        yield piece;
      }
    }
    await expectCode(sealQcow2Stream({ sizeBytes: SIZE, pieces: aborting() }, repository, { signal: controller.signal }), 'CANCELLED');
    for (const cluster of clusters) expect(await repository.referenceCount(repository.hash(cluster))).toBe(0);

    async function* backwards(): AsyncGenerator<{ offset: number; bytes: Uint8Array }> {
      yield { offset: MiB, bytes: bytes.subarray(MiB, 2 * MiB) };
      yield { offset: 0, bytes: bytes.subarray(0, MiB) };
    }
    await expectCode(sealQcow2Stream({ sizeBytes: SIZE, pieces: backwards() }, repository), 'INVALID_ARGUMENT');
    async function* pastTheEnd(): AsyncGenerator<{ offset: number; bytes: Uint8Array }> {
      yield { offset: SIZE - 10, bytes: new Uint8Array(20).fill(1) };
    }
    await expectCode(sealQcow2Stream({ sizeBytes: SIZE, pieces: pastTheEnd() }, repository), 'INVALID_ARGUMENT');
    expect(await repository.referenceCount(repository.hash(bytes.subarray(0, CLUSTER)))).toBe(0);
  });

  it('takes layers whose metadata fits in memory, and refuses larger ones before reading', async () => {
    const { repository } = await fixture();
    expect(canSealStream(2 * 1024 * 1024 * MiB)).toBe(true);
    expect(canSealStream(64 * 1024 * 1024 * MiB)).toBe(false);
    let read = false;
    async function* untouched(): AsyncGenerator<{ offset: number; bytes: Uint8Array }> {
      read = true;
      yield { offset: 0, bytes: new Uint8Array(1) };
    }
    await expectCode(sealQcow2Stream({ sizeBytes: 64 * 1024 * 1024 * MiB, pieces: untouched() }, repository), 'UNSUPPORTED');
    expect(read).toBe(false);
  });
});
