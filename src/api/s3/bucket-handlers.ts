/**
 * The handlers wired so far: the service and bucket operations that need nothing of objects
 * (ListBuckets, CreateBucket, HeadBucket, DeleteBucket, GetBucketLocation, Get/PutBucketVersioning),
 * each over the ObjectService. Every other endpoint answers NotImplemented until the object model
 * is wired (index.ts).
 */
import { isStorageError } from '../../core/errors.js';
import { bucketOrNone } from './access.js';
import { cannedAclOf } from './acl-handlers.js';
import type { S3Endpoint } from './endpoints.js';
import { S3Error, S3_ERROR_STATUS, type S3ErrorCode } from './errors.js';
import type { ObjectService, S3Principal } from '../../objects/object-service.js';
import { childText, element, readXmlBody, textElement, xmlDocument } from './xml.js';
import type { IncomingHttpHeaders } from 'node:http';
import type { Readable } from 'node:stream';
import type { PayloadExpectations, PayloadStream } from './payload.js';

/** What a handler sees of its request. */
export interface S3RequestContext {
  readonly endpoint: S3Endpoint;
  readonly bucket: string | undefined;
  readonly key: string | undefined;
  readonly query: ReadonlyMap<string, string>;
  readonly principal: S3Principal;
  readonly objects: ObjectService;
  /** The region this endpoint reports. */
  readonly region: string;
  /** True when the request carries a body (Content-Length > 0 or chunked). */
  readonly hasBody: boolean;
  /** The request's headers (names lower case). */
  readonly headers: IncomingHttpHeaders;
  /** The checked body (aws-chunked decoded, hashes verified), opened on first call. */
  body(): Readable;
  /**
   * The body of an object or part, for the object model: checked as body() is, except that the
   * x-amz-checksum, the Content-MD5 and x-amz-content-sha256 are checked by the model (which
   * computes them in one pass and stores the first) against the claims dataBodyOf gives it: a
   * consumer that does not pass those claims to the model leaves them unchecked.
   */
  dataBody(): PayloadStream;
  /** What the body was declared to be (length, checksum), which body() checks as it streams. */
  payload(): PayloadExpectations;
}

export interface S3Response {
  readonly status: number;
  readonly headers?: Readonly<Record<string, string>>;
  /** An XML document, or nothing. */
  readonly xml?: string;
  /** The bytes of a GET (with Content-Length in the headers); never sent on HEAD. */
  readonly body?: AsyncIterable<Uint8Array>;
}

export type S3Handler = (ctx: S3RequestContext) => Promise<S3Response>;

const BUCKET_NAME = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
const IPV4_LIKE = /^\d+\.\d+\.\d+\.\d+$/;

/** S3's bucket naming rules (3 to 63 lower-case letters, digits, '.', '-'; not an IP address). */
export function checkBucketName(name: string): void {
  if (!BUCKET_NAME.test(name) || name.includes('..') || name.includes('.-') || name.includes('-.') || IPV4_LIKE.test(name)) {
    throw new S3Error('InvalidBucketName', `'${name.slice(0, 80)}' is not a valid bucket name: 3 to 63 lower-case letters, digits, '.' and '-', starting and ending with a letter or digit, not shaped like an IP address`);
  }
}

/** The S3 code an object-model error carries in `s3Code`, when it is one this endpoint knows. */
function carriedCode(err: unknown): S3ErrorCode | undefined {
  const code = (err as { s3Code?: unknown } | null)?.s3Code;
  return typeof code === 'string' && Object.hasOwn(S3_ERROR_STATUS, code) ? (code as S3ErrorCode) : undefined;
}

/** Runs an object-model call, naming its StorageErrors in S3's terms for this bucket operation. */
async function bucketCall<T>(bucket: string, call: () => Promise<T>, codes: Partial<Record<'NOT_FOUND' | 'ALREADY_EXISTS' | 'BUSY', S3ErrorCode>> = {}): Promise<T> {
  try {
    return await call();
  } catch (err) {
    const carried = carriedCode(err);
    if (carried !== undefined) throw new S3Error(carried, (err as Error).message);
    if (isStorageError(err, 'NOT_FOUND')) throw new S3Error(codes.NOT_FOUND ?? 'NoSuchBucket', `the bucket '${bucket}' does not exist`);
    if (isStorageError(err, 'ALREADY_EXISTS') && codes.ALREADY_EXISTS !== undefined) throw new S3Error(codes.ALREADY_EXISTS, err.message);
    if (isStorageError(err, 'BUSY') && codes.BUSY !== undefined) throw new S3Error(codes.BUSY, err.message);
    throw err;
  }
}

const listBuckets: S3Handler = async (ctx) => {
  const buckets = await ctx.objects.listBuckets(ctx.principal);
  const owner = element('Owner', [textElement('ID', ctx.principal.owner), textElement('DisplayName', ctx.principal.owner)]);
  const list = element('Buckets', buckets.map((b) => element('Bucket', [textElement('Name', b.name), textElement('CreationDate', b.createdAt)])));
  return { status: 200, xml: xmlDocument('ListAllMyBucketsResult', [owner, list]) };
};

