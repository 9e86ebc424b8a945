/**
 * PoolRoutingLayerStore (local pools to the local store, dedup pools to their ChunkedLayerStore),
 * sealing and unsealing through it, the reference audit, and the dedup pool configuration checks.
 * Real stores throughout: LocalLayerStore and LocalChunkStore in temporary folders, the real
 * DedupChunkRepository with its index in a MemoryCatalogStore.
 */
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { MemoryCatalogStore } from '../../src/meta/memory-catalog.js';
import { localDedupPoolOpener } from '../../src/store/local-dedup-pool.js';
import { LocalLayerStore } from '../../src/store/local-layer-store.js';
import { PoolRoutingLayerStore } from '../../src/store/pool-routing-layer-store.js';
import { checkDedupPoolConfig } from '../../src/volume/pool-config.js';
import { formatDurationHuman, parseDurationMs } from '../../src/core/units.js';
import { expectCode } from '../support/expect-error.js';
import { tempDir } from '../support/tmp.js';

const CHUNK = 64 * 1024;

function routed() {
  const layersRoot = tempDir();
  const chunksRoot = tempDir();
  const catalog = new MemoryCatalogStore();
  const local = new LocalLayerStore(layersRoot);
  const store = new PoolRoutingLayerStore(local, localDedupPoolOpener({ chunksRoot, catalog, local }));
  // Its pools' chunk stores keep packs open: closed with the test, not left to the GC.
  onTestFinished(() => store.close());
  return { store, layersRoot, chunksRoot, catalog };
}

/** A layer file of `chunks` chunks: chunk i holds byte value pattern[i] (0: zeroes). */
async function writeLayer(store: PoolRoutingLayerStore, ref: { pool: string; fileName: string }, pattern: number[]): Promise<Buffer> {
  const bytes = Buffer.concat(pattern.map((v) => Buffer.alloc(CHUNK, v)));
  const file = await store.create(ref);
  await file.pwrite(bytes, 0);
  await file.flush();
  await file.close();
  return bytes;
}

async function readAll(store: PoolRoutingLayerStore, ref: { pool: string; fileName: string }, length: number): Promise<Buffer> {
  const file = await store.open(ref, { readOnly: true });
  const out = Buffer.alloc(length);
  await file.pread(out, 0);
  await file.close();
  return out;
}

