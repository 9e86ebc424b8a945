/**
 * The S3 endpoint's per-operation metrics on the daemon's /metrics, against `strata serve` with
 * @aws-sdk/client-s3 (keep-alive connections, so bytes are counted per request on a shared
 * socket): requests by operation and status class, bytes received and sent, latency histograms.
 */
import { CreateBucketCommand, GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import { s3Failure as failure } from '../support/s3-failure.js';
import { assertBuilt, patternBytes, useDaemon } from './harness.js';

assertBuilt();

const MiB = 1024 * 1024;

/** The value of one sample of the exposition text (0 when absent). */
function sample(text: string, name: string, labels: Record<string, string>): number {
  const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const inside = line.slice(name.length + 1, line.indexOf('}'));
    const parts = inside.split(',');
    if (wanted.every((w) => parts.includes(w)) && parts.length === wanted.length) return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return 0;
}

describe('S3 metrics on /metrics', () => {
  const suite = useDaemon();

  it('counts requests by operation and status class, bytes in and out, and latency', async () => {
    const d = suite.d;
    d.cliOk(['user', 'create', 'meter']);
    const key = d.json<{ id: string; secret: string }>(['user', 'key', 'create', 'meter']);
    const s3 = new S3Client({ endpoint: d.s3Url as string, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: key.id, secretAccessKey: key.secret } });
    await s3.send(new CreateBucketCommand({ Bucket: 'metered' }));
    const data = patternBytes(2 * MiB, 5);
    await s3.send(new PutObjectCommand({ Bucket: 'metered', Key: 'a.bin', Body: data }));
    const got = await s3.send(new GetObjectCommand({ Bucket: 'metered', Key: 'a.bin' }));
    expect((await got.Body!.transformToByteArray()).length).toBe(data.length);
    for (let i = 0; i < 3; i++) await s3.send(new ListObjectsV2Command({ Bucket: 'metered' }));
    expect(await failure(s3.send(new GetObjectCommand({ Bucket: 'metered', Key: 'missing' })))).toMatchObject({ name: 'NoSuchKey', status: 404 });

    const response = await fetch(`${d.url}/metrics`);
    expect(response.status).toBe(200);
    const text = await response.text();
    expect(text).toContain('# TYPE strata_s3_requests_total counter');
    expect(text).toContain('# TYPE strata_s3_request_duration_seconds histogram');
    expect(sample(text, 'strata_s3_requests_total', { operation: 'CreateBucket', status_class: '2xx' })).toBe(1);
    expect(sample(text, 'strata_s3_requests_total', { operation: 'PutObject', status_class: '2xx' })).toBe(1);
    expect(sample(text, 'strata_s3_requests_total', { operation: 'GetObject', status_class: '2xx' })).toBe(1);
    expect(sample(text, 'strata_s3_requests_total', { operation: 'GetObject', status_class: '4xx' })).toBe(1);
    expect(sample(text, 'strata_s3_requests_total', { operation: 'ListObjectsV2', status_class: '2xx' })).toBe(3);
    // The body went in with the put and out with the get; the other requests carried headers only.
    expect(sample(text, 'strata_s3_received_bytes_total', { operation: 'PutObject' })).toBeGreaterThan(data.length);
    expect(sample(text, 'strata_s3_received_bytes_total', { operation: 'PutObject' })).toBeLessThan(data.length + 64 * 1024);
    expect(sample(text, 'strata_s3_sent_bytes_total', { operation: 'GetObject' })).toBeGreaterThan(data.length);
    expect(sample(text, 'strata_s3_received_bytes_total', { operation: 'GetObject' })).toBeLessThan(16 * 1024);
    expect(sample(text, 'strata_s3_sent_bytes_total', { operation: 'PutObject' })).toBeLessThan(16 * 1024);
    // One latency observation per request, in every bucket up to +Inf.
    expect(sample(text, 'strata_s3_request_duration_seconds_count', { operation: 'ListObjectsV2' })).toBe(3);
    expect(sample(text, 'strata_s3_request_duration_seconds_bucket', { operation: 'GetObject', le: '+Inf' })).toBe(2);
    // The REST API's own metrics are in the same document.
    expect(text).toContain('strata_http_requests_total');
  });
});
