/**
 * JSON schemas of the bucket routes (/v1/buckets): operators' views of the S3 buckets (any owner),
 * their object counts and usage. Kept beside schemas.ts (same conventions: the schema is the one
 * source of the TypeScript type).
 */
import type { FromSchema } from 'json-schema-to-ts';
import type { BucketRemoval } from '../../objects/bucket-removal.js';
import type { BucketCount, BucketUsagePage } from '../../objects/bucket-usage.js';
import type { BucketRecord } from '../../objects/records.js';

const bytes = { type: 'integer', minimum: 0 } as const;
const count = { type: 'integer', minimum: 0 } as const;

export const bucketSchema = {
  $id: 'Bucket',
  type: 'object',
  additionalProperties: false,
  required: ['name', 'owner', 'ownerMissing', 'pool', 'createdAt', 'versioning', 'acl', 'objectCount', 'objectCountCapped', 'deleting'],
  properties: {
    name: { type: 'string' },
    owner: { type: 'string', description: 'the S3 user that owns it' },
    ownerMissing: {
      type: 'boolean',
      description: 'true: no user of that name exists (a bucket left by a user deleted before deletes refused owners of buckets); give it to a user (PATCH {"owner"}) or delete it',
    },
    pool: { type: 'string', description: 'the pool its chunks are in' },
    createdAt: { type: 'string', description: 'ISO-8601 time' },
    versioning: { type: 'string', enum: ['unversioned', 'enabled', 'suspended'] },
    acl: { type: 'string', enum: ['private', 'public-read'] },
    objectCount: count,
    objectCountCapped: { type: 'boolean', description: 'true: the bucket holds more objects than objectCount' },
    deleting: { type: 'boolean', description: 'true: a delete began and did not finish (S3 requests get NoSuchBucket); DELETE ?purge=true finishes it' },
  },
} as const;

export const bucketPageSchema = {
  $id: 'BucketPage',
  type: 'object',
  required: ['buckets'],
  properties: {
    buckets: { type: 'array', items: { $ref: 'Bucket#' } },
    next: { type: 'string', description: 'pass as ?after= for the next page; absent on the last one' },
  },
} as const;

export const bucketUsageSchema = {
  $id: 'BucketUsage',
  type: 'object',
  additionalProperties: false,
  required: ['bucket', 'pool', 'objectCount', 'objectBytes', 'versionCount', 'versionBytes', 'deleteMarkerCount', 'uploadCount', 'partCount', 'partBytes', 'recordsRead'],
  properties: {
    bucket: { type: 'string' },
    pool: { type: 'string' },
    objectCount: count,
    objectBytes: bytes,
    versionCount: count,
    versionBytes: bytes,
    deleteMarkerCount: count,
    uploadCount: count,
    partCount: count,
    partBytes: bytes,
    recordsRead: count,
    next: { type: 'string', description: 'a page of the sums: pass as ?after= for the next one and add them up; absent on the last one' },
  },
} as const;

export const bucketDeletedSchema = {
  $id: 'BucketDeleted',
  type: 'object',
  additionalProperties: false,
  required: ['bucket', 'owner', 'pool', 'versionCount', 'versionBytes', 'deleteMarkerCount', 'uploadCount', 'partCount', 'partBytes'],
  properties: {
    bucket: { type: 'string' },
    owner: { type: 'string' },
    pool: { type: 'string', description: 'the pool its chunks were in: its GC reclaims what nothing else references once the grace period has passed' },
    jobId: { type: 'string', description: 'the bucket-purge job that emptied it (absent without purge)' },
    versionCount: { ...count, description: 'versions (with data) deleted' },
    versionBytes: bytes,
    deleteMarkerCount: count,
    uploadCount: { ...count, description: 'multipart uploads aborted' },
    partCount: count,
    partBytes: bytes,
  },
} as const;

export type BucketJson = FromSchema<typeof bucketSchema>;
export type BucketDeletedJson = FromSchema<typeof bucketDeletedSchema>;
export type BucketPageJson = FromSchema<typeof bucketPageSchema, { references: [typeof bucketSchema] }>;
export type BucketUsageJson = FromSchema<typeof bucketUsageSchema>;

export const BUCKET_SCHEMAS = [bucketSchema, bucketPageSchema, bucketUsageSchema, bucketDeletedSchema];

export function bucketJson(b: BucketRecord, counted: BucketCount, ownerMissing: boolean): BucketJson {
  return {
    name: b.name,
    owner: b.owner,
    ownerMissing,
    pool: b.pool,
    createdAt: new Date(b.createdAtMs).toISOString(),
    versioning: b.versioning,
    acl: b.acl,
    objectCount: counted.objectCount,
    objectCountCapped: counted.objectCountCapped,
    deleting: b.deleting === true,
  };
}

export function bucketDeletedJson(removal: BucketRemoval, jobId: string | undefined): BucketDeletedJson {
  const { bucket, ...removed } = removal;
  return { bucket: bucket.name, owner: bucket.owner, pool: bucket.pool, ...(jobId === undefined ? {} : { jobId }), ...removed };
}

export function bucketUsageJson(page: BucketUsagePage): BucketUsageJson {
  const { bucket, next, ...sums } = page;
  return { bucket: bucket.name, pool: bucket.pool, ...sums, ...(next === undefined ? {} : { next }) };
}
