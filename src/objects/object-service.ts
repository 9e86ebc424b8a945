/**
 * What the S3 endpoint (src/api/s3) needs of the object model: the bucket operations in the
 * endpoint's terms (a principal, S3's names for versioning states, ISO times) and the object
 * operations as ObjectModel has them. It lives here, under the endpoint, because src/objects may
 * not import src/api; `S3ObjectService` (s3-object-service.ts) implements it over an ObjectModel.
 *
 * Errors: ObjectError (its `s3Code` is the S3 error, S3_ERRORS its status) or another StorageError.
 * For the bucket operations: NOT_FOUND when the bucket is absent, ALREADY_EXISTS on CreateBucket
 * when the name is taken, BUSY on DeleteBucket when it still holds objects or uploads.
 */
import type { ObjectModel } from './model.js';
import type { CannedAcl } from './records.js';

/** Who is asking (from the verified signature). */
export interface S3Principal {
  /** The user name owning the access key (the object model's owner). */
  readonly owner: string;
  readonly accessKeyId: string;
}

export type BucketVersioning = 'Unversioned' | 'Enabled' | 'Suspended';

export interface BucketInfo {
  readonly name: string;
  readonly owner: string;
  /** ISO-8601 time. */
  readonly createdAt: string;
  readonly versioning: BucketVersioning;
  /** The canned ACL: `public-read` lets anonymous requests read objects and list keys. */
  readonly acl: CannedAcl;
}

/** The object operations, exactly as the object model serves them. */
export type ObjectOperations = Pick<
  ObjectModel,
  | 'putObject'
  | 'getObject'
  | 'deleteObject'
  | 'deleteObjects'
  | 'copyObject'
  | 'listObjectsV2'
  | 'listObjects'
  | 'listObjectVersions'
  | 'listMultipartUploads'
  | 'createMultipartUpload'
  | 'uploadPart'
  | 'uploadPartCopy'
  | 'listParts'
  | 'abortMultipartUpload'
  | 'completeMultipartUpload'
>;

export interface ObjectService extends ObjectOperations {
  listBuckets(principal: S3Principal): Promise<BucketInfo[]>;
  /** ALREADY_EXISTS when the name is taken (by anyone); NOT_FOUND when `pool` (default: the service's) does not exist. */
  createBucket(principal: S3Principal, name: string, options?: { pool?: string; acl?: CannedAcl }): Promise<BucketInfo>;
  /** NOT_FOUND when absent. */
  bucketInfo(principal: S3Principal, name: string): Promise<BucketInfo>;
  /** NOT_FOUND when absent; BUSY when it still holds objects or uploads. */
  deleteBucket(principal: S3Principal, name: string): Promise<void>;
  setBucketVersioning(principal: S3Principal, name: string, state: 'Enabled' | 'Suspended'): Promise<void>;
  /** NOT_FOUND when absent. */
  setBucketAcl(principal: S3Principal, name: string, acl: CannedAcl): Promise<void>;
}
