/**
 * The multipart handlers: CreateMultipartUpload, UploadPart, UploadPartCopy,
 * CompleteMultipartUpload, AbortMultipartUpload, ListParts, over the ObjectService
 * (ListMultipartUploads is a listing: list-handlers.ts).
 */
import { parseRangeHeader } from '../../objects/range.js';
import type { S3Handler, S3RequestContext } from './bucket-handlers.js';
import type { S3Endpoint } from './endpoints.js';
import { S3Error } from './errors.js';
import { checksumAlgorithmOf, conditionsOf, contentHeadersOf, headerOf, quoted, userMetadataOf, versionHeader } from './object-headers.js';
import { checksumHeader, dataBodyOf, parseCopySource } from './object-handlers.js';
import { childrenNamed, childText, element, readXmlBody, textElement, xmlDocument } from './xml.js';

function uploadIdOf(ctx: S3RequestContext): string {
  const uploadId = ctx.query.get('uploadId');
  if (uploadId === undefined || uploadId === '') throw new S3Error('InvalidArgument', 'this request needs the uploadId query parameter');
  return uploadId;
}

function partNumberOf(ctx: S3RequestContext): number {
  const text = ctx.query.get('partNumber') ?? '';
  if (!/^\d{1,5}$/.test(text)) throw new S3Error('InvalidArgument', `partNumber must be a whole number from 1 to 10000, not '${text.slice(0, 20)}'`);
  return Number(text);
}

const createMultipartUpload: S3Handler = async (ctx) => {
  const checksumAlgorithm = checksumAlgorithmOf(ctx.headers, undefined);
  const upload = await ctx.objects.createMultipartUpload({
    bucket: ctx.bucket as string,
    key: ctx.key as string,
    owner: ctx.principal.owner,
    headers: contentHeadersOf(ctx.headers),
    userMetadata: userMetadataOf(ctx.headers),
    ...(checksumAlgorithm === undefined ? {} : { checksumAlgorithm }),
  });
  return {
    status: 200,
    headers: checksumAlgorithm === undefined ? {} : ({ 'x-amz-checksum-algorithm': checksumAlgorithm } as Record<string, string>),
    xml: xmlDocument('InitiateMultipartUploadResult', [textElement('Bucket', ctx.bucket as string), textElement('Key', upload.key), textElement('UploadId', upload.uploadId)]),
  };
};

const uploadPart: S3Handler = async (ctx) => {
  const part = await ctx.objects.uploadPart({
    bucket: ctx.bucket as string,
    key: ctx.key as string,
    uploadId: uploadIdOf(ctx),
    partNumber: partNumberOf(ctx),
    ...dataBodyOf(ctx),
  });
  return { status: 200, headers: { etag: quoted(part.etag), ...checksumHeader(part.checksum) } };
};

const uploadPartCopy: S3Handler = async (ctx) => {
  const rangeText = headerOf(ctx.headers, 'x-amz-copy-source-range');
  const range = rangeText === undefined ? undefined : parseRangeHeader(rangeText);
  if (rangeText !== undefined && range === undefined) throw new S3Error('InvalidArgument', `x-amz-copy-source-range must be 'bytes=first-last', not '${rangeText.slice(0, 60)}'`);
  const sourceConditions = conditionsOf(ctx.headers, 'x-amz-copy-source-');
  const part = await ctx.objects.uploadPartCopy({
    bucket: ctx.bucket as string,
    key: ctx.key as string,
    uploadId: uploadIdOf(ctx),
    partNumber: partNumberOf(ctx),
    source: parseCopySource(ctx),
    ...(range === undefined ? {} : { range }),
    ...(sourceConditions === undefined ? {} : { sourceConditions }),
  });
  return { status: 200, xml: xmlDocument('CopyPartResult', [textElement('LastModified', new Date(part.lastModifiedMs).toISOString()), textElement('ETag', quoted(part.etag))]) };
};

/** An ETag as a client sends it back, with or without its quotes. */
function bareEtag(text: string): string {
  return text.trim().replace(/^"(.*)"$/, '$1');
}

