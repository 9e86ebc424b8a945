/**
 * Multipart uploads through `strata serve` (its own process) killed with SIGKILL, several rounds
 * over the same data folder, each kill at another point:
 *   - during UploadPart: mid-body before any of the part's chunks reached the pool, and right after
 *     the part wrote its first pack;
 *   - during CompleteMultipartUpload: of parts that end mid-chunk (the object's tail is re-cut and
 *     written again) right after the first and the third pack it writes; of 64 KiB-aligned parts
 *     (completed by reference, one catalog transaction) at its first catalog write; and right
 *     after the acknowledgement.
 * The kill points are events (files appearing in the pool's chunk folder, the client's progress),
 * never times. After every restart:
 *   - every acknowledged object reads back with its ETag, its composite CRC32 and its bytes (MD5),
 *     and the keys listed are exactly those objects (plus an interrupted complete that is whole);
 *   - an interrupted complete is whole (ETag, checksum, bytes) with its upload gone, or absent with
 *     its upload listed and every part intact, and is then completed;
 *   - an upload killed in UploadPart is listed by ListMultipartUploads with its acknowledged parts
 *     only, and is resumed (the part sent again, completed) or aborted.
 * At the end, with the daemon stopped, the pool's chunk index holds exactly the references of the
 * objects listed, and after they are deleted a GC with no grace leaves no chunk and no pack.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readdirSync, watch, type FSWatcher } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { crc32 } from 'node:zlib';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  ListPartsCommand,
  S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import { LevelCatalogStore } from '../../src/meta/level-catalog.js';
import { DedupChunkRepository } from '../../src/store/dedup/dedup-repository.js';
import { LocalChunkStore, LOCAL_CHUNK_TEMP_FOLDER } from '../../src/store/local-chunk-store.js';
import { totalReferences } from '../support/object-model.js';
import { assertBuilt, startDaemon, useDaemon } from './harness.js';

assertBuilt();

const MiB = 1024 * 1024;
const CHUNK_BYTES = 64 * 1024;
const BUCKET = 'crash';
const POOL = 'default';

type KillPoint = 'part-mid-body' | 'part-after-pack' | 'complete-recut-pack-1' | 'complete-recut-pack-3' | 'complete-aligned-sent' | 'complete-after-ack';
const KILL_POINTS: readonly KillPoint[] = ['part-mid-body', 'complete-recut-pack-1', 'part-after-pack', 'complete-aligned-sent', 'complete-recut-pack-3', 'complete-after-ack'];

interface Expected {
  readonly etag: string;
  readonly checksum: string;
  readonly md5: string;
  readonly sizeBytes: number;
}

function md5(data: Uint8Array): Buffer {
  return createHash('md5').update(data).digest();
}

function crc32Bytes(data: Uint8Array): Buffer {
  const out = Buffer.alloc(4);
  out.writeUInt32BE(crc32(data) >>> 0);
  return out;
}

/** What S3 (and Strata) answer for a completed upload: ETag md5-of-md5s-N, CRC32 of the part CRC32s -N. */
function expectedOf(parts: readonly Buffer[]): Expected {
  return {
    etag: `"${md5(Buffer.concat(parts.map(md5))).toString('hex')}-${parts.length}"`,
    checksum: `${crc32Bytes(Buffer.concat(parts.map(crc32Bytes))).toString('base64')}-${parts.length}`,
    md5: md5(Buffer.concat(parts)).toString('hex'),
    sizeBytes: parts.reduce((sum, p) => sum + p.length, 0),
  };
}

/** Counts what happens in a folder of the daemon's (pack files made in the pool's chunk folder, catalog writes). */
class FolderEvents {
  private count = 0;
  private waiters: { at: number; resolve: () => void }[] = [];
  private readonly watcher: FSWatcher;

  constructor(folder: string, counts: (name: string) => boolean) {
    this.watcher = watch(folder, { recursive: true }, (_event, name) => {
      if (name === null || !counts(name)) return;
      this.count++;
      for (const waiter of this.waiters.filter((w) => this.count >= w.at)) waiter.resolve();
      this.waiters = this.waiters.filter((w) => this.count < w.at);
    });
  }

  /** Resolves once `n` more events have happened from now. */
  after(n: number): Promise<void> {
    const at = this.count + n;
    return new Promise((resolve) => this.waiters.push({ at, resolve }));
  }

  close(): void {
    this.watcher.close();
  }
}

