/**
 * Request headers an object operation reads (content headers, x-amz-meta-*, conditions, the
 * checksum asked for) and the response headers that describe an object version (ETag,
 * Last-Modified, content headers, metadata, version id, checksum).
 */
import type { IncomingHttpHeaders } from 'node:http';
import { isChecksumAlgorithm, type ChecksumAlgorithm } from '../../objects/checksums.js';
import type { ConditionHeaders } from '../../objects/conditions.js';
import type { ContentHeaders, ObjectVersionRecord } from '../../objects/records.js';
import { S3Error } from './errors.js';

export const USER_METADATA_PREFIX = 'x-amz-meta-';

/** A header's one value (a repeated header's values joined as HTTP does). */
export function headerOf(headers: IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value.join(',') : value;
}

/** Content-Encoding without `aws-chunked`, the transfer framing the endpoint removed. */
function storedEncoding(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  const kept = value.split(',').map((t) => t.trim()).filter((t) => t !== '' && t.toLowerCase() !== 'aws-chunked');
  return kept.length === 0 ? undefined : kept.join(', ');
}

const CONTENT_HEADERS: readonly [keyof ContentHeaders, string][] = [
  ['contentType', 'content-type'],
  ['cacheControl', 'cache-control'],
  ['contentDisposition', 'content-disposition'],
  ['contentEncoding', 'content-encoding'],
  ['contentLanguage', 'content-language'],
  ['expires', 'expires'],
];

export function contentHeadersOf(headers: IncomingHttpHeaders): ContentHeaders {
  const result: Record<string, string> = {};
  for (const [field, name] of CONTENT_HEADERS) {
    const value = name === 'content-encoding' ? storedEncoding(headerOf(headers, name)) : headerOf(headers, name);
    if (value !== undefined) result[field] = value;
  }
  return result;
}

export function userMetadataOf(headers: IncomingHttpHeaders): Record<string, string> {
  const result: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (name.startsWith(USER_METADATA_PREFIX) && value !== undefined) result[name.slice(USER_METADATA_PREFIX.length)] = Array.isArray(value) ? value.join(',') : value;
  }
  return result;
}

/** If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since, under `prefix` (x-amz-copy-source- for a copy's source). */
export function conditionsOf(headers: IncomingHttpHeaders, prefix = ''): ConditionHeaders | undefined {
  const ifMatch = headerOf(headers, `${prefix}if-match`);
  const ifNoneMatch = headerOf(headers, `${prefix}if-none-match`);
  const ifModifiedSince = headerOf(headers, `${prefix}if-modified-since`);
  const ifUnmodifiedSince = headerOf(headers, `${prefix}if-unmodified-since`);
  if (ifMatch === undefined && ifNoneMatch === undefined && ifModifiedSince === undefined && ifUnmodifiedSince === undefined) return undefined;
  return {
    ...(ifMatch === undefined ? {} : { ifMatch }),
    ...(ifNoneMatch === undefined ? {} : { ifNoneMatch }),
    ...(ifModifiedSince === undefined ? {} : { ifModifiedSince }),
    ...(ifUnmodifiedSince === undefined ? {} : { ifUnmodifiedSince }),
  };
}

/** The checksum algorithm a request names (x-amz-checksum-algorithm or x-amz-sdk-checksum-algorithm). */
export function checksumAlgorithmOf(headers: IncomingHttpHeaders, verified: string | undefined): ChecksumAlgorithm | undefined {
  const named = verified ?? headerOf(headers, 'x-amz-checksum-algorithm') ?? headerOf(headers, 'x-amz-sdk-checksum-algorithm');
  if (named === undefined) return undefined;
  const upper = named.toUpperCase();
  if (!isChecksumAlgorithm(upper)) throw new S3Error('InvalidRequest', `the checksum algorithm '${named.slice(0, 40)}' is not one of CRC32, CRC32C, CRC64NVME, SHA1, SHA256`);
  return upper;
}

export function quoted(etag: string): string {
  return `"${etag}"`;
}

export function httpDate(ms: number): string {
  return new Date(ms).toUTCString();
}

/** x-amz-version-id, sent for a version other than the null one. */
export function versionHeader(versionId: string | undefined): Record<string, string> {
  return versionId === undefined || versionId === 'null' ? {} : { 'x-amz-version-id': versionId };
}

/** The headers GET and HEAD answer with (Content-Length and Content-Range are the caller's). */
export function versionHeaders(version: ObjectVersionRecord, options: { checksumMode: boolean }): Record<string, string> {
  const data = version.data!;
  const headers: Record<string, string> = {
    etag: quoted(data.etag),
    'last-modified': httpDate(version.lastModifiedMs),
    'accept-ranges': 'bytes',
    'content-type': data.headers.contentType ?? 'binary/octet-stream',
    ...versionHeader(version.versionId),
  };
  for (const [field, name] of CONTENT_HEADERS) {
    const value = data.headers[field];
    if (value !== undefined && field !== 'contentType') headers[name] = value;
  }
  for (const [name, value] of Object.entries(data.userMetadata)) headers[`${USER_METADATA_PREFIX}${name}`] = value;
  if (data.partCount !== undefined) headers['x-amz-mp-parts-count'] = String(data.partCount);
  if (options.checksumMode && data.checksum !== undefined) {
    headers[`x-amz-checksum-${data.checksum.algorithm.toLowerCase()}`] = data.checksum.value;
    headers['x-amz-checksum-type'] = data.checksum.value.includes('-') ? 'COMPOSITE' : 'FULL_OBJECT';
  }
  return headers;
}
