/**
 * Finds out once whether a server honours `If-None-Match: *` on PUT, by writing a probe object
 * twice: a server that keeps the first answers the second with 412. A server that ignores the
 * header (or rejects it as not implemented) gets the 'head-then-put' fallback, which is safe only
 * because every key a ChunkStore user writes this way names content that never differs.
 */
import { randomUUID } from 'node:crypto';
import { DeleteObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { errorCodeOf, httpStatusOf } from './failure.js';
import type { S3Retrier } from './retry.js';

export type ResolvedConditionalPut = 'native' | 'head-then-put';

/** The folder (under the store's prefix) the probe object is written in, and removed from. */
export const CONDITIONAL_PUT_PROBE_FOLDER = '.strata-probe/';

const PRECONDITION_FAILED = 412;
const NOT_IMPLEMENTED = 501;

/** True when the error is the server's "an object already exists" answer to If-None-Match. */
export function isPreconditionFailed(err: unknown): boolean {
  return httpStatusOf(err) === PRECONDITION_FAILED || errorCodeOf(err) === 'PreconditionFailed';
}

function isNotImplemented(err: unknown): boolean {
  return httpStatusOf(err) === NOT_IMPLEMENTED || errorCodeOf(err) === 'NotImplemented';
}

/** Probes the server; transient failures reject (through the retrier) so the caller can probe again. */
export async function probeConditionalPut(client: S3Client, retrier: S3Retrier, bucket: string, prefix: string): Promise<ResolvedConditionalPut> {
  const key = `${prefix}${CONDITIONAL_PUT_PROBE_FOLDER}conditional-put-${randomUUID()}`;
  const call = { operation: 'conditional PUT probe', key, signal: undefined };
  const putOnce = (): Promise<'stored' | 'kept' | 'not implemented'> =>
    retrier.run(call, async (abortSignal) => {
      try {
        await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: new Uint8Array(0), IfNoneMatch: '*' }), { abortSignal });
        return 'stored';
      } catch (err) {
        if (isPreconditionFailed(err)) return 'kept';
        if (isNotImplemented(err)) return 'not implemented';
        throw err;
      }
    });
  try {
    const first = await putOnce();
    if (first === 'not implemented') return 'head-then-put';
    const second = await putOnce();
    return second === 'kept' ? 'native' : 'head-then-put';
  } finally {
    await retrier.run({ ...call, operation: 'DELETE of the probe' }, (abortSignal) => client.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }), { abortSignal })).catch(() => {
      // A probe object left behind is harmless: it is empty, under .strata-probe/ of the prefix.
    });
  }
}