const completeMultipartUpload: S3Handler = async (ctx) => {
  const document = await readXmlBody(ctx.body(), 'CompleteMultipartUpload');
  const parts = childrenNamed(document, 'Part').map((p) => {
    const number = childText(p, 'PartNumber');
    const etag = childText(p, 'ETag');
    if (number === undefined || !/^\d{1,5}$/.test(number.trim()) || etag === undefined) throw new S3Error('MalformedXML', 'every <Part> needs a <PartNumber> (1 to 10000) and an <ETag>');
    return { partNumber: Number(number.trim()), etag: bareEtag(etag) };
  });
  if (parts.length === 0) throw new S3Error('MalformedXML', 'a <CompleteMultipartUpload> must name at least one <Part>');
  const conditions = conditionsOf(ctx.headers);
  const result = await ctx.objects.completeMultipartUpload({
    bucket: ctx.bucket as string,
    key: ctx.key as string,
    uploadId: uploadIdOf(ctx),
    owner: ctx.principal.owner,
    parts,
    ...(conditions === undefined ? {} : { conditions }),
  });
  const bucket = ctx.bucket as string;
  const key = ctx.key as string;
  return {
    status: 200,
    headers: versionHeader(result.versionId),
    xml: xmlDocument('CompleteMultipartUploadResult', [
      textElement('Location', `/${bucket}/${key}`),
      textElement('Bucket', bucket),
      textElement('Key', key),
      textElement('ETag', quoted(result.etag)),
      result.checksum !== undefined && textElement(`Checksum${result.checksum.algorithm}`, result.checksum.value),
    ]),
  };
};

const abortMultipartUpload: S3Handler = async (ctx) => {
  await ctx.objects.abortMultipartUpload({ bucket: ctx.bucket as string, key: ctx.key as string, uploadId: uploadIdOf(ctx) });
  return { status: 204 };
};

const listParts: S3Handler = async (ctx) => {
  const markerText = ctx.query.get('part-number-marker');
  const maxText = ctx.query.get('max-parts');
  for (const [name, text] of [['part-number-marker', markerText], ['max-parts', maxText]] as const) {
    if (text !== undefined && !/^\d{1,9}$/.test(text)) throw new S3Error('InvalidArgument', `${name} must be a whole number, not '${text.slice(0, 20)}'`);
  }
  const page = await ctx.objects.listParts({
    bucket: ctx.bucket as string,
    key: ctx.key as string,
    uploadId: uploadIdOf(ctx),
    ...(markerText === undefined ? {} : { partNumberMarker: Number(markerText) }),
    ...(maxText === undefined ? {} : { maxParts: Number(maxText) }),
  });
  const owner = page.upload.owner;
  return {
    status: 200,
    xml: xmlDocument('ListPartsResult', [
      textElement('Bucket', ctx.bucket as string),
      textElement('Key', page.upload.key),
      textElement('UploadId', page.upload.uploadId),
      element('Initiator', [textElement('ID', owner), textElement('DisplayName', owner)]),
      element('Owner', [textElement('ID', owner), textElement('DisplayName', owner)]),
      textElement('StorageClass', 'STANDARD'),
      textElement('PartNumberMarker', markerText ?? '0'),
      page.nextPartNumberMarker !== undefined && textElement('NextPartNumberMarker', page.nextPartNumberMarker),
      textElement('MaxParts', maxText ?? '1000'),
      textElement('IsTruncated', page.isTruncated),
      page.upload.checksumAlgorithm !== undefined && textElement('ChecksumAlgorithm', page.upload.checksumAlgorithm),
      ...page.parts.map((p) =>
        element('Part', [
          textElement('PartNumber', p.partNumber),
          textElement('LastModified', new Date(p.lastModifiedMs).toISOString()),
          textElement('ETag', quoted(p.etag)),
          textElement('Size', p.sizeBytes),
          p.checksum !== undefined && textElement(`Checksum${p.checksum.algorithm}`, p.checksum.value),
        ]),
      ),
    ]),
  };
};

export const MULTIPART_HANDLERS: Partial<Record<S3Endpoint, S3Handler>> = {
  CreateMultipartUpload: createMultipartUpload,
  UploadPart: uploadPart,
  UploadPartCopy: uploadPartCopy,
  CompleteMultipartUpload: completeMultipartUpload,
  AbortMultipartUpload: abortMultipartUpload,
  ListParts: listParts,
};
