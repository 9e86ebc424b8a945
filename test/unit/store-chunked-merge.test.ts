/**
 * Compaction by reference (src/store/chunked/merge.ts, formats/qcow2/layout.ts): qemu-made qcow2
 * layers (a base, a lower layer over it, an upper layer over that, with data, overwrites and zero
 * clusters) are sealed into a ChunkedLayerStore; the upper and lower ones are merged in place. The
 * merged file passes `qemu-img check`, QEMU reads it over the base exactly as it read the original
 * chain, and every data chunk of it is a chunk the inputs already had (only metadata is new).
 */
import { copyFileSync, writeFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { LayerRef } from '../../src/core/layer-store.js';
import { expectCode } from '../support/expect-error.js';
import { chunkedStoreFixture } from '../support/chunked-store-fixture.js';
import { expectSuccess, qemuImg, qemuIo, requireTool } from '../support/tools.js';

const MiB = 1024 * 1024;
const SIZE = 8 * MiB;
const ref = (fileName: string): LayerRef => ({ pool: 'p', fileName });

const fixture = chunkedStoreFixture;

function qcow2(file: string, sizeBytes: number, backing?: string): void {
  expectSuccess(qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=65536', ...(backing === undefined ? [] : ['-b', backing, '-F', 'qcow2']), file, String(sizeBytes)]));
}

function io(file: string, commands: readonly string[]): void {
  expectSuccess(qemuIo(['-f', 'qcow2', ...commands.flatMap((c) => ['-c', c]), file]));
}

describe.skipIf(!requireTool('qemu-img', 'qemu-io'))('merging two sealed layers by reference', () => {
  it('gives a valid qcow2 that reads as the chain did, sharing every data chunk', async () => {
    const { store, file, manifestOf } = await fixture();
    qcow2(file('base.qcow2'), SIZE);
    io(file('base.qcow2'), ['write -P 0x11 0 8M']);
    qcow2(file('lower.qcow2'), SIZE, 'base.qcow2');
    io(file('lower.qcow2'), ['write -P 0x22 1M 2M', 'write -z 3M 256k', 'write -P 0x23 6M 64k', 'write -P 0x24 7M 100k']);
    qcow2(file('upper.qcow2'), SIZE, 'lower.qcow2');
    io(file('upper.qcow2'), ['write -P 0x33 2M 1M', 'write -z 1M 128k', 'write -P 0x34 3M 64k', 'write -P 0x35 5M 4k', 'write -P 0x24 7M 100k']);
    const expected = file('expected.raw');
    expectSuccess(qemuImg(['convert', '-f', 'qcow2', '-O', 'raw', file('upper.qcow2'), expected]));

    await store.seal(ref('lower.qcow2'));
    await store.seal(ref('upper.qcow2'));
    const inputs = new Set([...(await manifestOf('upper.qcow2')).storedHashes(), ...(await manifestOf('lower.qcow2')).storedHashes()]);
    const prepared = await store.prepareMerge(ref('upper.qcow2'), ref('lower.qcow2'), { backingFile: 'base.qcow2' });
    await prepared.install();
    await store.remove(ref('lower.qcow2'));

    const merged = await manifestOf('upper.qcow2');
    // The merged file beside the base, for QEMU: its header names base.qcow2.
    const host = await store.open(ref('upper.qcow2'), { readOnly: true });
    const bytes = new Uint8Array(await host.sizeBytes());
    await host.pread(bytes, 0);
    await host.close();
    writeFileSync(file('merged.qcow2'), bytes);
    expectSuccess(qemuImg(['check', '-f', 'qcow2', file('merged.qcow2')]), 'qemu-img check of the merged layer');
    const info = JSON.parse(expectSuccess(qemuImg(['info', '--output=json', file('merged.qcow2')])).stdout) as { 'backing-filename'?: string; 'virtual-size': number };
    expect(info).toMatchObject({ 'backing-filename': 'base.qcow2', 'virtual-size': SIZE });
    const compared = qemuImg(['compare', '-f', 'qcow2', '-F', 'raw', file('merged.qcow2'), expected]);
    expect(compared.code, compared.stdout + compared.stderr).toBe(0);

    // Data chunks are shared: only the new metadata clusters are chunks the inputs did not have.
    const fresh = [...merged.storedHashes()].filter((h) => !inputs.has(h));
    const dataChunks = merged.storedCount - fresh.length;
    expect(dataChunks).toBeGreaterThanOrEqual(35); // the clusters the two layers map as data
    expect(fresh.length).toBeLessThanOrEqual(6); // header, refcount table and block, L1, one L2 table
  });

  it('refuses a pair whose sizes differ (a resize between them), keeping both', async () => {
    const { store, file } = await fixture();
    qcow2(file('lower.qcow2'), SIZE);
    io(file('lower.qcow2'), ['write -P 0x22 0 1M']);
    qcow2(file('upper.qcow2'), 2 * SIZE, 'lower.qcow2');
    io(file('upper.qcow2'), ['write -P 0x33 9M 1M']);
    copyFileSync(file('upper.qcow2'), file('upper-copy.qcow2'));
    await store.seal(ref('lower.qcow2'));
    await store.seal(ref('upper.qcow2'));
    await expectCode(store.prepareMerge(ref('upper.qcow2'), ref('lower.qcow2'), { backingFile: undefined }), 'UNSUPPORTED', /differ in size/);
    await expectCode(store.prepareMerge(ref('upper.qcow2'), ref('upper-copy.qcow2'), { backingFile: undefined }), 'INVALID_ARGUMENT', /not sealed/);
    expect(await store.isSealed(ref('upper.qcow2'))).toBe(true);
  });
});
