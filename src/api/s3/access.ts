/**
 * Who may reach a bucket, decided before any handler runs. A bucket belongs to the user who created
 * it, and its canned ACL (acl-handlers.ts) says what everybody else may do there:
 * - its owner's signed requests: everything;
 * - anyone else, signed by another user's key or not signed at all: on a `public-read` bucket, read
 *   the current objects and list the keys (PUBLIC_READS); on a `private` one, nothing;
 * - CopyObject and UploadPartCopy also read their source bucket, under the same rules.
 * Signed requests of another user are refused naming the bucket's owner rule (they learn that the
 * bucket exists, as in S3); anonymous requests are refused alike for private and missing buckets,
 * so they learn no names. A signed request on a missing bucket goes on to its handler
 * (NoSuchBucket). docs/s3.md ("Canned ACLs and anonymous reads", "Users and their buckets").
 */
import type { IncomingHttpHeaders } from 'node:http';
import { isStorageError } from '../../core/errors.js';
import type { BucketInfo, ObjectService, S3Principal } from '../../objects/object-service.js';
import type { ResolvedRequest, S3Endpoint } from './endpoints.js';
import { S3Error } from './errors.js';
import { parseCopySource } from './object-handlers.js';

/** What an anonymous request (no signature) is: it owns nothing and may only read public buckets. */
export const ANONYMOUS_PRINCIPAL: S3Principal = { owner: '', accessKeyId: '' };
/** The endpoints anyone but the owner may reach on a public-read bucket (current versions only). */
const PUBLIC_READS: ReadonlySet<S3Endpoint> = new Set(['GetObject', 'HeadObject', 'ListObjects', 'ListObjectsV2', 'HeadBucket']);
/** Endpoints that name no existing bucket to guard: ListBuckets answers the caller's own, CreateBucket makes one. */
const UNGUARDED: ReadonlySet<S3Endpoint> = new Set(['ListBuckets', 'CreateBucket']);
/** Endpoints that also read the bucket named by x-amz-copy-source. */
const COPIES: ReadonlySet<S3Endpoint> = new Set(['CopyObject', 'UploadPartCopy']);

/** The bucket's record, or undefined when there is no such bucket (other errors go on). */
export async function bucketOrNone(objects: ObjectService, principal: S3Principal, bucket: string): Promise<BucketInfo | undefined> {
  return objects.bucketInfo(principal, bucket).catch((err: unknown) => {
    if (isStorageError(err, 'NOT_FOUND')) return undefined;
    throw err;
  });
}

/**
 * Lets an anonymous request through when it reads a public-read bucket (the current versions
 * only); AccessDenied otherwise, naming why, without saying whether a private bucket exists.
 */
export async function admitAnonymous(resolved: ResolvedRequest, objects: ObjectService | undefined): Promise<S3Principal> {
  const denied = (why: string): S3Error => new S3Error('AccessDenied', `anonymous requests ${why}; sign the request with an access key (strata user key create)`);
  if (!PUBLIC_READS.has(resolved.endpoint) || resolved.bucket === undefined || objects === undefined) {
    throw denied(`may only read objects and list keys of a public-read bucket, not ${resolved.endpoint}`);
  }
  if (resolved.query.has('versionId')) throw denied('read the current version only');
  const info = await bucketOrNone(objects, ANONYMOUS_PRINCIPAL, resolved.bucket);
  if (info?.acl !== 'public-read') throw denied(`may not read the bucket '${resolved.bucket}' (it is not public-read, or does not exist)`);
  return ANONYMOUS_PRINCIPAL;
}

/** AccessDenied for a signed request on another user's bucket, naming what the caller may do there. */
function othersBucketDenied(info: BucketInfo, what: string): S3Error {
  const rule =
    info.acl === 'public-read'
      ? 'it is public-read: other users may only read its current objects and list its keys'
      : `it is private to its owner; use the owner's access key, or have the owner make it public-read (PutBucketAcl) for reads`;
  return new S3Error('AccessDenied', `${what}: the bucket '${info.name}' belongs to another user (${rule})`);
}

/**
 * Lets a signed request through when its user owns the bucket it names, or it only reads a
 * public-read bucket's current objects and keys; for a copy, the same for the source bucket.
 * AccessDenied otherwise. `headers` are the request's (a copy names its source in x-amz-copy-source).
 */
export async function admitSigned(
  resolved: ResolvedRequest,
  principal: S3Principal,
  objects: ObjectService | undefined,
  headers: IncomingHttpHeaders,
): Promise<S3Principal> {
  if (objects === undefined || resolved.bucket === undefined || UNGUARDED.has(resolved.endpoint)) return principal;
  const target = await bucketOrNone(objects, principal, resolved.bucket);
  if (target !== undefined && target.owner !== principal.owner) {
    if (target.acl !== 'public-read' || !PUBLIC_READS.has(resolved.endpoint)) throw othersBucketDenied(target, `${resolved.endpoint} is refused`);
    if (resolved.query.has('versionId')) throw othersBucketDenied(target, 'reading an older version is refused');
  }
  if (COPIES.has(resolved.endpoint)) {
    const source = parseCopySource({ headers });
    const from = await bucketOrNone(objects, principal, source.bucket);
    if (from !== undefined && from.owner !== principal.owner) {
      if (from.acl !== 'public-read') throw othersBucketDenied(from, `copying from it is refused`);
      if (source.versionId !== undefined) throw othersBucketDenied(from, 'copying an older version is refused');
    }
  }
  return principal;
}