describe('PoolRoutingLayerStore', () => {
  it('keeps a local pool byte for byte a folder of files, and seals only in dedup pools', async () => {
    const { store, layersRoot, chunksRoot } = routed();
    await store.createPool('plain');
    await store.attachPool('dd', { hash: 'blake3' });
    await store.attachPool('dd', { hash: 'blake3' }); // idempotent
    await store.createPool('dd');
    expect(store.isChunkedPool('dd')).toBe(true);
    expect(store.isChunkedPool('plain')).toBe(false);
    const plain = { pool: 'plain', fileName: '00000000000000a1.qcow2' };
    const data = await writeLayer(store, plain, [1, 2]);
    expect(readdirSync(path.join(layersRoot, 'plain'))).toEqual([plain.fileName]);
    await expectCode(store.seal(plain), 'INVALID_ARGUMENT');
    expect(await store.isSealed(plain)).toBe(false);
    expect(await readAll(store, plain, data.length)).toEqual(data);
    expect(existsSync(path.join(chunksRoot, 'plain'))).toBe(false);
  });

  it('seals a layer (local file gone, reads the same, shared chunks stored once), unseals it, and removes it', async () => {
    const { store, layersRoot } = routed();
    await store.attachPool('dd', { hash: 'blake3' });
    await store.createPool('dd');
    const a = { pool: 'dd', fileName: '00000000000000a1.qcow2' };
    const b = { pool: 'dd', fileName: '00000000000000b1.qcow2' };
    const dataA = await writeLayer(store, a, [5, 0, 6, 5]);
    const dataB = await writeLayer(store, b, [6, 5, 7, 0]);
    const progress: number[] = [];
    await store.seal(a, { onProgress: (done) => progress.push(done) });
    await store.seal(b);
    expect(progress.at(-1)).toBe(dataA.length);
    expect(readdirSync(path.join(layersRoot, 'dd'))).toEqual([]);
    expect(await store.list('dd')).toEqual([a.fileName, b.fileName]);
    expect(await readAll(store, a, dataA.length)).toEqual(dataA);
    expect(await readAll(store, b, dataB.length)).toEqual(dataB);
    await expectCode(store.open(a, { readOnly: false }), 'READ_ONLY');
    const usage = await store.usage('dd');
    expect(usage).toMatchObject({ uniqueChunkCount: 3, uniqueChunkBytes: 3 * CHUNK, referencedChunkBytes: 6 * CHUNK, remoteBytes: 0 });
    expect(usage.localBytes).toBe(usage.packBytes);
    expect(await store.audit('dd', { repair: false })).toMatchObject({ leakedReferences: 0, missingReferences: 0 });
    const scrubbed: number[] = [];
    const scrub = await store.scrub('dd', { repair: false, onProgress: (doneBytes) => scrubbed.push(doneBytes) });
    expect(scrub).toMatchObject({ clean: true, problemCount: 0, holders: 2, references: 6, chunks: 3, packBytes: usage.packBytes });
    expect(scrubbed.at(-1)).toBe(usage.packBytes); // the pack bytes read, for a job's progress
    await expectCode(store.scrub('plain', { repair: false }), 'INVALID_ARGUMENT');

    await store.unseal(a);
    expect(await store.isSealed(a)).toBe(false);
    const writable = await store.open(a, { readOnly: false });
    await writable.close();
    expect(await readAll(store, a, dataA.length)).toEqual(dataA);
    expect((await store.usage('dd')).referencedChunkBytes).toBe(3 * CHUNK);
    expect(await store.remove(b)).toBe(true);
    expect(await store.remove(a)).toBe(true);
    expect(await store.usage('dd')).toMatchObject({ uniqueChunkCount: 0, referencedChunkBytes: 0 });
    const gc = await store.gc('dd', { graceMs: 0 });
    expect(gc.bytesDeleted).toBeGreaterThan(0);
    expect((await store.usage('dd')).packBytes).toBe(0);
  });

  it('finds and drops references no manifest holds (what a seal killed before its manifest leaves)', async () => {
    const { store, chunksRoot, catalog } = routed();
    await store.attachPool('dd', { hash: 'blake3' });
    await store.createPool('dd');
    const a = { pool: 'dd', fileName: '00000000000000a1.qcow2' };
    await writeLayer(store, a, [9, 8]);
    await store.seal(a);
    // A second opener of the same pool (another process after a crash) adds references no manifest
    // will ever name: a seal killed between its addReferences and its manifest.
    const other = new PoolRoutingLayerStore(new LocalLayerStore(tempDir()), localDedupPoolOpener({ chunksRoot, catalog, local: new LocalLayerStore(tempDir()) }));
    onTestFinished(() => other.close());
    await other.attachPool('dd', { hash: 'blake3' });
    await other.createPool('dd');
    const orphan = { pool: 'dd', fileName: '00000000000000c1.qcow2' };
    await writeLayer(other, orphan, [9, 7]);
    await other.seal(orphan);
    // Its manifest is lost (deleted by hand here); the two references stay counted.
    const manifest = path.join(chunksRoot, 'dd', 'layer-manifests', 'dd', orphan.fileName);
    (await import('node:fs')).rmSync(manifest);
    expect(await store.audit('dd', { repair: false })).toMatchObject({ leakedReferences: 2, missingReferences: 0, repaired: false });
    expect(await store.audit('dd', { repair: true })).toMatchObject({ leakedReferences: 2, repaired: true });
    expect(await store.audit('dd', { repair: false })).toMatchObject({ leakedReferences: 0, missingReferences: 0 });
    expect((await store.usage('dd')).referencedChunkBytes).toBe(2 * CHUNK);
  });

  it('refuses to open a pool with another hash than the one it was made with', async () => {
    const { store, chunksRoot, catalog } = routed();
    await store.attachPool('dd', { hash: 'blake3' });
    const again = new PoolRoutingLayerStore(new LocalLayerStore(tempDir()), localDedupPoolOpener({ chunksRoot, catalog, local: new LocalLayerStore(tempDir()) }));
    await expectCode(again.attachPool('dd', { hash: 'xxh128' }), 'INVALID_ARGUMENT');
  });
});