const createBucket: S3Handler = async (ctx) => {
  const bucket = ctx.bucket as string;
  checkBucketName(bucket);
  // A LocationConstraint other than the region names the pool the bucket keeps its bytes in
  // (as Ceph's placement targets do): a dedup pool shares chunks with its volumes.
  let pool: string | undefined;
  const acl = cannedAclOf(ctx);
  if (ctx.hasBody) {
    const config = await readXmlBody(ctx.body(), 'CreateBucketConfiguration');
    const location = childText(config, 'LocationConstraint');
    if (location !== undefined && location !== '' && location !== ctx.region) pool = location;
  }
  const exists = await bucketOrNone(ctx.objects, ctx.principal, bucket);
  if (exists !== undefined) throw alreadyExists(bucket, exists.owner === ctx.principal.owner);
  try {
    await ctx.objects.createBucket(ctx.principal, bucket, { ...(pool === undefined ? {} : { pool }), ...(acl === undefined ? {} : { acl }) });
  } catch (err) {
    if (pool !== undefined && isStorageError(err, 'NOT_FOUND')) {
      const fix = `give this endpoint's region '${ctx.region}' or the name of a pool ('strata pool list')`;
      throw new S3Error('InvalidArgument', `the LocationConstraint '${pool}' is neither this endpoint's region nor a pool: ${fix}`, { ArgumentName: 'LocationConstraint' });
    }
    if (!isStorageError(err, 'ALREADY_EXISTS')) throw err;
    const winner = await ctx.objects.bucketInfo(ctx.principal, bucket).catch(() => undefined);
    throw alreadyExists(bucket, winner?.owner === ctx.principal.owner);
  }
  return { status: 200, headers: { location: `/${bucket}` } };
};

function alreadyExists(bucket: string, ours: boolean): S3Error {
  return ours
    ? new S3Error('BucketAlreadyOwnedByYou', `you already own the bucket '${bucket}'`)
    : new S3Error('BucketAlreadyExists', `the bucket name '${bucket}' is taken; choose another`);
}

const headBucket: S3Handler = async (ctx) => {
  const bucket = ctx.bucket as string;
  await bucketCall(bucket, () => ctx.objects.bucketInfo(ctx.principal, bucket));
  return { status: 200, headers: { 'x-amz-bucket-region': ctx.region } };
};

const deleteBucket: S3Handler = async (ctx) => {
  const bucket = ctx.bucket as string;
  await bucketCall(bucket, () => ctx.objects.deleteBucket(ctx.principal, bucket), { BUSY: 'BucketNotEmpty' });
  return { status: 204 };
};

const getBucketLocation: S3Handler = async (ctx) => {
  const bucket = ctx.bucket as string;
  await bucketCall(bucket, () => ctx.objects.bucketInfo(ctx.principal, bucket));
  // us-east-1 is reported as an empty constraint (S3's convention).
  const constraint = ctx.region === 'us-east-1' ? '' : ctx.region;
  return { status: 200, xml: `<?xml version="1.0" encoding="UTF-8"?>\n<LocationConstraint xmlns="http://s3.amazonaws.com/doc/2006-03-01/">${constraint}</LocationConstraint>` };
};

const getBucketVersioning: S3Handler = async (ctx) => {
  const bucket = ctx.bucket as string;
  const info = await bucketCall(bucket, () => ctx.objects.bucketInfo(ctx.principal, bucket));
  return { status: 200, xml: xmlDocument('VersioningConfiguration', [info.versioning === 'Unversioned' ? undefined : textElement('Status', info.versioning)]) };
};

const putBucketVersioning: S3Handler = async (ctx) => {
  const bucket = ctx.bucket as string;
  const config = await readXmlBody(ctx.body(), 'VersioningConfiguration');
  const status = childText(config, 'Status');
  if (status !== 'Enabled' && status !== 'Suspended') {
    throw new S3Error('MalformedXML', `the versioning <Status> must be Enabled or Suspended, not '${status ?? ''}'`);
  }
  if (childText(config, 'MfaDelete') === 'Enabled') throw new S3Error('NotImplemented', 'MFA delete is not supported');
  await bucketCall(bucket, () => ctx.objects.setBucketVersioning(ctx.principal, bucket, status));
  return { status: 200 };
};

/** The handlers wired now, by endpoint. */
export const BUCKET_HANDLERS: Partial<Record<S3Endpoint, S3Handler>> = {
  ListBuckets: listBuckets,
  CreateBucket: createBucket,
  HeadBucket: headBucket,
  DeleteBucket: deleteBucket,
  GetBucketLocation: getBucketLocation,
  GetBucketVersioning: getBucketVersioning,
  PutBucketVersioning: putBucketVersioning,
};
