/**
 * The single-object handlers: PutObject, GetObject, HeadObject, DeleteObject, DeleteObjects,
 * CopyObject, over the ObjectService. Bodies stream from the payload verifier into the model
 * and out of it; the model's ObjectErrors become S3 errors in index.ts (errors.ts, one table).
 */
import type { BodyClaims } from '../../objects/objects.js';
import { parseRangeHeader } from '../../objects/range.js';
import type { S3Handler, S3RequestContext } from './bucket-handlers.js';
import type { S3Endpoint } from './endpoints.js';
import { S3Error } from './errors.js';
import { checksumAlgorithmOf, conditionsOf, contentHeadersOf, headerOf, httpDate, quoted, userMetadataOf, versionHeader, versionHeaders } from './object-headers.js';
import { childrenNamed, childText, element, readXmlBody, textElement, xmlDocument } from './xml.js';

/**
 * An object's body for the model, with what it was declared to be: the model computes the
 * checksum and MD5 once (to store them) and compares them with the values the client sent (BadDigest).
 */
export function dataBodyOf(ctx: S3RequestContext): { body: AsyncIterable<Uint8Array>; claims: BodyClaims } {
  const payload = ctx.payload();
  const algorithm = checksumAlgorithmOf(ctx.headers, payload.headerChecksum?.algorithm ?? payload.trailerChecksum);
  const body = ctx.dataBody();
  return {
    body,
    claims: {
      ...(payload.lengthBytes === undefined ? {} : { sizeBytes: payload.lengthBytes }),
      // The model's MD5 (the ETag) checks Content-MD5, and its SHA-256 of the same pass the signed
      // payload hash: the payload verifier leaves both to it.
      ...(payload.contentMd5 === undefined ? {} : { contentMd5: payload.contentMd5 }),
      ...(payload.sha256Hex === undefined ? {} : { payloadSha256Hex: payload.sha256Hex }),
      ...(algorithm === undefined ? {} : { checksumAlgorithm: algorithm, expectedChecksum: () => body.claimedChecksum() }),
    },
  };
}

/** x-amz-checksum-<alg> of a stored checksum. */
export function checksumHeader(checksum: { algorithm: string; value: string } | undefined): Record<string, string> {
  return checksum === undefined ? {} : { [`x-amz-checksum-${checksum.algorithm.toLowerCase()}`]: checksum.value };
}

const putObject: S3Handler = async (ctx) => {
  if (headerOf(ctx.headers, 'content-length') === undefined && headerOf(ctx.headers, 'transfer-encoding') === undefined) {
    throw new S3Error('MissingContentLength', 'PutObject needs a Content-Length header');
  }
  const conditions = conditionsOf(ctx.headers);
  const result = await ctx.objects.putObject({
    bucket: ctx.bucket as string,
    key: ctx.key as string,
    owner: ctx.principal.owner,
    ...dataBodyOf(ctx),
    headers: contentHeadersOf(ctx.headers),
    userMetadata: userMetadataOf(ctx.headers),
    ...(conditions === undefined ? {} : { conditions }),
  });
  return { status: 200, headers: { etag: quoted(result.etag), ...versionHeader(result.versionId), ...checksumHeader(result.checksum) } };
};

function readRequestOf(ctx: S3RequestContext, withRange: boolean) {
  const versionId = ctx.query.get('versionId');
  const rangeText = withRange ? headerOf(ctx.headers, 'range') : undefined;
  const range = rangeText === undefined ? undefined : parseRangeHeader(rangeText);
  const conditions = conditionsOf(ctx.headers);
  return {
    bucket: ctx.bucket as string,
    key: ctx.key as string,
    ...(versionId === undefined ? {} : { versionId }),
    ...(range === undefined ? {} : { range }),
    ...(conditions === undefined ? {} : { conditions }),
  };
}

/** GET and HEAD: one answer, HEAD without the body (index.ts never sends it). */
const getObject: S3Handler = async (ctx) => {
  const head = ctx.endpoint === 'HeadObject';
  const result = await ctx.objects.getObject(readRequestOf(ctx, true));
  const checksumMode = headerOf(ctx.headers, 'x-amz-checksum-mode')?.toUpperCase() === 'ENABLED';
  if (result.outcome === 'not-modified') {
    return { status: 304, headers: { etag: quoted(result.version.data!.etag), 'last-modified': httpDate(result.version.lastModifiedMs), ...versionHeader(result.version.versionId) } };
  }
  const sizeBytes = result.version.data!.sizeBytes;
  // A range's checksum is not the object's: S3 sends it only for the whole object.
  const headers: Record<string, string> = { ...versionHeaders(result.version, { checksumMode: checksumMode && !result.ranged }), 'content-length': String(result.endBytes - result.startBytes) };
  if (result.ranged) headers['content-range'] = `bytes ${result.startBytes}-${result.endBytes - 1}/${sizeBytes}`;
  const status = result.ranged ? 206 : 200;
  return head || result.endBytes === result.startBytes ? { status, headers } : { status, headers, body: result.body() };
};

/**
 * Conditional deletes (S3's If-Match and x-amz-if-match-* on DeleteObject, ETag, LastModifiedTime
 * and Size in a DeleteObjects entry) are refused, not ignored: ignoring them would delete an object
 * the client meant to keep.
 */
const DELETE_CONDITION_HEADERS = ['if-match', 'x-amz-if-match-last-modified-time', 'x-amz-if-match-size'];
const DELETE_CONDITION_ELEMENTS = ['ETag', 'LastModifiedTime', 'Size'];