/** A body that feeds `piecesBeforeStall` pieces of 1 MiB, then nothing (the kill ends it). */
function stallingBody(piecesBeforeStall: number): { body: Readable; fed: Promise<void> } {
  let fed = 0;
  let done!: () => void;
  const fedAll = new Promise<void>((resolve) => (done = resolve));
  const body = new Readable({
    read() {
      if (fed < piecesBeforeStall) {
        fed++;
        this.push(randomBytes(MiB));
        if (fed === piecesBeforeStall) done();
      }
    },
  });
  return { body, fed: fedAll };
}

describe('multipart uploads through strata serve killed with SIGKILL', () => {
  const suite = useDaemon();
  let key: { id: string; secret: string };

  function client(): S3Client {
    return new S3Client({ endpoint: suite.d.s3Url as string, region: 'us-east-1', forcePathStyle: true, maxAttempts: 1, credentials: { accessKeyId: key.id, secretAccessKey: key.secret } });
  }
  const chunkFolder = (): string => path.join(suite.d.dataDir, 'chunks', POOL);

  async function restart(): Promise<void> {
    suite.d = await startDaemon(suite.d.dataDir, { args: ['--data-dir', suite.d.dataDir, '--listen', '127.0.0.1:0'], replaceArgs: true });
  }

  async function uploadParts(s3: S3Client, objectKey: string, parts: readonly Buffer[]): Promise<string> {
    const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket: BUCKET, Key: objectKey, ChecksumAlgorithm: 'CRC32' }));
    for (const [i, body] of parts.entries()) {
      const part = await s3.send(new UploadPartCommand({ Bucket: BUCKET, Key: objectKey, UploadId, PartNumber: i + 1, Body: body, ChecksumAlgorithm: 'CRC32' }));
      expect(part.ETag).toBe(`"${md5(body).toString('hex')}"`);
    }
    return UploadId!;
  }

  function complete(s3: S3Client, objectKey: string, uploadId: string, parts: readonly Buffer[]) {
    return s3.send(
      new CompleteMultipartUploadCommand({
        Bucket: BUCKET,
        Key: objectKey,
        UploadId: uploadId,
        MultipartUpload: { Parts: parts.map((p, i) => ({ PartNumber: i + 1, ETag: `"${md5(p).toString('hex')}"`, ChecksumCRC32: crc32Bytes(p).toString('base64') })) },
      }),
    );
  }

  async function readBack(s3: S3Client, objectKey: string): Promise<Expected> {
    const got = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: objectKey, ChecksumMode: 'ENABLED' }));
    const bytes = await got.Body!.transformToByteArray();
    return { etag: got.ETag!, checksum: got.ChecksumCRC32!, md5: md5(bytes).toString('hex'), sizeBytes: bytes.length };
  }

  async function listedKeys(s3: S3Client): Promise<string[]> {
    const keys: string[] = [];
    let token: string | undefined;
    do {
      const page = await s3.send(new ListObjectsV2Command({ Bucket: BUCKET, ...(token === undefined ? {} : { ContinuationToken: token }) }));
      keys.push(...(page.Contents ?? []).map((c) => c.Key!));
      token = page.NextContinuationToken;
    } while (token !== undefined);
    return keys.sort();
  }

  async function uploadsListed(s3: S3Client): Promise<Map<string, string>> {
    const uploads = (await s3.send(new ListMultipartUploadsCommand({ Bucket: BUCKET }))).Uploads ?? [];
    return new Map(uploads.map((u) => [u.UploadId!, u.Key!]));
  }

  it('acknowledged objects survive every kill; an interrupted complete is whole or absent; uploads resume or abort; nothing leaks', { timeout: 600_000 }, async () => {
    suite.d.cliOk(['user', 'create', 'alice']);
    key = suite.d.json<{ id: string; secret: string }>(['user', 'key', 'create', 'alice']);
    await client().send(new CreateBucketCommand({ Bucket: BUCKET }));
    const acked = new Map<string, Expected>();
    const outcomes: string[] = [];

    for (const [round, point] of KILL_POINTS.entries()) {
      let s3 = client();
      // An object acknowledged before the kill: it must read back after every restart.
      const donePartsBefore = [randomBytes(5 * MiB), randomBytes(1000)];
      const doneKey = `done-${round}`;
      const doneUpload = await uploadParts(s3, doneKey, donePartsBefore);
      const done = await complete(s3, doneKey, doneUpload, donePartsBefore);
      acked.set(doneKey, { ...expectedOf(donePartsBefore), etag: done.ETag!, checksum: done.ChecksumCRC32! });
      expect(done.ETag).toBe(expectedOf(donePartsBefore).etag);
      expect(done.ChecksumCRC32).toBe(expectedOf(donePartsBefore).checksum);

      const events = new FolderEvents(chunkFolder(), (name) => name.startsWith(LOCAL_CHUNK_TEMP_FOLDER));
      const catalogEvents = new FolderEvents(path.join(suite.d.dataDir, 'catalog'), () => true);
      const objectKey = `round-${round}`;
      let interrupted: { uploadId: string; parts: Buffer[]; killedPart?: number } | undefined;
      try {
        if (point === 'part-mid-body' || point === 'part-after-pack') {
          const first = randomBytes(5 * MiB);
          const uploadId = await uploadParts(s3, objectKey, [first]);
          const { body, fed } = stallingBody(point === 'part-mid-body' ? 2 : 6);
          const sent = s3.send(new UploadPartCommand({ Bucket: BUCKET, Key: objectKey, UploadId: uploadId, PartNumber: 2, Body: body, ContentLength: 8 * MiB, ChecksumAlgorithm: 'CRC32' })).then(
            () => 'stored',
            () => 'failed',
          );
          // Mid-body: 2 MiB fed (less than one 4 MiB step); after a pack: the part's first step wrote one.
          await (point === 'part-mid-body' ? fed : Promise.all([fed, events.after(1)]));
          await suite.d.kill();
          expect(await sent).toBe('failed');
          interrupted = { uploadId, parts: [first], killedPart: 2 };
        } else {
          const aligned = point === 'complete-aligned-sent';
          // Parts ending mid-chunk make the complete re-cut and write every byte after the first part.
          const parts = aligned ? [randomBytes(5 * MiB), randomBytes(5 * MiB), randomBytes(1000)] : [0, 1, 2, 3].map(() => randomBytes(5 * MiB + 100));
          const uploadId = await uploadParts(s3, objectKey, parts);
          // Re-cut: the first or third pack it writes; by reference: its first catalog write.
          const killPoint = aligned ? catalogEvents.after(1) : events.after(point === 'complete-recut-pack-3' ? 3 : 1);
          const completing = complete(s3, objectKey, uploadId, parts).then(
            (r) => ({ etag: r.ETag, checksum: r.ChecksumCRC32 }),
            () => undefined,
          );
          if (point === 'complete-after-ack') {
            const answer = await completing;
            expect(answer?.etag).toBe(expectedOf(parts).etag);
            acked.set(objectKey, expectedOf(parts));
          } else {
            await killPoint;
          }
          await suite.d.kill();
          const answer = await completing;
          // An answer that arrived before the kill is an acknowledgement like any other.
          if (answer !== undefined) acked.set(objectKey, expectedOf(parts));
          interrupted = { uploadId, parts };
        }
      } finally {
        events.close();
        catalogEvents.close();
      }

      await restart();
      s3 = client();
      const uploads = await uploadsListed(s3);
      const listed = await listedKeys(s3);
      if (interrupted.killedPart !== undefined) {
        // Killed in UploadPart: the upload is listed with its acknowledged part only.
        expect(uploads.get(interrupted.uploadId), `round ${round} ${point}: the upload is listed`).toBe(objectKey);
        const parts = (await s3.send(new ListPartsCommand({ Bucket: BUCKET, Key: objectKey, UploadId: interrupted.uploadId }))).Parts ?? [];
        expect(parts.map((p) => [p.PartNumber, p.Size, p.ETag])).toEqual([[1, 5 * MiB, `"${md5(interrupted.parts[0]!).toString('hex')}"`]]);
        expect(listed).not.toContain(objectKey);
        if (round % 4 === 0) {
          // Resumed: the part sent again, then completed.
          const last = randomBytes(3 * MiB);
          await s3.send(new UploadPartCommand({ Bucket: BUCKET, Key: objectKey, UploadId: interrupted.uploadId, PartNumber: 2, Body: last, ChecksumAlgorithm: 'CRC32' }));
          const all = [...interrupted.parts, last];
          expect((await complete(s3, objectKey, interrupted.uploadId, all)).ETag).toBe(expectedOf(all).etag);
          acked.set(objectKey, expectedOf(all));
          outcomes.push(`${point}: resumed`);
        } else {
          await s3.send(new AbortMultipartUploadCommand({ Bucket: BUCKET, Key: objectKey, UploadId: interrupted.uploadId }));
          expect((await uploadsListed(s3)).has(interrupted.uploadId)).toBe(false);
          outcomes.push(`${point}: aborted`);
        }
      } else if (listed.includes(objectKey)) {
        // The complete committed before the kill: whole, and its upload gone.
        expect(await readBack(s3, objectKey), `round ${round} ${point}: whole`).toEqual(expectedOf(interrupted.parts));
        expect(uploads.has(interrupted.uploadId)).toBe(false);
        acked.set(objectKey, expectedOf(interrupted.parts));
        outcomes.push(`${point}: whole`);
      } else {
        // Not committed: absent, its upload still there with every part, and it completes now.
        expect(acked.has(objectKey), `round ${round} ${point}: an acknowledged complete is listed`).toBe(false);
        expect(uploads.get(interrupted.uploadId)).toBe(objectKey);
        const parts = (await s3.send(new ListPartsCommand({ Bucket: BUCKET, Key: objectKey, UploadId: interrupted.uploadId }))).Parts ?? [];
        expect(parts.map((p) => p.ETag)).toEqual(interrupted.parts.map((p) => `"${md5(p).toString('hex')}"`));
        const finished = await complete(s3, objectKey, interrupted.uploadId, interrupted.parts);
        expect(finished.ETag).toBe(expectedOf(interrupted.parts).etag);
        acked.set(objectKey, expectedOf(interrupted.parts));
        outcomes.push(`${point}: absent, completed after the restart`);
      }

      expect(await listedKeys(s3), `round ${round} ${point}: the keys listed`).toEqual([...acked.keys()].sort());
      for (const [k, expected] of acked) expect(await readBack(s3, k), `round ${round} ${point}: ${k}`).toEqual(expected);
      expect(await uploadsListed(s3), `round ${round}: no upload left`).toEqual(new Map());
    }
    // The kills landed where they were meant to: some completes were cut before their commit.
    expect(outcomes.filter((o) => o.includes('absent')).length, outcomes.join('; ')).toBeGreaterThanOrEqual(1);
    expect(outcomes.filter((o) => o.includes('resumed') || o.includes('aborted'))).toHaveLength(2);

    // With the daemon stopped: the pool's references are exactly the chunks of the objects listed.
    const expectedChunks = [...acked.values()].reduce((sum, e) => sum + Math.ceil(e.sizeBytes / CHUNK_BYTES), 0);
    await suite.d.stop();
    await inPool(async (catalog, repository) => {
      expect(await totalReferences(catalog, POOL)).toBe(expectedChunks);
      expect((await catalog.list('s3-put')).entries, 'no put left in the journal').toEqual([]);
      expect((await repository.gc({ graceMs: 0, nowMs: Date.now() + 1 })).damaged).toEqual([]);
      expect(await totalReferences(catalog, POOL)).toBe(expectedChunks);
      expect(packFiles(chunkFolder()).length, 'the packs of the objects').toBeGreaterThan(0);
    });

    // Every object deleted, then GC with no grace: no chunk and no pack is left.
    await restart();
    const s3 = client();
    for (const k of acked.keys()) await s3.send(new DeleteObjectCommand({ Bucket: BUCKET, Key: k }));
    expect(await listedKeys(s3)).toEqual([]);
    await suite.d.stop();
    await inPool(async (catalog, repository) => {
      expect(await totalReferences(catalog, POOL)).toBe(0);
      await repository.gc({ graceMs: 0, nowMs: Date.now() + 1 });
      expect(await totalReferences(catalog, POOL)).toBe(0);
      expect(packFiles(chunkFolder()), 'packs left after GC').toEqual([]);
    });
  });

  async function inPool(check: (catalog: LevelCatalogStore, repository: DedupChunkRepository) => Promise<void>): Promise<void> {
    const catalog = await LevelCatalogStore.open(path.join(suite.d.dataDir, 'catalog'));
    try {
      const repository = await DedupChunkRepository.open({ chunkStore: new LocalChunkStore(chunkFolder()), catalog, pool: POOL, readCacheBytes: 0 });
      await check(catalog, repository);
    } finally {
      await catalog.close();
    }
  }
});

/** Every file under the pool's chunk folder but its temporary folder. */
function packFiles(folder: string): string[] {
  if (!existsSync(folder)) return [];
  return readdirSync(folder, { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile() && !path.join(entry.parentPath, entry.name).includes(LOCAL_CHUNK_TEMP_FOLDER))
    .map((entry) => path.relative(folder, path.join(entry.parentPath, entry.name)));
}
