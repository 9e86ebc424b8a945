/**
 * The listing handlers: ListObjectsV2, ListObjects (V1), ListObjectVersions and
 * ListMultipartUploads, their query parameters read and their XML written here; the walks are
 * the model's (src/objects/listing.ts). encoding-type=url encodes keys and prefixes as S3 does.
 */
import type { ObjectVersionRecord } from '../../objects/records.js';
import type { S3Handler, S3RequestContext } from './bucket-handlers.js';
import type { S3Endpoint } from './endpoints.js';
import { S3Error } from './errors.js';
import { quoted } from './object-headers.js';
import { s3UriEncode } from './uri.js';
import { element, textElement, xmlDocument, type XmlChild } from './xml.js';

const STORAGE_CLASS = 'STANDARD';

/** The query parameters every listing shares, and how it writes a key or prefix. */
function listingQuery(ctx: S3RequestContext, maxName = 'max-keys') {
  const encodingType = ctx.query.get('encoding-type');
  if (encodingType !== undefined && encodingType !== 'url') throw new S3Error('InvalidArgument', `encoding-type must be 'url', not '${encodingType.slice(0, 40)}'`);
  const maxText = ctx.query.get(maxName);
  if (maxText !== undefined && !/^\d{1,9}$/.test(maxText)) throw new S3Error('InvalidArgument', `${maxName} must be a whole number of 0 or more, not '${maxText.slice(0, 40)}'`);
  const prefix = ctx.query.get('prefix') ?? '';
  const delimiter = ctx.query.get('delimiter') || undefined;
  const encode = (text: string): string => (encodingType === 'url' ? s3UriEncode(text, true) : text);
  return {
    request: { bucket: ctx.bucket as string, prefix, ...(delimiter === undefined ? {} : { delimiter }), ...(maxText === undefined ? {} : { maxKeys: Number(maxText) }) },
    maxKeys: maxText === undefined ? 1000 : Math.min(Number(maxText), 1000),
    encode,
    common: (): XmlChild[] => [
      textElement('Name', ctx.bucket as string),
      textElement('Prefix', encode(prefix)),
      delimiter !== undefined && textElement('Delimiter', encode(delimiter)),
      encodingType !== undefined && textElement('EncodingType', encodingType),
    ],
  };
}

function ownerElement(owner: string): string {
  return element('Owner', [textElement('ID', owner), textElement('DisplayName', owner)]);
}

function contentsOf(record: ObjectVersionRecord, encode: (text: string) => string, withOwner: boolean): string {
  const data = record.data!;
  return element('Contents', [
    textElement('Key', encode(record.key)),
    textElement('LastModified', new Date(record.lastModifiedMs).toISOString()),
    textElement('ETag', quoted(data.etag)),
    data.checksum !== undefined && textElement('ChecksumAlgorithm', data.checksum.algorithm),
    textElement('Size', data.sizeBytes),
    withOwner && ownerElement(record.owner),
    textElement('StorageClass', STORAGE_CLASS),
  ]);
}

function prefixesOf(prefixes: readonly string[], encode: (text: string) => string): string[] {
  return prefixes.map((p) => element('CommonPrefixes', [textElement('Prefix', encode(p))]));
}

const listObjectsV2: S3Handler = async (ctx) => {
  const q = listingQuery(ctx);
  const token = ctx.query.get('continuation-token');
  const startAfter = ctx.query.get('start-after');
  const page = await ctx.objects.listObjectsV2({ ...q.request, ...(token === undefined ? {} : { continuationToken: token }), ...(startAfter === undefined ? {} : { startAfter }) });
  const withOwner = ctx.query.get('fetch-owner') === 'true';
  return {
    status: 200,
    xml: xmlDocument('ListBucketResult', [
      ...q.common(),
      textElement('MaxKeys', q.maxKeys),
      textElement('KeyCount', page.keyCount),
      textElement('IsTruncated', page.isTruncated),
      token !== undefined && textElement('ContinuationToken', token),
      page.nextContinuationToken !== undefined && textElement('NextContinuationToken', page.nextContinuationToken),
      startAfter !== undefined && textElement('StartAfter', q.encode(startAfter)),
      ...page.objects.map((o) => contentsOf(o, q.encode, withOwner)),
      ...prefixesOf(page.commonPrefixes, q.encode),
    ]),
  };
};

