/**
 * The S3 endpoint of `strata serve` on a full disk: a PUT is refused with 507 InsufficientStorage
 * and a message naming the fix, at once (no SDK retries it, where a 503 would be retried into the
 * same refusal); the objects already stored still read back whole; once space is freed the same
 * PUT succeeds, with no restart. The disk is full for real: the data folder is on a small tmpfs
 * (root only; skipped where it cannot be mounted, never under CI).
 */
import { rmSync } from 'node:fs';
import path from 'node:path';
import { CreateBucketCommand, GetObjectCommand, PutObjectCommand, S3Client, S3ServiceException } from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import { SeededRandom } from '../../src/store/seeded-random.js';
import { fillUp } from '../support/fill-filesystem.js';
import { requireTool } from '../support/tools.js';
import { useFullDiskDaemon } from './full-disk-daemon.js';
import { assertBuilt } from './harness.js';

assertBuilt();

const MiB = 1024 * 1024;
const TMPFS_BYTES = 48 * MiB;

function random(seed: number, lengthBytes: number): Uint8Array {
  return new SeededRandom(seed).fill(new Uint8Array(lengthBytes));
}

describe.skipIf(!requireTool('mount', 'umount'))('S3 PUT into a full data folder', () => {
  const disk = useFullDiskDaemon(TMPFS_BYTES);

  it('is refused with 507 InsufficientStorage naming the fix, keeps what was stored, and succeeds once space is freed', async (ctx) => {
    const d = await disk.start(ctx);
    d.cliOk(['user', 'create', 'alice']);
    const key = d.json<{ id: string; secret: string }>(['user', 'key', 'create', 'alice']);
    const s3 = new S3Client({ endpoint: d.s3Url as string, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: key.id, secretAccessKey: key.secret } });
    await s3.send(new CreateBucketCommand({ Bucket: 'full' }));
    const kept = random(1, 256 * 1024);
    await s3.send(new PutObjectCommand({ Bucket: 'full', Key: 'kept', Body: kept }));

    const filler = path.join(disk.mnt, 'filler');
    fillUp(filler);
    const body = random(2, 4 * MiB);
    const refused = await s3.send(new PutObjectCommand({ Bucket: 'full', Key: 'late', Body: body })).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(refused).toBeInstanceOf(S3ServiceException);
    const e = refused as S3ServiceException;
    expect({ name: e.name, status: e.$metadata.httpStatusCode, attempts: e.$metadata.attempts }).toEqual({ name: 'InsufficientStorage', status: 507, attempts: 1 });
    expect(e.message).toMatch(/free space/);

    const got = await s3.send(new GetObjectCommand({ Bucket: 'full', Key: 'kept' }));
    expect(Buffer.compare(Buffer.from(await got.Body!.transformToByteArray()), kept)).toBe(0);

    rmSync(filler);
    await s3.send(new PutObjectCommand({ Bucket: 'full', Key: 'late', Body: body }));
    const late = await s3.send(new GetObjectCommand({ Bucket: 'full', Key: 'late' }));
    expect(Buffer.compare(Buffer.from(await late.Body!.transformToByteArray()), body)).toBe(0);
    s3.destroy();
  });
});
