/**
 * /v1/buckets: the S3 buckets as an operator sees them (every owner): a paged list with object
 * counts, one bucket's record, and its usage a bounded page at a time (the CLI adds the pages up
 * and shows progress).
 */
import type { FastifyInstance } from 'fastify';
import { StorageError } from '../../../core/errors.js';
import { BUCKET_ADMIN_PAGE_MAX, USAGE_PAGE_RECORDS_MAX } from '../../../objects/bucket-usage.js';
import type { BucketAdmin, RestContext } from '../context.js';
import { BUCKET_SCHEMAS, bucketJson, bucketUsageJson } from '../bucket-schemas.js';
import { errorResponses, ref } from '../schemas.js';

const bucketParams = { type: 'object', required: ['bucket'], properties: { bucket: { type: 'string', minLength: 1, maxLength: 255 } } } as const;
const pageQuery = (max: number) =>
  ({
    type: 'object',
    additionalProperties: false,
    properties: { after: { type: 'string', maxLength: 4096 }, limit: { type: 'integer', minimum: 1, maximum: max } },
  }) as const;

export function registerBucketRoutes(app: FastifyInstance, ctx: RestContext): void {
  for (const schema of BUCKET_SCHEMAS) app.addSchema(schema);
  const buckets = (): BucketAdmin => {
    if (ctx.buckets === undefined) throw new StorageError('UNSUPPORTED', 'this API has no S3 object store');
    return ctx.buckets;
  };

  app.get<{ Querystring: { after?: string; limit?: number } }>('/v1/buckets', {
    schema: { tags: ['buckets'], summary: 'List S3 buckets (every owner), a page at a time', querystring: pageQuery(BUCKET_ADMIN_PAGE_MAX), response: { 200: ref('BucketPage'), ...errorResponses } },
  }, async (req) => {
    const page = await buckets().listAllBuckets({ ...(req.query.after === undefined ? {} : { after: req.query.after }), ...(req.query.limit === undefined ? {} : { limit: req.query.limit }) });
    const listed = await Promise.all(page.buckets.map(async (b) => bucketJson(b, await buckets().countObjects(b))));
    return { buckets: listed, ...(page.nextAfter === undefined ? {} : { next: page.nextAfter }) };
  });

  app.get<{ Params: { bucket: string } }>('/v1/buckets/:bucket', {
    schema: { tags: ['buckets'], summary: 'One S3 bucket: owner, pool, versioning, object count', params: bucketParams, response: { 200: ref('Bucket'), ...errorResponses } },
  }, async (req) => {
    const record = await buckets().headBucket(req.params.bucket);
    return bucketJson(record, await buckets().countObjects(record));
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
      await buckets().bucketUsagePage(req.params.bucket, { ...(req.query.after === undefined ? {} : { after: req.query.after }), ...(req.query.limit === undefined ? {} : { limit: req.query.limit }) }),
    ),
  );
}
