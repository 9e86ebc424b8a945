/**
 * S3ChunkStore: the ChunkStore interface over one bucket and key prefix of an S3 server (AWS S3,
 * radosgw, moto, MinIO...), through @aws-sdk/client-s3. Every request runs under the store's retry
 * policy (retry.ts); every failure is a StorageError naming the endpoint and the fix; the counters
 * (`counters`) say how many requests, failures and retries of each kind there were.
 */
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { chunkStoreClosed, type ChunkListPage, type ChunkStore, type ChunkStoreCallOptions } from '../../core/chunk-store.js';
import { StorageError } from '../../core/errors.js';
import { checkChunkKey, checkChunkRange, chunkListLimit, throwIfAborted } from '../memory-chunk-store.js';
import { readWholeBody } from './body.js';
import { S3_KEY_MAX_BYTES, checkConfig, describeEndpoint, makeS3Client, resolveRetryPolicy, type S3ChunkStoreConfig } from './config.js';
import { isPreconditionFailed, probeConditionalPut, type ResolvedConditionalPut } from './conditional-put.js';
import { errorCodeOf, httpStatusOf } from './failure.js';
import type { BodyTarget, IntoBufferHttpHandler, IntoBufferSendOptions } from './into-buffer-handler.js';
import { S3Retrier, newS3StoreCounters, type S3CallContext, type S3StoreCounters } from './retry.js';

const NOT_FOUND = 404;
const RANGE_NOT_SATISFIABLE = 416;

function isMissingObject(err: unknown): boolean {
  const code = errorCodeOf(err);
  return code === 'NoSuchKey' || code === 'NotFound' || (httpStatusOf(err) === NOT_FOUND && code !== 'NoSuchBucket');
}

export class S3ChunkStore implements ChunkStore {
  private readonly client: S3Client;
  private readonly handler: IntoBufferHttpHandler;
  private readonly retrier: S3Retrier;
  private readonly bucket: string;
  private readonly prefix: string;
  private conditionalPut: Promise<ResolvedConditionalPut> | undefined;
  /** Requests, failures and retries by kind: live numbers for the daemon's metrics. */
  readonly counters: S3StoreCounters = newS3StoreCounters();
  /** The endpoint as messages name it. */
  readonly endpoint: string;

  constructor(config: S3ChunkStoreConfig) {
    checkConfig(config);
    const policy = resolveRetryPolicy(config.retry);
    ({ client: this.client, handler: this.handler } = makeS3Client(config, policy));
    this.bucket = config.bucket;
    this.prefix = config.prefix ?? '';
    this.endpoint = describeEndpoint(config);
    this.retrier = new S3Retrier(policy, { endpoint: this.endpoint, bucket: this.bucket, profile: config.profile }, this.counters, config.logger);
    const mode = config.conditionalPut ?? 'auto';
    if (mode !== 'auto') this.conditionalPut = Promise.resolve(mode);
  }

  /** A store whose bucket has been checked: a missing bucket or refused credentials fail here, clearly. */
  static async open(config: S3ChunkStoreConfig, options?: ChunkStoreCallOptions): Promise<S3ChunkStore> {
    const store = new S3ChunkStore(config);
    try {
      await store.checkBucket(options);
    } catch (err) {
      store.close();
      throw err;
    }
    return store;
  }