describe('dedup pool configuration', () => {
  const ok = (request: Parameters<typeof checkDedupPoolConfig>[1]) => checkDedupPoolConfig('pool-1', request);
  const refused = (request: Parameters<typeof checkDedupPoolConfig>[1], message: RegExp, pool = 'pool-1') => {
    let caught: unknown;
    try {
      checkDedupPoolConfig(pool, request);
    } catch (err) {
      caught = err;
    }
    expect(caught).toMatchObject({ code: 'INVALID_ARGUMENT' });
    expect((caught as Error).message).toMatch(message);
  };

  it('takes the default hash, tiers on S3 or a folder, and normalises their URLs', () => {
    expect(ok({})).toEqual({ hash: 'blake3' });
    expect(ok({ hash: 'xxh128' })).toEqual({ hash: 'xxh128' });
    expect(ok({ tier: { url: 's3://my.bucket-1/a/b/', s3Region: 'eu-west-1', coolingMs: 86_400_000 } })).toEqual({
      hash: 'blake3',
      tier: { url: 's3://my.bucket-1/a/b', s3Region: 'eu-west-1', coolingMs: 86_400_000 },
    });
    expect(ok({ tier: { url: 's3://bkt', s3Endpoint: 'http://127.0.0.1:9000/' } }).tier).toEqual({ url: 's3://bkt', s3Endpoint: 'http://127.0.0.1:9000' });
    expect(ok({ tier: { url: 'file:///srv/cold/' } }).tier).toEqual({ url: 'file:///srv/cold' });
  });

  it('refuses bad settings with a message naming the fix, and never repeats credentials', () => {
    refused({}, /lower-case letters, digits and dashes/, 'Pool_1');
    refused({ hash: 'sha1' }, /unknown chunk hash 'sha1': use blake3 or xxh128/);
    refused({ tier: { url: 'not a url' } }, /s3:\/\/BUCKET\/PREFIX or file:\/\/\/absolute\/path/);
    refused({ tier: { url: 'http://x/y', s3Region: 'r' } }, /scheme 'http:'/);
    refused({ tier: { url: 's3://ab/p', s3Region: 'us-east-1' } }, /not an S3 bucket name/);
    refused({ tier: { url: 's3://bkt:9000/p', s3Region: 'us-east-1' } }, /--s3-endpoint/);
    refused({ tier: { url: 's3://bkt/a/../b', s3Region: 'us-east-1' } }, /'\.' or '\.\.' parts/);
    refused({ tier: { url: 'file:///srv/./x' } }, /'\.' or '\.\.' parts/);
    refused({ tier: { url: 's3://bkt/p' } }, /needs --s3-region .* or --s3-endpoint/);
    refused({ tier: { url: 's3://bkt/p', s3Region: 'US East' } }, /not an S3 region name/);
    refused({ tier: { url: 's3://bkt/p', s3Endpoint: 'ftp://host' } }, /http:\/\/ or https:\/\//);
    refused({ tier: { url: 's3://bkt/p', s3Endpoint: 'http://h:1/bucket' } }, /server only/);
    refused({ tier: { url: 's3://bkt/p', s3Region: 'r', coolingMs: 1000 } }, /at least 1 minute/);
    refused({ tier: { url: 'file://host/x' } }, /local folder/);
    refused({ tier: { url: 'file:///' } }, /folder of its own/);
    refused({ tier: { url: 'file:///x', s3Region: 'r' } }, /drop them/);
    for (const tier of [{ url: 's3://AKIA:SECRETKEY@bkt/p', s3Region: 'r' }, { url: 's3://bkt/p', s3Endpoint: 'http://AKIA:SECRETKEY@h:9000' }]) {
      let message = '';
      try {
        ok({ tier });
      } catch (err) {
        message = (err as Error).message;
      }
      expect(message).toMatch(/carries credentials.*AWS default chain/);
      expect(message).not.toMatch(/SECRETKEY/);
    }
  });

  it('reads and prints durations', () => {
    expect(parseDurationMs('0')).toBe(0);
    expect(parseDurationMs('1500ms')).toBe(1500);
    expect(parseDurationMs('30s')).toBe(30_000);
    expect(parseDurationMs('7d')).toBe(7 * 86_400_000);
    for (const bad of ['', '5', '1w', '-1s', '1.5h']) expect(parseDurationMs(bad)).toBeUndefined();
    expect(formatDurationHuman(7 * 86_400_000)).toBe('7d');
    expect(formatDurationHuman(90 * 60_000)).toBe('90m');
    expect(formatDurationHuman(1500)).toBe('1500ms');
    expect(formatDurationHuman(0)).toBe('0');
  });
});
