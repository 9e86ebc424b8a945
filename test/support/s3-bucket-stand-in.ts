/**
 * A stand-in for the S3 object model, which another branch is building: buckets in a map and
 * nothing else (every object operation is UNSUPPORTED). It lets the S3 endpoint's bucket handlers
 * be driven by real clients now; it runs the bucket part of the ObjectService conformance suite
 * so it keeps the contract the real object model must keep. Replace it with the real one when it
 * lands.
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
    createBucket: async (p, name) => {
      if (buckets.has(name)) throw new StorageError('ALREADY_EXISTS', `bucket ${name}`);
      const info: BucketInfo = { name, owner: p.owner, createdAt: new Date().toISOString(), versioning: 'Unversioned' };
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