  /** Checks that the bucket exists and the credentials reach it. */
  async checkBucket(options?: ChunkStoreCallOptions): Promise<void> {
    await this.run('HEAD bucket', '', options, async (abortSignal) => {
      try {
        await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }), { abortSignal });
      } catch (err) {
        // HEAD answers have no body, so a missing bucket arrives as a bare 404.
        if (httpStatusOf(err) === NOT_FOUND) throw Object.assign(new Error(`bucket ${this.bucket} not found`), { name: 'NoSuchBucket', cause: err });
        throw err;
      }
    });
  }

  /** How putIfAbsent keeps existing objects on this server ('auto' probes on first use). */
  async conditionalPutMode(options?: ChunkStoreCallOptions): Promise<ResolvedConditionalPut> {
    throwIfAborted(options, 'conditional PUT probe');
    if (this.conditionalPut === undefined) {
      const probe = probeConditionalPut(this.client, this.retrier, this.bucket, this.prefix);
      this.conditionalPut = probe;
      probe.catch(() => {
        if (this.conditionalPut === probe) this.conditionalPut = undefined; // probe again next time
      });
    }
    const signal = options?.signal;
    if (signal === undefined) return this.conditionalPut;
    // The probe is shared by every caller: a cancelled caller stops waiting, the probe goes on.
    return new Promise((resolve, reject) => {
      const onAbort = (): void => reject(new StorageError('CANCELLED', 'S3 conditional PUT probe was cancelled'));
      signal.addEventListener('abort', onAbort, { once: true });
      this.conditionalPut?.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
    });
  }

  /** Ranged GETs whose body was read straight into the caller's array (into-buffer-handler.ts). */
  get intoRequests(): number {
    return this.handler.intoRequests;
  }

  private closed = false;

  /** Releases the client's connections; later calls fail. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.client.destroy();
  }

  private checkOpen(what: string): void {
    if (this.closed) throw chunkStoreClosed(`s3://${this.bucket}/${this.prefix}`, what);
  }

  private objectKey(key: string): string {
    checkChunkKey(key);
    const objectKey = this.prefix + key;
    if (Buffer.byteLength(objectKey) > S3_KEY_MAX_BYTES) {
      throw new StorageError('INVALID_ARGUMENT', `chunk key ${JSON.stringify(key)} with the store's prefix is longer than S3's ${S3_KEY_MAX_BYTES} bytes`);
    }
    return objectKey;
  }

  private run<T>(operation: string, key: string, options: ChunkStoreCallOptions | undefined, attempt: (signal: AbortSignal) => Promise<T>): Promise<T> {
    throwIfAborted(options, `S3 ${operation} of ${JSON.stringify(key)}`);
    const call: S3CallContext = { operation, key, signal: options?.signal };
    return this.retrier.run(call, attempt);
  }

  async get(key: string, options?: ChunkStoreCallOptions): Promise<Uint8Array | undefined> {
    this.checkOpen(`get ${key}`);
    const objectKey = this.objectKey(key);
    return this.run('GET', key, options, (abortSignal) => this.fetch(objectKey, undefined, abortSignal));
  }

  async getRange(key: string, offsetBytes: number, lengthBytes: number, options?: ChunkStoreCallOptions): Promise<Uint8Array | undefined> {
    this.checkOpen(`get ${key}`);
    const objectKey = this.objectKey(key);
    checkChunkRange(key, offsetBytes, lengthBytes);
    if (lengthBytes === 0) {
      // No Range header can ask for nothing: find out whether the object exists instead.
      const exists = await this.run('HEAD', key, options, (abortSignal) => this.exists(objectKey, abortSignal));
      return exists ? new Uint8Array(0) : undefined;
    }
    const range = { offsetBytes, lengthBytes };
    return this.run('GET range', key, options, (abortSignal) => this.fetch(objectKey, range, abortSignal, options?.into));
  }

  /** One GET: the object (or a range of it), undefined when it does not exist. */
  private async fetch(
    objectKey: string,
    range: { offsetBytes: number; lengthBytes: number } | undefined,
    abortSignal: AbortSignal,
    into?: Uint8Array,
  ): Promise<Uint8Array | undefined> {
    const header = range === undefined ? undefined : `bytes=${range.offsetBytes}-${range.offsetBytes + range.lengthBytes - 1}`;
    // With `into`, the handler reads a 2xx body straight into it (and says so in target.bytes).
    const target: BodyTarget | undefined = into === undefined ? undefined : { into, bytes: undefined };
    const sendOptions: { abortSignal: AbortSignal } | IntoBufferSendOptions = target === undefined ? { abortSignal } : { abortSignal, bodyTarget: target };
    let output;
    try {
      output = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: objectKey, Range: header }), sendOptions);
    } catch (err) {
      if (isMissingObject(err)) return undefined;
      // A range that starts at or past the end: the object exists and the answer is empty.
      if (range !== undefined && (httpStatusOf(err) === RANGE_NOT_SATISFIABLE || errorCodeOf(err) === 'InvalidRange')) return new Uint8Array(0);
      throw err;
    }
    // Attempts run one after another and an aborted one stops writing at once (its body is
    // destroyed), so every attempt may write into `into`.
    const data =
      target?.bytes === undefined
        ? await readWholeBody(output.Body, output.ContentLength, abortSignal, `GET ${objectKey}`, into)
        : into!.subarray(0, target.bytes);
    // A server that ignored the Range header sent the whole object: cut the range out here.
    if (range !== undefined && output.ContentRange === undefined) return data.slice(range.offsetBytes, range.offsetBytes + range.lengthBytes);
    return data;
  }

  private async exists(objectKey: string, abortSignal: AbortSignal): Promise<boolean> {
    try {
      await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: objectKey }), { abortSignal });
      return true;
    } catch (err) {
      if (isMissingObject(err)) return false;
      throw err;
    }
  }

  async put(key: string, data: Uint8Array, options?: ChunkStoreCallOptions): Promise<void> {
    this.checkOpen(`put ${key}`);
    const objectKey = this.objectKey(key);
    await this.run('PUT', key, options, (abortSignal) =>
      this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: objectKey, Body: data, ContentLength: data.byteLength }), { abortSignal }),
    );
  }

  /**
   * Stores the object unless one exists. After a retry the answer can be false for an object this
   * very call stored (its first response was lost): harmless for content-addressed keys, whose
   * bytes never differ, which is what this store is for.
   */
  async putIfAbsent(key: string, data: Uint8Array, options?: ChunkStoreCallOptions): Promise<boolean> {
    this.checkOpen(`put ${key}`);
    const objectKey = this.objectKey(key);
    throwIfAborted(options, `S3 PUT if absent of ${JSON.stringify(key)}`);
    const mode = await this.conditionalPutMode(options);
    if (mode === 'head-then-put') {
      if (await this.run('HEAD', key, options, (abortSignal) => this.exists(objectKey, abortSignal))) return false;
      await this.put(key, data, options);
      return true;
    }
    return this.run('PUT if absent', key, options, async (abortSignal) => {
      try {
        const command = new PutObjectCommand({ Bucket: this.bucket, Key: objectKey, Body: data, ContentLength: data.byteLength, IfNoneMatch: '*' });
        await this.client.send(command, { abortSignal });
        return true;
      } catch (err) {
        if (isPreconditionFailed(err)) return false;
        throw err;
      }
    });
  }

  async delete(key: string, options?: ChunkStoreCallOptions): Promise<void> {
    this.checkOpen(`delete ${key}`);
    const objectKey = this.objectKey(key);
    await this.run('DELETE', key, options, (abortSignal) => this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: objectKey }), { abortSignal }));
  }

  async list(prefix: string, options?: ChunkStoreCallOptions & { after?: string; limit?: number }): Promise<ChunkListPage> {
    this.checkOpen(`list ${prefix}`);
    const limit = chunkListLimit(options?.limit);
    const after = options?.after;
    const output = await this.run('LIST', prefix, options, (abortSignal) =>
      this.client.send(
        new ListObjectsV2Command({
          Bucket: this.bucket,
          Prefix: this.prefix + prefix,
          MaxKeys: limit,
          ...(after === undefined ? {} : { StartAfter: this.prefix + after }),
        }),
        { abortSignal },
      ),
    );
    const keys = (output.Contents ?? []).map((object) => (object.Key ?? '').slice(this.prefix.length));
    const last = keys.at(-1);
    return output.IsTruncated === true && last !== undefined ? { keys, nextAfter: last } : { keys };
  }
}
