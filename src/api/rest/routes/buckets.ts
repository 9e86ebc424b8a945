/**
 * /v1/buckets: the S3 buckets as an operator sees them (every owner): a paged list with object
 * counts and whether each owner still exists, one bucket's record, its usage a bounded page at a
 * time (the CLI adds the pages up and shows progress), giving a bucket to another user, and
 * deleting one (with ?purge=true everything in it first, as a 'bucket-purge' job the request
 * awaits: `strata job list` shows it and its progress meanwhile).
 */
import type { FastifyInstance } from 'fastify';
import { StorageError } from '../../../core/errors.js';
import { BUCKET_ADMIN_PAGE_MAX, USAGE_PAGE_RECORDS_MAX } from '../../../objects/bucket-usage.js';
import { isObjectError } from '../../../objects/errors.js';
import type { BucketRecord } from '../../../objects/records.js';
import type { UserStore } from '../../../objects/users/user-store.js';
import type { BucketAdmin, RestContext } from '../context.js';
import { BUCKET_SCHEMAS, bucketDeletedJson, bucketJson, bucketUsageJson, type BucketJson } from '../bucket-schemas.js';
import { errorResponses, nameSchema, ref } from '../schemas.js';

const bucketParams = { type: 'object', required: ['bucket'], properties: { bucket: { type: 'string', minLength: 1, maxLength: 255 } } } as const;
const pageQuery = (max: number) =>
  ({
    type: 'object',
    additionalProperties: false,
    properties: { after: { type: 'string', maxLength: 4096 }, limit: { type: 'integer', minimum: 1, maximum: max } },
  }) as const;

/** The object model's NoSuchBucket in this API's terms: NOT_FOUND naming the list of buckets. */
async function adminCall<T>(work: Promise<T>): Promise<T> {
  try {
    return await work;
  } catch (err) {
    if (isObjectError(err, 'NoSuchBucket')) throw new StorageError('NOT_FOUND', err.message, { fix: { operation: 'listBuckets', text: 'check the name; {} lists the buckets' } });
    throw err;
  }
}

export function registerBucketRoutes(app: FastifyInstance, ctx: RestContext): void {
  for (const schema of BUCKET_SCHEMAS) app.addSchema(schema);
  const buckets = (): BucketAdmin => {
    if (ctx.buckets === undefined) throw new StorageError('UNSUPPORTED', 'this API has no S3 object store');
    return ctx.buckets;
  };
  const users = (): UserStore => {
    if (ctx.users === undefined) throw new StorageError('UNSUPPORTED', 'this API has no S3 user store');
    return ctx.users;
  };
  /** The buckets as JSON, each with its object count and whether its owner is still a user. */
  const listed = async (records: readonly BucketRecord[]): Promise<BucketJson[]> => {
    const existing = ctx.users === undefined ? undefined : await ctx.users.existingUsers(records.map((b) => b.owner));
    return Promise.all(records.map(async (b) => bucketJson(b, await buckets().countObjects(b), existing !== undefined && !existing.has(b.owner))));
  };

  app.get<{ Querystring: { after?: string; limit?: number } }>('/v1/buckets', {
    schema: { tags: ['buckets'], summary: 'List S3 buckets (every owner), a page at a time', querystring: pageQuery(BUCKET_ADMIN_PAGE_MAX), response: { 200: ref('BucketPage'), ...errorResponses } },
  }, async (req) => {
    const page = await buckets().listAllBuckets({ ...(req.query.after === undefined ? {} : { after: req.query.after }), ...(req.query.limit === undefined ? {} : { limit: req.query.limit }) });
    return { buckets: await listed(page.buckets), ...(page.nextAfter === undefined ? {} : { next: page.nextAfter }) };
  });

  app.get<{ Params: { bucket: string } }>('/v1/buckets/:bucket', {
    schema: { tags: ['buckets'], summary: 'One S3 bucket: owner, pool, versioning, object count', params: bucketParams, response: { 200: ref('Bucket'), ...errorResponses } },
  }, async (req) => (await listed([await adminCall(buckets().bucketRecord(req.params.bucket))]))[0]);

  app.patch<{ Params: { bucket: string }; Body: { owner: string } }>('/v1/buckets/:bucket', {
    schema: {
      tags: ['buckets'],
      summary: 'Give an S3 bucket to another existing user (its access and canned ACL follow at once)',
      params: bucketParams,
      body: { type: 'object', required: ['owner'], additionalProperties: false, properties: { owner: { ...nameSchema, description: 'an existing user (GET /v1/users)' } } },
      response: { 200: ref('Bucket'), ...errorResponses },
    },
  }, async (req) => {
    const owner = req.body.owner;
    const record = await adminCall(buckets().setBucketOwner(req.params.bucket, owner, (txn) => users().holdUserInto(txn, owner)));
    return (await listed([record]))[0];
  });

  app.delete<{ Params: { bucket: string }; Querystring: { purge?: boolean } }>('/v1/buckets/:bucket', {
    schema: {
      tags: ['buckets'],
      summary: "Delete an S3 bucket, any owner's: an empty one, or with purge=true everything in it first (a bucket-purge job; answers when it has ended)",
      params: bucketParams,
      querystring: {
        type: 'object',
        additionalProperties: false,
        properties: { purge: { type: 'boolean', description: 'delete every version and delete marker and abort every multipart upload first (else a bucket holding any is refused, 409 BUSY)' } },
      },
      response: { 200: ref('BucketDeleted'), ...errorResponses },
    },
  }, async (req) => {
    const name = req.params.bucket;
    if (req.query.purge !== true) return bucketDeletedJson(await adminCall(buckets().removeBucket(name)), undefined);
    // NOT_FOUND before a job is recorded for a bucket that does not exist.
    await adminCall(buckets().bucketRecord(name));
    const { job, value } = await ctx.service.runJob('bucket-purge', name, (progress) => adminCall(buckets().removeBucket(name, { purge: true, progress, signal: progress.signal })));
    return bucketDeletedJson(value, job.id);
  });

  app.get<{ Params: { bucket: string }; Querystring: { after?: string; limit?: number } }>('/v1/buckets/:bucket/du', {
    schema: {
      tags: ['buckets'],
      summary: "A page of an S3 bucket's usage (objects, versions, uploads in progress); add the pages up",
      params: bucketParams,
      querystring: pageQuery(USAGE_PAGE_RECORDS_MAX),
      response: { 200: ref('BucketUsage'), ...errorResponses },
    },
  }, async (req) =>
    bucketUsageJson(
      await adminCall(
        buckets().bucketUsagePage(req.params.bucket, { ...(req.query.after === undefined ? {} : { after: req.query.after }), ...(req.query.limit === undefined ? {} : { limit: req.query.limit }) }),
      ),
    ),
  );
}
