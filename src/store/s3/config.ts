/**
 * What an S3ChunkStore is told: where the bucket is, which key prefix it owns, how hard to retry.
 * Credentials are deliberately not here: the SDK's default chain finds them the way AWS tools do
 * (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, the shared credentials and config files, a profile,
 * instance metadata), so secrets never travel on a command line or in Strata's own config.
 */
import { S3Client } from '@aws-sdk/client-s3';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { StorageError } from '../../core/errors.js';
import { IntoBufferHttpHandler } from './into-buffer-handler.js';

/** How a transient failure is retried: exponential backoff with full jitter, bounded in count and time. */
export interface S3RetryPolicy {
  /** Attempts per call, the first included (1 = never retry). */
  readonly maxAttempts: number;
  /** The first backoff's upper bound; each retry doubles it, up to maxDelayMs. */
  readonly baseDelayMs: number;
  readonly maxDelayMs: number;
  /** A call gives up once this much time has gone by (attempts are cut to fit in it). */
  readonly totalTimeMs: number;
  /** One request that has not finished (headers and body) by then is abandoned and retried. */
  readonly attemptTimeoutMs: number;
  /** A TCP connection not made by then fails the attempt. */
  readonly connectTimeoutMs: number;
}

export const DEFAULT_S3_RETRY_POLICY: S3RetryPolicy = {
  maxAttempts: 8,
  baseDelayMs: 100,
  maxDelayMs: 5_000,
  totalTimeMs: 60_000,
  attemptTimeoutMs: 30_000,
  connectTimeoutMs: 5_000,
};

/**
 * How putIfAbsent keeps an existing object: 'native' sends `If-None-Match: *` (S3 since 2024, moto,
 * radosgw); 'head-then-put' checks with HEAD and then PUTs, which is only safe where two writers of
 * one key always write the same bytes (content-addressed chunks and packs); 'auto' (the default)
 * probes the server once and picks 'native' when it honours the header.
 */
export type ConditionalPutMode = 'auto' | 'native' | 'head-then-put';

/** One retry, for the operator's log. */
export interface S3RetryEvent {
  readonly operation: string;
  readonly key: string;
  /** The attempt that failed (1 = the first). */
  readonly attempt: number;
  readonly kind: string;
  readonly delayMs: number;
  readonly message: string;
  readonly endpoint: string;
}

export interface S3ChunkStoreConfig {
  /** The server's URL (http://127.0.0.1:7480); absent: AWS S3 for the region. */
  readonly endpoint?: string;
  readonly region: string;
  readonly bucket: string;
  /** Prepended to every key; the store sees and lists only keys under it. */
  readonly prefix?: string;
  /** Path-style URLs (endpoint/bucket/key), which servers on an IP address or localhost need. */
  readonly forcePathStyle?: boolean;
  /** A named profile of the shared credentials/config files (else AWS_PROFILE, else default). */
  readonly profile?: string;
  readonly conditionalPut?: ConditionalPutMode;
  readonly retry?: Partial<S3RetryPolicy>;
  /** Called for each retry (the daemon passes its logger). */
  readonly logger?: (event: S3RetryEvent) => void;
}

/** S3's limit on a key's length, in UTF-8 bytes. */
export const S3_KEY_MAX_BYTES = 1024;

/** The endpoint as errors name it. */
export function describeEndpoint(config: S3ChunkStoreConfig): string {
  return config.endpoint ?? `AWS S3 (${config.region})`;
}

function checkPositive(name: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new StorageError('INVALID_ARGUMENT', `S3 store retry setting ${name} is ${value}: it must be a whole number of at least 1`);
  }
}

/** The policy with defaults filled in; throws INVALID_ARGUMENT for a setting out of range. */
export function resolveRetryPolicy(overrides: Partial<S3RetryPolicy> | undefined): S3RetryPolicy {
  const policy = { ...DEFAULT_S3_RETRY_POLICY, ...overrides };
  for (const [name, value] of Object.entries(policy)) checkPositive(name, value);
  return policy;
}

/** Checks what can be checked before any request; throws INVALID_ARGUMENT naming the setting. */
export function checkConfig(config: S3ChunkStoreConfig): void {
  if (config.endpoint !== undefined) {
    let url: URL | undefined;
    try {
      url = new URL(config.endpoint);
    } catch {
      url = undefined;
    }
    if (url === undefined || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
      throw new StorageError('INVALID_ARGUMENT', `S3 endpoint ${JSON.stringify(config.endpoint)} is not an http:// or https:// URL`);
    }
  }
  if (!config.region) throw new StorageError('INVALID_ARGUMENT', 'S3 store needs a region (any name for a server that ignores it, e.g. us-east-1)');
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(config.bucket)) {
    throw new StorageError('INVALID_ARGUMENT', `S3 bucket name ${JSON.stringify(config.bucket)} is not 3 to 63 lower-case letters, digits, dots and hyphens`);
  }
}

/**
 * The SDK client: no retries of its own (the store's policy counts and logs them), checksums only
 * where an operation requires them (older servers such as radosgw 16 reject the newer defaults),
 * and kept-alive connections with a connect timeout. Ranged GETs into a caller's array go over the
 * handler's own connections (into-buffer-handler.ts); `handler` is that handler.
 */
export function makeS3Client(config: S3ChunkStoreConfig, policy: S3RetryPolicy): { client: S3Client; handler: IntoBufferHttpHandler } {
  const fallback = new NodeHttpHandler({ connectionTimeout: policy.connectTimeoutMs, httpAgent: { keepAlive: true, maxSockets: 64 } });
  const handler = new IntoBufferHttpHandler(fallback, policy.connectTimeoutMs);
  const client = new S3Client({
    region: config.region,
    ...(config.endpoint === undefined ? {} : { endpoint: config.endpoint }),
    forcePathStyle: config.forcePathStyle ?? false,
    ...(config.profile === undefined ? {} : { profile: config.profile }),
    maxAttempts: 1,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    requestHandler: handler,
  });
  return { client, handler };
}
