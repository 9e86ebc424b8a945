/**
 * S3ObjectService: the ObjectService the S3 endpoint serves, over an ObjectModel. The object
 * operations are the model's own; the bucket operations translate the endpoint's terms (a
 * principal, S3's versioning names, ISO times) and put every new bucket in one pool.
 */
import type { ObjectModel } from './model.js';
import type { BucketInfo, BucketVersioning, ObjectOperations, ObjectService, S3Principal } from './object-service.js';
import type { BucketRecord, VersioningState } from './records.js';

const VERSIONING_NAMES: Record<VersioningState, BucketVersioning> = { unversioned: 'Unversioned', enabled: 'Enabled', suspended: 'Suspended' };

function bucketInfoOf(record: BucketRecord): BucketInfo {
  return { name: record.name, owner: record.owner, createdAt: new Date(record.createdAtMs).toISOString(), versioning: VERSIONING_NAMES[record.versioning], acl: record.acl };
}

export interface S3ObjectServiceOptions {
  /** The pool new buckets keep their chunks in unless CreateBucket names one. */
  readonly bucketPool: string;
}

/** Builds the service; the object operations are bound to `model`. */
export function s3ObjectService(model: ObjectModel, options: S3ObjectServiceOptions): ObjectService {
  const operations: ObjectOperations = {
    putObject: model.putObject,
    getObject: model.getObject,
    deleteObject: model.deleteObject,
    deleteObjects: model.deleteObjects,
    copyObject: model.copyObject,
    listObjectsV2: model.listObjectsV2,
    listObjects: model.listObjects,
    listObjectVersions: model.listObjectVersions,
    listMultipartUploads: model.listMultipartUploads,
    createMultipartUpload: model.createMultipartUpload,
    uploadPart: model.uploadPart,
    uploadPartCopy: model.uploadPartCopy,
    listParts: model.listParts,
    abortMultipartUpload: model.abortMultipartUpload,
    completeMultipartUpload: model.completeMultipartUpload,
  };
  return {
    ...operations,
    listBuckets: async (principal: S3Principal) => {
      const infos: BucketInfo[] = [];
      let after: string | undefined;
      do {
        const page = await model.listBuckets(principal.owner, after === undefined ? {} : { after });
        infos.push(...page.buckets.map(bucketInfoOf));
        after = page.nextAfter;
      } while (after !== undefined);
      return infos;
    },
    createBucket: async (principal, name, bucketOptions = {}) =>
      bucketInfoOf(await model.createBucket({ name, owner: principal.owner, pool: bucketOptions.pool ?? options.bucketPool, ...(bucketOptions.acl === undefined ? {} : { acl: bucketOptions.acl }) })),
    bucketInfo: async (_principal, name) => bucketInfoOf(await model.headBucket(name)),
    deleteBucket: (_principal, name) => model.deleteBucket(name),
    setBucketVersioning: async (_principal, name, state) => {
      await model.putBucketVersioning(name, state === 'Enabled' ? 'enabled' : 'suspended');
    },
    setBucketAcl: async (_principal, name, acl) => {
      await model.putBucketAcl(name, acl);
    },
  };
}