const listObjectsV1: S3Handler = async (ctx) => {
  const q = listingQuery(ctx);
  const marker = ctx.query.get('marker');
  const page = await ctx.objects.listObjects({ ...q.request, ...(marker === undefined ? {} : { marker }) });
  return {
    status: 200,
    xml: xmlDocument('ListBucketResult', [
      ...q.common(),
      textElement('Marker', q.encode(marker ?? '')),
      page.nextMarker !== undefined && textElement('NextMarker', q.encode(page.nextMarker)),
      textElement('MaxKeys', q.maxKeys),
      textElement('IsTruncated', page.isTruncated),
      ...page.objects.map((o) => contentsOf(o, q.encode, true)),
      ...prefixesOf(page.commonPrefixes, q.encode),
    ]),
  };
};

const listObjectVersions: S3Handler = async (ctx) => {
  const q = listingQuery(ctx);
  const keyMarker = ctx.query.get('key-marker');
  const versionIdMarker = ctx.query.get('version-id-marker');
  const page = await ctx.objects.listObjectVersions({ ...q.request, ...(keyMarker === undefined ? {} : { keyMarker }), ...(versionIdMarker === undefined ? {} : { versionIdMarker }) });
  const entries = page.versions.map(({ version, isLatest }) => {
    const common = [
      textElement('Key', q.encode(version.key)),
      textElement('VersionId', version.versionId),
      textElement('IsLatest', isLatest),
      textElement('LastModified', new Date(version.lastModifiedMs).toISOString()),
    ];
    if (version.isDeleteMarker) return element('DeleteMarker', [...common, ownerElement(version.owner)]);
    const data = version.data!;
    return element('Version', [...common, textElement('ETag', quoted(data.etag)), textElement('Size', data.sizeBytes), textElement('StorageClass', STORAGE_CLASS), ownerElement(version.owner)]);
  });
  return {
    status: 200,
    xml: xmlDocument('ListVersionsResult', [
      ...q.common(),
      textElement('KeyMarker', q.encode(keyMarker ?? '')),
      textElement('VersionIdMarker', versionIdMarker ?? ''),
      page.isTruncated && page.nextKeyMarker !== undefined && textElement('NextKeyMarker', q.encode(page.nextKeyMarker)),
      page.isTruncated && page.nextVersionIdMarker !== undefined && textElement('NextVersionIdMarker', page.nextVersionIdMarker),
      textElement('MaxKeys', q.maxKeys),
      textElement('IsTruncated', page.isTruncated),
      ...entries,
      ...prefixesOf(page.commonPrefixes, q.encode),
    ]),
  };
};

const listMultipartUploads: S3Handler = async (ctx) => {
  const q = listingQuery(ctx, 'max-uploads');
  const keyMarker = ctx.query.get('key-marker');
  const uploadIdMarker = ctx.query.get('upload-id-marker');
  const page = await ctx.objects.listMultipartUploads({ ...q.request, ...(keyMarker === undefined ? {} : { keyMarker }), ...(uploadIdMarker === undefined ? {} : { uploadIdMarker }) });
  return {
    status: 200,
    xml: xmlDocument('ListMultipartUploadsResult', [
      textElement('Bucket', ctx.bucket as string),
      textElement('KeyMarker', q.encode(keyMarker ?? '')),
      textElement('UploadIdMarker', uploadIdMarker ?? ''),
      page.isTruncated && page.nextKeyMarker !== undefined && textElement('NextKeyMarker', q.encode(page.nextKeyMarker)),
      page.isTruncated && page.nextUploadIdMarker !== undefined && textElement('NextUploadIdMarker', page.nextUploadIdMarker),
      textElement('Prefix', q.encode(q.request.prefix)),
      q.request.delimiter !== undefined && textElement('Delimiter', q.encode(q.request.delimiter)),
      textElement('MaxUploads', q.maxKeys),
      textElement('IsTruncated', page.isTruncated),
      ...page.uploads.map((u) =>
        element('Upload', [
          textElement('Key', q.encode(u.key)),
          textElement('UploadId', u.uploadId),
          ownerElement(u.owner),
          element('Initiator', [textElement('ID', u.owner), textElement('DisplayName', u.owner)]),
          textElement('StorageClass', STORAGE_CLASS),
          textElement('Initiated', new Date(u.initiatedAtMs).toISOString()),
        ]),
      ),
      ...prefixesOf(page.commonPrefixes, q.encode),
    ]),
  };
};

export const LIST_HANDLERS: Partial<Record<S3Endpoint, S3Handler>> = {
  ListObjectsV2: listObjectsV2,
  ListObjects: listObjectsV1,
  ListObjectVersions: listObjectVersions,
  ListMultipartUploads: listMultipartUploads,
};
