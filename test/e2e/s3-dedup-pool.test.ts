/**
 * S3 buckets in a dedup pool, against `strata serve` with @aws-sdk/client-s3: a raw disk image (an
 * ext4 file system made by mkfs.ext4 from a folder of files) uploaded as an object and a volume
 * imported from the same file share their chunks, so the pool holds the image's data once
 * (`pool df`); the pool's scrub counts the objects' references (clean with objects present); deleting
 * both and `pool gc` give the space back. And a local pool's object chunks: `pool gc` reclaims a
 * deleted object's chunks once the grace period has passed, not before.
 */
import { createReadStream, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import {
  CreateBucketCommand, DeleteObjectCommand, GetObjectCommand, PutObjectCommand, S3Client,
} from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import type { PoolDfJson, PoolGcJson } from '../../src/api/rest/schemas.js';
import type { PoolScrubJson } from '../../src/api/rest/scrub-schemas.js';
import { run } from '../support/tools.js';
import type { JobJson } from '../../src/api/rest/schemas.js';
import { assertBuilt, patternBytes, qemuCompare, startDaemon, useDaemon, waitForSeals } from './harness.js';
import { s3Failure as failure } from '../support/s3-failure.js';

assertBuilt();

const MiB = 1024 * 1024;
const IMAGE_BYTES = 48 * MiB;

/** A realistic raw image: an ext4 file system holding files of odd sizes, some text, a few repeats. */
function makeExt4Image(folder: string, image: string): void {
  mkdirSync(folder, { recursive: true });
  for (let i = 0; i < 12; i++) writeFileSync(`${folder}/blob-${i}.bin`, patternBytes(MiB + i * 37_123, 1000 + i));
  writeFileSync(`${folder}/notes.txt`, 'strata keeps each chunk once\n'.repeat(40_000));
  writeFileSync(`${folder}/copy-of-blob-3.bin`, patternBytes(MiB + 3 * 37_123, 1003));
  mkdirSync(`${folder}/etc`);
  for (let i = 0; i < 50; i++) writeFileSync(`${folder}/etc/config-${i}.conf`, `name=${i}\nvalue=${'x'.repeat(i * 97)}\n`);
  const made = run('mkfs.ext4', ['-q', '-F', '-b', '4096', '-E', 'root_owner=0:0', '-d', folder, image, `${IMAGE_BYTES / 1024}k`], { timeoutMs: 60_000 });
  expect(made.code, made.stderr).toBe(0);
}

function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

describe('S3 objects in a dedup pool share chunks with volumes', () => {
  const suite = useDaemon();
  let s3: S3Client;

  it('a bucket in a dedup pool (LocationConstraint names the pool); an unknown one is refused', async () => {
    const d = suite.d;
    d.cliOk(['pool', 'create', 'dd', '--dedup']);
    d.cliOk(['user', 'create', 'alice']);
    const key = d.json<{ id: string; secret: string }>(['user', 'key', 'create', 'alice']);
    s3 = new S3Client({ endpoint: d.s3Url as string, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: key.id, secretAccessKey: key.secret } });
    await s3.send(new CreateBucketCommand({ Bucket: 'images', CreateBucketConfiguration: { LocationConstraint: 'dd' as never } }));
    const refused = await failure(s3.send(new CreateBucketCommand({ Bucket: 'nowhere', CreateBucketConfiguration: { LocationConstraint: 'no-such-pool' as never } })));
    expect(refused).toEqual({ name: 'InvalidArgument', status: 400 });
  });

  it('an image uploaded as an object and imported as a volume is stored once; scrub is clean; delete + gc return the space', async () => {
    const d = suite.d;
    const image = suite.file('disk.raw');
    makeExt4Image(suite.file('tree'), image);
    const empty = d.json<PoolDfJson>(['pool', 'df', 'dd']);
    expect(empty.physicalBytes).toBe(0);

    await s3.send(new PutObjectCommand({ Bucket: 'images', Key: 'disk.raw', Body: createReadStream(image), ContentLength: statSync(image).size }));
    const withObject = d.json<PoolDfJson>(['pool', 'df', 'dd']);
    const oneCopy = withObject.physicalBytes;
    // The file system's data (~14 MiB of files, its metadata), zero chunks not stored.
    expect(oneCopy).toBeGreaterThan(12 * MiB);
    expect(oneCopy).toBeLessThan(IMAGE_BYTES / 2);

    // A raw import writes its base sealed: no seal job follows.
    d.cliOk(['volume', 'import', image, 'dd/vm']);
    expect(waitForSeals(d, 'dd')).toEqual([]);
    const both = d.json<PoolDfJson>(['pool', 'df', 'dd']);
    // The import's sealed layer adds only its qcow2 metadata clusters: the data chunks are the object's.
    expect(both.physicalBytes).toBeGreaterThan(oneCopy);
    expect(both.physicalBytes).toBeLessThan(oneCopy * 1.1);
    expect(both.dedupRatio).toBeGreaterThan(1.8);

    // Both read back as the image.
    const got = await s3.send(new GetObjectCommand({ Bucket: 'images', Key: 'disk.raw' }));
    const original = readFileSync(image);
    expect(sha256(await got.Body!.transformToByteArray())).toBe(sha256(original));
    d.cliOk(['volume', 'export-nbd', 'dd/vm']);
    const nbd = `nbd://${d.nbdAddress}/dd/vm`;
    const compared = qemuCompare(nbd, image);
    expect(compared.code, compared.stdout + compared.stderr).toBe(0);
    d.cliOk(['volume', 'unexport-nbd', 'dd/vm']);

    // The scrub counts the object's references beside the sealed layer's: nothing leaked, nothing low.
    const scrub = d.json<PoolScrubJson>(['pool', 'scrub', 'dd', '--repair']);
    expect(scrub.report.problemCount, JSON.stringify(scrub.report.problems)).toBe(0);
    expect(scrub.report.clean).toBe(true);

    // The volume goes: the object keeps every data chunk (gc deletes only the layer's metadata).
    d.cliOk(['volume', 'delete', 'dd/vm', '--now']);
    d.json<PoolGcJson>(['pool', 'gc', 'dd', '--grace', '0']);
    const objectOnly = d.json<PoolDfJson>(['pool', 'df', 'dd']);
    expect(objectOnly.physicalBytes).toBeGreaterThan(oneCopy * 0.9);
    const again = await s3.send(new GetObjectCommand({ Bucket: 'images', Key: 'disk.raw' }));
    expect(sha256(await again.Body!.transformToByteArray())).toBe(sha256(original));
    expect(d.json<PoolScrubJson>(['pool', 'scrub', 'dd']).report.clean).toBe(true);
    // The text report names what holds the chunks (here only the object remains), not "sealed layers".
    expect(d.cliOk(['pool', 'scrub', 'dd', '--no-progress']).stdout).toMatch(/^chunk holders\s+1 layers and objects \(\d+ chunk references\)$/m);
    // A pool whose chunks objects still use is not deleted under them (its bucket names it).
    d.cliFails(['pool', 'delete', 'dd'], 4, /holds 1 S3 bucket \(images\).*strata bucket list.*\[BUSY\]/);

    // The object goes too: gc returns the space.
    await s3.send(new DeleteObjectCommand({ Bucket: 'images', Key: 'disk.raw' }));
    const gc = d.json<PoolGcJson>(['pool', 'gc', 'dd', '--grace', '0']);
    expect(gc.bytesDeleted).toBeGreaterThan(oneCopy * 0.9);
    expect(d.json<PoolDfJson>(['pool', 'df', 'dd'])).toMatchObject({ packBytes: 0, uniqueChunkCount: 0, physicalBytes: 0 });
  });

  it("a daemon killed mid-seal restarts with the S3 endpoint off: the start-up audit keeps the objects' references", async () => {
    const source = suite.file('seed.raw');
    const data = Buffer.concat([patternBytes(16 * MiB, 4242), Buffer.alloc(4 * MiB)]);
    await s3.send(new PutObjectCommand({ Bucket: 'images', Key: 'seed.raw', Body: data }));
    // The volume holds the object's data and more of its own, so its seal runs long enough to be cut
    // (96 MiB of its own was too short once pack writes got cheaper: the seal ended before the kill).
    writeFileSync(source, Buffer.concat([data, patternBytes(192 * MiB, 4343)]));
    // As qcow2: a raw import would write its base sealed (no seal job to cut); a qcow2 one is sealed after.
    const qcow2 = suite.file('seed.qcow2');
    expect(run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', source, qcow2]).code).toBe(0);
    const referencedBefore = suite.d.json<PoolDfJson>(['pool', 'df', 'dd']).referencedChunkBytes;
    suite.d.cliOk(['volume', 'import', qcow2, 'dd/seeded']);
    // Kill while the import's seal runs: its intent is left, so recovery audits the pool (repair on)
    // with the seal's references to the object's chunks added and no manifest holding them.
    const seal = suite.d.json<JobJson[]>(['job', 'list']).find((j) => j.kind === 'seal' && j.target.startsWith('dd/seeded'));
    expect(seal).toBeDefined();
    // Killed once the seal has committed references of its own (the pool's referenced bytes grew):
    // its progress counts bytes read, which run ahead of the first batch's commit, and a kill
    // before that commit leaves nothing to repair.
    let at: JobJson;
    let referenced = referencedBefore;
    // The job's state is read after the pool's bytes: a state read first could be stale by the time
    // the bytes showed the commit (a seal that ended meanwhile has nothing left to repair).
    do {
      referenced = (await suite.d.apiJson<PoolDfJson>('GET', '/v1/pools/dd/df')).referencedChunkBytes;
      at = await suite.d.apiJson<JobJson>('GET', `/v1/jobs/${seal!.id}`);
    } while (at.state === 'queued' || (at.state === 'running' && referenced <= referencedBefore));
    await suite.d.kill();
    expect(at.state, 'the seal was still running when the daemon was killed').toBe('running');
    const dataDir = suite.d.dataDir;
    suite.d = await startDaemon(dataDir, { env: { STRATA_S3_LISTEN: 'off' } });
    // The volume layer's recovery line (the S3 object model logs one of its own after it): the seal's
    // references without a manifest were dropped, the object's kept (checked below).
    const recoveryLine = /recovered .*intentsRolledBack=(\d+) .*problems=(\d+) .*referencesRepaired=(\d+)/;
    const recovered = suite.d.logs().split('\n').map((line) => recoveryLine.exec(line)).filter((match) => match !== null).pop();
    expect(recovered?.slice(1), suite.d.logs()).toEqual(['1', '0', '1']);
    expect(suite.d.s3Url).toBeUndefined();
    waitForSeals(suite.d, 'dd');
    suite.d.cliOk(['volume', 'delete', 'dd/seeded', '--now']);
    suite.d.json<PoolGcJson>(['pool', 'gc', 'dd', '--grace', '0']);
    await suite.d.stop();

    suite.d = await startDaemon(dataDir);
    const key = suite.d.json<{ id: string; secret: string }>(['user', 'key', 'create', 'alice']);
    s3 = new S3Client({ endpoint: suite.d.s3Url as string, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: key.id, secretAccessKey: key.secret } });
    const got = await s3.send(new GetObjectCommand({ Bucket: 'images', Key: 'seed.raw' }));
    expect(sha256(await got.Body!.transformToByteArray())).toBe(sha256(data));
    const scrub = suite.d.json<PoolScrubJson>(['pool', 'scrub', 'dd']);
    expect(scrub.report.problemCount, JSON.stringify(scrub.report.problems)).toBe(0);
    await s3.send(new DeleteObjectCommand({ Bucket: 'images', Key: 'seed.raw' }));
    suite.d.json<PoolGcJson>(['pool', 'gc', 'dd', '--grace', '0']);
    expect(suite.d.json<PoolDfJson>(['pool', 'df', 'dd'])).toMatchObject({ packBytes: 0, uniqueChunkCount: 0 });
  });

  it("a local pool's object chunks: pool gc keeps them through the grace period, then reclaims them", async () => {
    const d = suite.d;
    await s3.send(new CreateBucketCommand({ Bucket: 'scratch' }));
    const data = patternBytes(6 * MiB, 77);
    await s3.send(new PutObjectCommand({ Bucket: 'scratch', Key: 'a.bin', Body: data }));
    const held = d.json<PoolDfJson>(['pool', 'df', 'default']);
    expect(held).toMatchObject({ kind: 'local', uniqueChunkCount: 96 });
    expect(held.packBytes).toBeGreaterThan(data.length);
    // Nothing to collect while the object lives, even with no grace.
    expect(d.json<PoolGcJson>(['pool', 'gc', 'default', '--grace', '0']).bytesDeleted).toBe(0);

    await s3.send(new DeleteObjectCommand({ Bucket: 'scratch', Key: 'a.bin' }));
    // Within the default grace period (1 hour) the chunks stay.
    expect(d.json<PoolGcJson>(['pool', 'gc', 'default']).bytesDeleted).toBe(0);
    expect(d.json<PoolDfJson>(['pool', 'df', 'default']).packBytes).toBe(held.packBytes);
    const gc = d.json<PoolGcJson>(['pool', 'gc', 'default', '--grace', '0']);
    expect(gc.bytesDeleted).toBeGreaterThan(data.length);
    expect(d.json<PoolDfJson>(['pool', 'df', 'default'])).toMatchObject({ packBytes: 0, uniqueChunkCount: 0 });
    // Its scrub counts the objects' references too.
    await s3.send(new PutObjectCommand({ Bucket: 'scratch', Key: 'b.bin', Body: data }));
    expect(d.json<PoolScrubJson>(['pool', 'scrub', 'default']).report).toMatchObject({ clean: true, problemCount: 0 });
  });
});