function conditionalDeleteRefused(what: string): S3Error {
  return new S3Error('NotImplemented', `conditional deletes (${what}) are not supported by this endpoint; delete without the condition, or compare the object's ETag with HeadObject first`);
}

const deleteObject: S3Handler = async (ctx) => {
  const condition = DELETE_CONDITION_HEADERS.find((name) => headerOf(ctx.headers, name) !== undefined);
  if (condition !== undefined) throw conditionalDeleteRefused(condition);
  const versionId = ctx.query.get('versionId');
  const result = await ctx.objects.deleteObject({ bucket: ctx.bucket as string, key: ctx.key as string, owner: ctx.principal.owner, ...(versionId === undefined ? {} : { versionId }) });
  return { status: 204, headers: { ...versionHeader(result.versionId), ...(result.deleteMarker ? { 'x-amz-delete-marker': 'true' } : {}) } };
};

const deleteObjects: S3Handler = async (ctx) => {
  const document = await readXmlBody(ctx.body(), 'Delete');
  const quiet = childText(document, 'Quiet') === 'true';
  const objects = childrenNamed(document, 'Object').map((o) => {
    const key = childText(o, 'Key');
    if (key === undefined) throw new S3Error('MalformedXML', 'every <Object> of a <Delete> needs a <Key>');
    // Refused before anything is deleted: a condition on one key must not leave the others half done.
    const condition = DELETE_CONDITION_ELEMENTS.find((name) => childText(o, name) !== undefined);
    if (condition !== undefined) throw conditionalDeleteRefused(`<${condition}> of '${key.slice(0, 100)}'`);
    const versionId = childText(o, 'VersionId');
    return versionId === undefined ? { key } : { key, versionId };
  });
  if (objects.length === 0) throw new S3Error('MalformedXML', 'a <Delete> must name at least one <Object>');
  const result = await ctx.objects.deleteObjects({ bucket: ctx.bucket as string, owner: ctx.principal.owner, objects });
  const deleted = quiet
    ? []
    : result.deleted.map((d) =>
        element('Deleted', [
          textElement('Key', d.key),
          d.versionId !== undefined && !d.deleteMarker && textElement('VersionId', d.versionId),
          d.deleteMarker && textElement('DeleteMarker', true),
          d.deleteMarker && d.versionId !== undefined && textElement('DeleteMarkerVersionId', d.versionId),
        ]),
      );
  const errors = result.errors.map((e) => element('Error', [textElement('Key', e.key), e.versionId !== undefined && textElement('VersionId', e.versionId), textElement('Code', e.code), textElement('Message', e.message)]));
  return { status: 200, xml: xmlDocument('DeleteResult', [...deleted, ...errors]) };
};

/** x-amz-copy-source: `bucket/key` or `/bucket/key`, URL-encoded, with an optional `?versionId=`. */
export function parseCopySource(ctx: Pick<S3RequestContext, 'headers'>): { bucket: string; key: string; versionId?: string } {
  const raw = headerOf(ctx.headers, 'x-amz-copy-source') ?? '';
  const [pathPart = '', query] = raw.split('?', 2);
  let decoded: string;
  try {
    decoded = decodeURIComponent(pathPart).replace(/^\//, '');
  } catch {
    throw new S3Error('InvalidArgument', `x-amz-copy-source '${raw.slice(0, 100)}' is not URL-encoded correctly`);
  }
  const slash = decoded.indexOf('/');
  if (slash <= 0 || slash === decoded.length - 1) throw new S3Error('InvalidArgument', `x-amz-copy-source must be 'bucket/key', not '${raw.slice(0, 100)}'`);
  const versionId = query === undefined ? undefined : new URLSearchParams(query).get('versionId') ?? undefined;
  return { bucket: decoded.slice(0, slash), key: decoded.slice(slash + 1), ...(versionId === undefined ? {} : { versionId }) };
}

const copyObject: S3Handler = async (ctx) => {
  const directive = headerOf(ctx.headers, 'x-amz-metadata-directive')?.toUpperCase() ?? 'COPY';
  if (directive !== 'COPY' && directive !== 'REPLACE') throw new S3Error('InvalidArgument', `x-amz-metadata-directive must be COPY or REPLACE, not '${directive.slice(0, 40)}'`);
  const sourceConditions = conditionsOf(ctx.headers, 'x-amz-copy-source-');
  const conditions = conditionsOf(ctx.headers);
  const result = await ctx.objects.copyObject({
    source: parseCopySource(ctx),
    bucket: ctx.bucket as string,
    key: ctx.key as string,
    owner: ctx.principal.owner,
    metadataDirective: directive,
    ...(directive === 'REPLACE' ? { headers: contentHeadersOf(ctx.headers), userMetadata: userMetadataOf(ctx.headers) } : {}),
    ...(sourceConditions === undefined ? {} : { sourceConditions }),
    ...(conditions === undefined ? {} : { conditions }),
  });
  return {
    status: 200,
    headers: { ...versionHeader(result.versionId), ...(result.sourceVersionId === 'null' ? {} : { 'x-amz-copy-source-version-id': result.sourceVersionId }) },
    xml: xmlDocument('CopyObjectResult', [textElement('LastModified', new Date(result.lastModifiedMs).toISOString()), textElement('ETag', quoted(result.etag))]),
  };
};

export const OBJECT_HANDLERS: Partial<Record<S3Endpoint, S3Handler>> = {
  PutObject: putObject,
  GetObject: getObject,
  HeadObject: getObject,
  DeleteObject: deleteObject,
  DeleteObjects: deleteObjects,
  CopyObject: copyObject,
};
