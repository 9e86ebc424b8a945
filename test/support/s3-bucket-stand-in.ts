/**
 * A stand-in ObjectService for the S3 endpoint's unit tests: buckets in a map and nothing else
 * (every object operation is UNSUPPORTED, so the endpoint answers NotImplemented). It runs the
 * ObjectService conformance suite beside the real S3ObjectService, so it keeps the same contract
 * for the bucket handlers; the object handlers are tested against the real model (e2e).
 */
import { StorageError } from '../../src/core/errors.js';
import type { BucketInfo, ObjectService } from '../../src/objects/object-service.js';

export function bucketStandIn(): ObjectService {
  const buckets = new Map<string, BucketInfo>();
  const notHere = (): never => {
    throw new StorageError('UNSUPPORTED', 'the stand-in object service has buckets only');
  };
  const find = (name: string): BucketInfo => {
    const b = buckets.get(name);
    if (b === undefined) throw new StorageError('NOT_FOUND', `no bucket ${name}`);
    return b;
  };
  return {
    listBuckets: async (p) => [...buckets.values()].filter((b) => b.owner === p.owner).sort((a, b) => (a.name < b.name ? -1 : 1)),
    createBucket: async (p, name, options = {}) => {
      if (buckets.has(name)) throw new StorageError('ALREADY_EXISTS', `bucket ${name}`);
      const info: BucketInfo = { name, owner: p.owner, createdAt: new Date().toISOString(), versioning: 'Unversioned', acl: options.acl ?? 'private' };
      buckets.set(name, info);
      return info;
    },
    bucketInfo: async (_p, name) => find(name),
    deleteBucket: async (_p, name) => {
      find(name);
      buckets.delete(name);
    },
    setBucketVersioning: async (_p, name, state) => {
      buckets.set(name, { ...find(name), versioning: state });
    },
    setBucketAcl: async (_p, name, acl) => {
      buckets.set(name, { ...find(name), acl });
    },
    putObject: notHere,
    getObject: notHere,
    deleteObject: notHere,
    deleteObjects: notHere,
    copyObject: notHere,
    listObjectsV2: notHere,
    listObjects: notHere,
    listObjectVersions: notHere,
    listMultipartUploads: notHere,
    createMultipartUpload: notHere,
    uploadPart: notHere,
    uploadPartCopy: notHere,
    listParts: notHere,
    abortMultipartUpload: notHere,
    completeMultipartUpload: notHere,
  };
}
