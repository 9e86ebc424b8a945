/**
 * ObjectModel: the S3 object model as one facade, its methods named after the S3 operations they
 * serve. Buckets, objects, versions and multipart uploads are catalog records (tables.ts); an
 * object's bytes are a chunk manifest in the bucket's pool (64 KiB chunks from offset 0, the
 * chunks of sealed volume layers). docs/objects.md describes the model.
 *
 * Call recover() once at start-up, before serving: it finishes what a killed process left.
 */
import * as bucketRemoval from './bucket-removal.js';
import * as bucketUsage from './bucket-usage.js';
import * as buckets from './buckets.js';
import { ObjectContext, type ObjectModelOptions } from './context.js';
import * as listing from './listing.js';
import * as multipart from './multipart.js';
import * as objects from './objects.js';
import { recoverObjects, type RecoveryReport } from './recovery.js';
import { objectReferenceHolders } from './references.js';
import * as releases from './releases.js';
import type { ReferenceSource } from '../store/dedup/scrub.js';
import type { BucketRecord, CannedAcl, VersioningState } from './records.js';

type Rest<F> = F extends (context: ObjectContext, ...args: infer A) => infer R ? (...args: A) => R : never;

export class ObjectModel {
  private readonly context: ObjectContext;

  constructor(options: ObjectModelOptions) {
    this.context = new ObjectContext(options);
  }

  recover(): Promise<RecoveryReport> {
    return recoverObjects(this.context);
  }

  /** Resolves once the clean-up of earlier requests has finished (cleanupInBackground: call before closing the stores). */
  idle(): Promise<void> {
    return this.context.idle();
  }

  /** Waits for the clean-ups (idle) and lets go of the catalog watch; call before closing the stores. */
  async close(): Promise<void> {
    await this.context.idle();
    this.context.buckets.close();
  }

  /** The holders of `pool`'s chunk references here, for a dedup scrub (join with concatReferenceSources). */
  referenceHolders(pool: string): ReferenceSource {
    return objectReferenceHolders(this.context, pool);
  }

  createBucket: Rest<typeof buckets.createBucket> = (request) => buckets.createBucket(this.context, request);
  headBucket(name: string): Promise<BucketRecord> {
    return buckets.headBucket(this.context, name);
  }
  deleteBucket(name: string): Promise<void> {
    return bucketRemoval.deleteBucket(this.context, name);
  }
  listBuckets: Rest<typeof buckets.listBuckets> = (owner, options) => buckets.listBuckets(this.context, owner, options);
  putBucketVersioning(name: string, state: Exclude<VersioningState, 'unversioned'>): Promise<BucketRecord> {
    return buckets.setBucketVersioning(this.context, name, state);
  }
  putBucketAcl(name: string, acl: CannedAcl): Promise<BucketRecord> {
    return buckets.setBucketAcl(this.context, name, acl);
  }

  /** Operators' questions (`strata bucket list|info|du`): bounded reads, any owner. */
  listAllBuckets: Rest<typeof bucketUsage.listAllBuckets> = (options) => bucketUsage.listAllBuckets(this.context, options);
  countObjects: Rest<typeof bucketUsage.countObjects> = (bucket) => bucketUsage.countObjects(this.context, bucket);
  bucketUsagePage: Rest<typeof bucketUsage.bucketUsagePage> = (name, options) => bucketUsage.bucketUsagePage(this.context, name, options);
  /** The bucket's record whatever its state (a bucket being deleted too); NoSuchBucket when there is none. */
  async bucketRecord(name: string): Promise<BucketRecord> {
    return (await this.context.bucket(name, { fresh: true, deleting: 'include' })).record;
  }
  /** `strata bucket delete [--purge]`: any owner's bucket (bucket-removal.ts). */
  removeBucket: Rest<typeof bucketRemoval.removeBucketAsOperator> = (name, options) => bucketRemoval.removeBucketAsOperator(this.context, name, options);
  /** The pools named by releases still recorded (a process that died left them; recover() runs them). */
  poolsWithPendingReleases: Rest<typeof releases.poolsWithPendingReleases> = () => releases.poolsWithPendingReleases(this.context);
  /** At start-up: the buckets a stopped daemon left being deleted, and settling each (bucket-removal.ts InterruptedRemoval). */
  markedBuckets: Rest<typeof bucketRemoval.markedBuckets> = () => bucketRemoval.markedBuckets(this.context);
  settleInterruptedRemoval: Rest<typeof bucketRemoval.settleInterruptedRemoval> = (name) => bucketRemoval.settleInterruptedRemoval(this.context, name);
  /** `strata bucket chown` (buckets.ts setBucketOwner). */
  setBucketOwner: Rest<typeof buckets.setBucketOwner> = (name, owner, holdOwner) => buckets.setBucketOwner(this.context, name, owner, holdOwner);

  putObject: Rest<typeof objects.putObject> = (request) => objects.putObject(this.context, request);
  /** GetObject and HeadObject (HEAD does not call the result's body()). */
  getObject: Rest<typeof objects.getObject> = (request) => objects.getObject(this.context, request);
  deleteObject: Rest<typeof objects.deleteObject> = (request) => objects.deleteObject(this.context, request);
  deleteObjects: Rest<typeof objects.deleteObjects> = (request) => objects.deleteObjects(this.context, request);
  copyObject: Rest<typeof objects.copyObject> = (request) => objects.copyObject(this.context, request);

  listObjectsV2: Rest<typeof listing.listObjectsV2> = (request) => listing.listObjectsV2(this.context, request);
  listObjects: Rest<typeof listing.listObjectsV1> = (request) => listing.listObjectsV1(this.context, request);
  listObjectVersions: Rest<typeof listing.listObjectVersions> = (request) => listing.listObjectVersions(this.context, request);
  listMultipartUploads: Rest<typeof listing.listMultipartUploads> = (request) => listing.listMultipartUploads(this.context, request);

  createMultipartUpload: Rest<typeof multipart.createMultipartUpload> = (request) => multipart.createMultipartUpload(this.context, request);
  uploadPart: Rest<typeof multipart.uploadPart> = (request) => multipart.uploadPart(this.context, request);
  uploadPartCopy: Rest<typeof multipart.uploadPartCopy> = (request) => multipart.uploadPartCopy(this.context, request);
  listParts: Rest<typeof multipart.listParts> = (request) => multipart.listParts(this.context, request);
  abortMultipartUpload: Rest<typeof multipart.abortMultipartUpload> = (request) => multipart.abortMultipartUpload(this.context, request);
  completeMultipartUpload: Rest<typeof multipart.completeMultipartUpload> = (request) => multipart.completeMultipartUpload(this.context, request);
}
